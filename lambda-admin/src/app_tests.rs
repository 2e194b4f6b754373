//! Handler tests: the whole router over the in-memory store and the recording sync fake.

use super::*;
use crate::store::MemoryStore;
use crate::sync::RecordingSync;
use tollbooth_core::auth::{hash_secret, verify_callback, JwtKey};
use tollbooth_core::keyrecord::KeyRecord;

const NOW: u64 = 1_800_000_000;
const PW: &str = "correct-horse-42";

type St = AppState<MemoryStore, RecordingSync>;

fn state() -> St {
    AppState {
        store: MemoryStore::default(),
        sync: RecordingSync::default(),
        jwt: JwtKeySet::new(JwtKey::new(
            "k1",
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )),
        master_key: [7u8; 32],
        policy: Policy {
            max_login_failures: 3,
            ..Policy::default()
        },
        payments: Default::default(),
    }
}

struct Resp {
    status: u16,
    body: Value,
    headers: http::HeaderMap,
    text: String,
}

async fn call(
    st: &St,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    now: u64,
) -> Resp {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut headers = http::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    let ctx = Ctx {
        method: method.into(),
        path: path_only.into(),
        query: form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        now,
    };
    finish(handle_ctx(st, ctx).await)
}

async fn call_raw(st: &St, method: &str, path: &str, body: &str, now: u64) -> Resp {
    let ctx = Ctx {
        method: method.into(),
        path: path.into(),
        query: Default::default(),
        headers: Default::default(),
        body: body.as_bytes().to_vec(),
        now,
    };
    finish(handle_ctx(st, ctx).await)
}

fn finish(r: Response<Body>) -> Resp {
    let text = String::from_utf8_lossy(r.body().as_ref()).to_string();
    Resp {
        status: r.status().as_u16(),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        headers: r.headers().clone(),
        text,
    }
}

async fn signup(st: &St, email: &str) -> (String, String) {
    let r = call(
        st,
        "POST",
        "/api/auth/signup",
        None,
        Some(json!({"email": email, "password": PW})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["token"].as_str().unwrap().to_owned(),
        r.body["member"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn admin_token(st: &St, role: Role) -> String {
    let email = format!(
        "{}@ops.example.com",
        if role == Role::Admin {
            "root"
        } else {
            "viewer"
        }
    );
    if role == Role::Admin {
        crate::admin::bootstrap_admin(&st.store, &email, "admin-password-1", NOW)
            .await
            .unwrap();
    } else {
        let root = Box::pin(admin_token(st, Role::Admin)).await;
        let r = call(
            st,
            "POST",
            "/api/admin/admins",
            Some(&root),
            Some(json!({"email": email, "password": "viewer-password-1", "role": "viewer"})),
            NOW,
        )
        .await;
        assert!(r.status == 201 || r.status == 409, "{}", r.text);
    }
    let pw = if role == Role::Admin {
        "admin-password-1"
    } else {
        "viewer-password-1"
    };
    let r = call(
        st,
        "POST",
        "/api/admin/login",
        None,
        Some(json!({"email": email, "password": pw})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn test_health_reports_table_status() {
    let st = state();
    let r = call(&st, "GET", "/health", None, None, NOW).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["table_status"], "ACTIVE");
}

#[tokio::test]
async fn test_health_degraded_when_store_down() {
    let mut st = state();
    st.store.down = true;
    let r = call(&st, "GET", "/health", None, None, NOW).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["status"], "degraded");
}

#[tokio::test]
async fn test_unknown_route_is_openai_shaped_404() {
    let r = call(&state(), "GET", "/nope", None, None, NOW).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "not_found");
}

#[tokio::test]
async fn test_openapi_document_is_served_and_lists_routes() {
    let r = call(&state(), "GET", "/api/openapi.json", None, None, NOW).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body["paths"]["/api/auth/signup"].is_object(),
        "{}",
        r.text
    );
    assert!(r.body["paths"]["/v1/verify-token"].is_object());
}

#[tokio::test]
async fn test_signup_login_profile_logout() {
    let st = state();
    let (token, id) = signup(&st, "Ann@Example.com").await;
    let r = call(&st, "GET", "/api/me", Some(&token), None, NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["email"], "ann@example.com");
    assert_eq!(r.body["id"], id.as_str());
    assert!(!r.text.contains("argon2"), "hash leaked: {}", r.text);
    assert!(!st.store.dump().contains(PW), "password stored in clear");

    let r = call(
        &st,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "ann@example.com", "password": PW})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t2 = r.body["token"].as_str().unwrap().to_owned();
    let r = call(&st, "POST", "/api/auth/logout", Some(&t2), None, NOW).await;
    assert_eq!(r.status, 200);
    let r = call(&st, "GET", "/api/me", Some(&t2), None, NOW).await;
    assert_eq!(r.status, 401, "logged-out session must end");
    // The other session is untouched.
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&token), None, NOW)
            .await
            .status,
        200
    );
    // Expired session.
    let later = NOW + st.policy.session_ttl_secs + 3600;
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&token), None, later)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn test_jwt_rotation_keeps_old_sessions() {
    let mut st = state();
    let (token, _) = signup(&st, "rot@example.com").await;
    st.jwt = JwtKeySet::new(JwtKey::new(
        "k2",
        b"fedcba9876543210fedcba9876543210".to_vec(),
    ))
    .with_previous(JwtKey::new(
        "k1",
        b"0123456789abcdef0123456789abcdef".to_vec(),
    ));
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&token), None, NOW)
            .await
            .status,
        200
    );
    st.jwt = JwtKeySet::new(JwtKey::new(
        "k2",
        b"fedcba9876543210fedcba9876543210".to_vec(),
    ));
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&token), None, NOW)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn test_signup_bad_input_is_4xx_and_writes_nothing() {
    let st = state();
    for body in [
        json!({"email": "not-an-email", "password": PW}),
        json!({"email": "a@b", "password": PW}),
        json!({"email": "a@example.com", "password": "short1"}),
        json!({"email": "a@example.com", "password": "onlyletterslong"}),
        json!({"email": "a@example.com"}),
        json!({"email": "a@example.com", "password": PW, "admin": true}),
        json!({"email": 5, "password": PW}),
    ] {
        let r = call(
            &st,
            "POST",
            "/api/auth/signup",
            None,
            Some(body.clone()),
            NOW,
        )
        .await;
        assert_eq!(r.status, 400, "{body} -> {}", r.text);
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
    }
    let r = call_raw(&st, "POST", "/api/auth/signup", "{not json", NOW).await;
    assert_eq!(r.status, 400);
    assert_eq!(st.store.item_count(), 0);
    // Duplicate email (case-insensitive): 409 and no second member.
    signup(&st, "dup@example.com").await;
    let n = st.store.item_count();
    let r = call(
        &st,
        "POST",
        "/api/auth/signup",
        None,
        Some(json!({"email": "DUP@example.com", "password": PW})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(st.store.item_count(), n);
}

#[tokio::test]
async fn test_lockout_after_repeated_failures() {
    let st = state();
    signup(&st, "lock@example.com").await;
    let bad = json!({"email": "lock@example.com", "password": "wrong-password-1"});
    for _ in 0..2 {
        assert_eq!(
            call(&st, "POST", "/api/auth/login", None, Some(bad.clone()), NOW)
                .await
                .status,
            401
        );
    }
    let r = call(&st, "POST", "/api/auth/login", None, Some(bad.clone()), NOW).await;
    assert_eq!(r.status, 429, "{}", r.text);
    let good = json!({"email": "lock@example.com", "password": PW});
    let r = call(
        &st,
        "POST",
        "/api/auth/login",
        None,
        Some(good.clone()),
        NOW + 10,
    )
    .await;
    assert_eq!(r.status, 429, "locked even with the right password");
    let r = call(
        &st,
        "POST",
        "/api/auth/login",
        None,
        Some(good),
        NOW + st.policy.lockout_secs + 1,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn test_password_change_ends_other_sessions() {
    let st = state();
    let (token, _) = signup(&st, "pw@example.com").await;
    let r = call(
        &st,
        "POST",
        "/api/me/password",
        Some(&token),
        Some(json!({"current_password": "nope-nope-1", "new_password": "another-pass-77"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(
        &st,
        "POST",
        "/api/me/password",
        Some(&token),
        Some(json!({"current_password": PW, "new_password": "short"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "new_password");
    let r = call(
        &st,
        "POST",
        "/api/me/password",
        Some(&token),
        Some(json!({"current_password": PW, "new_password": "another-pass-77"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&token), None, NOW)
            .await
            .status,
        401
    );
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&fresh), None, NOW)
            .await
            .status,
        200
    );
    let r = call(
        &st,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "pw@example.com", "password": "another-pass-77"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn test_keys_shown_once_hashed_and_pushed() {
    let st = state();
    let (token, member) = signup(&st, "keys@example.com").await;
    let r = call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&token),
        Some(json!({"name": "laptop"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let parsed = tollbooth_core::auth::ApiKey::parse(&key).unwrap();
    assert_eq!(r.body["edge"]["synced"], true);
    assert!(
        !st.store.dump().contains(parsed.secret()),
        "secret must not be stored"
    );
    let list = call(&st, "GET", "/api/me/keys", Some(&token), None, NOW).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains(parsed.secret()));

    let calls = st.sync.calls();
    let put = calls
        .iter()
        .find(|c| c.path == format!("/internal/v1/keys/{}", parsed.public_id()))
        .unwrap();
    assert_eq!(put.method, "PUT");
    assert!(!put.idempotency_key.is_empty());
    let rec: KeyRecord = serde_json::from_value(put.body.clone().unwrap()).unwrap();
    assert_eq!(rec.member_id, member);
    assert_eq!(rec.secret_hash, hash_secret(parsed.secret()));
    assert_eq!(rec.plan_id, "none");

    let r = call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&token),
        Some(json!({"name": ""})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(
        &st,
        "DELETE",
        "/api/me/keys/nosuchkey",
        Some(&token),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &st,
        "DELETE",
        &format!("/api/me/keys/{}", parsed.public_id()),
        Some(&token),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let last = st.sync.calls().pop().unwrap();
    assert_eq!(
        (last.method, last.path),
        (
            "DELETE",
            format!("/internal/v1/keys/{}", parsed.public_id())
        )
    );
    // Another member cannot revoke it.
    let (other, _) = signup(&st, "other@example.com").await;
    let r = call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&token),
        Some(json!({"name": "b"})),
        NOW,
    )
    .await;
    let pid = r.body["public_id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &st,
            "DELETE",
            &format!("/api/me/keys/{pid}"),
            Some(&other),
            None,
            NOW
        )
        .await
        .status,
        404
    );
}

fn free_plan() -> Value {
    json!({"id": "free", "name": "Free", "period": "month", "allowance_amount": 100000,
           "allowance_unit": "tokens", "allowed_models": ["*"], "rpm": 20})
}

#[tokio::test]
async fn test_plans_subscriptions_and_pushes() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let r = call(
        &st,
        "POST",
        "/api/admin/plans",
        Some(&admin),
        Some(free_plan()),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cat = st
        .sync
        .calls()
        .into_iter()
        .find(|c| c.path == "/internal/v1/catalogue")
        .unwrap();
    assert_eq!(cat.body.as_ref().unwrap()["plans"][0]["id"], "free");
    assert_eq!(cat.body.as_ref().unwrap()["plans"][0]["rpm"], 20);
    let mut paid = free_plan();
    paid["id"] = json!("pro");
    paid["price_micros"] = json!(9_000_000);
    assert_eq!(
        call(
            &st,
            "POST",
            "/api/admin/plans",
            Some(&admin),
            Some(paid),
            NOW
        )
        .await
        .status,
        201
    );
    // Bad plans.
    for bad in [
        json!({"id": "x y", "name": "X", "period": "month", "allowance_amount": 1, "allowance_unit": "tokens"}),
        json!({"id": "x", "name": "X", "period": "fortnight", "allowance_amount": 1, "allowance_unit": "tokens"}),
        json!({"id": "x", "name": "X", "period": "month", "allowance_amount": -1, "allowance_unit": "tokens"}),
        json!({"id": "x", "name": "X", "period": "month", "allowance_amount": 1, "allowance_unit": "tokens", "currency": "dollars"}),
    ] {
        let n = st.store.item_count();
        let r = call(
            &st,
            "POST",
            "/api/admin/plans",
            Some(&admin),
            Some(bad.clone()),
            NOW,
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(st.store.item_count(), n);
    }
    assert_eq!(
        call(
            &st,
            "POST",
            "/api/admin/plans",
            Some(&admin),
            Some(free_plan()),
            NOW
        )
        .await
        .status,
        409
    );

    let (token, member) = signup(&st, "sub@example.com").await;
    call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&token),
        Some(json!({"name": "k"})),
        NOW,
    )
    .await;
    let r = call(
        &st,
        "POST",
        "/api/me/subscription",
        Some(&token),
        Some(json!({"plan_id": "pro"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 402, "{}", r.text);
    let r = call(
        &st,
        "POST",
        "/api/me/subscription",
        Some(&token),
        Some(json!({"plan_id": "nope"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &st,
        "POST",
        "/api/me/subscription",
        Some(&token),
        Some(json!({"plan_id": "free"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription"]["plan_id"], "free");
    let calls = st.sync.calls();
    let allowance = calls
        .iter()
        .find(|c| c.path == format!("/internal/v1/allowances/{member}"))
        .unwrap();
    let b = allowance.body.as_ref().unwrap();
    assert_eq!(b["amount"], 100000);
    assert_eq!(b["unit"], "tokens");
    assert!(b["period_end"].as_u64().unwrap() > b["period_start"].as_u64().unwrap());
    assert_eq!(b["period"], "month", "free plans renew at the edge");
    let profile = calls
        .iter()
        .rev()
        .find(|c| c.path == format!("/internal/v1/members/{member}"))
        .unwrap();
    assert_eq!(profile.method, "PUT");
    assert_eq!(profile.body.as_ref().unwrap()["email"], "sub@example.com");
    assert_eq!(profile.body.as_ref().unwrap()["status"], "active");
    // Keys were re-pushed with the plan.
    let key_put = calls
        .iter()
        .rev()
        .find(|c| c.path.starts_with("/internal/v1/keys/"))
        .unwrap();
    assert_eq!(key_put.body.as_ref().unwrap()["plan_id"], "free");

    // Admin upgrades to the paid plan, then expires it.
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/subscription"),
        Some(&admin),
        Some(json!({"plan_id": "pro", "action": "start"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["subscription"]["expires_at"].is_u64());
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/subscription"),
        Some(&admin),
        Some(json!({"plan_id": "pro", "action": "expire"})),
        NOW + 5,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key_put = st
        .sync
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.path.starts_with("/internal/v1/keys/"))
        .unwrap();
    assert_eq!(key_put.body.unwrap()["plan_id"], "none");
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/subscription"),
        Some(&admin),
        Some(json!({"plan_id": "pro", "action": "cancel-everything"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(&st, "GET", "/api/plans", None, None, NOW).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn test_viewer_cannot_mutate_and_members_cannot_administer() {
    let st = state();
    let viewer = admin_token(&st, Role::Viewer).await;
    assert_eq!(
        call(&st, "GET", "/api/admin/plans", Some(&viewer), None, NOW)
            .await
            .status,
        200
    );
    let n = st.store.item_count();
    let r = call(
        &st,
        "POST",
        "/api/admin/plans",
        Some(&viewer),
        Some(free_plan()),
        NOW,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = call(
        &st,
        "PUT",
        "/api/admin/settings",
        Some(&viewer),
        Some(json!({})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(st.store.item_count(), n);
    let (member, _) = signup(&st, "m@example.com").await;
    assert_eq!(
        call(&st, "GET", "/api/admin/plans", Some(&member), None, NOW)
            .await
            .status,
        401
    );
    assert_eq!(
        call(&st, "GET", "/api/admin/plans", None, None, NOW)
            .await
            .status,
        401
    );
    let r = call(
        &st,
        "POST",
        "/api/admin/login",
        None,
        Some(json!({"email": "root@ops.example.com", "password": "x"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn test_suspend_resume_credit_and_audit() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let (token, member) = signup(&st, "s@example.com").await;
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/suspend"),
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let last = st.sync.calls().pop().unwrap();
    assert_eq!(last.path, format!("/internal/v1/members/{member}/status"));
    assert_eq!(last.body.unwrap()["status"], "suspended");
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&token), None, NOW)
            .await
            .status,
        403
    );
    let login = json!({"email": "s@example.com", "password": PW});
    assert_eq!(
        call(
            &st,
            "POST",
            "/api/auth/login",
            None,
            Some(login.clone()),
            NOW
        )
        .await
        .status,
        403
    );
    call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/resume"),
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(
        call(&st, "POST", "/api/auth/login", None, Some(login), NOW)
            .await
            .status,
        200
    );

    for bad in [
        json!({"amount_micros": 0, "reason": "x"}),
        json!({"amount_micros": 5, "reason": " "}),
        json!({"amount_micros": 1.5, "reason": "x"}),
    ] {
        let r = call(
            &st,
            "POST",
            &format!("/api/admin/members/{member}/credits"),
            Some(&admin),
            Some(bad),
            NOW,
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/credits"),
        Some(&admin),
        Some(json!({"amount_micros": 5_000_000, "reason": "goodwill"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let last = st.sync.calls().pop().unwrap();
    assert_eq!(last.path, format!("/internal/v1/wallets/{member}/credits"));
    assert_eq!(last.body.as_ref().unwrap()["amount_micros"], 5_000_000);
    assert_eq!(
        last.idempotency_key,
        format!(
            "credit-{}",
            last.body.unwrap()["credit_id"].as_str().unwrap()
        )
    );
    assert_eq!(
        call(
            &st,
            "POST",
            "/api/admin/members/nobody/credits",
            Some(&admin),
            Some(json!({"amount_micros": 1, "reason": "x"})),
            NOW
        )
        .await
        .status,
        404
    );

    let r = call(
        &st,
        "GET",
        "/api/admin/members?q=s@ex",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = call(
        &st,
        "GET",
        &format!("/api/admin/members/{member}"),
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["credits"].as_array().unwrap().len(), 1);
    let r = call(&st, "GET", "/api/admin/audit", Some(&admin), None, NOW).await;
    let actions: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["member.suspended", "member.active", "wallet.adjust"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
    assert_eq!(
        call(&st, "GET", "/api/admin/orders", Some(&admin), None, NOW)
            .await
            .status,
        200
    );
}

async fn make_app(st: &St, admin: &str) -> (String, String) {
    let r = call(st, "POST", "/api/admin/apps", Some(admin), Some(json!({"name": "Writer",
        "callback_urls": ["https://writer.example.com/auth-callback", "x-my-app://auth-callback"]})), NOW).await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["secret"].as_str().unwrap().to_owned(),
    )
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn callback_params(location: &str) -> HashMap<String, String> {
    let q = location.split_once('?').unwrap().1;
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[tokio::test]
async fn test_app_login_flow() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    for bad in [
        json!({"name": "A", "callback_urls": ["javascript://alert(1)"]}),
        json!({"name": "A", "callback_urls": ["http://evil.example.com/cb"]}),
        json!({"name": "A", "callback_urls": []}),
        json!({"name": "", "callback_urls": ["https://a.example.com"]}),
    ] {
        assert_eq!(
            call(&st, "POST", "/api/admin/apps", Some(&admin), Some(bad), NOW)
                .await
                .status,
            400
        );
    }
    let (app, secret) = make_app(&st, &admin).await;
    let redirect = "x-my-app://auth-callback";

    // Unregistered redirect URIs are refused, prefixes too.
    for uri in [
        "https://evil.example.com/cb",
        "https://writer.example.com/auth-callback.evil",
        "",
    ] {
        let r = call(
            &st,
            "GET",
            &format!(
                "/authorization?{}",
                form(&[("app_id", &app), ("redirect_uri", uri)])
            ),
            None,
            None,
            NOW,
        )
        .await;
        assert_eq!(r.status, 400, "{uri}");
    }
    let r = call(
        &st,
        "GET",
        &format!(
            "/authorization?{}",
            form(&[("app_id", &app), ("redirect_uri", redirect)])
        ),
        None,
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("<form") && r.text.contains("Writer"));

    // Sign up through the page, then get redirected with token/sign/time.
    let body = form(&[
        ("app_id", &app),
        ("redirect_uri", redirect),
        ("email", "app@example.com"),
        ("password", PW),
        ("action", "signup"),
    ]);
    let r = call_raw(&st, "POST", "/authorization", &body, NOW).await;
    assert_eq!(r.status, 302, "{}", r.text);
    let loc = r.headers[http::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(loc.starts_with("x-my-app://auth-callback?token="), "{loc}");
    let p = callback_params(&loc);
    let time: u64 = p["time"].parse().unwrap();
    verify_callback(secret.as_bytes(), &p["token"], time, &p["sign"], NOW, 300).unwrap();

    // Tampered sign: refused, token stays usable.
    let mut bad_sign = p["sign"].clone();
    bad_sign.replace_range(0..1, if bad_sign.starts_with('0') { "1" } else { "0" });
    let r = call(
        &st,
        "GET",
        &format!("/v1/verify-token?sign={bad_sign}&time={time}"),
        Some(&p["token"]),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "invalid_sign");

    let r = call(
        &st,
        "GET",
        &format!("/v1/verify-token?sign={}&time={time}", p["sign"]),
        Some(&p["token"]),
        None,
        NOW + 1,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["email"], "app@example.com");
    let api_token = r.body["api_token"].as_str().unwrap().to_owned();
    assert!(api_token.starts_with("sk-"));
    assert!(st
        .sync
        .calls()
        .iter()
        .any(|c| c.path.starts_with("/internal/v1/keys/")));

    // Reused token.
    let r = call(
        &st,
        "GET",
        "/v1/verify-token",
        Some(&p["token"]),
        None,
        NOW + 2,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "invalid_token");

    // Login again: same app key comes back, not a new one.
    let body = form(&[
        ("app_id", &app),
        ("redirect_uri", redirect),
        ("email", "app@example.com"),
        ("password", PW),
        ("action", "login"),
    ]);
    let r = call_raw(&st, "POST", "/authorization", &body, NOW).await;
    let p2 = callback_params(r.headers[http::header::LOCATION].to_str().unwrap());
    let r = call(
        &st,
        "GET",
        "/v1/verify-token",
        Some(&p2["token"]),
        None,
        NOW + 1,
    )
    .await;
    assert_eq!(r.body["api_token"], api_token.as_str());

    // Expired token.
    let r = call_raw(&st, "POST", "/authorization", &body, NOW).await;
    let p3 = callback_params(r.headers[http::header::LOCATION].to_str().unwrap());
    let r = call(
        &st,
        "GET",
        "/v1/verify-token",
        Some(&p3["token"]),
        None,
        NOW + st.policy.app_token_ttl_secs + 1,
    )
    .await;
    assert_eq!(r.status, 401);

    // Wrong password re-renders the page, no redirect.
    let body = form(&[
        ("app_id", &app),
        ("redirect_uri", redirect),
        ("email", "app@example.com"),
        ("password", "wrong-pass-123"),
        ("action", "login"),
    ]);
    let r = call_raw(&st, "POST", "/authorization", &body, NOW).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get(http::header::LOCATION).is_none());
    // Unregistered redirect on POST.
    let body = form(&[
        ("app_id", &app),
        ("redirect_uri", "https://evil.example.com"),
        ("email", "app@example.com"),
        ("password", PW),
    ]);
    assert_eq!(
        call_raw(&st, "POST", "/authorization", &body, NOW)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn test_providers_sealed_masked_and_published() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let secret = "sk-upstream-very-secret-value-1234";
    let r = call(
        &st,
        "POST",
        "/api/admin/providers",
        Some(&admin),
        Some(json!({"id": "openai", "kind": "openai",
        "base_url": "https://api.openai.com/v1", "credentials": [{"secret": secret}]})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(!r.text.contains(secret));
    assert_eq!(r.body["credentials"][0]["secret"], "••••1234");
    assert!(
        !st.store.dump().contains(secret),
        "credential stored in clear"
    );
    let r = call(&st, "GET", "/api/admin/providers", Some(&admin), None, NOW).await;
    assert!(!r.text.contains(secret));
    // Update without a secret keeps the stored one.
    let r = call(&st, "PUT", "/api/admin/providers/openai", Some(&admin), Some(json!({"kind": "openai",
        "base_url": "https://api.openai.com/v1", "credentials": [{"id": "openai-1", "weight": 2}]})), NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for bad in [
        json!({"id": "p", "kind": "openai", "base_url": "ftp://x"}),
        json!({"id": "p", "kind": "nope", "base_url": "https://x.example.com"}),
        json!({"id": "p q", "kind": "openai", "base_url": "https://x.example.com"}),
    ] {
        assert_eq!(
            call(
                &st,
                "POST",
                "/api/admin/providers",
                Some(&admin),
                Some(bad),
                NOW
            )
            .await
            .status,
            400
        );
    }
    let model = json!({"name": "writer-pro", "deployments": [{"provider": "openai", "model": "gpt-4o-mini", "weight": 3}],
                       "stream_mode": "force_stream", "price": {"input_per_mtok": 150000, "output_per_mtok": 600000}});
    let r = call(
        &st,
        "POST",
        "/api/admin/models",
        Some(&admin),
        Some(model),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &st,
        "POST",
        "/api/admin/models",
        Some(&admin),
        Some(json!({"name": "x",
        "deployments": [{"provider": "ghost", "model": "m"}]})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(
        &st,
        "PUT",
        "/api/admin/settings",
        Some(&admin),
        Some(json!({"cors_origins": ["https://app.example.com"],
        "force_stream_default": "force_non_stream"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &st,
        "POST",
        "/api/admin/catalogue/publish",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cat = st
        .sync
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.path == "/internal/v1/catalogue")
        .unwrap();
    let snap: tollbooth_core::catalogue::CatalogueSnapshot =
        serde_json::from_value(cat.body.unwrap()).unwrap();
    assert_eq!(snap.version, r.body["version"].as_str().unwrap());
    assert_eq!(snap.providers[0].credentials[0].secret, secret);
    assert_eq!(snap.providers[0].credentials[0].weight, 2);
    assert_eq!(snap.models[0].name, "writer-pro");
    assert_eq!(
        snap.settings.stream_mode,
        tollbooth_core::catalogue::StreamMode::ForceNonStream
    );
    let r2 = call(
        &st,
        "POST",
        "/api/admin/catalogue/publish",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_ne!(r2.body["version"], r.body["version"]);
    assert_eq!(
        call(&st, "GET", "/api/admin/catalogue", Some(&admin), None, NOW)
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn test_sync_failure_is_reported_not_hidden() {
    let mut st = state();
    st.sync.fail = true;
    let (token, _) = signup(&st, "f@example.com").await;
    let r = call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&token),
        Some(json!({"name": "k"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["edge"]["synced"], false);
}
