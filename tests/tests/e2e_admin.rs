//! End to end over HTTP: the real `admin-api` binary on DynamoDB Local, pushing to a
//! small sync receiver written here that checks every request's signature with core's
//! `verify_request` (the worker side of docs/sync-api.md lands separately).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tollbooth_core::auth::{
    hash_secret, parse_timestamp, verify_callback, verify_request, ApiKey, SignedRequest,
    SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use tollbooth_tests::harness::{AdminServer, DynamoLocal, MockUpstream};

const SYNC_SECRET: &str = "e2e-sync-secret-0123456789abcdef0123";
const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "ops-password-123";
const PW: &str = "member-password-9";

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    body: Value,
    idempotency_key: Option<String>,
    signature_ok: bool,
}

/// A stand-in for the worker's internal API: verifies, records, answers `{"ok": true}`.
struct SyncReceiver {
    url: String,
    calls: Arc<Mutex<Vec<Received>>>,
}

impl SyncReceiver {
    async fn start() -> SyncReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&calls);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let rec = Arc::clone(&rec);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let rec = Arc::clone(&rec);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let header = |n: &str| {
                                parts
                                    .headers
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned)
                            };
                            let path = parts
                                .uri
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default();
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs();
                            let signature_ok =
                                match (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)) {
                                    (Some(ts), Some(sig)) => {
                                        parse_timestamp(&ts).ok().is_some_and(|ts| {
                                            verify_request(
                                                SYNC_SECRET.as_bytes(),
                                                &SignedRequest {
                                                    method: parts.method.as_str(),
                                                    host: &header("host").unwrap_or_default(),
                                                    path_and_query: &path,
                                                    timestamp: ts,
                                                    body: &body,
                                                },
                                                &sig,
                                                now,
                                                300,
                                            )
                                            .is_ok()
                                        })
                                    }
                                    _ => false,
                                };
                            rec.lock().unwrap().push(Received {
                                method: parts.method.to_string(),
                                path,
                                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                idempotency_key: header("x-tollbooth-idempotency-key"),
                                signature_ok,
                            });
                            let (status, out) = if signature_ok {
                                (200, json!({"ok": true}))
                            } else {
                                (401, json!({"error": {"message": "bad signature"}}))
                            };
                            let mut resp =
                                hyper::Response::new(Full::new(Bytes::from(out.to_string())));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        SyncReceiver { url, calls }
    }

    fn calls(&self) -> Vec<Received> {
        self.calls.lock().unwrap().clone()
    }
}

struct Env {
    _dynamo: DynamoLocal,
    admin: AdminServer,
    sync: SyncReceiver,
    http: reqwest::Client,
}

async fn start() -> Env {
    let dynamo = DynamoLocal::start().await.unwrap();
    let sync = SyncReceiver::start().await;
    let admin = AdminServer::start(
        &dynamo.endpoint,
        &[
            ("EDGE_ORIGIN", &sync.url),
            ("SYNC_SECRET", SYNC_SECRET),
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("APP_TOKEN_TTL_SECS", "2"),
            ("LOGIN_MAX_FAILURES", "3"),
            ("LOCKOUT_SECS", "600"),
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Env {
        _dynamo: dynamo,
        admin,
        sync,
        http,
    }
}

impl Env {
    async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(
            method.parse().unwrap(),
            format!("{}{path}", self.admin.base_url),
        );
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin_token(&self) -> String {
        tollbooth_tests::admin_client::admin_login(
            &self.http,
            &self.admin.base_url,
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
        )
        .await
    }

    async fn signup(&self, email: &str) -> (String, String) {
        let (s, b) = self
            .req(
                "POST",
                "/api/auth/signup",
                None,
                Some(json!({"email": email, "password": PW})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        (
            b["token"].as_str().unwrap().to_owned(),
            b["member"]["id"].as_str().unwrap().to_owned(),
        )
    }
}

#[tokio::test]
async fn test_member_journey_pushes_signed_calls() {
    let env = start().await;
    let admin = env.admin_token().await;
    let (s, b) = env
        .req(
            "POST",
            "/api/admin/plans",
            Some(&admin),
            Some(json!({"id": "free", "name": "Free",
        "period": "month", "allowance_amount": 50000, "allowance_unit": "tokens", "rpm": 10})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");

    let (token, member) = env.signup("journey@example.com").await;
    let (s, b) = env
        .req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "journey@example.com", "password": PW})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let token2 = b["token"].as_str().unwrap().to_owned();
    let (s, b) = env
        .req(
            "POST",
            "/api/me/subscription",
            Some(&token2),
            Some(json!({"plan_id": "free"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env
        .req(
            "POST",
            "/api/me/keys",
            Some(&token),
            Some(json!({"name": "cli"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");
    let key = ApiKey::parse(b["key"].as_str().unwrap()).unwrap();

    let calls = env.sync.calls();
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|c| c.signature_ok), "{calls:?}");
    assert!(calls
        .iter()
        .filter(|c| c.method != "GET")
        .all(|c| c.idempotency_key.as_deref().is_some_and(|k| !k.is_empty())));
    let cat = calls
        .iter()
        .find(|c| c.path == "/internal/v1/catalogue")
        .unwrap();
    assert_eq!(cat.body["plans"][0]["id"], "free");
    let allowance = calls
        .iter()
        .find(|c| c.path == format!("/internal/v1/allowances/{member}"))
        .unwrap();
    assert_eq!(allowance.body["amount"], 50000);
    let put = calls
        .iter()
        .rev()
        .find(|c| c.path == format!("/internal/v1/keys/{}", key.public_id()))
        .unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.body["secret_hash"], hash_secret(key.secret()));
    assert_eq!(put.body["plan_id"], "free");
    assert_eq!(put.body["member_id"], member.as_str());

    let (s, _) = env
        .req(
            "DELETE",
            &format!("/api/me/keys/{}", key.public_id()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let del = env.sync.calls().pop().unwrap();
    assert_eq!(
        (del.method.as_str(), del.path.clone()),
        ("DELETE", format!("/internal/v1/keys/{}", key.public_id()))
    );
    assert!(del.signature_ok);

    // Suspension reaches the edge and locks the member out here.
    let (s, _) = env
        .req(
            "POST",
            &format!("/api/admin/members/{member}/suspend"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let st = env.sync.calls().pop().unwrap();
    assert_eq!(st.path, format!("/internal/v1/members/{member}/status"));
    assert_eq!(st.body["status"], "suspended");
    let (s, _) = env.req("GET", "/api/me", Some(&token), None).await;
    assert_eq!(s, 403);

    // Logout ends the session.
    let (s, _) = env
        .req("POST", "/api/auth/logout", Some(&token2), None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = env.req("GET", "/api/me", Some(&token2), None).await;
    assert_eq!(s, 401);
}

fn params(location: &str) -> HashMap<String, String> {
    let q = location.split_once('?').unwrap().1;
    url_pairs(q)
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn test_app_login_flow_end_to_end() {
    let env = start().await;
    let admin = env.admin_token().await;
    let (s, app) = env
        .req(
            "POST",
            "/api/admin/apps",
            Some(&admin),
            Some(json!({"name": "Notes",
        "callback_urls": ["https://notes.example.com/auth-callback", "x-my-app://auth-callback"]})),
        )
        .await;
    assert_eq!(s, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let secret = app["secret"].as_str().unwrap().to_owned();
    let redirect = "x-my-app://auth-callback";
    let base = &env.admin.base_url;

    // PKCE: the app keeps the verifier, sends the challenge.
    let verifier = "e2e-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = tollbooth_admin::app_login::s256(verifier);
    let authz = [
        ("app_id", app_id.as_str()),
        ("redirect_uri", redirect),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];

    // An unregistered redirect, and a request without PKCE, are refused.
    let bad = env
        .http
        .get(format!("{base}/authorization"))
        .query(&[
            ("app_id", app_id.as_str()),
            ("redirect_uri", "https://evil.example.com/cb"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = env
        .http
        .get(format!("{base}/authorization"))
        .query(&[("app_id", app_id.as_str()), ("redirect_uri", redirect)])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The page (with its CSRF token and cookie), then the form post.
    let env = &env;
    let login = |action: &'static str| async move {
        let page = env
            .http
            .get(format!("{base}/authorization"))
            .query(&authz)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
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
        let mut form: Vec<(&str, String)> =
            authz.iter().map(|(k, v)| (*k, v.to_string())).collect();
        form.extend([
            ("csrf", csrf),
            ("email", "app-user@example.com".into()),
            ("password", PW.into()),
            ("action", action.into()),
        ]);
        env.http
            .post(format!("{base}/authorization"))
            .header("cookie", cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
    };
    let exchange = |token: String| {
        let secret = secret.clone();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let sign = tollbooth_admin::app_login::sign_exchange(secret.as_bytes(), &token, now);
            let q = [
                ("code_verifier", verifier.to_owned()),
                ("redirect_uri", redirect.to_owned()),
                ("app_time", now.to_string()),
                ("app_sign", sign),
            ];
            let r = env
                .http
                .get(format!("{base}/v1/verify-token"))
                .query(&q)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let r = login("signup").await;
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(redirect), "{loc}");
    let p = params(&loc);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    verify_callback(
        secret.as_bytes(),
        &p["token"],
        p["time"].parse().unwrap(),
        &p["sign"],
        now,
        300,
    )
    .unwrap();

    // The exchange with the verifier and the app's signature.
    let (s, b) = exchange(p["token"].clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["email"], "app-user@example.com");
    assert_eq!(b["username"], "app-user");
    let api_token = ApiKey::parse(b["api_token"].as_str().unwrap()).unwrap();
    for k in ["user_plan", "expire_at"] {
        assert!(b.get(k).is_some(), "{k} missing: {b}");
    }
    let pushed = env
        .sync
        .calls()
        .into_iter()
        .find(|c| c.path == format!("/internal/v1/keys/{}", api_token.public_id()))
        .unwrap();
    assert!(pushed.signature_ok);

    // Reused token.
    let (s, b) = exchange(p["token"].clone()).await;
    assert_eq!(s, 401, "{b}");

    // Expired token (TTL 2 s in this server).
    let r = login("login").await;
    assert_eq!(r.status(), 302);
    let p2 = params(r.headers()["location"].to_str().unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s, b) = exchange(p2["token"].clone()).await;
    assert_eq!(s, 401, "{b}");

    // A fresh login hands the app the same key.
    let r = login("login").await;
    let p3 = params(r.headers()["location"].to_str().unwrap());
    let (s, b) = exchange(p3["token"].clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["api_token"].as_str().unwrap(), api_token.expose());
}

#[tokio::test]
async fn test_lockout_viewer_and_bad_input() {
    let env = start().await;
    let admin = env.admin_token().await;
    env.signup("lock@example.com").await;
    let bad = json!({"email": "lock@example.com", "password": "wrong-password-1"});
    for _ in 0..2 {
        assert_eq!(
            env.req("POST", "/api/auth/login", None, Some(bad.clone()))
                .await
                .0,
            401
        );
    }
    let (s, b) = env.req("POST", "/api/auth/login", None, Some(bad)).await;
    assert_eq!(s, 429, "{b}");
    let (s, b) = env
        .req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "lock@example.com", "password": PW})),
        )
        .await;
    assert_eq!(s, 429, "locked even with the right password: {b}");
    assert_eq!(b["error"]["code"], "account_locked");

    // A viewer reads but cannot change anything.
    let (s, b) = env
        .req(
            "POST",
            "/api/admin/admins",
            Some(&admin),
            Some(json!({"email": "view@example.com",
        "password": "viewer-pass-1", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // Invited accounts change their initial password at the first login.
    let viewer = tollbooth_tests::admin_client::admin_login(
        &env.http,
        &env.admin.base_url,
        "view@example.com",
        "viewer-pass-1",
    )
    .await;
    assert_eq!(
        env.req("GET", "/api/admin/members", Some(&viewer), None)
            .await
            .0,
        200
    );
    let (s, b) = env
        .req(
            "POST",
            "/api/admin/plans",
            Some(&viewer),
            Some(json!({"id": "p", "name": "P",
        "period": "month", "allowance_amount": 1, "allowance_unit": "requests"})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        env.req("GET", "/api/admin/plans", Some(&admin), None)
            .await
            .1["data"],
        json!([])
    );

    // Bad input on endpoints: clear 4xx JSON and nothing written.
    let (mtoken, member) = env.signup("input@example.com").await;
    let before = env.sync.calls().len();
    let cases: Vec<(&str, String, Option<&str>, Value)> = vec![
        (
            "POST",
            "/api/auth/signup".into(),
            None,
            json!({"email": "nope", "password": PW}),
        ),
        (
            "POST",
            "/api/auth/signup".into(),
            None,
            json!({"email": "x@example.com", "password": "short"}),
        ),
        (
            "POST",
            "/api/auth/login".into(),
            None,
            json!({"email": "x@example.com"}),
        ),
        (
            "PATCH",
            "/api/me".into(),
            Some(&mtoken),
            json!({"username": ""}),
        ),
        (
            "POST",
            "/api/me/keys".into(),
            Some(&mtoken),
            json!({"name": 7}),
        ),
        (
            "POST",
            "/api/me/subscription".into(),
            Some(&mtoken),
            json!({"plan": "free"}),
        ),
        (
            "POST",
            "/api/me/password".into(),
            Some(&mtoken),
            json!({"current_password": PW, "new_password": "x"}),
        ),
        (
            "POST",
            "/api/admin/plans".into(),
            Some(&admin),
            json!({"id": "bad id", "name": "x", "period": "month", "allowance_amount": 1, "allowance_unit": "tokens"}),
        ),
        (
            "POST",
            "/api/admin/apps".into(),
            Some(&admin),
            json!({"name": "x", "callback_urls": ["javascript://x"]}),
        ),
        (
            "POST",
            "/api/admin/providers".into(),
            Some(&admin),
            json!({"id": "p", "kind": "openai", "base_url": "not a url"}),
        ),
        (
            "POST",
            "/api/admin/models".into(),
            Some(&admin),
            json!({"name": "m", "deployments": []}),
        ),
        (
            "PUT",
            "/api/admin/settings".into(),
            Some(&admin),
            json!({"cors_origins": ["not-an-origin"]}),
        ),
        (
            "POST",
            format!("/api/admin/members/{member}/credits"),
            Some(&admin),
            json!({"amount_micros": 0, "reason": "x", "idempotency_key": "e2e-credit-1"}),
        ),
        (
            "POST",
            format!("/api/admin/members/{member}/subscription"),
            Some(&admin),
            json!({"plan_id": "free", "action": "start", "extra": 1}),
        ),
        (
            "POST",
            "/api/admin/admins".into(),
            Some(&admin),
            json!({"email": "a@example.com", "password": "p", "role": "root"}),
        ),
    ];
    for (m, path, tok, body) in cases {
        let (s, b) = env.req(m, &path, tok, Some(body.clone())).await;
        assert_eq!(s, 400, "{m} {path} {body}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{b}"
        );
    }
    // Nothing was pushed and nothing listed grew.
    assert_eq!(env.sync.calls().len(), before);
    assert_eq!(
        env.req("GET", "/api/admin/plans", Some(&admin), None)
            .await
            .1["data"],
        json!([])
    );
    assert_eq!(
        env.req("GET", "/api/admin/apps", Some(&admin), None)
            .await
            .1["data"],
        json!([])
    );
    assert_eq!(
        env.req("GET", "/api/admin/providers", Some(&admin), None)
            .await
            .1["data"],
        json!([])
    );
    assert_eq!(
        env.req(
            "GET",
            "/api/admin/members?q=x@example.com",
            Some(&admin),
            None
        )
        .await
        .1["data"],
        json!([])
    );
}

#[tokio::test]
async fn test_providers_pull_models_and_publish() {
    let env = start().await;
    let mock = MockUpstream::start(&[]).await.unwrap();
    let admin = env.admin_token().await;
    let secret = "sk-mock-upstream-credential-5678";
    let (s, b) = env
        .req(
            "POST",
            "/api/admin/providers",
            Some(&admin),
            Some(json!({"id": "mock", "kind": "openai",
        "base_url": format!("{}/v1", mock.base_url), "credentials": [{"secret": secret}]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(!b.to_string().contains(secret));
    let (s, b) = env
        .req("POST", "/api/admin/providers/mock/pull", Some(&admin), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let added: Vec<String> = serde_json::from_value(b["added"].clone()).unwrap();
    assert!(
        !added.is_empty() && added.iter().all(|m| m.starts_with("mock/")),
        "{added:?}"
    );
    let (_, models) = env
        .req("GET", "/api/admin/models", Some(&admin), None)
        .await;
    let first = models["data"][0].clone();
    assert_eq!(first["enabled"], false);
    // Members see `owned_by`: a pulled model never names the provider.
    assert!(first.get("owned_by").is_none_or(Value::is_null), "{first}");
    let name = first["name"].as_str().unwrap().to_owned();
    let mut enabled = first.clone();
    let obj = enabled.as_object_mut().unwrap();
    obj.remove("pulled_from");
    obj.remove("removed");
    obj.insert("enabled".into(), json!(true));
    obj.insert("aliases".into(), json!(["writer"]));
    // Enabling a pulled model needs a price (or `free: true`): the edge would refuse it.
    let (s, b) = env
        .req(
            "PUT",
            &format!("/api/admin/models/{name}"),
            Some(&admin),
            Some(enabled.clone()),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["param"], "price");
    enabled["price"] = json!({"input_per_mtok": 250_000, "output_per_mtok": 1_250_000});
    let (s, b) = env
        .req(
            "PUT",
            &format!("/api/admin/models/{name}"),
            Some(&admin),
            Some(enabled),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env
        .req("POST", "/api/admin/catalogue/publish", Some(&admin), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");
    let cat = env
        .sync
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.path == "/internal/v1/catalogue")
        .unwrap();
    assert!(cat.signature_ok);
    let snap: tollbooth_core::catalogue::CatalogueSnapshot =
        serde_json::from_value(cat.body).unwrap();
    assert_eq!(snap.version, b["version"].as_str().unwrap());
    assert_eq!(snap.providers[0].credentials[0].secret, secret);
    assert_eq!(snap.models.len(), 1);
    assert_eq!(snap.models[0].aliases, ["writer"]);
    let (_, audit) = env.req("GET", "/api/admin/audit", Some(&admin), None).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "provider.create",
        "provider.pull",
        "model.update",
        "catalogue.publish",
    ] {
        assert!(actions.contains(&a), "{actions:?}");
    }
    assert!(!audit.to_string().contains(secret));
}

/// Through the worker's front door: every admin and member call goes to the worker,
/// which forwards control-plane paths to the admin server (`ADMIN_ORIGIN`); what the
/// admin side pushes back over the signed internal API (`EDGE_ORIGIN`) is what the
/// edge then serves. Signup → subscribe to the free plan → create a key → chat → new
/// alias → suspend/resume → revoke.
#[tokio::test]
async fn test_front_door_edge_serves_what_admin_pushes() {
    use tollbooth_tests::harness::{free_port, EdgeWorker, WorkerOptions};
    let dynamo = DynamoLocal::start().await.unwrap();
    let mock = MockUpstream::start(&[]).await.unwrap();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let mut admin_srv = AdminServer::start(
        &dynamo.endpoint,
        &[
            ("EDGE_ORIGIN", &worker_url),
            ("SYNC_SECRET", SYNC_SECRET),
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    )
    .await
    .unwrap();
    let vars = [
        ("SYNC_SECRET", SYNC_SECRET),
        ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
        ("CATALOGUE_TTL_MS", "0"),
        ("KEY_CACHE_TTL_MS", "0"),
        ("ADMIN_ORIGIN", admin_srv.base_url.as_str()),
    ];
    let worker = EdgeWorker::start_on(
        worker_port,
        WorkerOptions {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    )
    .await
    .unwrap();
    // From here on every control-plane call enters through the worker.
    admin_srv.base_url = worker.base_url.clone();
    let env = Env {
        _dynamo: dynamo,
        admin: admin_srv,
        sync: SyncReceiver::start().await,
        http: reqwest::Client::new(),
    };
    let admin = env.admin_token().await;
    let (s, b) = env.req("POST", "/api/admin/providers", Some(&admin), Some(json!({"id": "mock", "kind": "openai",
        "base_url": format!("{}/v1", mock.base_url), "credentials": [{"secret": "sk-upstream-secret-1"}]}))).await;
    assert_eq!(s, 201, "{b}");
    let model = json!({"name": "writer", "deployments": [{"provider": "mock", "model": "gpt-4o-mini"}],
                       "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}, "max_output_tokens": 1000});
    let (s, b) = env
        .req(
            "POST",
            "/api/admin/models",
            Some(&admin),
            Some(model.clone()),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .req(
            "POST",
            "/api/admin/plans",
            Some(&admin),
            Some(json!({"id": "free", "name": "Free",
        "period": "month", "allowance_amount": 100000, "allowance_unit": "tokens"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["edge"]["synced"], true, "catalogue push: {b}");

    let (token, member) = env.signup("edge@example.com").await;
    let (s, b) = env
        .req(
            "POST",
            "/api/me/subscription",
            Some(&token),
            Some(json!({"plan_id": "free"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], true, "allowance push: {b}");
    let (s, b) = env
        .req(
            "POST",
            "/api/me/keys",
            Some(&token),
            Some(json!({"name": "edge"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["edge"]["synced"], true, "key push: {b}");
    let key = b["key"].as_str().unwrap().to_owned();
    let public_id = b["public_id"].as_str().unwrap().to_owned();

    let chat = |model: &'static str| {
        env.http
            .post(format!("{}/v1/chat/completions", worker.base_url))
            .bearer_auth(&key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}))
            .send()
    };
    let r = chat("writer").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A new alias is served without a restart.
    let mut aliased = model.clone();
    aliased["aliases"] = json!(["writer-pro"]);
    let (s, b) = env
        .req(
            "PUT",
            "/api/admin/models/writer",
            Some(&admin),
            Some(aliased),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env
        .req("POST", "/api/admin/catalogue/publish", Some(&admin), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");
    let r = chat("writer-pro").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Suspension stops the key; resuming restores it.
    let (s, b) = env
        .req(
            "POST",
            &format!("/api/admin/members/{member}/suspend"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");
    let r = chat("writer").await.unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    env.req(
        "POST",
        &format!("/api/admin/members/{member}/resume"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(chat("writer").await.unwrap().status(), 200);

    // Revoked: refused.
    let (s, b) = env
        .req(
            "DELETE",
            &format!("/api/me/keys/{public_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");
    assert_eq!(chat("writer").await.unwrap().status(), 401);
}
