//! Adversarial: an intercepted app-login token (issue 10, invariant 7). The callback
//! token travels in a redirect URL (history, Referer, logs, a rogue app registered for
//! the same custom scheme). Holding it must not be enough to get the member's API key:
//! the exchange needs the PKCE verifier and, for server apps, the app's HMAC; the token
//! is bound to its redirect URI and single-use; the sign-in form has a CSRF token. The
//! real `admin-api` binary on DynamoDB Local.

use std::collections::HashMap;

use serde_json::{json, Value};
use tollbooth_admin::app_login::{s256, sign_exchange};
use tollbooth_tests::admin_client::{AdminClient, MEMBER_PASSWORD};
use tollbooth_tests::harness::{AdminServer, DynamoLocal};

const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "ops-password-123";
const REDIRECT: &str = "x-notes://auth-callback";
const VERIFIER: &str = "adv-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Flow<'a> {
    c: &'a AdminClient,
    app_id: String,
    secret: String,
}

impl Flow<'_> {
    /// Signs the member in through the page and returns the callback's parameters.
    async fn callback(&self, action: &str) -> HashMap<String, String> {
        let challenge = s256(VERIFIER);
        let q = [
            ("app_id", self.app_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let page = self
            .c
            .http
            .get(format!("{}/authorization", self.c.base_url))
            .query(&q)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let cookie = page.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let html = page.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let mut form: Vec<(&str, &str)> = q.to_vec();
        form.extend([
            ("csrf", csrf.as_str()),
            ("email", "notes-user@example.com"),
            ("password", MEMBER_PASSWORD),
            ("action", action),
        ]);
        let r = self
            .c
            .http
            .post(format!("{}/authorization", self.c.base_url))
            .header("cookie", cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
        let loc = r.headers()["location"].to_str().unwrap();
        form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect()
    }

    async fn exchange(&self, token: &str, query: &[(&str, String)]) -> (u16, Value) {
        let r = self
            .c
            .http
            .get(format!("{}/v1/verify-token", self.c.base_url))
            .query(query)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    fn full(&self, token: &str, secret: &str) -> Vec<(&'static str, String)> {
        let t = now();
        vec![
            ("code_verifier", VERIFIER.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("app_time", t.to_string()),
            ("app_sign", sign_exchange(secret.as_bytes(), token, t)),
        ]
    }
}

#[tokio::test]
async fn test_an_intercepted_token_is_worthless() {
    let dynamo = DynamoLocal::start().await.unwrap();
    let admin = AdminServer::start(
        &dynamo.endpoint,
        &[
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    )
    .await
    .unwrap();
    let c = AdminClient::new(admin.base_url.clone());
    let root = c.admin_token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mk = |name: &'static str| {
        let c = &c;
        let root = root.clone();
        async move {
            let (s, b) = c
                .req(
                    "POST",
                    "/api/admin/apps",
                    Some(&root),
                    Some(json!({"name": name, "callback_urls": [REDIRECT, "https://notes.example.com/cb"]})),
                )
                .await;
            assert_eq!(s, 201, "{b}");
            (
                b["id"].as_str().unwrap().to_owned(),
                b["secret"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (app_id, secret) = mk("Notes").await;
    let (_, other_secret) = mk("Rogue").await;
    let flow = Flow {
        c: &c,
        app_id,
        secret,
    };
    let p = flow.callback("signup").await;

    // What the interceptor holds: the token, the gateway's sign and time (all in the
    // URL). Without the verifier and the app's own signature: refused.
    let (s, b) = flow
        .exchange(
            &p["token"],
            &[("sign", p["sign"].clone()), ("time", p["time"].clone())],
        )
        .await;
    assert_eq!(s, 401, "{b}");
    assert!(b.get("api_token").is_none());
    // That attempt burnt the token: the legitimate app cannot use it either (it signs
    // in again), and nobody can retry with guesses.
    let (s, _) = flow
        .exchange(&p["token"], &flow.full(&p["token"], &flow.secret))
        .await;
    assert_eq!(s, 401);

    // Each missing piece alone is enough to refuse.
    let wrong_verifier = "z".repeat(60);
    type Query<'a> = Box<dyn Fn(&str) -> Vec<(&'static str, String)> + 'a>;
    let cases: Vec<(&str, Query)> = vec![
        (
            "another app's secret",
            Box::new(|t: &str| flow.full(t, &other_secret)),
        ),
        (
            "a wrong verifier",
            Box::new(|t: &str| {
                let mut q = flow.full(t, &flow.secret);
                q[0].1 = wrong_verifier.clone();
                q
            }),
        ),
        (
            "another registered redirect",
            Box::new(|t: &str| {
                let mut q = flow.full(t, &flow.secret);
                q[1].1 = "https://notes.example.com/cb".into();
                q
            }),
        ),
        (
            "no app signature",
            Box::new(|_: &str| {
                vec![
                    ("code_verifier", VERIFIER.to_owned()),
                    ("redirect_uri", REDIRECT.to_owned()),
                ]
            }),
        ),
        (
            "a stale app signature",
            Box::new(|t: &str| {
                let old = now() - 3600;
                vec![
                    ("code_verifier", VERIFIER.to_owned()),
                    ("redirect_uri", REDIRECT.to_owned()),
                    ("app_time", old.to_string()),
                    ("app_sign", sign_exchange(flow.secret.as_bytes(), t, old)),
                ]
            }),
        ),
    ];
    for (what, query) in &cases {
        let p = flow.callback("login").await;
        let (s, b) = flow.exchange(&p["token"], &query(&p["token"])).await;
        assert_eq!(s, 401, "{what}: {b}");
        assert!(b.get("api_token").is_none(), "{what}");
    }

    // The legitimate exchange works once; two racing exchanges of one token: one wins.
    let p = flow.callback("login").await;
    let q = flow.full(&p["token"], &flow.secret);
    let (a, b) = tokio::join!(
        flow.exchange(&p["token"], &q),
        flow.exchange(&p["token"], &q)
    );
    let wins = [a.0, b.0].iter().filter(|s| **s == 200).count();
    assert_eq!(wins, 1, "{a:?} {b:?}");
    let winner = if a.0 == 200 { &a.1 } else { &b.1 };
    let key = winner["api_token"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-"));
    // Replay after success.
    let (s, b) = flow.exchange(&p["token"], &q).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["error"]["code"], "invalid_token");

    // Login CSRF: a page elsewhere posting the attacker's credentials without the
    // form's token and cookie gets no redirect.
    let challenge = s256(VERIFIER);
    let r = c
        .http
        .post(format!("{}/authorization", c.base_url))
        .form(&[
            ("app_id", flow.app_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("email", "notes-user@example.com"),
            ("password", MEMBER_PASSWORD),
            ("action", "login"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("location").is_none());
}
