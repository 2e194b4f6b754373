//! Requests and tokens per minute, per key (key record `rpm`/`tpm`) and per member on a
//! plan (plan `rpm`/`tpm`), counted in D1 fixed windows so every isolate sees the same
//! count.
//!
//! Each scope is one atomic upsert-increment that only applies while the window has room
//! (`ON CONFLICT ... DO UPDATE ... WHERE requests + 1 <= rpm`); `RETURNING` tells whether
//! it applied. When one scope admits and another refuses, the admitted increment is
//! undone. Tokens are counted with the reservation estimate and corrected to the actual
//! usage at settlement.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Deserialize;
use tollbooth_core::catalogue::PlanLimits;
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use worker::{D1Database, Headers, Response};

use crate::ledger::{inum, num, stmt, text};

/// Window length in seconds.
pub const WINDOW_SECS: u64 = 60;

/// "No limit" bound (the largest exact JS integer).
const UNLIMITED: u64 = (1 << 53) - 1;

/// One scope's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLimit {
    pub scope: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

/// What the request counted: settlement corrects `tokens` to the actual usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateTicket {
    pub window_start: u64,
    pub scopes: Vec<String>,
    pub tokens: u64,
}

/// A refusal with the numbers for the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRefusal {
    /// `requests` or `tokens`.
    pub dimension: &'static str,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets (>= 1).
    pub reset_secs: u64,
}

impl RateLimitRefusal {
    pub fn error(&self) -> GatewayError {
        GatewayError::RateLimited {
            message: format!(
                "Rate limit reached: {} {} per minute; retry in {} s.",
                self.limit, self.dimension, self.reset_secs
            ),
            retry_after_secs: Some(self.reset_secs),
        }
    }

    /// `Retry-After` and `x-ratelimit-*` headers for the 429.
    pub fn apply_headers(&self, headers: &mut Headers) -> worker::Result<()> {
        headers.set("retry-after", &self.reset_secs.to_string())?;
        headers.set("x-ratelimit-limit", &self.limit.to_string())?;
        headers.set("x-ratelimit-remaining", &self.remaining.to_string())?;
        headers.set("x-ratelimit-reset", &self.reset_secs.to_string())?;
        headers.set(
            &format!("x-ratelimit-limit-{}", self.dimension),
            &self.limit.to_string(),
        )?;
        headers.set(
            &format!("x-ratelimit-remaining-{}", self.dimension),
            &self.remaining.to_string(),
        )?;
        headers.set(
            &format!("x-ratelimit-reset-{}", self.dimension),
            &format!("{}s", self.reset_secs),
        )?;
        Ok(())
    }
}

/// The scopes that apply to a key: its own limits, and its plan's limits per member.
pub fn scopes_for(key: &KeyRecord, plan: Option<&PlanLimits>) -> Vec<ScopeLimit> {
    let mut out = Vec::new();
    if key.rpm.is_some() || key.tpm.is_some() {
        out.push(ScopeLimit {
            scope: format!("key:{}", key.public_id),
            rpm: key.rpm.map(u64::from),
            tpm: key.tpm,
        });
    }
    if let Some(plan) = plan.filter(|p| p.rpm.is_some() || p.tpm.is_some()) {
        out.push(ScopeLimit {
            scope: format!("member:{}", key.member_id),
            rpm: plan.rpm.map(u64::from),
            tpm: plan.tpm,
        });
    }
    out
}

#[derive(Deserialize)]
struct WindowRow {
    requests: i64,
    tokens: i64,
}

/// The start of the window containing `now`.
pub fn window_start(now: u64) -> u64 {
    now - now % WINDOW_SECS
}

/// Counts one request of `tokens` estimated tokens in every scope, or refuses.
pub async fn check_and_count(
    db: &D1Database,
    scopes: &[ScopeLimit],
    tokens: u64,
    now: u64,
) -> Result<RateTicket, RateCheckError> {
    let start = window_start(now);
    let reset_secs = (start + WINDOW_SECS).saturating_sub(now).max(1);
    if scopes.is_empty() {
        return Ok(RateTicket {
            window_start: start,
            scopes: Vec::new(),
            tokens,
        });
    }
    if let Some(s) = scopes.iter().find(|s| s.rpm == Some(0)) {
        let _ = s;
        return Err(RateCheckError::Refused(RateLimitRefusal {
            dimension: "requests",
            limit: 0,
            remaining: 0,
            reset_secs,
        }));
    }
    // A window's first request is admitted even if its estimate alone exceeds the TPM
    // (`tokens = 0 OR ...`): otherwise a large request could never run.
    let sql = "INSERT INTO rate_windows (scope, window_start, requests, tokens) \
               VALUES (?1, ?2, 1, ?3) \
               ON CONFLICT (scope, window_start) DO UPDATE SET \
                 requests = requests + 1, tokens = tokens + excluded.tokens \
               WHERE requests + 1 <= ?4 AND (tokens = 0 OR tokens + excluded.tokens <= ?5) \
               RETURNING requests, tokens";
    let mut batch = Vec::with_capacity(scopes.len());
    for s in scopes {
        batch.push(
            stmt(
                db,
                sql,
                &[
                    text(&s.scope),
                    num(start),
                    num(tokens),
                    num(s.rpm.unwrap_or(UNLIMITED)),
                    num(s.tpm.unwrap_or(UNLIMITED)),
                ],
            )
            .map_err(RateCheckError::Db)?,
        );
    }
    let results = db.batch(batch).await.map_err(RateCheckError::Db)?;
    let mut admitted = Vec::new();
    let mut refused = None;
    for (s, r) in scopes.iter().zip(results.iter()) {
        let rows: Vec<WindowRow> = r.results().map_err(RateCheckError::Db)?;
        if rows.is_empty() {
            refused.get_or_insert(s);
        } else {
            admitted.push(s);
        }
    }
    let Some(refused) = refused else {
        return Ok(RateTicket {
            window_start: start,
            scopes: scopes.iter().map(|s| s.scope.clone()).collect(),
            tokens,
        });
    };
    // Undo the scopes that did count this request.
    if !admitted.is_empty() {
        let undo = "UPDATE rate_windows SET requests = MAX(0, requests - 1), \
                    tokens = MAX(0, tokens - ?3) WHERE scope = ?1 AND window_start = ?2";
        let mut batch = Vec::new();
        for s in admitted {
            batch.push(
                stmt(db, undo, &[text(&s.scope), num(start), num(tokens)])
                    .map_err(RateCheckError::Db)?,
            );
        }
        db.batch(batch).await.map_err(RateCheckError::Db)?;
    }
    let row: Option<WindowRow> = stmt(
        db,
        "SELECT requests, tokens FROM rate_windows WHERE scope = ?1 AND window_start = ?2",
        &[text(&refused.scope), num(start)],
    )
    .map_err(RateCheckError::Db)?
    .first(None)
    .await
    .map_err(RateCheckError::Db)?;
    let (used_requests, used_tokens) = row.map_or((0, 0), |r| {
        (
            crate::ledger::non_negative(r.requests),
            crate::ledger::non_negative(r.tokens),
        )
    });
    let requests_full = refused
        .rpm
        .is_some_and(|rpm| used_requests.saturating_add(1) > rpm);
    let refusal = match (requests_full, refused.rpm, refused.tpm) {
        (true, Some(rpm), _) | (false, Some(rpm), None) => RateLimitRefusal {
            dimension: "requests",
            limit: rpm,
            remaining: rpm.saturating_sub(used_requests),
            reset_secs,
        },
        (_, _, Some(tpm)) => RateLimitRefusal {
            dimension: "tokens",
            limit: tpm,
            remaining: tpm.saturating_sub(used_tokens),
            reset_secs,
        },
        _ => RateLimitRefusal {
            dimension: "requests",
            limit: 0,
            remaining: 0,
            reset_secs,
        },
    };
    Err(RateCheckError::Refused(refusal))
}

/// Corrects the counted tokens to the actual usage (settlement). Part of the settle batch.
pub fn correction_sql() -> &'static str {
    "UPDATE rate_windows SET tokens = MAX(0, tokens + ?3) \
     WHERE scope = ?1 AND window_start = ?2 \
       AND EXISTS (SELECT 1 FROM reservations WHERE request_id = ?4 AND claim = ?5)"
}

/// Binds [`correction_sql`].
pub fn correction_params(
    scope: &str,
    window_start: u64,
    delta: i64,
    request_id: &str,
    claim: &str,
) -> [worker::wasm_bindgen::JsValue; 5] {
    [
        text(scope),
        num(window_start),
        inum(delta),
        text(request_id),
        text(claim),
    ]
}

thread_local! {
    /// Refusals waiting for their 429 response, by request id (the router renders the
    /// error; [`decorate_refusal`] adds the `x-ratelimit-*` headers to it).
    static REFUSALS: RefCell<HashMap<String, RateLimitRefusal>> = RefCell::new(HashMap::new());
}

/// Remembers a refusal until its response is decorated.
pub fn remember_refusal(request_id: &str, refusal: RateLimitRefusal) {
    REFUSALS.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() > 1024 {
            r.clear();
        }
        r.insert(request_id.to_string(), refusal);
    });
}

/// Adds `Retry-After` and `x-ratelimit-*` to a 429 this isolate refused (matched by the
/// response's `x-request-id`).
pub fn decorate_refusal(resp: Response) -> Response {
    if resp.status_code() != 429 {
        return resp;
    }
    let id = resp.headers().get("x-request-id").ok().flatten();
    let refusal = id.and_then(|id| REFUSALS.with(|r| r.borrow_mut().remove(&id)));
    if let Some(refusal) = refusal {
        let mut resp = resp;
        let _ = refusal.apply_headers(resp.headers_mut());
        return resp;
    }
    resp
}

/// Why a rate check did not admit.
#[derive(Debug)]
pub enum RateCheckError {
    Refused(RateLimitRefusal),
    Db(worker::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_window_start_and_scopes() {
        assert_eq!(window_start(119), 60);
        assert_eq!(window_start(120), 120);
        let key = KeyRecord {
            public_id: "k1".into(),
            secret_hash: String::new(),
            member_id: "m1".into(),
            plan_id: "p".into(),
            status: Default::default(),
            role: Default::default(),
            expires_at: None,
            allowed_models: None,
            rpm: Some(3),
            tpm: None,
            capture: false,
            name: None,
        };
        let scopes = scopes_for(&key, None);
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].scope, "key:k1");
        assert_eq!(scopes[0].rpm, Some(3));
    }
}
