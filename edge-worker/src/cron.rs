//! The Cron Trigger (`[triggers] crons` in wrangler.toml), every 5 minutes:
//!
//! 1. health checks: for every credential of every enabled provider, one cheap
//!    authenticated probe (`tollbooth_core::provider::models_probe`: `GET
//!    {base_url}/models` in the provider's auth style), bounded by [`PROBE_TIMEOUT_MS`];
//!    the latest result per credential goes to D1 `credential_health`, which
//!    [`crate::breakers`] reads to try failing credentials last;
//! 2. the sweep: expired reservations are charged their reserved amount;
//! 3. pending settlements are finished;
//! 4. retention: old usage events, settled reservations, idempotency records, rate
//!    windows and replay records are pruned; captured conversations older than the
//!    catalogue's `settings.capture.retention_days` are deleted (R2 bodies and D1 rows).
//!
//! Probe URLs pass the same SSRF check as every other upstream URL.

use futures_util::future::join_all;
use serde_json::json;
use tollbooth_core::catalogue::{Credential, Provider};
use tollbooth_core::provider::models_probe;
use tollbooth_core::routing::AttemptFailure;
use worker::wasm_bindgen::JsValue;
use worker::{Date, Env, Result};

use crate::catalogue;
use crate::config::Config;
use crate::context::{log_error, log_event};
use crate::ledger;
use crate::upstream;

/// Upper bound for one probe.
pub const PROBE_TIMEOUT_MS: u64 = 10_000;

/// Rows each table may lose per run (bounded work per cron invocation).
const PRUNE_LIMIT: u64 = 5_000;

/// Conversations capture retention may delete per run.
const CAPTURE_PRUNE_LIMIT: u64 = 500;

/// The outcome of one probe.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub provider_id: String,
    pub credential_id: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// Everything the scheduled handler does. Never panics; failures are logged.
pub async fn run(env: &Env) {
    ledger::clock::reset();
    let config = match Config::get(env) {
        Ok(c) => c,
        Err(e) => {
            log_error("cron: invalid configuration", json!({ "error": e }));
            return;
        }
    };
    match check_all(env, &config).await {
        Ok(n) => log_event("credential_health", json!({ "checked": n })),
        Err(e) => log_error("credential_health", json!({ "error": e.to_string() })),
    }
    let Ok(db) = ledger::db(env) else {
        log_error("cron: ledger unavailable", json!({}));
        return;
    };
    let now = ledger::clock::now();
    match ledger::sweep::charge_expired(&db, now, 500).await {
        Ok(n) if n > 0 => log_event("expired reservations charged", json!({ "count": n })),
        Ok(_) => {}
        Err(e) => log_error(
            "reservation sweep failed",
            json!({ "error": e.to_string() }),
        ),
    }
    if let Err(e) = ledger::pending::finish_all(env, &db, 100).await {
        log_error(
            "pending settlements failed",
            json!({ "error": e.to_string() }),
        );
    }
    match ledger::sweep::prune(&db, now, config.usage_retention_days, PRUNE_LIMIT).await {
        Ok(p) => log_event("ledger pruned", json!({ "pruned": p })),
        Err(e) => log_error("ledger pruning failed", json!({ "error": e.to_string() })),
    }
    // Capture retention (`settings.capture.retention_days` of the catalogue).
    if let Ok(catalogue) = catalogue::load(env, 0).await {
        let days = catalogue.settings().capture.retention_days;
        match crate::capture::review::prune(env, &db, now, days, CAPTURE_PRUNE_LIMIT).await {
            Ok(n) if n > 0 => log_event("captures pruned", json!({ "captures": n })),
            Ok(_) => {}
            Err(_) => log_error("capture retention failed", json!({})),
        }
    }
}

async fn check_all(env: &Env, config: &Config) -> Result<usize> {
    // TTL 0: always read the current pointer; nothing published = nothing to check.
    let Ok(catalogue) = catalogue::load(env, 0).await else {
        return Ok(0);
    };
    let allow_loopback = config.hooks.allow_loopback;
    let probes = catalogue
        .snapshot()
        .providers
        .iter()
        .filter(|p| p.enabled)
        .flat_map(|p| {
            p.credentials
                .iter()
                .map(move |c| probe(p, c, allow_loopback))
        });
    let results = join_all(probes).await;
    record(env, &results).await?;
    Ok(results.len())
}

async fn probe(p: &Provider, c: &Credential, allow_loopback: bool) -> ProbeResult {
    let started = Date::now().as_millis();
    let outcome = match models_probe(p, c, allow_loopback) {
        Err(_) => Err("refused: address not allowed".to_owned()),
        Ok(req) => {
            match upstream::send(&req, p.timeout_ms.clamp(1, PROBE_TIMEOUT_MS), None).await {
                Ok((resp, _)) => Ok(resp.status_code()),
                Err(AttemptFailure::Timeout) => Err("timeout".to_owned()),
                Err(_) => Err("unreachable".to_owned()),
            }
        }
    };
    let latency_ms = Date::now().as_millis().saturating_sub(started);
    let (ok, status, error) = match outcome {
        Ok(s) if (200..300).contains(&s) => (true, Some(s), None),
        Ok(s) => (false, Some(s), Some(format!("status {s}"))),
        Err(e) => (false, None, Some(e)),
    };
    ProbeResult {
        provider_id: p.id.clone(),
        credential_id: c.id.clone(),
        ok,
        status,
        latency_ms,
        error,
    }
}

async fn record(env: &Env, results: &[ProbeResult]) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let db = ledger::db(env)?;
    let now = Date::now().as_millis();
    let mut statements = Vec::with_capacity(results.len());
    for r in results {
        let status = r
            .status
            .map(|s| JsValue::from_f64(f64::from(s)))
            .unwrap_or(JsValue::NULL);
        let error = r
            .error
            .as_deref()
            .map(JsValue::from_str)
            .unwrap_or(JsValue::NULL);
        statements.push(
            db.prepare(
                "INSERT INTO credential_health \
                 (provider_id, credential_id, ok, status, latency_ms, error, consecutive_failures, checked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?3 = 1 THEN 0 ELSE 1 END, ?7) \
                 ON CONFLICT (provider_id, credential_id) DO UPDATE SET \
                 ok = excluded.ok, status = excluded.status, latency_ms = excluded.latency_ms, \
                 error = excluded.error, checked_at = excluded.checked_at, \
                 consecutive_failures = CASE WHEN excluded.ok = 1 THEN 0 \
                   ELSE credential_health.consecutive_failures + 1 END",
            )
            .bind(&[
                JsValue::from_str(&r.provider_id),
                JsValue::from_str(&r.credential_id),
                JsValue::from_f64(if r.ok { 1.0 } else { 0.0 }),
                status,
                JsValue::from_f64(r.latency_ms as f64),
                error,
                JsValue::from_f64(now as f64),
            ])?,
        );
    }
    db.batch(statements).await?;
    Ok(())
}
