//! Keys, request signing, callback signatures and JWTs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tollbooth_core::auth::jwt::{self, JwtError, JwtKey, JwtKeySet, Validation};
use tollbooth_core::auth::{
    hash_secret, parse_timestamp, sign_callback, sign_request, verify_callback, verify_request,
    verify_secret, ApiKey, KeyError, SignatureError, SignedRequest, DEFAULT_WINDOW_SECS,
};

fn random_bytes(seed: u8) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8).wrapping_mul(97);
    }
    bytes
}

// ---------------------------------------------------------------- API keys

#[test]
fn test_key_generate_parse_round_trip() {
    for seed in 0..=255u8 {
        let key = ApiKey::generate(&random_bytes(seed));
        let text = key.expose();
        assert!(text.starts_with("sk-"));
        assert_eq!(key.public_id().len(), 16);
        assert_eq!(key.secret().len(), 36);
        assert!(!key.public_id().contains('-') && !key.secret().contains('-'));
        assert_eq!(text.matches('-').count(), 2);
        let parsed = ApiKey::parse(&text).unwrap();
        assert_eq!(parsed, key);
        assert!(parsed.verify(&key.secret_hash()));
    }
}

#[test]
fn test_key_depends_on_all_random_bytes() {
    let base = random_bytes(7);
    let key = ApiKey::generate(&base);
    for i in 0..32 {
        let mut other = base;
        other[i] ^= 1;
        let changed = ApiKey::generate(&other);
        if i < 10 {
            assert_ne!(changed.public_id(), key.public_id(), "byte {i}");
            assert_eq!(changed.secret(), key.secret());
        } else {
            assert_eq!(changed.public_id(), key.public_id());
            assert_ne!(changed.secret(), key.secret(), "byte {i}");
        }
    }
}

#[test]
fn test_key_parse_errors() {
    assert_eq!(
        ApiKey::parse("pk-abcdefgh-0123456789abcdef"),
        Err(KeyError::MissingPrefix)
    );
    assert_eq!(
        ApiKey::parse("sk-abcdefgh0123456789abcdef"),
        Err(KeyError::MissingSeparator)
    );
    assert_eq!(
        ApiKey::parse("sk--0123456789abcdef"),
        Err(KeyError::InvalidPublicId)
    );
    assert_eq!(
        ApiKey::parse("sk-ab!d-0123456789abcdef"),
        Err(KeyError::InvalidPublicId)
    );
    assert_eq!(ApiKey::parse("sk-abcd-short"), Err(KeyError::InvalidSecret));
    assert_eq!(
        ApiKey::parse("sk-abcd-0123456789-abcdef"),
        Err(KeyError::InvalidSecret)
    );
    assert_eq!(
        ApiKey::parse(" sk-abcd-0123456789abcdef"),
        Err(KeyError::MissingPrefix)
    );
    assert_eq!(
        ApiKey::parse("sk-abcd-0123456789abcdef\n"),
        Err(KeyError::InvalidSecret)
    );
    assert_eq!(ApiKey::parse(""), Err(KeyError::MissingPrefix));
    // Imported keys with other lengths in the allowed alphabet parse.
    assert!(ApiKey::parse("sk-Ab_9-0123456789ABCDEF_xyz").is_ok());
    // Error messages never contain the key.
    let err = ApiKey::parse("sk-abcd-supersecretvalue!!").unwrap_err();
    assert!(!err.to_string().contains("supersecret"));
}

#[test]
fn test_hash_and_verify_secret() {
    // sha256("abc")
    assert_eq!(
        hash_secret("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let stored = hash_secret("the-secret");
    assert!(verify_secret("the-secret", &stored));
    assert!(verify_secret("the-secret", &stored.to_uppercase()));
    assert!(!verify_secret("the-secreT", &stored));
    assert!(!verify_secret("the-secret", "not hex"));
    assert!(!verify_secret("the-secret", &stored[..62]));
    assert!(!verify_secret("the-secret", ""));
}

#[test]
fn test_key_debug_hides_secret() {
    let key = ApiKey::generate(&random_bytes(3));
    let debug = format!("{key:?}");
    assert!(debug.contains(key.public_id()));
    assert!(!debug.contains(key.secret()));
    let jwt_key = JwtKey::new("k1", b"super-secret-material".to_vec());
    assert!(!format!("{jwt_key:?}").contains("super-secret"));
}

// ---------------------------------------------------------------- request signing

const SYNC_SECRET: &[u8] = b"sync-secret-0123456789abcdef0123";

fn request(body: &[u8]) -> SignedRequest<'_> {
    SignedRequest {
        method: "post",
        host: "edge.example.com",
        path_and_query: "/internal/v1/keys?op=upsert",
        timestamp: 1_700_000_000,
        body,
    }
}

#[test]
fn test_request_sign_verify_round_trip() {
    let req = request(b"{\"id\":\"k1\"}");
    let sig = sign_request(SYNC_SECRET, &req);
    assert_eq!(sig.len(), 64);
    let ok = verify_request(SYNC_SECRET, &req, &sig, 1_700_000_000, DEFAULT_WINDOW_SECS).unwrap();
    assert_eq!(ok.nonce, sig);
    assert_eq!(ok.remember_until, 1_700_000_300);
    // Uppercase hex and the method's case do not matter.
    let upper = SignedRequest {
        method: "POST",
        ..req
    };
    assert!(verify_request(SYNC_SECRET, &upper, &sig.to_uppercase(), 1_700_000_000, 300).is_ok());
    assert!(req.canonical_string().starts_with(
        "TOLLBOOTH-HMAC-SHA256\nPOST\nedge.example.com\n/internal/v1/keys?op=upsert\n1700000000\n"
    ));
}

#[test]
fn test_request_tampering_each_part_rejected() {
    let body = b"{\"id\":\"k1\"}";
    let req = request(body);
    let sig = sign_request(SYNC_SECRET, &req);
    let now = req.timestamp;
    let tampered = [
        SignedRequest {
            method: "PUT",
            ..req
        },
        SignedRequest {
            path_and_query: "/internal/v1/keys?op=delete",
            ..req
        },
        // Another environment sharing the secret: the host is signed.
        SignedRequest {
            host: "staging.example.com",
            ..req
        },
        SignedRequest {
            path_and_query: "/internal/v1/keys",
            ..req
        },
        SignedRequest {
            timestamp: req.timestamp + 1,
            ..req
        },
        SignedRequest {
            body: b"{\"id\":\"k2\"}",
            ..req
        },
        SignedRequest { body: b"", ..req },
    ];
    for t in tampered {
        assert_eq!(
            verify_request(SYNC_SECRET, &t, &sig, now, 300),
            Err(SignatureError::BadSignature),
            "{t:?}"
        );
    }
    assert_eq!(
        verify_request(b"other-secret", &req, &sig, now, 300),
        Err(SignatureError::BadSignature)
    );
    let mut flipped = sig.clone().into_bytes();
    flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        verify_request(
            SYNC_SECRET,
            &req,
            &String::from_utf8(flipped).unwrap(),
            now,
            300
        ),
        Err(SignatureError::BadSignature)
    );
    for bad in ["", "zz", &sig[..62], format!("{sig}00").as_str()] {
        assert_eq!(
            verify_request(SYNC_SECRET, &req, bad, now, 300),
            Err(SignatureError::MalformedSignature)
        );
    }
}

#[test]
fn test_request_window() {
    let req = request(b"x");
    let sig = sign_request(SYNC_SECRET, &req);
    let t = req.timestamp;
    assert!(verify_request(SYNC_SECRET, &req, &sig, t + 300, 300).is_ok());
    assert!(verify_request(SYNC_SECRET, &req, &sig, t - 300, 300).is_ok());
    assert_eq!(
        verify_request(SYNC_SECRET, &req, &sig, t + 301, 300),
        Err(SignatureError::Stale { age_secs: 301 })
    );
    assert_eq!(
        verify_request(SYNC_SECRET, &req, &sig, t - 301, 300),
        Err(SignatureError::FromFuture { ahead_secs: 301 })
    );
}

#[test]
fn test_parse_timestamp() {
    assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000));
    assert_eq!(parse_timestamp(" 12 "), Ok(12));
    for bad in ["", "-1", "1.5", "abc", "99999999999999999999999"] {
        assert_eq!(
            parse_timestamp(bad),
            Err(SignatureError::MalformedTimestamp),
            "{bad}"
        );
    }
}

#[test]
fn test_callback_signature() {
    let secret = b"app-secret";
    let sig = sign_callback(secret, "tok_123", 1_700_000_000);
    assert_eq!(sig.len(), 64);
    assert_eq!(
        verify_callback(secret, "tok_123", 1_700_000_000, &sig, 1_700_000_010, 300),
        Ok(())
    );
    assert_eq!(
        verify_callback(secret, "tok_124", 1_700_000_000, &sig, 1_700_000_010, 300),
        Err(SignatureError::BadSignature)
    );
    assert_eq!(
        verify_callback(secret, "tok_123", 1_700_000_001, &sig, 1_700_000_010, 300),
        Err(SignatureError::BadSignature)
    );
    assert_eq!(
        verify_callback(b"other", "tok_123", 1_700_000_000, &sig, 1_700_000_010, 300),
        Err(SignatureError::BadSignature)
    );
    assert_eq!(
        verify_callback(secret, "tok_123", 1_700_000_000, &sig, 1_700_001_000, 300),
        Err(SignatureError::Stale { age_secs: 1000 })
    );
    // The documented formula, so apps can verify it themselves.
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(b"tok_123:1700000000");
    assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
}

// ---------------------------------------------------------------- JWT

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
    role: String,
}

const NOW: u64 = 1_700_000_000;

fn claims() -> Claims {
    Claims {
        sub: "member_1".into(),
        iat: NOW,
        exp: NOW + 3600,
        nbf: None,
        iss: None,
        aud: None,
        role: "admin".into(),
    }
}

fn keyset() -> JwtKeySet {
    JwtKeySet::new(JwtKey::new(
        "k2",
        b"current-secret-0123456789abcdef".to_vec(),
    ))
    .with_previous(JwtKey::new(
        "k1",
        b"previous-secret-0123456789abcde".to_vec(),
    ))
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

fn validation() -> Validation {
    Validation::default()
}

#[test]
fn test_jwt_round_trip_and_header() {
    let keys = keyset();
    let token = keys.issue(&claims()).unwrap();
    let decoded: Claims = keys.verify(&token, NOW, &validation()).unwrap();
    assert_eq!(decoded, claims());
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(&token)[0]).unwrap()).unwrap();
    assert_eq!(
        header,
        serde_json::json!({"alg":"HS256","typ":"JWT","kid":"k2"})
    );
    assert!(!token.contains('='));
    // Also as a generic JSON value.
    let value: serde_json::Value = jwt::verify(&keys, &token, NOW, &validation()).unwrap();
    assert_eq!(value["role"], "admin");
}

#[test]
fn test_jwt_known_answer() {
    // Header and payload fixed by hand; signature computed independently with hmac.
    use hmac::{Hmac, Mac};
    let header = b64(&serde_json::json!({"alg":"HS256","typ":"JWT"}));
    let payload = b64(&serde_json::json!({"sub":"x","exp": NOW + 10}));
    let input = format!("{header}.{payload}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
    mac.update(input.as_bytes());
    let token = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    let keys = JwtKeySet::new(JwtKey::new("any", b"k".to_vec()));
    let value: serde_json::Value = keys.verify(&token, NOW, &validation()).unwrap();
    assert_eq!(value["sub"], "x");
}

#[test]
fn test_jwt_key_rotation() {
    let old = JwtKeySet::new(JwtKey::new(
        "k1",
        b"previous-secret-0123456789abcde".to_vec(),
    ));
    let old_token = old.issue(&claims()).unwrap();
    // Still accepted after rotation (k2 current, k1 previous).
    assert!(keyset()
        .verify::<Claims>(&old_token, NOW, &validation())
        .is_ok());
    // Dropped once k1 is retired.
    let retired = JwtKeySet::new(JwtKey::new(
        "k2",
        b"current-secret-0123456789abcdef".to_vec(),
    ));
    assert_eq!(
        retired.verify::<Claims>(&old_token, NOW, &validation()),
        Err(JwtError::UnknownKeyId)
    );
    // A kid that names the wrong key fails on the signature.
    let mut p = parts(&old_token);
    p[0] = b64(&serde_json::json!({"alg":"HS256","typ":"JWT","kid":"k2"}));
    assert_eq!(
        keyset().verify::<Claims>(&p.join("."), NOW, &validation()),
        Err(JwtError::BadSignature)
    );
    // No kid: every key is tried.
    let no_kid_key = JwtKey::new("", b"previous-secret-0123456789abcde".to_vec());
    let mut p = parts(&jwt::issue(&no_kid_key, &claims()).unwrap());
    p[0] = b64(&serde_json::json!({"alg":"HS256","typ":"JWT"}));
    let input = format!("{}.{}", p[0], p[1]);
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"previous-secret-0123456789abcde").unwrap();
    mac.update(input.as_bytes());
    let token = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    assert!(keyset()
        .verify::<Claims>(&token, NOW, &validation())
        .is_ok());
}

#[test]
fn test_jwt_tampering_each_part() {
    let keys = keyset();
    let token = keys.issue(&claims()).unwrap();
    let p = parts(&token);

    // Payload changed (privilege escalation attempt).
    let mut evil = claims();
    evil.role = "superadmin".into();
    let forged = format!(
        "{}.{}.{}",
        p[0],
        b64(&serde_json::to_value(&evil).unwrap()),
        p[2]
    );
    assert_eq!(
        keys.verify::<Claims>(&forged, NOW, &validation()),
        Err(JwtError::BadSignature)
    );

    // Header changed but still HS256 (extra field).
    let header = b64(&serde_json::json!({"alg":"HS256","typ":"JWT","kid":"k2","x":1}));
    let forged = format!("{header}.{}.{}", p[1], p[2]);
    assert_eq!(
        keys.verify::<Claims>(&forged, NOW, &validation()),
        Err(JwtError::BadSignature)
    );

    // Signature changed: every character position.
    let sig = p[2].clone().into_bytes();
    for i in 0..sig.len() {
        let mut s = sig.clone();
        s[i] = if s[i] == b'A' { b'B' } else { b'A' };
        let forged = format!("{}.{}.{}", p[0], p[1], String::from_utf8(s).unwrap());
        let err = keys
            .verify::<Claims>(&forged, NOW, &validation())
            .unwrap_err();
        // The last char may only change unused bits: non-canonical base64 is malformed.
        assert!(
            matches!(err, JwtError::BadSignature | JwtError::Malformed),
            "{i}: {err:?}"
        );
    }
    // Truncated, empty, missing or extra segments.
    for bad in [
        format!("{}.{}", p[0], p[1]),
        format!("{}.{}.", p[0], p[1]),
        format!("{}.{}.{}.{}", p[0], p[1], p[2], p[2]),
        String::new(),
        "..".into(),
        format!("{}=.{}.{}", p[0], p[1], p[2]),
        "a".repeat(9000),
    ] {
        let err = keys.verify::<Claims>(&bad, NOW, &validation()).unwrap_err();
        assert!(
            matches!(err, JwtError::Malformed | JwtError::BadSignature),
            "{bad}: {err:?}"
        );
    }
    // Wrong key entirely.
    let other = JwtKeySet::new(JwtKey::new("k2", b"attacker-secret".to_vec()));
    assert_eq!(
        other.verify::<Claims>(&token, NOW, &validation()),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn test_jwt_alg_confusion_rejected() {
    let keys = keyset();
    let token = keys.issue(&claims()).unwrap();
    let p = parts(&token);
    for alg in [
        "none", "None", "NONE", "HS512", "HS384", "RS256", "ES256", "hs256", "",
    ] {
        let header = b64(&serde_json::json!({"alg": alg, "typ":"JWT","kid":"k2"}));
        for sig in ["", p[2].as_str()] {
            let forged = format!("{header}.{}.{sig}", p[1]);
            assert_eq!(
                keys.verify::<Claims>(&forged, NOW, &validation()),
                Err(JwtError::UnsupportedAlgorithm),
                "alg {alg}"
            );
        }
    }
    let header = b64(&serde_json::json!({"typ":"JWT"}));
    assert_eq!(
        keys.verify::<Claims>(&format!("{header}.{}.{}", p[1], p[2]), NOW, &validation()),
        Err(JwtError::UnsupportedAlgorithm)
    );
    let header = b64(&serde_json::json!({"alg":"HS256","crit":["b64"],"kid":"k2"}));
    assert_eq!(
        keys.verify::<Claims>(&format!("{header}.{}.{}", p[1], p[2]), NOW, &validation()),
        Err(JwtError::Malformed)
    );
}

#[test]
fn test_jwt_time_checks_with_leeway() {
    let keys = keyset();
    let v = Validation {
        leeway_secs: 60,
        ..Validation::default()
    };
    let token = keys.issue(&claims()).unwrap();
    let exp = NOW + 3600;
    assert!(keys.verify::<Claims>(&token, exp + 59, &v).is_ok());
    assert_eq!(
        keys.verify::<Claims>(&token, exp + 60, &v),
        Err(JwtError::Expired)
    );
    let strict = Validation {
        leeway_secs: 0,
        ..Validation::default()
    };
    assert!(keys.verify::<Claims>(&token, exp - 1, &strict).is_ok());
    assert_eq!(
        keys.verify::<Claims>(&token, exp, &strict),
        Err(JwtError::Expired)
    );

    let mut c = claims();
    c.nbf = Some(NOW + 600);
    let token = keys.issue(&c).unwrap();
    assert_eq!(
        keys.verify::<Claims>(&token, NOW, &v),
        Err(JwtError::NotYetValid)
    );
    assert!(keys.verify::<Claims>(&token, NOW + 540, &v).is_ok());

    let mut c = claims();
    c.iat = NOW + 600;
    let token = keys.issue(&c).unwrap();
    assert_eq!(
        keys.verify::<Claims>(&token, NOW, &v),
        Err(JwtError::IssuedInFuture)
    );

    // exp required by default.
    let token = keys.issue(&serde_json::json!({"sub":"x"})).unwrap();
    assert_eq!(
        keys.verify::<serde_json::Value>(&token, NOW, &v),
        Err(JwtError::MissingExpiry)
    );
    let lax = Validation {
        require_exp: false,
        ..Validation::default()
    };
    assert!(keys.verify::<serde_json::Value>(&token, NOW, &lax).is_ok());

    // Malformed time claims.
    for exp in [
        serde_json::json!("soon"),
        serde_json::json!(-5),
        serde_json::json!(null),
    ] {
        let token = keys.issue(&serde_json::json!({"exp": exp})).unwrap();
        assert_eq!(
            keys.verify::<serde_json::Value>(&token, NOW, &v),
            Err(JwtError::InvalidTimeClaim("exp"))
        );
    }
    // Fractional NumericDate from other issuers.
    let token = keys
        .issue(&serde_json::json!({"exp": (NOW + 10) as f64 + 0.5}))
        .unwrap();
    assert!(keys.verify::<serde_json::Value>(&token, NOW, &v).is_ok());
}

#[test]
fn test_jwt_issuer_audience_and_claim_shape() {
    let keys = keyset();
    let mut c = claims();
    c.iss = Some("tollbooth".into());
    c.aud = Some(serde_json::json!(["console", "app:42"]));
    let token = keys.issue(&c).unwrap();
    let v = Validation {
        issuer: Some("tollbooth".into()),
        audience: Some("app:42".into()),
        ..Validation::default()
    };
    assert!(keys.verify::<Claims>(&token, NOW, &v).is_ok());
    let wrong_iss = Validation {
        issuer: Some("other".into()),
        ..v.clone()
    };
    assert_eq!(
        keys.verify::<Claims>(&token, NOW, &wrong_iss),
        Err(JwtError::InvalidIssuer)
    );
    let wrong_aud = Validation {
        audience: Some("app:43".into()),
        ..v.clone()
    };
    assert_eq!(
        keys.verify::<Claims>(&token, NOW, &wrong_aud),
        Err(JwtError::InvalidAudience)
    );

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Other {
        tenant: String,
    }
    assert!(matches!(
        keys.verify::<Other>(&token, NOW, &validation()),
        Err(JwtError::Claims(_))
    ));
    assert_eq!(keys.issue(&"just a string"), Err(JwtError::ClaimsNotObject));
    assert_eq!(
        JwtKeySet::default().issue(&claims()),
        Err(JwtError::NoSigningKey)
    );
}
