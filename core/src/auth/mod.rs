//! Secrets: API key format and hashing, HMAC request signing for the internal sync API,
//! app-login callback signatures, and HS256 JWTs.
//!
//! Randomness and time come in as arguments. Every comparison of a secret or a signature
//! goes through [`constant_time_eq`]; no type here prints a secret in its `Debug` output.

pub mod client_ip;
pub mod jwt;
pub mod keys;
pub mod signing;

pub use client_ip::{sign_client_ip, verify_client_ip, CLIENT_IP_HEADER, CLIENT_IP_WINDOW_SECS};
pub use jwt::{JwtError, JwtKey, JwtKeySet, Validation};
pub use keys::{bearer_token, hash_secret, verify_secret, ApiKey, KeyError, KEY_PREFIX};
pub use signing::{
    canonical_host, parse_timestamp, sign_callback, sign_request, verify_callback, verify_request,
    SignatureError, SignedRequest, VerifiedRequest, DEFAULT_WINDOW_SECS, IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

use subtle::ConstantTimeEq;

/// Compares two byte strings in time independent of where they differ (the length is
/// not secret: unequal lengths return early).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the fallback keeps
    // this free of panics anyway.
    match <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_constant_time_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"xbc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn test_hmac_known_vector() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// Regression guard: every verifier compares secrets through `constant_time_eq`.
    #[test]
    fn test_verifiers_use_constant_time_compare() {
        for (name, source) in [
            ("keys.rs", include_str!("keys.rs")),
            ("signing.rs", include_str!("signing.rs")),
            ("jwt.rs", include_str!("jwt.rs")),
        ] {
            let code = source.split("#[cfg(test)]").next().unwrap();
            assert!(
                code.contains("constant_time_eq("),
                "{name} must use constant_time_eq"
            );
            assert!(
                !code.contains("verify_slice"),
                "{name}: use constant_time_eq"
            );
        }
    }
}
