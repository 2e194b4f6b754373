//! Errors the gateway returns to its callers, and secret redaction for anything that
//! ends up in an error body or a log line.
//!
//! Every [`GatewayError`] maps to exactly one HTTP status ([`GatewayError::http_status`]),
//! to the OpenAI error body ([`GatewayError::openai_body`]) and to the Anthropic error body
//! ([`GatewayError::anthropic_body`], used on `/v1/messages`).
//!
//! | kind | status | OpenAI `type` / default `code` | Anthropic `type` |
//! |---|---|---|---|
//! | `InvalidRequest` | 400 | `invalid_request_error` / – | `invalid_request_error` |
//! | `Authentication` | 401 | `authentication_error` / `invalid_api_key` | `authentication_error` |
//! | `PermissionDenied` | 403 | `permission_error` / `model_not_allowed` … | `permission_error` |
//! | `NotFound` | 404 | `not_found_error` / e.g. `model_not_found` | `not_found_error` |
//! | `PayloadTooLarge` | 413 | `invalid_request_error` / `request_too_large` | `request_too_large` |
//! | `InsufficientQuota` | **402** | `insufficient_quota` / `insufficient_quota` | `billing_error` |
//! | `RateLimited` | 429 | `rate_limit_error` / `rate_limit_exceeded` | `rate_limit_error` |
//! | `Upstream` | 502 | `upstream_error` / `upstream_error` | `api_error` |
//! | `UpstreamTimeout` | 504 | `upstream_error` / `upstream_timeout` | `api_error` |
//! | `Overloaded` | 503 | `server_error` / `overloaded` | `overloaded_error` |
//! | `Internal` | 500 | `server_error` / `internal_error` | `api_error` |
//!
//! Quota exhaustion is **402**, not OpenAI's 429: the OpenAI and Anthropic SDKs retry 429
//! automatically, and retrying an empty wallet only wastes the caller's time; 402 also
//! keeps "slow down" and "pay" apart for dashboards. Anthropic itself uses 402
//! `billing_error` for this case.
//!
//! Messages are passed through [`redact_secrets`] when rendered (Display and both bodies),
//! so a provider key that slipped into an upstream message does not reach the caller.

use serde_json::{json, Value};

/// An error returned to the gateway's caller. Messages are safe to show (see the module
/// docs); never build one from an upstream URL or header without [`redact_secrets`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed or semantically invalid.
    #[error("{}", redact_secrets(.message))]
    InvalidRequest {
        message: String,
        /// The offending request parameter, e.g. `messages` or `max_tokens`.
        param: Option<String>,
        /// A machine-readable code, e.g. `context_length_exceeded`.
        code: Option<String>,
    },
    /// Missing, malformed, unknown, expired or disabled key/token.
    #[error("{}", redact_secrets(.message))]
    Authentication {
        message: String,
        code: Option<String>,
    },
    /// Authenticated, but the plan or key does not allow this (model, endpoint, IP, ...).
    #[error("{}", redact_secrets(.message))]
    PermissionDenied {
        message: String,
        code: Option<String>,
    },
    /// The resource does not exist (for the caller), e.g. `model_not_found`.
    #[error("{}", redact_secrets(.message))]
    NotFound {
        message: String,
        code: Option<String>,
    },
    /// The request body exceeds the limit.
    #[error("{}", redact_secrets(.message))]
    PayloadTooLarge {
        message: String,
        limit_bytes: Option<u64>,
    },
    /// The member's wallet or plan allowance cannot cover the request.
    #[error("{}", redact_secrets(.message))]
    InsufficientQuota {
        message: String,
        /// What ran out, e.g. `balance`, `tokens`, `requests`, `characters`.
        exhausted: String,
    },
    /// A gateway rate limit was hit.
    #[error("{}", redact_secrets(.message))]
    RateLimited {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// The upstream failed (after retries/fallbacks); `status` is the upstream's status,
    /// for logs; the caller always sees 502.
    #[error("{}", redact_secrets(.message))]
    Upstream { status: u16, message: String },
    /// The upstream did not answer in time.
    #[error("{}", redact_secrets(.message))]
    UpstreamTimeout { message: String },
    /// No deployment can take the request right now (all breakers open, upstream
    /// overloaded).
    #[error("{}", redact_secrets(.message))]
    Overloaded {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// A bug or an unavailable dependency of the gateway itself.
    #[error("{}", redact_secrets(.message))]
    Internal { message: String },
}

impl GatewayError {
    /// A 400 with a message.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 400 naming the offending parameter.
    pub fn invalid_param(message: impl Into<String>, param: impl Into<String>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// A 401 `invalid_api_key`. The message never echoes the key.
    pub fn invalid_api_key() -> Self {
        GatewayError::Authentication {
            message: "Incorrect API key provided.".into(),
            code: Some("invalid_api_key".into()),
        }
    }

    /// A 401 with a custom message and code (e.g. `missing_api_key`, `key_expired`).
    pub fn authentication(message: impl Into<String>, code: impl Into<String>) -> Self {
        GatewayError::Authentication {
            message: message.into(),
            code: Some(code.into()),
        }
    }

    /// A 403 (e.g. code `model_not_allowed`).
    pub fn permission_denied(message: impl Into<String>, code: impl Into<String>) -> Self {
        GatewayError::PermissionDenied {
            message: message.into(),
            code: Some(code.into()),
        }
    }

    /// A 404 `model_not_found` for `model`.
    pub fn model_not_found(model: &str) -> Self {
        GatewayError::NotFound {
            message: format!("The model `{model}` does not exist or you do not have access to it."),
            code: Some("model_not_found".into()),
        }
    }

    /// A 413 for a body over `limit_bytes`.
    pub fn payload_too_large(limit_bytes: u64) -> Self {
        GatewayError::PayloadTooLarge {
            message: format!("Request body exceeds the maximum size of {limit_bytes} bytes."),
            limit_bytes: Some(limit_bytes),
        }
    }

    /// A 402 saying what ran out (`balance`, `tokens`, ...).
    pub fn insufficient_quota(exhausted: impl Into<String>) -> Self {
        let exhausted = exhausted.into();
        GatewayError::InsufficientQuota {
            message: format!(
                "You exceeded your current quota ({exhausted}); check your plan and balance."
            ),
            exhausted,
        }
    }

    /// A 429 with an optional Retry-After.
    pub fn rate_limited(retry_after_secs: Option<u64>) -> Self {
        GatewayError::RateLimited {
            message: "Rate limit reached; slow down and retry later.".into(),
            retry_after_secs,
        }
    }

    /// A 500; `message` should be generic (details go to the log, redacted).
    pub fn internal(message: impl Into<String>) -> Self {
        GatewayError::Internal {
            message: message.into(),
        }
    }

    /// Classifies an upstream's final non-success status (after retries and fallbacks)
    /// into what the caller should see. `message` must already be safe to show; it is
    /// redacted again on rendering anyway.
    ///
    /// - 400, 422 → `InvalidRequest` (the caller's request was at fault, e.g. too long)
    /// - 413 → `PayloadTooLarge`
    /// - 429 → `RateLimited` (the provider throttled us; the caller may retry later)
    /// - 503, 529 → `Overloaded`
    /// - 504 → `UpstreamTimeout`
    /// - anything else, including 401/403/404 (our credential or catalogue is wrong, not
    ///   the caller's key or model) → `Upstream` (502).
    pub fn from_upstream_status(status: u16, message: impl Into<String>) -> Self {
        let message = message.into();
        match status {
            400 | 422 => GatewayError::InvalidRequest {
                message,
                param: None,
                code: None,
            },
            413 => GatewayError::PayloadTooLarge {
                message,
                limit_bytes: None,
            },
            429 => GatewayError::RateLimited {
                message,
                retry_after_secs: None,
            },
            503 | 529 => GatewayError::Overloaded {
                message,
                retry_after_secs: None,
            },
            504 => GatewayError::UpstreamTimeout { message },
            _ => GatewayError::Upstream { status, message },
        }
    }

    /// The HTTP status the caller receives.
    pub fn http_status(&self) -> u16 {
        match self {
            GatewayError::InvalidRequest { .. } => 400,
            GatewayError::Authentication { .. } => 401,
            GatewayError::InsufficientQuota { .. } => 402,
            GatewayError::PermissionDenied { .. } => 403,
            GatewayError::NotFound { .. } => 404,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::Internal { .. } => 500,
            GatewayError::Upstream { .. } => 502,
            GatewayError::Overloaded { .. } => 503,
            GatewayError::UpstreamTimeout { .. } => 504,
        }
    }

    /// The raw (unredacted) message.
    fn raw_message(&self) -> &str {
        match self {
            GatewayError::InvalidRequest { message, .. }
            | GatewayError::Authentication { message, .. }
            | GatewayError::PermissionDenied { message, .. }
            | GatewayError::NotFound { message, .. }
            | GatewayError::PayloadTooLarge { message, .. }
            | GatewayError::InsufficientQuota { message, .. }
            | GatewayError::RateLimited { message, .. }
            | GatewayError::Upstream { message, .. }
            | GatewayError::UpstreamTimeout { message }
            | GatewayError::Overloaded { message, .. }
            | GatewayError::Internal { message } => message,
        }
    }

    /// The message as shown to callers, with secrets redacted.
    pub fn safe_message(&self) -> String {
        redact_secrets(self.raw_message())
    }

    /// The value for a `Retry-After` header, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited {
                retry_after_secs, ..
            }
            | GatewayError::Overloaded {
                retry_after_secs, ..
            } => *retry_after_secs,
            _ => None,
        }
    }

    /// The OpenAI `error.type`.
    pub fn openai_type(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { .. } | GatewayError::PayloadTooLarge { .. } => {
                "invalid_request_error"
            }
            GatewayError::Authentication { .. } => "authentication_error",
            GatewayError::PermissionDenied { .. } => "permission_error",
            GatewayError::NotFound { .. } => "not_found_error",
            GatewayError::InsufficientQuota { .. } => "insufficient_quota",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::Upstream { .. } | GatewayError::UpstreamTimeout { .. } => {
                "upstream_error"
            }
            GatewayError::Overloaded { .. } | GatewayError::Internal { .. } => "server_error",
        }
    }

    /// The OpenAI `error.code` (a specific code if one was given, else the kind's default).
    pub fn openai_code(&self) -> Option<String> {
        let fixed = |s: &str| Some(s.to_string());
        match self {
            GatewayError::InvalidRequest { code, .. } => code.clone(),
            GatewayError::Authentication { code, .. } => {
                code.clone().or_else(|| fixed("invalid_api_key"))
            }
            GatewayError::PermissionDenied { code, .. } => code.clone(),
            GatewayError::NotFound { code, .. } => code.clone(),
            GatewayError::PayloadTooLarge { .. } => fixed("request_too_large"),
            GatewayError::InsufficientQuota { .. } => fixed("insufficient_quota"),
            GatewayError::RateLimited { .. } => fixed("rate_limit_exceeded"),
            GatewayError::Upstream { .. } => fixed("upstream_error"),
            GatewayError::UpstreamTimeout { .. } => fixed("upstream_timeout"),
            GatewayError::Overloaded { .. } => fixed("overloaded"),
            GatewayError::Internal { .. } => fixed("internal_error"),
        }
    }

    /// The OpenAI `error.param`.
    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// The Anthropic `error.type`.
    pub fn anthropic_type(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { .. } => "invalid_request_error",
            GatewayError::Authentication { .. } => "authentication_error",
            GatewayError::InsufficientQuota { .. } => "billing_error",
            GatewayError::PermissionDenied { .. } => "permission_error",
            GatewayError::NotFound { .. } => "not_found_error",
            GatewayError::PayloadTooLarge { .. } => "request_too_large",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::Overloaded { .. } => "overloaded_error",
            GatewayError::Upstream { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::Internal { .. } => "api_error",
        }
    }

    /// `{"error":{"message","type","code","param"}}` (code and param may be null).
    pub fn openai_body(&self) -> Value {
        json!({
            "error": {
                "message": self.safe_message(),
                "type": self.openai_type(),
                "code": self.openai_code(),
                "param": self.param(),
            }
        })
    }

    /// `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> Value {
        json!({
            "type": "error",
            "error": {
                "type": self.anthropic_type(),
                "message": self.safe_message(),
            }
        })
    }
}

/// What replaces a redacted secret.
pub const REDACTED: &str = "***";

/// Query/form parameter names (matched case-insensitively as suffixes, so `api_key=` and
/// `x-goog-api-key=` are covered by `key=`) whose values are redacted.
const SECRET_PARAMS: &[&str] = &[
    "key=",
    "token=",
    "secret=",
    "password=",
    "passwd=",
    "signature=",
    "sig=",
    "credential=",
];

/// Header-like and JSON-like prefixes (case-insensitive) whose value is redacted:
/// `x-api-key: ...`, `api-key: ...` (Azure), `x-goog-api-key: ...`, `"api_key": "..."`.
const SECRET_HEADERS: &[&str] = &[
    "api-key:",
    "api_key:",
    "apikey:",
    "key\":",
    "token\":",
    "secret\":",
    "password\":",
];

/// Auth schemes whose credential is redacted: `Bearer <token>`, `Basic <creds>`. Only
/// credential-length values (>= 8 chars) count, so prose like "the bearer of" survives.
const SECRET_SCHEMES: &[&str] = &["bearer ", "basic "];
const MIN_SCHEME_CREDENTIAL: usize = 8;

/// Removes things that look like credentials from `text` before it goes into an error or
/// a log line:
/// - `sk-...` keys (OpenAI, Anthropic `sk-ant-...`, our own `sk-<id>-<secret>`): `sk-***`
/// - Google API keys (`AIza...`)
/// - values of `key=`, `token=`, `secret=`, `password=`, `sig=`, ... parameters
///   (so `?key=...` in a Gemini URL), up to `&`, whitespace or a quote
/// - `Bearer <token>` / `Basic <creds>`
/// - `api-key: <value>` style headers
///
/// Over-redaction (e.g. `monkey=banana`) is accepted; missing a secret is not.
pub fn redact_secrets(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match secret_at(bytes, i) {
            Some((start, end)) => {
                // Patterns are ASCII, so start and end are char boundaries.
                out.push_str(text.get(copied..start).unwrap_or_default());
                out.push_str(REDACTED);
                copied = end;
                i = end.max(i.saturating_add(1));
            }
            None => i = i.saturating_add(1),
        }
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

/// If a secret starts at (or right after a recognised prefix at) `i`, the byte range of
/// the secret itself.
fn secret_at(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    let rest = bytes.get(i..)?;
    let prev = i.checked_sub(1).and_then(|p| bytes.get(p)).copied();
    let at_word_start = prev.is_none_or(|b| !b.is_ascii_alphanumeric());

    if at_word_start && rest.starts_with(b"sk-") {
        let start = i.saturating_add(3);
        let end = scan(bytes, start, is_key_char);
        if end.saturating_sub(start) >= 8 {
            return Some((start, end));
        }
    }
    if at_word_start && rest.starts_with(b"AIza") {
        let end = scan(bytes, i, is_key_char);
        if end.saturating_sub(i) >= 30 {
            return Some((i, end));
        }
    }
    for scheme in SECRET_SCHEMES {
        if at_word_start && starts_with_ignore_case(rest, scheme.as_bytes()) {
            let start = scan(bytes, i.saturating_add(scheme.len()), |b| b == b' ');
            let end = scan(bytes, start, is_value_char);
            if end.saturating_sub(start) >= MIN_SCHEME_CREDENTIAL {
                return Some((start, end));
            }
        }
    }
    for param in SECRET_PARAMS {
        if starts_with_ignore_case(rest, param.as_bytes()) {
            let start = skip_quote(bytes, i.saturating_add(param.len()));
            let end = scan(bytes, start, is_value_char);
            if end > start {
                return Some((start, end));
            }
        }
    }
    for header in SECRET_HEADERS {
        if starts_with_ignore_case(rest, header.as_bytes()) {
            let start = scan(bytes, i.saturating_add(header.len()), |b| b == b' ');
            let start = skip_quote(bytes, start);
            let end = scan(bytes, start, is_value_char);
            if end > start {
                return Some((start, end));
            }
        }
    }
    None
}

fn scan(bytes: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    let len = bytes
        .get(from..)
        .map_or(0, |rest| rest.iter().take_while(|&&b| pred(b)).count());
    from.saturating_add(len)
}

/// Skips one opening quote, so quoted values (`key="..."`, `"key": "..."`) are found.
fn skip_quote(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(b'"' | b'\'') => at.saturating_add(1),
        _ => at,
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_value_char(b: u8) -> bool {
    !(b.is_ascii_whitespace()
        || matches!(
            b,
            b'&' | b'"' | b'\'' | b'<' | b'>' | b'#' | b',' | b';' | b')' | b']' | b'}' | b'`'
        ))
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_status_and_bodies_for_each_kind() {
        let cases: Vec<(GatewayError, u16, &str, Option<&str>, &str)> = vec![
            (
                GatewayError::invalid_param("bad", "max_tokens"),
                400,
                "invalid_request_error",
                None,
                "invalid_request_error",
            ),
            (
                GatewayError::invalid_api_key(),
                401,
                "authentication_error",
                Some("invalid_api_key"),
                "authentication_error",
            ),
            (
                GatewayError::permission_denied("no", "model_not_allowed"),
                403,
                "permission_error",
                Some("model_not_allowed"),
                "permission_error",
            ),
            (
                GatewayError::model_not_found("gpt-9"),
                404,
                "not_found_error",
                Some("model_not_found"),
                "not_found_error",
            ),
            (
                GatewayError::payload_too_large(1024),
                413,
                "invalid_request_error",
                Some("request_too_large"),
                "request_too_large",
            ),
            (
                GatewayError::insufficient_quota("balance"),
                402,
                "insufficient_quota",
                Some("insufficient_quota"),
                "billing_error",
            ),
            (
                GatewayError::rate_limited(Some(3)),
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                "rate_limit_error",
            ),
            (
                GatewayError::Upstream {
                    status: 500,
                    message: "boom".into(),
                },
                502,
                "upstream_error",
                Some("upstream_error"),
                "api_error",
            ),
            (
                GatewayError::UpstreamTimeout {
                    message: "slow".into(),
                },
                504,
                "upstream_error",
                Some("upstream_timeout"),
                "api_error",
            ),
            (
                GatewayError::Overloaded {
                    message: "busy".into(),
                    retry_after_secs: None,
                },
                503,
                "server_error",
                Some("overloaded"),
                "overloaded_error",
            ),
            (
                GatewayError::internal("oops"),
                500,
                "server_error",
                Some("internal_error"),
                "api_error",
            ),
        ];
        for (err, status, oa_type, oa_code, an_type) in cases {
            assert_eq!(err.http_status(), status, "{err:?}");
            let body = err.openai_body();
            assert_eq!(body["error"]["type"], oa_type, "{err:?}");
            assert_eq!(body["error"]["code"].as_str(), oa_code, "{err:?}");
            assert!(body["error"]["message"].is_string());
            assert!(body["error"].get("param").is_some());
            let body = err.anthropic_body();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], an_type, "{err:?}");
            assert_eq!(body["error"]["message"], err.to_string());
        }
        assert_eq!(
            GatewayError::invalid_param("bad", "max_tokens").openai_body()["error"]["param"],
            "max_tokens"
        );
        assert_eq!(
            GatewayError::rate_limited(Some(3)).retry_after_secs(),
            Some(3)
        );
    }

    #[test]
    fn test_from_upstream_status() {
        assert_eq!(
            GatewayError::from_upstream_status(400, "x").http_status(),
            400
        );
        assert_eq!(
            GatewayError::from_upstream_status(401, "x").http_status(),
            502
        );
        assert_eq!(
            GatewayError::from_upstream_status(404, "x").http_status(),
            502
        );
        assert_eq!(
            GatewayError::from_upstream_status(429, "x").http_status(),
            429
        );
        assert_eq!(
            GatewayError::from_upstream_status(500, "x").http_status(),
            502
        );
        assert_eq!(
            GatewayError::from_upstream_status(529, "x").http_status(),
            503
        );
        assert_eq!(
            GatewayError::from_upstream_status(504, "x").http_status(),
            504
        );
    }

    #[test]
    fn test_redacts_keys_params_and_bearer() {
        let text = "call https://generativelanguage.googleapis.com/v1/models/x:generateContent?alt=sse&key=AIzaSyABCDEF123 failed; \
                    Authorization: Bearer sk-proj-abcdefghijklmnop and key sk-ant-api03-XYZxyz1234567890, \
                    api_key=\"hunter2\" x-api-key: secretvalue123 token=abc&ok=1 \
                    {\"api_key\": \"jsonsecret\"} Basic dXNlcjpwYXNzd29yZA==";
        let out = redact_secrets(text);
        for secret in [
            "AIzaSyABCDEF123",
            "abcdefghijklmnop",
            "XYZxyz1234567890",
            "hunter2",
            "secretvalue123",
            "token=abc",
            "jsonsecret",
            "dXNlcjpwYXNzd29yZA",
        ] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("key=***"));
        assert!(out.contains("Bearer ***"));
        assert!(out.contains("sk-***"));
        assert!(out.contains("ok=1"));
        assert!(out.contains("alt=sse"));
    }

    #[test]
    fn test_redaction_keeps_normal_text_and_unicode() {
        let text = "模型 gpt-4o 不存在 — desk-lamp is fine, sk- alone too, a task-list, \
                    the bearer of a basic request";
        assert_eq!(redact_secrets(text), text);
        assert_eq!(redact_secrets(""), "");
    }

    #[test]
    fn test_redaction_idempotent() {
        let once = redact_secrets("Bearer abc key=def sk-0123456789abcdef");
        assert_eq!(redact_secrets(&once), once);
    }

    #[test]
    fn test_error_display_and_bodies_redact() {
        let err = GatewayError::Upstream {
            status: 401,
            message: "upstream said: Incorrect API key provided: sk-live-1234567890abcdef".into(),
        };
        assert!(!err.to_string().contains("1234567890abcdef"));
        assert!(!err.openai_body().to_string().contains("1234567890abcdef"));
        assert!(!err
            .anthropic_body()
            .to_string()
            .contains("1234567890abcdef"));
    }
}
