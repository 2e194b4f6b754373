//! Member API keys: `sk-<public id>-<secret>`.
//!
//! The public id is the lookup key (KV `KEYS`), the secret is stored only as
//! `sha256(secret)` in hex and compared in constant time. Both parts use an alphabet
//! without `-` (generated keys: lowercase base32, `a-z2-7`; parsing accepts
//! `[A-Za-z0-9_]`), so `sk-<id>-<secret>` splits unambiguously.

use std::fmt;

use super::{constant_time_eq, sha256};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "sk-";

/// Random bytes used for the public id (80 bits: collisions are negligible and, because
/// lookups are by id, a collision would be detected at insert time anyway).
const PUBLIC_ID_BYTES: usize = 10;

const MIN_PUBLIC_ID_LEN: usize = 4;
const MAX_PUBLIC_ID_LEN: usize = 64;
const MIN_SECRET_LEN: usize = 16;
const MAX_SECRET_LEN: usize = 128;

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a presented key could not be parsed. Messages never include the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("API key must start with `sk-`")]
    MissingPrefix,
    #[error("API key must look like `sk-<id>-<secret>`")]
    MissingSeparator,
    #[error("API key id is malformed")]
    InvalidPublicId,
    #[error("API key secret is malformed")]
    InvalidSecret,
}

/// A parsed or freshly generated API key. `Debug` shows the public id only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    public_id: String,
    secret: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("public_id", &self.public_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ApiKey {
    /// A new key from 32 random bytes (from the platform CSPRNG, supplied by the caller):
    /// the first 10 make the public id (16 chars), the other 22 the secret (36 chars,
    /// 176 bits).
    pub fn generate(random: &[u8; 32]) -> ApiKey {
        let (id_bytes, secret_bytes) = random.split_at(PUBLIC_ID_BYTES);
        ApiKey {
            public_id: base32_encode(id_bytes),
            secret: base32_encode(secret_bytes),
        }
    }

    /// Parses `sk-<public id>-<secret>` exactly (no surrounding whitespace).
    pub fn parse(key: &str) -> Result<ApiKey, KeyError> {
        let rest = key
            .strip_prefix(KEY_PREFIX)
            .ok_or(KeyError::MissingPrefix)?;
        let (public_id, secret) = rest.split_once('-').ok_or(KeyError::MissingSeparator)?;
        if !valid_part(public_id, MIN_PUBLIC_ID_LEN, MAX_PUBLIC_ID_LEN) {
            return Err(KeyError::InvalidPublicId);
        }
        if !valid_part(secret, MIN_SECRET_LEN, MAX_SECRET_LEN) {
            return Err(KeyError::InvalidSecret);
        }
        Ok(ApiKey {
            public_id: public_id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The public id: safe to log and to use as the storage key.
    pub fn public_id(&self) -> &str {
        &self.public_id
    }

    /// The secret part. Only for hashing or for showing the key to its owner once.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The full key string `sk-<id>-<secret>`, to show to its owner once at creation.
    /// Deliberately not `Display`, so it is not formatted into a log by accident.
    pub fn expose(&self) -> String {
        format!("{KEY_PREFIX}{}-{}", self.public_id, self.secret)
    }

    /// `sha256(secret)` in lowercase hex: what to store.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }

    /// Whether this key's secret matches a stored hash (constant time).
    pub fn verify(&self, stored_hash_hex: &str) -> bool {
        verify_secret(&self.secret, stored_hash_hex)
    }
}

/// `sha256(secret)` in lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(sha256(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored_hash_hex` (either hex case). The digests are
/// compared in constant time; a malformed stored hash never matches.
pub fn verify_secret(secret: &str, stored_hash_hex: &str) -> bool {
    let Ok(stored) = hex::decode(stored_hash_hex) else {
        return false;
    };
    constant_time_eq(&sha256(secret.as_bytes()), &stored)
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let value = header_value.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

fn valid_part(part: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&part.len())
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Unpadded lowercase RFC 4648 base32.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().saturating_mul(8).div_ceil(5));
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    let char_of = |index: u16| {
        BASE32_ALPHABET
            .get(usize::from(index & 0x1f))
            .map_or('a', |&c| char::from(c))
    };
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char_of(buffer >> bits));
        }
        buffer &= (1u16 << bits) - 1;
    }
    if bits > 0 {
        out.push(char_of(buffer << (5 - bits)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_base32_rfc4648_vectors() {
        assert_eq!(base32_encode(b""), "");
        assert_eq!(base32_encode(b"f"), "my");
        assert_eq!(base32_encode(b"fo"), "mzxq");
        assert_eq!(base32_encode(b"foo"), "mzxw6");
        assert_eq!(base32_encode(b"foob"), "mzxw6yq");
        assert_eq!(base32_encode(b"fooba"), "mzxw6ytb");
        assert_eq!(base32_encode(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn test_bearer_token() {
        assert_eq!(bearer_token("Bearer sk-abc-def"), Some("sk-abc-def"));
        assert_eq!(bearer_token("bearer  tok "), Some("tok"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("sk-abc"), None);
    }
}
