//! Whether an upstream credential is usable, in one place: per-isolate circuit breakers
//! (one per credential, `<provider>/<credential id>`) and the isolate's copy of the
//! credentials whose last Cron health check failed.
//!
//! Isolate memory is enough for breakers: a credential that fails in one isolate most
//! likely fails in the others, each isolate learns it within `failure_threshold`
//! requests, and no request waits on shared state. The health set is re-read from D1 in
//! the background at most every [`HEALTH_CACHE_MS`] per isolate.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use tollbooth_core::routing::{counts_against_health, AttemptFailure, Breaker, BreakerConfig};
use worker::wasm_bindgen::JsValue;
use worker::{Context, Env};

use crate::util::now_ms;

/// How long an isolate trusts its copy of the unhealthy set.
pub const HEALTH_CACHE_MS: u64 = 30_000;

/// How long a failed check keeps a credential out of rotation without a newer check.
pub const UNHEALTHY_TTL_MS: u64 = 15 * 60 * 1000;

#[derive(Default)]
struct HealthCache {
    fetched_ms: u64,
    refreshing: bool,
    unhealthy: HashSet<String>,
}

thread_local! {
    static BREAKERS: RefCell<HashMap<String, Breaker>> = RefCell::new(HashMap::new());
    static HEALTH: RefCell<HealthCache> = RefCell::new(HealthCache::default());
}

pub fn breaker_key(provider: &str, credential: &str) -> String {
    format!("{provider}/{credential}")
}

/// Whether the credential may be tried before the others: its breaker is closed (or
/// half-open) and its last health check did not fail.
pub fn allows(key: &str, now_ms: u64, config: &BreakerConfig) -> bool {
    !HEALTH.with(|h| h.borrow().unhealthy.contains(key))
        && BREAKERS.with(|b| {
            b.borrow()
                .get(key)
                .is_none_or(|br| br.allows(now_ms, config))
        })
}

/// Counts an attempt on the credential (a half-open breaker's probe). Candidates whose
/// breaker is open are still tried when nothing else is left, so the answer of
/// `try_acquire` only orders candidates (see [`allows`]), it never refuses one.
pub fn note_attempt(key: &str, now_ms: u64, config: &BreakerConfig) {
    BREAKERS.with(|b| {
        let _probe_allowed = b
            .borrow_mut()
            .entry(key.to_owned())
            .or_default()
            .try_acquire(now_ms, config);
    });
}

pub fn on_success(key: &str) {
    BREAKERS.with(|b| {
        if let Some(br) = b.borrow_mut().get_mut(key) {
            br.on_success();
        }
    });
}

/// Records a failed attempt, when it says something about the credential's health.
pub fn on_failure(key: &str, failure: AttemptFailure, now_ms: u64, config: &BreakerConfig) {
    if !counts_against_health(failure) {
        return;
    }
    BREAKERS.with(|b| {
        b.borrow_mut()
            .entry(key.to_owned())
            .or_default()
            .on_failure(now_ms, config)
    });
}

#[derive(Deserialize)]
struct FailedRow {
    provider_id: String,
    credential_id: String,
}

/// Re-reads the unhealthy set from D1 after the response, at most every
/// [`HEALTH_CACHE_MS`] per isolate: the request path never waits on it.
pub fn refresh_in_background(env: &Env, ctx: &Context) {
    let now = now_ms();
    let due = HEALTH.with(|h| {
        let mut h = h.borrow_mut();
        if h.refreshing || now.saturating_sub(h.fetched_ms) < HEALTH_CACHE_MS {
            return false;
        }
        h.refreshing = true;
        true
    });
    if !due {
        return;
    }
    let env = env.clone();
    ctx.wait_until(async move {
        let set = unhealthy_credentials(&env).await;
        HEALTH.with(|h| {
            let mut h = h.borrow_mut();
            h.unhealthy = set;
            h.fetched_ms = now_ms();
            h.refreshing = false;
        });
    });
}

/// Breaker keys of credentials whose last check failed within [`UNHEALTHY_TTL_MS`].
/// Empty on any D1 error: health data must never take the request path down.
async fn unhealthy_credentials(env: &Env) -> HashSet<String> {
    let since = now_ms().saturating_sub(UNHEALTHY_TTL_MS);
    let Ok(db) = crate::ledger::db(env) else {
        return HashSet::new();
    };
    let stmt = match db
        .prepare(
            "SELECT provider_id, credential_id FROM credential_health \
             WHERE ok = 0 AND checked_at >= ?1",
        )
        .bind(&[JsValue::from_f64(since as f64)])
    {
        Ok(s) => s,
        Err(_) => return HashSet::new(),
    };
    match stmt.all().await.and_then(|r| r.results::<FailedRow>()) {
        Ok(rows) => rows
            .into_iter()
            .map(|r| breaker_key(&r.provider_id, &r.credential_id))
            .collect(),
        Err(_) => HashSet::new(),
    }
}
