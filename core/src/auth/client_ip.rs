//! The caller's address, signed by the worker's front door for the control plane.
//!
//! The front door forwards control-plane requests with [`CLIENT_IP_HEADER`] =
//! `<ip>;<unix seconds>;<hex mac>` where the mac is
//! `hex(HMAC-SHA256(SYNC_SECRET, "client-ip\n<ip>\n<unix seconds>\n<host>"))` and `<host>`
//! is the control-plane authority the request is sent to, as
//! [`super::signing::canonical_host`] writes it (lowercase, `:port` only when not the
//! scheme's default). The control plane trusts the address only when the mac matches
//! for its own host and the timestamp is within `window_secs` (default
//! [`CLIENT_IP_WINDOW_SECS`]); a caller reaching the control plane directly cannot
//! forge it without the secret. A replay inside the window only repeats the same
//! address, so no nonce is kept.

use super::signing::SignatureError;
use super::{constant_time_eq, hmac_sha256};

/// Header carrying the signed client address.
pub const CLIENT_IP_HEADER: &str = "x-tollbooth-client";

/// Default accepted age / clock skew of a signed client address: ±60 s.
pub const CLIENT_IP_WINDOW_SECS: u64 = 60;

/// Longest accepted address (an IPv6 address with a zone fits).
const MAX_IP_LEN: usize = 64;

fn mac(secret: &[u8], ip: &str, timestamp: u64, host: &str) -> [u8; 32] {
    let message = format!(
        "client-ip\n{ip}\n{timestamp}\n{}",
        host.to_ascii_lowercase()
    );
    hmac_sha256(secret, message.as_bytes())
}

fn valid_ip(ip: &str) -> bool {
    !ip.is_empty()
        && ip.len() <= MAX_IP_LEN
        && ip
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'%'))
}

/// The header value for `ip`, signed at `timestamp` for the control plane at `host`.
/// `None` when `ip` does not look like an address (it is then not forwarded).
pub fn sign_client_ip(secret: &[u8], ip: &str, timestamp: u64, host: &str) -> Option<String> {
    let ip = ip.trim();
    valid_ip(ip).then(|| {
        format!(
            "{ip};{timestamp};{}",
            hex::encode(mac(secret, ip, timestamp, host))
        )
    })
}

/// Verifies a [`CLIENT_IP_HEADER`] value for this control plane's `host` at `now`;
/// returns the address. The mac is compared in constant time.
pub fn verify_client_ip(
    secret: &[u8],
    value: &str,
    host: &str,
    now: u64,
    window_secs: u64,
) -> Result<String, SignatureError> {
    let mut parts = value.trim().splitn(3, ';');
    let (Some(ip), Some(ts), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SignatureError::MalformedSignature);
    };
    if !valid_ip(ip) {
        return Err(SignatureError::MalformedSignature);
    }
    let timestamp = super::signing::parse_timestamp(ts)?;
    let presented = match hex::decode(sig) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => return Err(SignatureError::MalformedSignature),
    };
    if timestamp.saturating_add(window_secs) < now {
        return Err(SignatureError::Stale {
            age_secs: now - timestamp,
        });
    }
    if timestamp > now.saturating_add(window_secs) {
        return Err(SignatureError::FromFuture {
            ahead_secs: timestamp - now,
        });
    }
    if !constant_time_eq(&mac(secret, ip, timestamp, host), &presented) {
        return Err(SignatureError::BadSignature);
    }
    Ok(ip.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";
    const HOST: &str = "abc.execute-api.eu-west-1.amazonaws.com";

    #[test]
    fn test_round_trip() {
        let v = sign_client_ip(SECRET, "203.0.113.7", 1_000, HOST).unwrap();
        assert!(v.starts_with("203.0.113.7;1000;"));
        assert_eq!(
            verify_client_ip(SECRET, &v, HOST, 1_030, 60),
            Ok("203.0.113.7".to_owned())
        );
        // Host is compared case-insensitively; IPv6 works.
        let v6 = sign_client_ip(SECRET, "2001:db8::1", 1_000, HOST).unwrap();
        assert_eq!(
            verify_client_ip(SECRET, &v6, &HOST.to_uppercase(), 1_000, 60),
            Ok("2001:db8::1".to_owned())
        );
    }

    #[test]
    fn test_wrong_secret_host_stale_future() {
        let v = sign_client_ip(SECRET, "203.0.113.7", 1_000, HOST).unwrap();
        assert_eq!(
            verify_client_ip(b"another-secret-entirely", &v, HOST, 1_000, 60),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify_client_ip(SECRET, &v, "staging.example.com", 1_000, 60),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify_client_ip(SECRET, &v, HOST, 1_061, 60),
            Err(SignatureError::Stale { age_secs: 61 })
        );
        assert_eq!(
            verify_client_ip(SECRET, &v, HOST, 939, 60),
            Err(SignatureError::FromFuture { ahead_secs: 61 })
        );
    }

    #[test]
    fn test_tampered_value() {
        let v = sign_client_ip(SECRET, "203.0.113.7", 1_000, HOST).unwrap();
        let sig = v.rsplit(';').next().unwrap();
        let other_ip = format!("203.0.113.8;1000;{sig}");
        assert_eq!(
            verify_client_ip(SECRET, &other_ip, HOST, 1_000, 60),
            Err(SignatureError::BadSignature)
        );
        let other_ts = format!("203.0.113.7;1001;{sig}");
        assert_eq!(
            verify_client_ip(SECRET, &other_ts, HOST, 1_000, 60),
            Err(SignatureError::BadSignature)
        );
        for bad in [
            "",
            "203.0.113.7",
            "203.0.113.7;1000",
            "203.0.113.7;x;ab",
            "a b;1000;00",
        ] {
            assert!(
                verify_client_ip(SECRET, bad, HOST, 1_000, 60).is_err(),
                "{bad}"
            );
        }
        assert_eq!(sign_client_ip(SECRET, "not an ip", 1_000, HOST), None);
    }
}
