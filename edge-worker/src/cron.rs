//! Cron Trigger health checks (`[triggers] crons` in wrangler.toml).
//!
//! For every credential of every enabled provider in the current catalogue, one cheap
//! authenticated probe — `GET {base_url}/models` with the provider's auth style (and
//! `anthropic-version` / Azure query parameters from the provider) — bounded by
//! [`PROBE_TIMEOUT_MS`]. The latest result per credential goes to D1
//! `credential_health` (migration 0002). [`unhealthy_credentials`] is what the router
//! reads to skip credentials whose last check failed recently; [`marked_unhealthy`] is
//! the isolate-cached form `breakers::allows` consults.
//!
//! Probe URLs pass the same SSRF check as every other upstream URL.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::{join_all, select, Either};
use serde::Deserialize;
use tollbooth_core::catalogue::{AuthStyle, Credential, Provider, ProviderKind};
use tollbooth_core::ssrf::{self, SsrfPolicy};
use worker::wasm_bindgen::JsValue;
use worker::{
    console_log, Context, Date, Delay, Env, Fetch, Headers, Method, Request, RequestInit,
};
use worker::{RequestRedirect, Result};

use crate::breakers::breaker_key;
use crate::catalogue;
use crate::config::Config;

/// Upper bound for one probe.
pub const PROBE_TIMEOUT_MS: u64 = 10_000;

/// How long a failed check keeps a credential out of rotation without a newer check.
pub const UNHEALTHY_TTL_MS: u64 = 15 * 60 * 1000;

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

fn allow_loopback(env: &Env) -> bool {
    Config::get(env)
        .map(|c| c.allow_loopback_upstreams)
        .unwrap_or(false)
}

/// Runs every probe and records the results. Never panics; failures are logged once.
pub async fn run_health_checks(env: &Env) {
    match check_all(env).await {
        Ok(n) => console_log!(
            "{}",
            serde_json::json!({"event": "credential_health", "checked": n})
        ),
        Err(e) => console_log!(
            "{}",
            serde_json::json!({"event": "credential_health", "error": e.to_string()})
        ),
    }
}

async fn check_all(env: &Env) -> Result<usize> {
    // TTL 0: always read the current pointer; nothing published = nothing to check.
    let Ok(catalogue) = catalogue::load(env, 0).await else {
        return Ok(0);
    };
    let policy = SsrfPolicy {
        allow_loopback: allow_loopback(env),
    };
    let probes = catalogue
        .snapshot()
        .providers
        .iter()
        .filter(|p| p.enabled)
        .flat_map(|p| p.credentials.iter().map(move |c| probe(p, c, policy)));
    let results = join_all(probes).await;
    record(env, &results).await?;
    Ok(results.len())
}

fn probe_url(p: &Provider) -> String {
    let mut url = format!("{}/models", p.base_url.trim_end_matches('/'));
    if !p.query.is_empty() {
        let q: Vec<String> = p.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        url.push('?');
        url.push_str(&q.join("&"));
    }
    url
}

async fn probe(p: &Provider, c: &Credential, policy: SsrfPolicy) -> ProbeResult {
    let started = Date::now().as_millis();
    let outcome = probe_inner(p, c, policy).await;
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

/// The upstream status, or a short reason (never the URL or the key).
async fn probe_inner(
    p: &Provider,
    c: &Credential,
    policy: SsrfPolicy,
) -> std::result::Result<u16, String> {
    let url = probe_url(p);
    ssrf::check_url(&url, policy).map_err(|e| format!("refused: {e}"))?;
    let headers = Headers::new();
    let set = |k: &str, v: &str| headers.set(k, v).map_err(|_| "bad header".to_owned());
    match p.auth_style() {
        AuthStyle::Bearer => set("authorization", &format!("Bearer {}", c.secret))?,
        AuthStyle::XApiKey => set("x-api-key", &c.secret)?,
        AuthStyle::Google => set("x-goog-api-key", &c.secret)?,
        AuthStyle::ApiKey => set("api-key", &c.secret)?,
    }
    if p.kind == ProviderKind::Anthropic && !p.headers.contains_key("anthropic-version") {
        set("anthropic-version", "2023-06-01")?;
    }
    for (k, v) in &p.headers {
        set(k, v)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get)
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    let req = Request::new_with_init(&url, &init).map_err(|_| "bad request".to_owned())?;
    let timeout = Duration::from_millis(p.timeout_ms.min(PROBE_TIMEOUT_MS));
    let fetcher = Fetch::Request(req);
    let fetch = Box::pin(fetcher.send());
    let delay = Box::pin(Delay::from(timeout));
    let outcome = match select(fetch, delay).await {
        Either::Left((Ok(resp), _)) => Ok(resp.status_code()),
        Either::Left((Err(_), _)) => Err("unreachable".to_owned()),
        Either::Right(_) => Err("timeout".to_owned()),
    };
    outcome
}

async fn record(env: &Env, results: &[ProbeResult]) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let db = env.d1("LEDGER")?;
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

#[derive(Deserialize)]
struct FailedRow {
    provider_id: String,
    credential_id: String,
}

/// How long an isolate trusts its copy of the unhealthy set.
const HEALTH_CACHE_MS: u64 = 30_000;

#[derive(Default)]
struct HealthCache {
    fetched_ms: u64,
    refreshing: bool,
    /// Breaker keys (`<provider>/<credential>`) whose last check failed.
    unhealthy: HashSet<String>,
}

thread_local! {
    static HEALTH: RefCell<HealthCache> = RefCell::new(HealthCache::default());
}

/// Whether the last health check of this credential (a breaker key,
/// `<provider>/<credential>`) failed. Synchronous and free: it reads the isolate's copy,
/// which [`refresh_in_background`] keeps fresh. The router treats such credentials like
/// open breakers: tried only after every healthy one.
pub fn marked_unhealthy(breaker_key: &str) -> bool {
    HEALTH.with(|h| h.borrow().unhealthy.contains(breaker_key))
}

/// Re-reads the unhealthy set from D1 after the response, at most every
/// [`HEALTH_CACHE_MS`] per isolate: the request path never waits on it.
pub fn refresh_in_background(env: &Env, ctx: &Context) {
    let now = Date::now().as_millis();
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
            h.unhealthy = set.into_iter().map(|(p, c)| breaker_key(&p, &c)).collect();
            h.fetched_ms = Date::now().as_millis();
            h.refreshing = false;
        });
    });
}

/// `(provider id, credential id)` pairs whose last check failed within
/// [`UNHEALTHY_TTL_MS`]. Empty on any D1 error: health data must never take the
/// request path down.
pub async fn unhealthy_credentials(env: &Env) -> HashSet<(String, String)> {
    let since = Date::now().as_millis().saturating_sub(UNHEALTHY_TTL_MS);
    let Ok(db) = env.d1("LEDGER") else {
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
            .map(|r| (r.provider_id, r.credential_id))
            .collect(),
        Err(_) => HashSet::new(),
    }
}
