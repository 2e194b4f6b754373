//! Requests and tokens per minute, per key (key record `rpm`/`tpm`, scope `key:<id>`)
//! and per member on a plan (plan `rpm`/`tpm`, scope `member:<id>`), counted in D1 fixed
//! windows so every isolate sees the same count.
//!
//! The counting happens inside the admission batch ([`super::admit`]): each scope is one
//! atomic upsert-increment that only applies while the window has room, and marks the
//! row with the batch's claim; the reservation applies only when every scope's row
//! carries the claim, and the counts are given back in the same batch when it does not.
//! Tokens are counted with the reservation estimate and corrected to the actual usage at
//! settlement. A window's first request is admitted even if its estimate alone exceeds
//! the TPM (otherwise it could never run); "first" means no request was counted in the
//! window yet (`requests = 0`), which token corrections cannot reset.

use serde::{Deserialize, Serialize};
use tollbooth_core::catalogue::PlanLimits;
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;

use super::{inum, num, text};

/// Window length in seconds.
pub const WINDOW_SECS: u64 = 60;

/// "No limit" bound (the largest exact JS integer).
pub const UNLIMITED: u64 = super::MAX_SAFE;

/// One scope's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLimit {
    pub scope: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

/// What the request counted: settlement corrects `tokens` to the actual usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("retry-after".into(), self.reset_secs.to_string()),
            ("x-ratelimit-limit".into(), self.limit.to_string()),
            ("x-ratelimit-remaining".into(), self.remaining.to_string()),
            ("x-ratelimit-reset".into(), self.reset_secs.to_string()),
            (
                format!("x-ratelimit-limit-{}", self.dimension),
                self.limit.to_string(),
            ),
            (
                format!("x-ratelimit-remaining-{}", self.dimension),
                self.remaining.to_string(),
            ),
            (
                format!("x-ratelimit-reset-{}", self.dimension),
                format!("{}s", self.reset_secs),
            ),
        ]
    }

    /// The refusal of `scope` given its window's counts.
    pub fn for_scope(scope: &ScopeLimit, requests: u64, tokens: u64, reset_secs: u64) -> Self {
        let requests_full = scope
            .rpm
            .is_some_and(|rpm| requests.saturating_add(1) > rpm);
        match (requests_full, scope.rpm, scope.tpm) {
            (true, Some(rpm), _) | (false, Some(rpm), None) => RateLimitRefusal {
                dimension: "requests",
                limit: rpm,
                remaining: rpm.saturating_sub(requests),
                reset_secs,
            },
            (_, _, Some(tpm)) => RateLimitRefusal {
                dimension: "tokens",
                limit: tpm,
                remaining: tpm.saturating_sub(tokens),
                reset_secs,
            },
            _ => RateLimitRefusal {
                dimension: "requests",
                limit: 0,
                remaining: 0,
                reset_secs,
            },
        }
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

/// The start of the window containing `now`.
pub fn window_start(now: u64) -> u64 {
    now - now % WINDOW_SECS
}

/// Seconds until the window containing `now` ends (at least 1).
pub fn reset_secs(now: u64) -> u64 {
    (window_start(now) + WINDOW_SECS).saturating_sub(now).max(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_window_start_and_scopes() {
        assert_eq!(window_start(119), 60);
        assert_eq!(window_start(120), 120);
        assert_eq!(reset_secs(119), 1);
        assert_eq!(reset_secs(120), 60);
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
            app_id: None,
            byok: false,
            name: None,
            version: 0,
        };
        let scopes = scopes_for(&key, None);
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].scope, "key:k1");
        assert_eq!(scopes[0].rpm, Some(3));
    }

    #[test]
    fn test_refusal_names_the_dimension_that_ran_out() {
        let s = ScopeLimit {
            scope: "k".into(),
            rpm: Some(10),
            tpm: Some(100),
        };
        let r = RateLimitRefusal::for_scope(&s, 10, 5, 7);
        assert_eq!((r.dimension, r.limit, r.remaining), ("requests", 10, 0));
        let r = RateLimitRefusal::for_scope(&s, 3, 90, 7);
        assert_eq!((r.dimension, r.limit, r.remaining), ("tokens", 100, 10));
        assert!(r
            .headers()
            .iter()
            .any(|(k, v)| k == "retry-after" && v == "7"));
        assert_eq!(r.error().http_status(), 429);
    }
}
