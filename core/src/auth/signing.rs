//! HMAC-SHA256 signatures: requests on the internal sync API (admin → edge) and app-login
//! callbacks.
//!
//! # Internal API requests
//!
//! The signature is `hex(HMAC-SHA256(SYNC_SECRET, canonical))` where `canonical` is
//!
//! ```text
//! TOLLBOOTH-HMAC-SHA256\n<METHOD uppercased>\n<host>\n<path with query, as sent>\n<unix seconds>\n<hex sha256(body)>
//! ```
//!
//! `<host>` is the target's authority as [`canonical_host`] writes it (lowercase host,
//! `:port` only when it is not the scheme's default): a request signed for one edge
//! cannot be replayed against another environment that shares the secret.
//!
//! sent in [`SIGNATURE_HEADER`] with the timestamp in [`TIMESTAMP_HEADER`]. The verifier
//! rejects timestamps more than `window_secs` (default [`DEFAULT_WINDOW_SECS`]) in the
//! past or the future, then the signature. Replay protection needs storage, so it is the
//! edge's: [`VerifiedRequest::nonce`] is the signature, unique per (request, timestamp),
//! and must be remembered until [`VerifiedRequest::remember_until`]; a second request
//! with the same nonce inside that time is a replay.
//!
//! # App-login callbacks
//!
//! `hex(HMAC-SHA256(app_secret, "<token>:<unix seconds>"))`, see [`sign_callback`]; the
//! app verifies it with the same formula.

use super::{constant_time_eq, hmac_sha256, sha256};

/// Default accepted clock skew / age of a signed request: ±5 minutes.
pub const DEFAULT_WINDOW_SECS: u64 = 300;

/// Header carrying the hex signature.
pub const SIGNATURE_HEADER: &str = "x-tollbooth-signature";

/// Header carrying the unix-seconds timestamp that was signed.
pub const TIMESTAMP_HEADER: &str = "x-tollbooth-timestamp";

/// Header carrying the caller's idempotency key on mutating internal API calls.
pub const IDEMPOTENCY_HEADER: &str = "x-tollbooth-idempotency-key";

const SCHEME: &str = "TOLLBOOTH-HMAC-SHA256";

/// Why a signature was rejected. Messages never include the signature or the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not 64 hex characters")]
    MalformedSignature,
    #[error("timestamp is not unix seconds")]
    MalformedTimestamp,
    #[error("signed request is too old ({age_secs} s)")]
    Stale { age_secs: u64 },
    #[error("signed request is from the future ({ahead_secs} s ahead)")]
    FromFuture { ahead_secs: u64 },
    #[error("signature does not match")]
    BadSignature,
}

/// The parts of an internal API request that are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// HTTP method (case-insensitive; signed uppercased).
    pub method: &'a str,
    /// The target's authority, from [`canonical_host`].
    pub host: &'a str,
    /// Path and query exactly as sent, e.g. `/internal/v1/usage?cursor=abc`.
    pub path_and_query: &'a str,
    /// Unix seconds at signing.
    pub timestamp: u64,
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    /// The string that is MACed (see the module docs).
    pub fn canonical_string(&self) -> String {
        format!(
            "{SCHEME}\n{}\n{}\n{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            self.host.to_ascii_lowercase(),
            self.path_and_query,
            self.timestamp,
            hex::encode(sha256(self.body)),
        )
    }
}

/// What a successful verification tells the edge, for replay protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// Lowercase hex signature: store it; a second use is a replay.
    pub nonce: String,
    /// Unix seconds after which the nonce can be forgotten (the request would be stale).
    pub remember_until: u64,
}

/// The authority a signature binds for `url` (`http(s)://host[:port]/...`): the host
/// lowercased, with `:port` only when it differs from the scheme's default. `None` when
/// the URL cannot be parsed.
pub fn canonical_host(url: &str) -> Option<String> {
    crate::ssrf::parse_url(url)
        .ok()
        .map(|u| u.authority().to_ascii_lowercase())
}

/// Signs an internal API request: lowercase hex HMAC-SHA256.
pub fn sign_request(secret: &[u8], request: &SignedRequest<'_>) -> String {
    hex::encode(hmac_sha256(secret, request.canonical_string().as_bytes()))
}

/// Verifies an internal API request signed with [`sign_request`]: the timestamp must be
/// within `window_secs` of `now` either way, and the signature must match (compared in
/// constant time).
pub fn verify_request(
    secret: &[u8],
    request: &SignedRequest<'_>,
    signature_hex: &str,
    now: u64,
    window_secs: u64,
) -> Result<VerifiedRequest, SignatureError> {
    let presented = decode_signature(signature_hex)?;
    check_freshness(request.timestamp, now, window_secs)?;
    let expected = hmac_sha256(secret, request.canonical_string().as_bytes());
    if !constant_time_eq(&expected, &presented) {
        return Err(SignatureError::BadSignature);
    }
    Ok(VerifiedRequest {
        nonce: hex::encode(presented),
        remember_until: request.timestamp.saturating_add(window_secs),
    })
}

/// Parses the [`TIMESTAMP_HEADER`] value.
pub fn parse_timestamp(value: &str) -> Result<u64, SignatureError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedTimestamp);
    }
    value
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp)
}

/// Signs an app-login callback: `hex(HMAC-SHA256(app_secret, "<token>:<time>"))`.
pub fn sign_callback(app_secret: &[u8], token: &str, time: u64) -> String {
    hex::encode(hmac_sha256(
        app_secret,
        callback_message(token, time).as_bytes(),
    ))
}

/// Verifies [`sign_callback`]'s signature, rejecting times outside `window_secs` of `now`.
pub fn verify_callback(
    app_secret: &[u8],
    token: &str,
    time: u64,
    signature_hex: &str,
    now: u64,
    window_secs: u64,
) -> Result<(), SignatureError> {
    let presented = decode_signature(signature_hex)?;
    check_freshness(time, now, window_secs)?;
    let expected = hmac_sha256(app_secret, callback_message(token, time).as_bytes());
    if constant_time_eq(&expected, &presented) {
        Ok(())
    } else {
        Err(SignatureError::BadSignature)
    }
}

fn callback_message(token: &str, time: u64) -> String {
    format!("{token}:{time}")
}

fn decode_signature(signature_hex: &str) -> Result<Vec<u8>, SignatureError> {
    match hex::decode(signature_hex.trim()) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err(SignatureError::MalformedSignature),
    }
}

fn check_freshness(timestamp: u64, now: u64, window_secs: u64) -> Result<(), SignatureError> {
    if timestamp > now {
        let ahead_secs = timestamp - now;
        if ahead_secs > window_secs {
            return Err(SignatureError::FromFuture { ahead_secs });
        }
    } else {
        let age_secs = now - timestamp;
        if age_secs > window_secs {
            return Err(SignatureError::Stale { age_secs });
        }
    }
    Ok(())
}
