//! HS256 JSON Web Tokens (RFC 7519) with key rotation by `kid`.
//!
//! Only `HS256` is accepted: a header with `alg` `none`, `HS512`, `RS256` or any other
//! value is rejected before the signature is looked at, so algorithm-confusion tricks do
//! not apply. The segments are unpadded URL-safe base64 (RFC 7515); non-canonical
//! encodings are rejected. Headers with `crit` are rejected (no extensions understood).
//!
//! Rotation: a [`JwtKeySet`] holds the current signing key first and older keys after
//! it. Tokens are issued with the current key's `kid`; verification picks the key named by
//! the token's `kid` (unknown → [`JwtError::UnknownKeyId`]), or tries every key when the
//! token has no `kid`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{constant_time_eq, hmac_sha256};

/// The only accepted algorithm.
pub const ALGORITHM: &str = "HS256";

/// Tokens longer than this are rejected unparsed (bounds the work per request).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// Why a token was rejected or could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not HS256")]
    UnsupportedAlgorithm,
    #[error("token key id is unknown")]
    UnknownKeyId,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token has no expiry")]
    MissingExpiry,
    #[error("token claim `{0}` is not a valid numeric date")]
    InvalidTimeClaim(&'static str),
    #[error("token issuer is not accepted")]
    InvalidIssuer,
    #[error("token audience is not accepted")]
    InvalidAudience,
    #[error("token claims do not match the expected shape: {0}")]
    Claims(String),
    #[error("no signing key configured")]
    NoSigningKey,
    #[error("claims must serialize to a JSON object")]
    ClaimsNotObject,
}

/// One HMAC key with its id. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtKey {
    kid: String,
    secret: Vec<u8>,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl JwtKey {
    /// A key named `kid`. Use at least 32 random bytes of secret.
    pub fn new(kid: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        JwtKey {
            kid: kid.into(),
            secret: secret.into(),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn mac(&self, signing_input: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.secret, signing_input)
    }
}

/// The keys a service signs and verifies with: the first is the current signing key,
/// the rest are still accepted for verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtKeySet {
    keys: Vec<JwtKey>,
}

impl JwtKeySet {
    /// A set whose current signing key is `current`.
    pub fn new(current: JwtKey) -> Self {
        JwtKeySet {
            keys: vec![current],
        }
    }

    /// Adds an older key still accepted for verification.
    pub fn with_previous(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// The current signing key.
    pub fn current(&self) -> Option<&JwtKey> {
        self.keys.first()
    }

    /// Issues a token with the current key.
    pub fn issue<C: Serialize>(&self, claims: &C) -> Result<String, JwtError> {
        issue(self.current().ok_or(JwtError::NoSigningKey)?, claims)
    }

    /// Verifies a token (see [`verify`]).
    pub fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        now: u64,
        validation: &Validation,
    ) -> Result<C, JwtError> {
        verify(self, token, now, validation)
    }
}

/// What [`verify`] checks besides the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Reject tokens without `exp` (default true).
    pub require_exp: bool,
    /// If set, `iss` must equal it.
    pub issuer: Option<String>,
    /// If set, `aud` (a string or an array) must contain it.
    pub audience: Option<String>,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            leeway_secs: DEFAULT_LEEWAY_SECS,
            require_exp: true,
            issuer: None,
            audience: None,
        }
    }
}

/// Issues an HS256 token over `claims` (which must serialize to a JSON object; include
/// `exp`, and `iat` if wanted, yourself) with header `{"alg":"HS256","typ":"JWT","kid"}`.
pub fn issue<C: Serialize>(key: &JwtKey, claims: &C) -> Result<String, JwtError> {
    let claims = serde_json::to_value(claims).map_err(|e| JwtError::Claims(e.to_string()))?;
    if !claims.is_object() {
        return Err(JwtError::ClaimsNotObject);
    }
    let header = json!({ "alg": ALGORITHM, "typ": "JWT", "kid": key.kid });
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.mac(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// Verifies an HS256 token against `keys` at unix time `now` and returns its claims.
///
/// Order of checks: shape and size, header (`alg` must be `HS256`, no `crit`), key by
/// `kid`, signature (constant time), then `exp` (valid while `now < exp + leeway`), `nbf`
/// (`now + leeway >= nbf`), `iat` (not after `now + leeway`), `iss`, `aud`, and finally
/// deserialization into `C`.
pub fn verify<C: DeserializeOwned>(
    keys: &JwtKeySet,
    token: &str,
    now: u64,
    validation: &Validation,
) -> Result<C, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };

    let header = decode_object(header_b64)?;
    if header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    if header.contains_key("crit") {
        return Err(JwtError::Malformed);
    }
    let candidates: Vec<&JwtKey> = match header.get("kid") {
        None => keys.keys.iter().collect(),
        Some(Value::String(kid)) => {
            let key = keys
                .keys
                .iter()
                .find(|k| k.kid == *kid)
                .ok_or(JwtError::UnknownKeyId)?;
            vec![key]
        }
        Some(_) => return Err(JwtError::Malformed),
    };

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtError::Malformed)?;
    let signing_input_len = header_b64
        .len()
        .saturating_add(1)
        .saturating_add(payload_b64.len());
    let signing_input = token.get(..signing_input_len).ok_or(JwtError::Malformed)?;
    // Check every candidate (no early exit) so timing does not reveal which key matched.
    let matched = candidates.iter().fold(false, |found, key| {
        constant_time_eq(&key.mac(signing_input.as_bytes()), &signature) | found
    });
    if !matched {
        return Err(JwtError::BadSignature);
    }

    let claims = decode_object(payload_b64)?;
    check_times(&claims, now, validation)?;
    if let Some(issuer) = &validation.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(JwtError::InvalidIssuer);
        }
    }
    if let Some(audience) = &validation.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience.as_str())),
            _ => false,
        };
        if !ok {
            return Err(JwtError::InvalidAudience);
        }
    }
    serde_json::from_value(Value::Object(claims)).map_err(|e| JwtError::Claims(e.to_string()))
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed),
    }
}

fn check_times(
    claims: &Map<String, Value>,
    now: u64,
    validation: &Validation,
) -> Result<(), JwtError> {
    let leeway = validation.leeway_secs;
    match numeric_date(claims, "exp")? {
        Some(exp) if now >= exp.saturating_add(leeway) => return Err(JwtError::Expired),
        Some(_) => {}
        None if validation.require_exp => return Err(JwtError::MissingExpiry),
        None => {}
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if now.saturating_add(leeway) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if iat > now.saturating_add(leeway) {
            return Err(JwtError::IssuedInFuture);
        }
    }
    Ok(())
}

/// A NumericDate claim: non-negative seconds, integer or (from other issuers) fractional.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                return Ok(Some(secs));
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f.floor() as u64)),
                _ => Err(JwtError::InvalidTimeClaim(name)),
            }
        }
        Some(_) => Err(JwtError::InvalidTimeClaim(name)),
    }
}
