//! The ledger's clock: real time, or under `TEST_CLOCK = "1"` (tests only) the time named
//! by the request header `x-tollbooth-test-now`, so periods and rate windows can be
//! crossed without sleeping.
//!
//! The override is remembered per isolate for the current request (workers run one
//! isolate thread); every request clears or sets it on entry. Without `TEST_CLOCK` it is
//! never set.

use std::cell::Cell;

use worker::{Env, Request};

thread_local! {
    static OVERRIDE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Called on every request's entry.
pub fn observe(req: &Request, env: &Env) {
    let value = if env.var("TEST_CLOCK").is_ok_and(|v| v.to_string() == "1") {
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

/// Unix seconds now (or the test override).
pub fn now() -> u64 {
    OVERRIDE
        .with(Cell::get)
        .unwrap_or_else(|| worker::Date::now().as_millis() / 1000)
}
