//! Adversarial: guessing passwords in parallel (issue 10, invariant 8). The lockout
//! counter is an atomic conditional update in DynamoDB decided *before* the password is
//! checked, so N parallel wrong guesses get at most `LOGIN_MAX_FAILURES` password
//! checks, and the right password is refused while the account is locked. Members and
//! admins share the implementation; a per-address limit caps one client over many
//! accounts; the address is the one the worker signs (`x-tollbooth-client`), and a
//! forged signature is not trusted. The real `admin-api` binary on DynamoDB Local.

use serde_json::json;
use tollbooth_core::auth::{canonical_host, sign_client_ip, CLIENT_IP_HEADER};
use tollbooth_tests::admin_client::{AdminClient, MEMBER_PASSWORD};
use tollbooth_tests::harness::{AdminServer, DynamoLocal};

const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "ops-password-123";
const MAX_FAILURES: usize = 4;
const PER_ADDRESS: usize = 40;
const SYNC_SECRET: &str = "lockout-test-sync-secret-0123";

#[tokio::test]
async fn test_parallel_guesses_cannot_pass_the_lockout() {
    let dynamo = DynamoLocal::start().await.unwrap();
    let max = MAX_FAILURES.to_string();
    let per_address = PER_ADDRESS.to_string();
    let admin = AdminServer::start(
        &dynamo.endpoint,
        &[
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("LOGIN_MAX_FAILURES", max.as_str()),
            ("LOGIN_MAX_PER_ADDRESS", per_address.as_str()),
            ("LOCKOUT_SECS", "600"),
            ("SYNC_SECRET", SYNC_SECRET),
        ],
    )
    .await
    .unwrap();
    let c = AdminClient::new(admin.base_url.clone());
    c.signup("victim@example.com").await;

    // Members: 30 wrong guesses at once, each from its own address.
    let guesses = (0..30).map(|i| {
        let c = &c;
        async move {
            c.req_from(
                "POST",
                "/api/auth/login",
                None,
                Some(
                    json!({"email": "victim@example.com", "password": format!("guess-{i}-abcdef")}),
                ),
                Some(&format!("198.51.100.{i}")),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(guesses).await;
    let checked = results.iter().filter(|(s, _)| *s == 401).count();
    let locked = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(checked + locked, 30, "{results:?}");
    assert!(
        checked < MAX_FAILURES,
        "{checked} wrong guesses were answered 'wrong password' (max {MAX_FAILURES})"
    );
    assert!(results
        .iter()
        .filter(|(s, _)| *s == 429)
        .all(|(_, b)| b["error"]["code"] == "account_locked"));
    // The right password is refused while the account is locked.
    let (s, b) = c
        .req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "victim@example.com", "password": MEMBER_PASSWORD})),
        )
        .await;
    assert_eq!(s, 429, "{b}");

    // Admins: the same, through the same implementation; unknown admin emails are
    // answered like wrong passwords (and locked the same way).
    for email in [ADMIN_EMAIL, "nobody@example.com"] {
        let guesses = (0..20).map(|i| {
            let c = &c;
            async move {
                c.req_from(
                    "POST",
                    "/api/admin/login",
                    None,
                    Some(json!({"email": email, "password": format!("admin-guess-{i}")})),
                    Some(&format!("203.0.113.{i}")),
                )
                .await
            }
        });
        let results = futures_util::future::join_all(guesses).await;
        let checked = results.iter().filter(|(s, _)| *s == 401).count();
        assert!(checked < MAX_FAILURES, "{email}: {checked} checked");
        assert_eq!(
            results.iter().filter(|(s, _)| *s == 429).count(),
            20 - checked,
            "{results:?}"
        );
    }
    let (s, _) = c
        .req(
            "POST",
            "/api/admin/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(s, 429, "the admin is locked too");

    // One address over many accounts: at most PER_ADDRESS attempts are let through.
    let spray = (0..PER_ADDRESS + 10).map(|i| {
        let c = &c;
        async move {
            c.req_from(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"email": format!("spray{i}@example.com"), "password": "spray-pass-1"})),
                Some("192.0.2.77"),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(spray).await;
    let limited = results
        .iter()
        .filter(|(s, b)| *s == 429 && b["error"]["code"] == "too_many_attempts")
        .count();
    assert!(limited >= 10, "only {limited} refused: {results:?}");
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 401).count(),
        PER_ADDRESS + 10 - limited
    );

    // The address is over its limit. A client-made x-tollbooth-client (signed with a
    // guessed secret) does not move it to another counter; one the worker signs does.
    let host = canonical_host(&admin.base_url).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let login = |client_ip: String| {
        let c = &c;
        async move {
            let resp = c
                .http
                .post(format!("{}/api/auth/login", c.base_url))
                .header("x-forwarded-for", "192.0.2.77")
                .header(CLIENT_IP_HEADER, client_ip)
                .json(&json!({"email": "spray-x@example.com", "password": "spray-pass-1"}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    for i in 0..3 {
        let ip = format!("203.0.113.{}", 100 + i);
        let forged = sign_client_ip(b"guessed-secret-0000000", &ip, now, &host).unwrap();
        let (s, b) = login(forged).await;
        assert_eq!(s, 429, "forged address trusted: {b}");
        assert_eq!(b["error"]["code"], "too_many_attempts", "{b}");
    }
    let signed = sign_client_ip(SYNC_SECRET.as_bytes(), "203.0.113.200", now, &host).unwrap();
    let (s, b) = login(signed).await;
    assert_eq!(s, 401, "a worker-signed address has its own counter: {b}");
}
