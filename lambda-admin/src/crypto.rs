//! Secrets at the edge of the system: OS randomness, argon2id password hashes, AES-GCM
//! sealing of provider credentials (and app-bound API keys) under the master key, and
//! masking for display. Nothing here logs or formats a secret.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the operating system's random source failed")]
    Random,
    #[error("password hashing failed")]
    Hash,
    #[error("sealed value cannot be opened with the master key")]
    Open,
}

/// `N` bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(buf)
}

/// A random id: 16 hex characters (64 bits).
pub fn new_id() -> Result<String, CryptoError> {
    Ok(hex::encode(random_bytes::<8>()?))
}

/// A random opaque token: 64 hex characters (256 bits).
pub fn new_token() -> Result<String, CryptoError> {
    Ok(hex::encode(random_bytes::<32>()?))
}

/// argon2id (the crate's defaults: m=19 MiB, t=2, p=1) in PHC string form.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt_bytes = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| CryptoError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| CryptoError::Hash)
}

/// Whether `password` matches the PHC string (constant time inside argon2).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// AES-256-GCM under the master key; output is base64(nonce || ciphertext+tag).
pub fn seal(master_key: &[u8; 32], plaintext: &str) -> Result<String, CryptoError> {
    let cipher = Aes256Gcm::new(master_key.into());
    let nonce_bytes = random_bytes::<12>()?;
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce_bytes), plaintext.as_bytes())
        .map_err(|_| CryptoError::Open)?;
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&ct);
    Ok(STANDARD_NO_PAD.encode(out))
}

/// Opens a value from [`seal`].
pub fn open(master_key: &[u8; 32], sealed: &str) -> Result<String, CryptoError> {
    let raw = STANDARD_NO_PAD
        .decode(sealed)
        .map_err(|_| CryptoError::Open)?;
    if raw.len() < 12 {
        return Err(CryptoError::Open);
    }
    let (nonce, ct) = raw.split_at(12);
    let cipher = Aes256Gcm::new(master_key.into());
    let pt = cipher
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| CryptoError::Open)?;
    String::from_utf8(pt).map_err(|_| CryptoError::Open)
}

/// Shows at most the last four characters: `••••abcd`.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 8 {
        return "••••".to_owned();
    }
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("••••{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_password_roundtrip() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn test_seal_open_and_tamper() {
        let k = [9u8; 32];
        let s = seal(&k, "sk-provider-secret").unwrap();
        assert!(!s.contains("sk-provider-secret"));
        assert_eq!(open(&k, &s).unwrap(), "sk-provider-secret");
        assert_eq!(open(&[8u8; 32], &s), Err(CryptoError::Open));
        assert_eq!(open(&k, "AAAA"), Err(CryptoError::Open));
    }

    #[test]
    fn test_mask() {
        assert_eq!(mask("sk-abcdefghijkl"), "••••ijkl");
        assert_eq!(mask("short"), "••••");
    }
}
