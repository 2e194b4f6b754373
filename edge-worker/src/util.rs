//! Clock, randomness and ids for the request path (the core takes them as arguments).

use worker::js_sys::{Function, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::Date;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Unix time in seconds.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// Milliseconds for durations (`Date.now()`; workerd coarsens timers, which is fine for
/// overhead accounting in whole milliseconds).
pub fn clock_ms() -> f64 {
    worker::js_sys::Date::now()
}

/// 64 random bits for routing decisions (not for secrets).
pub fn random_u64() -> u64 {
    // Math.random has 52 usable bits; two draws fill 64.
    let a = (worker::js_sys::Math::random() * 4_294_967_296.0) as u64;
    let b = (worker::js_sys::Math::random() * 4_294_967_296.0) as u64;
    (a << 32) ^ b
}

/// `N` bytes from `crypto.getRandomValues` (falls back to `Math.random`, which workerd
/// never needs: the Web Crypto API is always there).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let filled = (|| -> Option<()> {
        let global = worker::js_sys::global();
        let crypto = Reflect::get(&global, &JsValue::from_str("crypto")).ok()?;
        let get = Reflect::get(&crypto, &JsValue::from_str("getRandomValues"))
            .ok()?
            .dyn_into::<Function>()
            .ok()?;
        let array = Uint8Array::new_with_length(u32::try_from(N).ok()?);
        get.call1(&crypto, &array).ok()?;
        array.copy_to(&mut out);
        Some(())
    })();
    if filled.is_none() {
        for chunk in out.chunks_mut(8) {
            let r = random_u64().to_le_bytes();
            for (o, b) in chunk.iter_mut().zip(r) {
                *o = b;
            }
        }
    }
    out
}

/// A request id: `req_` + 8 hex digits of time (ordering) + 24 hex digits (96 bits) of
/// cryptographic randomness. It keys the reservation, so it must never collide.
pub fn request_id() -> String {
    let t = now_ms() & 0xFFFF_FFFF;
    let r: [u8; 12] = random_bytes();
    let mut s = format!("req_{t:08x}");
    for b in r {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A random token for `claim` columns (uniqueness, not secrecy): 96 random bits.
pub fn claim_token() -> String {
    let r: [u8; 12] = random_bytes();
    r.iter().map(|b| format!("{b:02x}")).collect()
}
