//! The ledger's clock: real time, or under the `TEST_CLOCK` hook (tests only; refused in
//! production, see `crate::config`) the time named by the request header
//! `x-tollbooth-test-now`, so periods, rate windows and reservation expiry can be crossed
//! without sleeping.
//!
//! The override is set per isolate on each request's entry, and the pipeline captures
//! `now()` into the request context at that moment ([`crate::context::ReqCtx::now_s`]),
//! so later awaits (settlement in `wait_until`) never read another request's override.

use std::cell::Cell;

use worker::Request;

thread_local! {
    static OVERRIDE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Called on every request's entry with whether the `TEST_CLOCK` hook is on.
pub fn observe(req: &Request, enabled: bool) {
    let value = if enabled {
        req.headers()
            .get("x-tollbooth-test-now")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<u64>().ok())
    } else {
        None
    };
    OVERRIDE.with(|o| o.set(value));
}

/// Unix seconds now (or the test override of the request being entered).
pub fn now() -> u64 {
    OVERRIDE
        .with(Cell::get)
        .unwrap_or_else(|| worker::Date::now().as_millis() / 1000)
}

/// Clears the override (the scheduled handler runs on the real clock).
pub fn reset() {
    OVERRIDE.with(|o| o.set(None));
}
