//! Clock, randomness and ids for the request path (the core takes them as arguments).

use worker::Date;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Unix time in seconds.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// High-resolution milliseconds for durations (`Date.now()`; workerd coarsens timers,
/// which is fine for overhead accounting in whole milliseconds).
pub fn clock_ms() -> f64 {
    js_sys::Date::now()
}

/// 64 random bits for routing decisions (not for secrets).
pub fn random_u64() -> u64 {
    // Math.random has 52 usable bits; two draws fill 64.
    let a = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let b = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (a << 32) ^ b
}

/// A request id: `req_` + 16 hex digits (time-ordered prefix, random suffix).
pub fn request_id() -> String {
    let t = now_ms() & 0xFFFF_FFFF;
    let r = random_u64() & 0xFFFF_FFFF;
    format!("req_{t:08x}{r:08x}")
}
