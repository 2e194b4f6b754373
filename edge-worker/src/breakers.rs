//! Per-isolate circuit breakers, one per upstream credential (`<provider>/<credential id>`).
//!
//! Isolate memory is enough: a credential that fails in one isolate most likely fails
//! in the others, each isolate learns it within `failure_threshold` requests, and no
//! request waits on shared state.

use std::cell::RefCell;
use std::collections::HashMap;

use tollbooth_core::routing::{Breaker, BreakerConfig};

thread_local! {
    static BREAKERS: RefCell<HashMap<String, Breaker>> = RefCell::new(HashMap::new());
}

pub fn breaker_key(provider: &str, credential: &str) -> String {
    format!("{provider}/{credential}")
}

pub fn allows(key: &str, now_ms: u64, config: &BreakerConfig) -> bool {
    BREAKERS.with(|b| {
        b.borrow()
            .get(key)
            .is_none_or(|br| br.allows(now_ms, config))
    })
}

pub fn try_acquire(key: &str, now_ms: u64, config: &BreakerConfig) -> bool {
    BREAKERS.with(|b| {
        b.borrow_mut()
            .entry(key.to_owned())
            .or_default()
            .try_acquire(now_ms, config)
    })
}

pub fn on_success(key: &str) {
    BREAKERS.with(|b| {
        if let Some(br) = b.borrow_mut().get_mut(key) {
            br.on_success();
        }
    });
}

pub fn on_failure(key: &str, now_ms: u64, config: &BreakerConfig) {
    BREAKERS.with(|b| {
        b.borrow_mut()
            .entry(key.to_owned())
            .or_default()
            .on_failure(now_ms, config)
    });
}
