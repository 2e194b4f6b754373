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
            trust_forwarded_for: true,
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
        source_ip: None,
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
        source_ip: None,
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

/// What the test helpers change a first password to.
fn changed(pw: &str) -> String {
    format!("{pw}-changed")
}

/// Logs in (with the changed password if the account was made before), and changes the
/// initial password of a new account as the first login requires.
async fn admin_token(st: &St, role: Role) -> String {
    let email = format!(
        "{}@ops.example.com",
        if role == Role::Admin {
            "root"
        } else {
            "viewer"
        }
    );
    let fresh = if role == Role::Admin {
        crate::admin::bootstrap_admin(&st.store, &email, "admin-password-1", NOW)
            .await
            .unwrap()
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
        r.status == 201
    };
    let pw = if role == Role::Admin {
        "admin-password-1"
    } else {
        "viewer-password-1"
    };
    let now_pw = if fresh { pw.to_owned() } else { changed(pw) };
    let r = call(
        st,
        "POST",
        "/api/admin/login",
        None,
        Some(json!({"email": email, "password": now_pw})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["token"].as_str().unwrap().to_owned();
    if r.body["must_change_password"] == true {
        let r = call(
            st,
            "POST",
            "/api/admin/password",
            Some(&token),
            Some(json!({"current_password": pw, "new_password": changed(pw)})),
            NOW,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    token
}

/// Unknown accounts pay the same argon2 verification as known ones (the dummy hash), for
/// admins and members: the count of verifications is the same for both.
#[tokio::test]
async fn test_login_verifies_a_password_for_unknown_emails_too() {
    let st = state();
    admin_token(&st, Role::Admin).await;
    signup(&st, "known@example.com").await;
    let verifies = || crate::login::VERIFIES.with(|c| c.get());
    for (path, known) in [
        ("/api/admin/login", "root@ops.example.com"),
        ("/api/auth/login", "known@example.com"),
    ] {
        for email in [known, "nobody@example.com"] {
            let before = verifies();
            let r = call(
                &st,
                "POST",
                path,
                None,
                Some(json!({"email": email, "password": "wrong-password-9"})),
                NOW,
            )
            .await;
            assert_eq!(r.status, 401, "{path} {email}: {}", r.text);
            assert_eq!(
                verifies() - before,
                1,
                "{path} {email}: one argon2 verification per attempt"
            );
        }
    }
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
    // Pushes the member can cause never carry a status (only the admin's do).
    assert!(profile.body.as_ref().unwrap().get("status").is_none());
    assert!(profile.body.as_ref().unwrap()["version"].as_u64().unwrap() > 0);
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
    assert_eq!(r.status, 400, "a credit needs the client's idempotency key");
    assert_eq!(r.body["error"]["param"], "idempotency_key");
    let credit = json!({"amount_micros": 5_000_000, "reason": "goodwill",
                        "idempotency_key": "credit-key-0001"});
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/credits"),
        Some(&admin),
        Some(credit.clone()),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let credit_id = r.body["credit"]["credit_id"].as_str().unwrap().to_owned();
    // A retry (timeout, double click) is the same credit, applied once at the edge.
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/credits"),
        Some(&admin),
        Some(credit.clone()),
        NOW + 3,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["replayed"], true);
    assert_eq!(r.body["credit"]["credit_id"], credit_id.as_str());
    let mut other = credit.clone();
    other["amount_micros"] = json!(7);
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/credits"),
        Some(&admin),
        Some(other),
        NOW + 4,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let credit_calls: Vec<_> = st
        .sync
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/credits"))
        .collect();
    assert!(credit_calls
        .iter()
        .all(|c| c.body.as_ref().unwrap()["credit_id"] == credit_id.as_str()));
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
            Some(json!({"amount_micros": 1, "reason": "x", "idempotency_key": "credit-key-0002"})),
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

async fn call_headers(
    st: &St,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    now: u64,
) -> Resp {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let ctx = Ctx {
        method: method.into(),
        path: path_only.into(),
        query: form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers: h,
        body: body.as_bytes().to_vec(),
        now,
        source_ip: None,
    };
    finish(handle_ctx(st, ctx).await)
}

const VERIFIER: &str = "verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Opens the sign-in page (PKCE challenge of `VERIFIER`) and posts `email`/`password`
/// with the page's CSRF token and cookie. Returns the response.
async fn authorize(st: &St, app: &str, redirect: &str, email: &str, action: &str) -> Resp {
    let challenge = crate::app_login::s256(VERIFIER);
    let q = form(&[
        ("app_id", app),
        ("redirect_uri", redirect),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-1"),
    ]);
    let page = call(st, "GET", &format!("/authorization?{q}"), None, None, NOW).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = page
        .text
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let cookie = page.headers[http::header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let body = form(&[
        ("app_id", app),
        ("redirect_uri", redirect),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-1"),
        ("csrf", &csrf),
        ("email", email),
        ("password", PW),
        ("action", action),
    ]);
    call_headers(
        st,
        "POST",
        "/authorization",
        &[("cookie", &cookie)],
        &body,
        NOW,
    )
    .await
}

/// A fresh callback token for `email` (an existing member).
async fn app_token(st: &St, app: &str, redirect: &str, email: &str) -> String {
    let r = authorize(st, app, redirect, email, "login").await;
    assert_eq!(r.status, 302, "{}", r.text);
    callback_params(r.headers[http::header::LOCATION].to_str().unwrap())["token"].clone()
}

async fn exchange(
    st: &St,
    token: &str,
    verifier: &str,
    redirect: &str,
    secret: Option<&str>,
    now: u64,
) -> Resp {
    let mut q = vec![
        ("code_verifier".to_owned(), verifier.to_owned()),
        ("redirect_uri".to_owned(), redirect.to_owned()),
    ];
    if let Some(secret) = secret {
        q.push(("app_time".into(), now.to_string()));
        q.push((
            "app_sign".into(),
            crate::app_login::sign_exchange(secret.as_bytes(), token, now),
        ));
    }
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q)
        .finish();
    call(
        st,
        "GET",
        &format!("/v1/verify-token?{q}"),
        Some(token),
        None,
        now,
    )
    .await
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
    let challenge = crate::app_login::s256(VERIFIER);

    // Unregistered redirect URIs are refused, prefixes too; PKCE S256 is required.
    for (uri, ch, method) in [
        ("https://evil.example.com/cb", challenge.as_str(), "S256"),
        (
            "https://writer.example.com/auth-callback.evil",
            &challenge,
            "S256",
        ),
        ("", &challenge, "S256"),
        (redirect, "", "S256"),
        (redirect, &challenge, "plain"),
        (redirect, "short", "S256"),
    ] {
        let q = form(&[
            ("app_id", &app),
            ("redirect_uri", uri),
            ("code_challenge", ch),
            ("code_challenge_method", method),
        ]);
        let r = call(&st, "GET", &format!("/authorization?{q}"), None, None, NOW).await;
        assert_eq!(r.status, 400, "{uri} {ch} {method}: {}", r.text);
    }

    // Sign up through the page, then get redirected with token/sign/time/state.
    let r = authorize(&st, &app, redirect, "app@example.com", "signup").await;
    assert_eq!(r.status, 302, "{}", r.text);
    let loc = r.headers[http::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(loc.starts_with("x-my-app://auth-callback?token="), "{loc}");
    let p = callback_params(&loc);
    assert_eq!(p["state"], "st-1");
    let time: u64 = p["time"].parse().unwrap();
    verify_callback(secret.as_bytes(), &p["token"], time, &p["sign"], NOW, 300).unwrap();

    // What the redirect carries is not enough: no verifier, no app signature.
    let r = call(&st, "GET", "/v1/verify-token", Some(&p["token"]), None, NOW).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "invalid_client");
    // The failed attempt burnt the token: even the right exchange is refused now.
    let r = exchange(&st, &p["token"], VERIFIER, redirect, Some(&secret), NOW).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "invalid_token");

    // Each missing or wrong piece is refused.
    let (_, other_secret) = make_app(&st, &admin).await;
    let wrong_verifier = "x".repeat(43);
    for (verifier, uri, sec) in [
        (wrong_verifier.as_str(), redirect, Some(secret.as_str())),
        (
            VERIFIER,
            "https://writer.example.com/auth-callback",
            Some(&secret),
        ),
        (VERIFIER, redirect, None),
        (VERIFIER, redirect, Some(other_secret.as_str())),
    ] {
        let t = app_token(&st, &app, redirect, "app@example.com").await;
        let r = exchange(&st, &t, verifier, uri, sec, NOW + 1).await;
        assert_eq!(r.status, 401, "{verifier} {uri}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "invalid_client");
    }
    // A stale app signature too.
    let t = app_token(&st, &app, redirect, "app@example.com").await;
    let stale = crate::app_login::sign_exchange(secret.as_bytes(), &t, NOW - 1000);
    let q = form(&[
        ("code_verifier", VERIFIER),
        ("redirect_uri", redirect),
        ("app_time", &(NOW - 1000).to_string()),
        ("app_sign", &stale),
    ]);
    let r = call(
        &st,
        "GET",
        &format!("/v1/verify-token?{q}"),
        Some(&t),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);

    // The complete exchange works, once.
    let t = app_token(&st, &app, redirect, "app@example.com").await;
    let r = exchange(&st, &t, VERIFIER, redirect, Some(&secret), NOW + 1).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["email"], "app@example.com");
    let api_token = r.body["api_token"].as_str().unwrap().to_owned();
    assert!(api_token.starts_with("sk-"));
    assert!(st
        .sync
        .calls()
        .iter()
        .any(|c| c.path.starts_with("/internal/v1/keys/")));
    let r = exchange(&st, &t, VERIFIER, redirect, Some(&secret), NOW + 2).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "invalid_token");

    // Login again: same app key comes back, not a new one.
    let t = app_token(&st, &app, redirect, "app@example.com").await;
    let r = exchange(&st, &t, VERIFIER, redirect, Some(&secret), NOW + 1).await;
    assert_eq!(r.body["api_token"], api_token.as_str());

    // Expired token.
    let t = app_token(&st, &app, redirect, "app@example.com").await;
    let late = NOW + st.policy.app_token_ttl_secs + 1;
    let r = exchange(&st, &t, VERIFIER, redirect, Some(&secret), late).await;
    assert_eq!(r.status, 401);

    // A public app (no secret kept) exchanges with PKCE alone.
    let r = call(
        &st,
        "POST",
        "/api/admin/apps",
        Some(&admin),
        Some(json!({"name": "Mobile",
        "callback_urls": ["x-mobile://cb"], "public": true})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let public_app = r.body["id"].as_str().unwrap().to_owned();
    let t = app_token(&st, &public_app, "x-mobile://cb", "app@example.com").await;
    let r = exchange(&st, &t, "y".repeat(50).as_str(), "x-mobile://cb", None, NOW).await;
    assert_eq!(r.status, 401, "wrong verifier: {}", r.text);
    let t = app_token(&st, &public_app, "x-mobile://cb", "app@example.com").await;
    let r = exchange(&st, &t, VERIFIER, "x-mobile://cb", None, NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The form needs its CSRF token and cookie: a cross-site post is refused.
    let body = form(&[
        ("app_id", &app),
        ("redirect_uri", redirect),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("email", "app@example.com"),
        ("password", PW),
        ("action", "login"),
        ("csrf", "forged-token"),
    ]);
    let r = call_raw(&st, "POST", "/authorization", &body, NOW).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.headers.get(http::header::LOCATION).is_none());
    let r = call_headers(
        &st,
        "POST",
        "/authorization",
        &[("cookie", "tb_authz_csrf=another-token")],
        &body,
        NOW,
    )
    .await;
    assert_eq!(r.status, 403);

    // Wrong password re-renders the page, no redirect.
    let r = {
        let page = authorize(&st, &app, redirect, "nobody@example.com", "login").await;
        page
    };
    assert_eq!(r.status, 401);
    assert!(r.headers.get(http::header::LOCATION).is_none());
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
        Some(json!({"id": "openai", "kind": "openai", "validate": false,
        "base_url": "https://api.openai.com/v1", "credentials": [{"secret": secret}],
        "headers": {"x-auth": "header-secret-123456"}})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(!r.text.contains(secret));
    // Custom headers are sealed and masked like credentials.
    assert!(!r.text.contains("header-secret-123456"), "{}", r.text);
    assert_eq!(r.body["headers"]["x-auth"], "••••3456");
    assert!(!st.store.dump().contains("header-secret-123456"));
    assert_eq!(
        r.body["prefix_routing"], false,
        "prefix routing is off by default"
    );
    assert_eq!(r.body["credentials"][0]["secret"], "••••1234");
    assert!(
        !st.store.dump().contains(secret),
        "credential stored in clear"
    );
    let r = call(&st, "GET", "/api/admin/providers", Some(&admin), None, NOW).await;
    assert!(!r.text.contains(secret));
    assert!(!r.text.contains("header-secret-123456"));
    // Update without a secret keeps the stored one; the masked header value sent back
    // keeps the stored header.
    let r = call(
        &st,
        "PUT",
        "/api/admin/providers/openai",
        Some(&admin),
        Some(json!({"kind": "openai", "validate": false,
        "base_url": "https://api.openai.com/v1", "credentials": [{"id": "openai-1", "weight": 2}],
        "headers": {"x-auth": "••••3456"}})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Private and loopback destinations are refused (no loopback flag here).
    for base in [
        "http://127.0.0.1:9001/v1",
        "http://169.254.169.254/latest",
        "http://10.0.0.8/v1",
        "http://localhost:8080/v1",
        "http://[::1]/v1",
    ] {
        let r = call(
            &st,
            "POST",
            "/api/admin/providers",
            Some(&admin),
            Some(json!({"id": "evil", "kind": "openai", "base_url": base})),
            NOW,
        )
        .await;
        assert_eq!(r.status, 400, "{base}: {}", r.text);
        assert_eq!(r.body["error"]["param"], "base_url");
    }
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
    // An enabled model needs a price or an explicit `free`.
    let unpriced = json!({"name": "cheap", "deployments": [{"provider": "openai", "model": "m"}]});
    let r = call(
        &st,
        "POST",
        "/api/admin/models",
        Some(&admin),
        Some(unpriced.clone()),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "price");
    let mut free = unpriced.clone();
    free["free"] = json!(true);
    let r = call(
        &st,
        "POST",
        "/api/admin/models",
        Some(&admin),
        Some(free),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
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
    assert_eq!(snap.providers[0].headers["x-auth"], "header-secret-123456");
    assert!(!snap.providers[0].prefix_routing);
    assert!(snap.models.iter().any(|m| m.name == "writer-pro"));
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
async fn test_model_max_input_tokens_is_validated_stored_and_published() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let r = call(
        &st,
        "POST",
        "/api/admin/providers",
        Some(&admin),
        Some(json!({"id": "openai", "kind": "openai", "validate": false,
        "base_url": "https://api.openai.com/v1", "credentials": [{"secret": "sk-upstream-1234"}]})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let model = |name: &str, limit: Value| {
        json!({"name": name, "deployments": [{"provider": "openai", "model": "gpt-4o"}],
               "price": {"input_per_mtok": 1000, "output_per_mtok": 2000},
               "max_input_tokens": limit})
    };
    // Out of range or not a positive integer: 400 naming the field, nothing stored.
    for bad in [json!(0), json!(10_000_001), json!(-5), json!("many")] {
        let r = call(
            &st,
            "POST",
            "/api/admin/models",
            Some(&admin),
            Some(model("reader", bad.clone())),
            NOW,
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        if bad.is_u64() {
            assert_eq!(r.body["error"]["param"], "max_input_tokens", "{}", r.text);
        }
    }
    let r = call(&st, "GET", "/api/admin/models", Some(&admin), None, NOW).await;
    assert!(!r.text.contains("reader"), "{}", r.text);
    // Create with the limit; the response carries it.
    let r = call(
        &st,
        "POST",
        "/api/admin/models",
        Some(&admin),
        Some(model("reader", json!(200_000))),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["max_input_tokens"], 200_000);
    // Update changes it; a bad update is refused and keeps the stored value.
    let r = call(
        &st,
        "PUT",
        "/api/admin/models/reader",
        Some(&admin),
        Some(model("reader", json!(10_000_001))),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "max_input_tokens");
    let r = call(
        &st,
        "PUT",
        "/api/admin/models/reader",
        Some(&admin),
        Some(model("reader", json!(128_000))),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["max_input_tokens"], 128_000);
    // A model without it stays without it.
    let mut plain = model("writer", Value::Null);
    plain.as_object_mut().unwrap().remove("max_input_tokens");
    let r = call(
        &st,
        "POST",
        "/api/admin/models",
        Some(&admin),
        Some(plain),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(&st, "GET", "/api/admin/models", Some(&admin), None, NOW).await;
    let listed = r.body["data"].as_array().unwrap();
    let find = |n: &str| listed.iter().find(|m| m["name"] == n).unwrap().clone();
    assert_eq!(find("reader")["max_input_tokens"], 128_000, "{}", r.text);
    assert!(find("writer")["max_input_tokens"].is_null(), "{}", r.text);
    // Published into the catalogue snapshot the edge reads.
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
    let get = |n: &str| snap.models.iter().find(|m| m.name == n).unwrap();
    assert_eq!(get("reader").max_input_tokens, Some(128_000));
    assert_eq!(get("writer").max_input_tokens, None);
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

// ---- issue 10, control-plane side --------------------------------------------------

async fn make_plan(st: &St, admin: &str, plan: Value) {
    let r = call(st, "POST", "/api/admin/plans", Some(admin), Some(plan), NOW).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

fn allowance_pushes(st: &St, member: &str) -> Vec<Value> {
    st.sync
        .calls()
        .into_iter()
        .filter(|c| c.path == format!("/internal/v1/allowances/{member}"))
        .map(|c| c.body.unwrap())
        .collect()
}

#[tokio::test]
async fn test_plan_toggling_never_opens_a_fresh_allowance() {
    let mut st = state();
    st.policy.session_ttl_secs = 400 * 86_400; // sessions outlive the periods here
    let st = st;
    let admin = admin_token(&st, Role::Admin).await;
    make_plan(&st, &admin, free_plan()).await;
    let mut student = free_plan();
    student["id"] = json!("student");
    student["allowance_amount"] = json!(200_000);
    make_plan(&st, &admin, student).await;
    let mut pro = free_plan();
    pro["id"] = json!("pro");
    pro["price_micros"] = json!(9_000_000);
    make_plan(&st, &admin, pro).await;
    let (token, member) = signup(&st, "toggle@example.com").await;
    // free -> student -> free -> student, days apart, inside one month.
    for (i, plan) in ["free", "student", "free", "student"].iter().enumerate() {
        let r = call(
            &st,
            "POST",
            "/api/me/subscription",
            Some(&token),
            Some(json!({"plan_id": plan})),
            NOW + 86_400 * i as u64,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let pushes = allowance_pushes(&st, &member);
    assert_eq!(pushes.len(), 4);
    let starts: Vec<u64> = pushes
        .iter()
        .map(|p| p["period_start"].as_u64().unwrap())
        .collect();
    assert!(
        starts.iter().all(|s| *s == NOW),
        "every switch updates the same period (the edge keeps `used`): {starts:?}"
    );
    let ids: std::collections::HashSet<&str> = pushes
        .iter()
        .map(|p| p["grant_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "each switch is applied (grant ids differ)");
    assert_eq!(pushes[3]["amount"], 200_000);

    // Paid, then back to free inside the paid period: the paid period's row, not a
    // fresh free period.
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/subscription"),
        Some(&admin),
        Some(json!({"plan_id": "pro", "action": "start"})),
        NOW + 10 * 86_400,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let paid_start = r.body["subscription"]["period_start"].as_u64().unwrap();
    assert_eq!(
        paid_start,
        NOW + 10 * 86_400,
        "a paid plan starts when paid"
    );
    let r = call(
        &st,
        "POST",
        "/api/me/subscription",
        Some(&token),
        Some(json!({"plan_id": "free"})),
        NOW + 12 * 86_400,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let last = allowance_pushes(&st, &member).pop().unwrap();
    assert_eq!(last["period_start"].as_u64().unwrap(), paid_start);
    // Next month: the free plan's period rolls from there, it does not restart.
    let r = call(
        &st,
        "POST",
        "/api/me/subscription",
        Some(&token),
        Some(json!({"plan_id": "student"})),
        NOW + 50 * 86_400,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let last = allowance_pushes(&st, &member).pop().unwrap();
    let start = last["period_start"].as_u64().unwrap();
    assert!(start > paid_start && start <= NOW + 50 * 86_400, "{start}");
}

#[tokio::test]
async fn test_revocation_is_durable_while_the_edge_is_down() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    make_plan(&st, &admin, free_plan()).await;
    let (token, member) = signup(&st, "leak@example.com").await;
    let r = call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&token),
        Some(json!({"name": "leaked"})),
        NOW,
    )
    .await;
    let pid = r.body["public_id"].as_str().unwrap().to_owned();
    st.sync
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = call(
        &st,
        "DELETE",
        &format!("/api/me/keys/{pid}"),
        Some(&token),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["edge"]["synced"], false);
    assert_eq!(r.body["edge"]["queued"], 1);
    // The key is a tombstone: not listed, not revocable twice, never pushed again.
    let list = call(&st, "GET", "/api/me/keys", Some(&token), None, NOW).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 0);
    let r = call(
        &st,
        "DELETE",
        &format!("/api/admin/keys/{pid}"),
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 404);
    let pending = crate::outbox::pending(&st.store).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].method, "DELETE");
    // Suspension while down: queued too.
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
    assert_eq!(r.body["edge"]["synced"], false);
    // The job retries while the edge is down: nothing is lost.
    let r = call(
        &st,
        "POST",
        "/api/admin/jobs/run",
        Some(&admin),
        None,
        NOW + 3600,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["edge_outbox"]["failed"], 2);
    assert_eq!(crate::outbox::pending(&st.store).await.unwrap().len(), 2);
    // The edge comes back: the next run delivers both, and empties the outbox.
    st.sync
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = call(
        &st,
        "POST",
        "/api/admin/jobs/run",
        Some(&admin),
        None,
        NOW + 7200,
    )
    .await;
    assert_eq!(r.body["edge_outbox"]["delivered"], 2, "{}", r.text);
    assert!(crate::outbox::pending(&st.store).await.unwrap().is_empty());
    let calls = st.sync.calls();
    assert!(calls
        .iter()
        .any(|c| c.method == "DELETE" && c.path == format!("/internal/v1/keys/{pid}")));
    let status = calls
        .iter()
        .find(|c| c.path == format!("/internal/v1/members/{member}/status"))
        .unwrap();
    assert_eq!(status.body.as_ref().unwrap()["status"], "suspended");
    assert!(status.body.as_ref().unwrap()["version"].as_u64().unwrap() > 0);
    // A later plan change re-pushes keys: never the revoked one.
    let n = st.sync.calls().len();
    call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/resume"),
        Some(&admin),
        None,
        NOW,
    )
    .await;
    call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/subscription"),
        Some(&admin),
        Some(json!({"plan_id": "free", "action": "start"})),
        NOW,
    )
    .await;
    assert!(!st.sync.calls()[n..]
        .iter()
        .any(|c| c.path == format!("/internal/v1/keys/{pid}") && c.method == "PUT"));
}

#[tokio::test]
async fn test_concurrent_profile_update_cannot_undo_a_suspension() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let (token, member) = signup(&st, "race@example.com").await;
    // A profile update loaded the member (active) before the suspension...
    let (mut stale, before) = crate::members::load_member(&st.store, &member, NOW)
        .await
        .unwrap()
        .unwrap();
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
    // ...and writes after it: the versioned write refuses (nothing written, no push).
    stale.username = "new-name".into();
    stale.version = before + 1;
    let n = st.sync.calls().len();
    let push = crate::members::member_push(&stale, None, NOW);
    let done = crate::members::commit_member(&st, before, &stale, vec![], vec![push], NOW)
        .await
        .unwrap();
    assert!(done.is_none(), "a stale writer must lose");
    assert_eq!(st.sync.calls().len(), n);
    let (now_stored, _) = crate::members::load_member(&st.store, &member, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now_stored.status, crate::model::MemberStatus::Suspended);
    // Through the API: a suspended member cannot change the profile at all.
    let r = call(
        &st,
        "PATCH",
        "/api/me",
        Some(&token),
        Some(json!({"username": "x"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 403);
    // Every member push carries the member's version and never a status.
    for c in st
        .sync
        .calls()
        .iter()
        .filter(|c| c.path == format!("/internal/v1/members/{member}"))
    {
        assert!(c.body.as_ref().unwrap().get("status").is_none());
    }
}

#[tokio::test]
async fn test_parallel_wrong_guesses_get_at_most_the_limit_of_password_checks() {
    let st = state();
    signup(&st, "guess@example.com").await;
    let bad = json!({"email": "guess@example.com", "password": "wrong-password-9"});
    let attempts =
        (0..12).map(|_| call(&st, "POST", "/api/auth/login", None, Some(bad.clone()), NOW));
    let results = futures_util::future::join_all(attempts).await;
    let unauthorized = results.iter().filter(|r| r.status == 401).count();
    let locked = results.iter().filter(|r| r.status == 429).count();
    assert_eq!(unauthorized + locked, 12);
    assert!(
        unauthorized < st.policy.max_login_failures as usize,
        "{unauthorized} wrong guesses were checked"
    );
    // The right password is refused while locked.
    let good = json!({"email": "guess@example.com", "password": PW});
    let r = call(&st, "POST", "/api/auth/login", None, Some(good), NOW + 5).await;
    assert_eq!(r.status, 429, "{}", r.text);
}

#[tokio::test]
async fn test_admin_login_counts_reset_and_address_limit() {
    let mut st = state();
    st.policy.max_logins_per_address = 5;
    let _ = admin_token(&st, Role::Admin).await; // one attempt from "unknown"
    let email = "root@ops.example.com";
    let bad = json!({"email": email, "password": "wrong-password-1"});
    let good = json!({"email": email, "password": changed("admin-password-1")});
    let from = |ip: &'static str| move |body: Value| (ip, body);
    let login = |(ip, body): (&str, Value), now| {
        let body = body.to_string();
        let ip = ip.to_owned();
        let st = &st;
        async move {
            call_headers(
                st,
                "POST",
                "/api/admin/login",
                &[
                    ("x-forwarded-for", &ip),
                    ("content-type", "application/json"),
                ],
                &body,
                now,
            )
            .await
        }
    };
    let a = from("203.0.113.7");
    // Two failures, a success (resets the account count), two more failures: not locked.
    assert_eq!(login(a(bad.clone()), NOW).await.status, 401);
    assert_eq!(login(a(bad.clone()), NOW).await.status, 401);
    assert_eq!(login(a(good.clone()), NOW).await.status, 200);
    assert_eq!(login(a(bad.clone()), NOW).await.status, 401);
    assert_eq!(login(a(bad.clone()), NOW).await.status, 401);
    // The address has used its 5 attempts: refused, whatever the account.
    let r = login(a(good.clone()), NOW).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "too_many_attempts");
    // Another address is not limited by it; unknown admin emails cost a check too.
    let b = from("198.51.100.9");
    let r = login(
        b(json!({"email": "ghost@ops.example.com", "password": "x"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(login(b(good), NOW).await.status, 200);
}

#[tokio::test]
async fn test_expired_subscriptions_are_downgraded_by_the_job() {
    let mut st = state();
    st.policy.session_ttl_secs = 400 * 86_400; // sessions outlive the periods here
    let st = st;
    let admin = admin_token(&st, Role::Admin).await;
    let mut pro = free_plan();
    pro["id"] = json!("pro");
    pro["price_micros"] = json!(9_000_000);
    make_plan(&st, &admin, pro).await;
    let (token, member) = signup(&st, "exp@example.com").await;
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
        &format!("/api/admin/members/{member}/subscription"),
        Some(&admin),
        Some(json!({"plan_id": "pro", "action": "start"})),
        NOW,
    )
    .await;
    let expires = r.body["subscription"]["expires_at"].as_u64().unwrap();
    // Before the expiry the job leaves it alone.
    let r = call(
        &st,
        "POST",
        "/api/admin/jobs/run",
        Some(&admin),
        None,
        expires - 1,
    )
    .await;
    assert_eq!(
        r.body["downgraded"].as_array().unwrap().len(),
        0,
        "{}",
        r.text
    );
    let r = call(
        &st,
        "POST",
        "/api/admin/jobs/run",
        Some(&admin),
        None,
        expires + 1,
    )
    .await;
    assert_eq!(r.body["downgraded"], json!([member]), "{}", r.text);
    let key_put = st
        .sync
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.path.starts_with("/internal/v1/keys/"))
        .unwrap();
    assert_eq!(key_put.body.unwrap()["plan_id"], "none");
    let sub = call(
        &st,
        "GET",
        "/api/me/subscription",
        Some(&token),
        None,
        expires + 2,
    )
    .await;
    assert_eq!(sub.body["subscription"]["status"], "expired");
    // Idempotent: a second run finds nothing.
    let r = call(
        &st,
        "POST",
        "/api/admin/jobs/run",
        Some(&admin),
        None,
        expires + 5,
    )
    .await;
    assert_eq!(r.body["downgraded"].as_array().unwrap().len(), 0);
}

/// The last key record pushed for `pid`.
fn last_key_push(st: &St, pid: &str) -> Value {
    st.sync
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.method == "PUT" && c.path == format!("/internal/v1/keys/{pid}"))
        .and_then(|c| c.body)
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn test_key_settings_edit_disable_operator_and_member_limits() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let viewer = admin_token(&st, Role::Viewer).await;
    let mut plan = free_plan();
    plan["allowed_models"] = json!(["writer", "oa/*"]);
    let r = call(
        &st,
        "POST",
        "/api/admin/plans",
        Some(&admin),
        Some(plan),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (token, member) = signup(&st, "keys@example.com").await;
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
    let r = call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&token),
        Some(json!({"name": "laptop"})),
        NOW,
    )
    .await;
    let pid = r.body["public_id"].as_str().unwrap().to_owned();

    // The admin edits every setting; the record at the edge follows, at a new version.
    let v0 = last_key_push(&st, &pid)["version"].as_u64().unwrap();
    let path = format!("/api/admin/keys/{pid}");
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(
            json!({"expires_at": NOW + 3600, "allowed_models": ["writer"], "rpm": 7,
                    "tpm": 9000, "name": "renamed"}),
        ),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["key"]["rpm"], 7);
    assert_eq!(r.body["edge"]["synced"], true, "{}", r.text);
    let rec = last_key_push(&st, &pid);
    assert_eq!(rec["expires_at"], NOW + 3600);
    assert_eq!(rec["allowed_models"], json!(["writer"]));
    assert_eq!(
        (rec["rpm"].clone(), rec["tpm"].clone()),
        (json!(7), json!(9000))
    );
    assert_eq!(rec["name"], "renamed");
    assert_eq!(rec["plan_id"], "free");
    assert!(rec["version"].as_u64().unwrap() > v0);
    let parsed: KeyRecord = serde_json::from_value(rec.clone()).unwrap();
    assert_eq!(parsed.status, tollbooth_core::keyrecord::KeyStatus::Active);

    // Disable, then enable; a bad status or a past expiry changes nothing.
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"status": "disabled"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(last_key_push(&st, &pid)["status"], "disabled");
    assert_eq!(r.body["key"]["status"], "disabled");
    let n = st.sync.calls().len();
    for bad in [
        json!({"status": "paused"}),
        json!({"expires_at": NOW - 1}),
        json!({"rpm": 0}),
        json!({"allowed_models": []}),
        json!({"colour": "red"}),
    ] {
        let r = call(&st, "PATCH", &path, Some(&admin), Some(bad.clone()), NOW).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    assert_eq!(st.sync.calls().len(), n, "refused edits push nothing");
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"status": "active", "rpm": null})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rec = last_key_push(&st, &pid);
    assert_eq!(rec["status"], "active");
    assert!(rec.get("rpm").is_none(), "null clears the limit: {rec}");
    assert_eq!(rec["tpm"], 9000, "fields not named stay");
    let r = call(&st, "GET", &path, Some(&viewer), None, NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["member_id"], member.as_str());
    assert_eq!(r.body["allowed_models"], json!(["writer"]));
    assert!(!r.text.contains("\"secret_hash\""), "{}", r.text);
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&viewer),
        Some(json!({"status": "disabled"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 403);

    // The member: expiry, name and models within the plan; not limits or status.
    let mine = format!("/api/me/keys/{pid}");
    let r = call(
        &st,
        "PATCH",
        &mine,
        Some(&token),
        Some(json!({"allowed_models": ["oa/gpt-4o"], "expires_at": null})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rec = last_key_push(&st, &pid);
    assert_eq!(rec["allowed_models"], json!(["oa/gpt-4o"]));
    assert!(rec.get("expires_at").is_none());
    let r = call(
        &st,
        "PATCH",
        &mine,
        Some(&token),
        Some(json!({"allowed_models": ["secret-model"]})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "allowed_models");
    for forbidden in [json!({"rpm": 1000}), json!({"status": "active"})] {
        let r = call(&st, "PATCH", &mine, Some(&token), Some(forbidden), NOW).await;
        assert_eq!(r.status, 403, "{}", r.text);
    }
    // Another member cannot touch it.
    let (other, _) = signup(&st, "other@example.com").await;
    let r = call(
        &st,
        "PATCH",
        &mine,
        Some(&other),
        Some(json!({"name": "mine"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 404);

    // An operator key for the pass-through, issued by the admin with its own limits.
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/keys"),
        Some(&admin),
        Some(json!({"name": "ops", "role": "operator", "rpm": 30})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["key"].as_str().unwrap().starts_with("sk-"));
    let op = r.body["public_id"].as_str().unwrap().to_owned();
    let rec = last_key_push(&st, &op);
    assert_eq!(rec["role"], "operator");
    assert_eq!(rec["rpm"], 30);
    // A plan change re-pushes every key with its settings kept.
    let r = call(
        &st,
        "POST",
        &format!("/api/admin/members/{member}/subscription"),
        Some(&admin),
        Some(json!({"plan_id": "free", "action": "renew"})),
        NOW + 10,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(last_key_push(&st, &op)["role"], "operator");
    assert_eq!(
        last_key_push(&st, &pid)["allowed_models"],
        json!(["oa/gpt-4o"])
    );
    // Revoked keys cannot be edited.
    let r = call(&st, "DELETE", &path, Some(&admin), None, NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"status": "active"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        call(&st, "GET", &path, Some(&admin), None, NOW)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn test_admin_users_owner_invite_first_password_logout_remove() {
    let st = state();
    crate::admin::bootstrap_admin(&st.store, "root@ops.example.com", "admin-password-1", NOW)
        .await
        .unwrap();
    let login = |email: &'static str, pw: String| {
        let st = &st;
        async move {
            call(
                st,
                "POST",
                "/api/admin/login",
                None,
                Some(json!({"email": email, "password": pw})),
                NOW,
            )
            .await
        }
    };
    // The bootstrap account owns the deployment and must change its password first.
    let r = login("root@ops.example.com", "admin-password-1".into()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["role"], "owner");
    assert_eq!(r.body["must_change_password"], true);
    let root = r.body["token"].as_str().unwrap().to_owned();
    for (m, p) in [
        ("GET", "/api/admin/members"),
        ("POST", "/api/admin/catalogue/publish"),
    ] {
        let r = call(&st, m, p, Some(&root), None, NOW).await;
        assert_eq!(r.status, 403, "{m} {p}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "password_change_required");
    }
    // Payments' admin routes too.
    let r = call(&st, "GET", "/api/admin/orders", Some(&root), None, NOW).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = call(&st, "GET", "/api/admin/me", Some(&root), None, NOW).await;
    assert_eq!(r.body["must_change_password"], true, "{}", r.text);
    let pw = |cur: &str, new: &str| json!({"current_password": cur, "new_password": new});
    let r = call(
        &st,
        "POST",
        "/api/admin/password",
        Some(&root),
        Some(pw("wrong-password-0", "owner-password-2")),
        NOW,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "current_password");
    let r = call(
        &st,
        "POST",
        "/api/admin/password",
        Some(&root),
        Some(pw("admin-password-1", "admin-password-1")),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "the same password is no change: {}", r.text);
    let r = call(
        &st,
        "POST",
        "/api/admin/password",
        Some(&root),
        Some(pw("admin-password-1", "short")),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A second session, opened before the change, ends with it; this one stays.
    let other = login("root@ops.example.com", "admin-password-1".into())
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        &st,
        "POST",
        "/api/admin/password",
        Some(&root),
        Some(pw("admin-password-1", "owner-password-2")),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        call(&st, "GET", "/api/admin/members", Some(&root), None, NOW)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&st, "GET", "/api/admin/me", Some(&other), None, NOW)
            .await
            .status,
        401
    );
    assert_eq!(
        login("root@ops.example.com", "admin-password-1".into())
            .await
            .status,
        401
    );
    assert_eq!(
        login("root@ops.example.com", "owner-password-2".into())
            .await
            .status,
        200
    );

    // Invitations: a generated temporary password, shown once, changed at first login.
    let r = call(
        &st,
        "POST",
        "/api/admin/admins",
        Some(&root),
        Some(json!({"email": "Ada@Ops.example.com", "role": "admin"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let temp = r.body["temporary_password"].as_str().unwrap().to_owned();
    assert!(
        !st.store.dump().contains(&temp),
        "the temporary password is not stored"
    );
    let r = call(&st, "GET", "/api/admin/admins", Some(&root), None, NOW).await;
    assert!(
        !r.text.contains(&temp) && !r.text.contains("argon2"),
        "{}",
        r.text
    );
    let ada = login("ada@ops.example.com", temp.clone()).await;
    assert_eq!(ada.body["must_change_password"], true);
    let ada = ada.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&st, "GET", "/api/admin/plans", Some(&ada), None, NOW)
            .await
            .status,
        403
    );
    let r = call(
        &st,
        "POST",
        "/api/admin/password",
        Some(&ada),
        Some(pw(&temp, "ada-password-22")),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        call(&st, "GET", "/api/admin/plans", Some(&ada), None, NOW)
            .await
            .status,
        200
    );
    // Admins work on the catalogue but do not manage accounts.
    let r = call(
        &st,
        "POST",
        "/api/admin/admins",
        Some(&ada),
        Some(json!({"email": "eve@ops.example.com", "role": "owner"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = call(
        &st,
        "DELETE",
        "/api/admin/admins/root@ops.example.com",
        Some(&ada),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // The owner makes her a viewer: her very next write is refused.
    let r = call(
        &st,
        "PATCH",
        "/api/admin/admins/ada%40ops.example.com",
        Some(&root),
        Some(json!({"role": "viewer"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &st,
        "PUT",
        "/api/admin/settings",
        Some(&ada),
        Some(json!({})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // A viewer may still change her own password and log out.
    let r = call(
        &st,
        "POST",
        "/api/admin/password",
        Some(&ada),
        Some(pw("ada-password-22", "ada-password-33")),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(&st, "POST", "/api/admin/logout", Some(&ada), None, NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        call(&st, "GET", "/api/admin/me", Some(&ada), None, NOW)
            .await
            .status,
        401
    );
    // The last owner can neither step down nor remove itself; removing ends sessions.
    let r = call(
        &st,
        "PATCH",
        "/api/admin/admins/root@ops.example.com",
        Some(&root),
        Some(json!({"role": "admin"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = call(
        &st,
        "DELETE",
        "/api/admin/admins/root@ops.example.com",
        Some(&root),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let ada = login("ada@ops.example.com", "ada-password-33".into())
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        &st,
        "DELETE",
        "/api/admin/admins/ada@ops.example.com",
        Some(&root),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        call(&st, "GET", "/api/admin/me", Some(&ada), None, NOW)
            .await
            .status,
        401
    );
    assert_eq!(
        login("ada@ops.example.com", "ada-password-33".into())
            .await
            .status,
        401
    );
    let r = call(
        &st,
        "DELETE",
        "/api/admin/admins/nobody@ops.example.com",
        Some(&root),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 404);
    // Every account change is audited, never with a password.
    let r = call(&st, "GET", "/api/admin/audit", Some(&root), None, NOW).await;
    for action in [
        "admin.password",
        "admin.create",
        "admin.role",
        "admin.remove",
    ] {
        assert!(r.text.contains(action), "{action}: {}", r.text);
    }
    assert!(!r.text.contains("ada-password") && !r.text.contains(&temp));
}

#[tokio::test]
async fn test_admin_creates_edits_and_deletes_members() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    // Created with a generated password, shown once; the member can log in with it.
    let r = call(
        &st,
        "POST",
        "/api/admin/members",
        Some(&admin),
        Some(json!({"email": "New@Example.com", "username": "Newt"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["member"]["id"].as_str().unwrap().to_owned();
    let pw = r.body["password"].as_str().unwrap().to_owned();
    assert!(!st.store.dump().contains(&pw));
    assert!(st
        .sync
        .calls()
        .iter()
        .any(|c| c.path == format!("/internal/v1/members/{id}")));
    let r = call(
        &st,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "new@example.com", "password": pw})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let member_token = r.body["token"].as_str().unwrap().to_owned();
    let r = call(
        &st,
        "POST",
        "/api/admin/members",
        Some(&admin),
        Some(json!({"email": "new@example.com"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);

    // Edit name and email: the old email is free again, the new one taken.
    signup(&st, "taken@example.com").await;
    let path = format!("/api/admin/members/{id}");
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"email": "taken@example.com"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"email": "renamed@example.com", "username": "Renamed"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["member"]["email"], "renamed@example.com");
    let push = st
        .sync
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.path == format!("/internal/v1/members/{id}"))
        .unwrap();
    assert_eq!(push.body.as_ref().unwrap()["email"], "renamed@example.com");
    assert_eq!(push.body.as_ref().unwrap()["username"], "Renamed");
    let r = call(
        &st,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "renamed@example.com", "password": pw})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    signup(&st, "new@example.com").await;
    // Status through the same edit.
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"status": "suspended"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["member"]["status"], "suspended");
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"status": "gone"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"status": "active"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Delete with the data: keys revoked at the edge, sessions end, nothing left here.
    let r = call(
        &st,
        "POST",
        "/api/me/keys",
        Some(&member_token),
        Some(json!({"name": "k"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["public_id"].as_str().unwrap().to_owned();
    let r = call(&st, "DELETE", &path, Some(&admin), None, NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["keys_revoked"], json!([pid]));
    let calls = st.sync.calls();
    assert!(calls
        .iter()
        .any(|c| c.method == "DELETE" && c.path == format!("/internal/v1/keys/{pid}")));
    // The member's captured conversations are deleted at the edge too.
    assert!(calls
        .iter()
        .any(|c| c.method == "DELETE" && c.path == format!("/internal/v1/members/{id}/captures")));
    assert!(r.body["captures"].is_object(), "{}", r.text);
    let status = calls
        .iter()
        .rev()
        .find(|c| c.path == format!("/internal/v1/members/{id}/status"))
        .unwrap();
    assert_eq!(status.body.as_ref().unwrap()["status"], "suspended");
    assert_eq!(
        call(&st, "GET", &path, Some(&admin), None, NOW)
            .await
            .status,
        404
    );
    assert_eq!(
        call(&st, "GET", "/api/me", Some(&member_token), None, NOW)
            .await
            .status,
        401
    );
    assert!(
        !st.store.dump().contains(&format!("MEMBER#{id}")),
        "the partition is gone"
    );
    // The email can sign up again as a new account.
    signup(&st, "renamed@example.com").await;
    assert_eq!(
        call(&st, "DELETE", &path, Some(&admin), None, NOW)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn test_apps_update_and_rotate_secret() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let (app, old_secret) = make_app(&st, &admin).await;
    let path = format!("/api/admin/apps/{app}");
    let r = call(
        &st,
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({"name": "Renamed", "callback_urls": ["x-new-app://cb"]})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], "Renamed");
    assert_eq!(r.body["callback_urls"], json!(["x-new-app://cb"]));
    for bad in [
        json!({"callback_urls": ["javascript:alert(1)"]}),
        json!({"name": ""}),
        json!({"secret": "x"}),
    ] {
        let r = call(&st, "PATCH", &path, Some(&admin), Some(bad.clone()), NOW).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let r = call(&st, "GET", &path, Some(&admin), None, NOW).await;
    assert_eq!(r.body["name"], "Renamed", "{}", r.text);
    // Rotation: a new secret shown once, different, never stored in clear.
    let r = call(
        &st,
        "POST",
        &format!("{path}/rotate-secret"),
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_secret = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(!st.store.dump().contains(&new_secret));
    let r = call(&st, "GET", &path, Some(&admin), None, NOW).await;
    assert!(!r.text.contains(&new_secret) && r.body.get("secret").is_none());
    let stored: crate::model::App = crate::model::load(
        &st.store,
        &crate::model::app_pk(&app),
        crate::model::ONE,
        NOW,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        crate::crypto::open(&st.master_key, &stored.sealed_secret).unwrap(),
        new_secret
    );
    assert_eq!(
        call(
            &st,
            "POST",
            "/api/admin/apps/nope/rotate-secret",
            Some(&admin),
            None,
            NOW
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn test_provider_fields_prefix_models_and_settings_published() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let body = json!({"id": "az", "kind": "azure", "validate": false, "name": "Azure EU",
        "description": "EU deployment", "base_url": "https://api.openai.com/openai",
        "query": {"api-version": "2024-10-21"}, "auth": "api_key", "timeout_ms": 15000,
        "prefix_routing": true, "credentials": [{"secret": "az-secret-123456789"}]});
    let r = call(
        &st,
        "POST",
        "/api/admin/providers",
        Some(&admin),
        Some(body.clone()),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["prefix"], "az");
    assert_eq!(r.body["name"], "Azure EU");
    for (field, bad) in [
        ("query", json!({"key": "leak"})),
        ("timeout_ms", json!(5)),
        ("prefix", json!("a/b")),
        ("name", json!("")),
    ] {
        let mut b = body.clone();
        b["id"] = json!("other");
        b[field] = bad;
        let r = call(
            &st,
            "POST",
            "/api/admin/providers",
            Some(&admin),
            Some(b),
            NOW,
        )
        .await;
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert_eq!(r.body["error"]["param"], field);
    }
    // A model pulled earlier (stored as if pulled) and a hand-made one, with a
    // description and a forced stream mode.
    let pulled = crate::model::ModelEntry {
        model: serde_json::from_value(json!({"name": "az/gpt-4o", "enabled": false,
            "deployments": [{"provider": "az", "model": "gpt-4o"}]}))
        .unwrap(),
        pulled_from: Some("az".into()),
        removed: false,
    };
    crate::model::put(&st.store, pulled.item().unwrap())
        .await
        .unwrap();
    let r = call(
        &st,
        "POST",
        "/api/admin/models",
        Some(&admin),
        Some(json!({"name": "writer",
        "description": "Our writer", "stream_mode": "force_stream", "free": true,
        "deployments": [{"provider": "az", "model": "gpt-4o"}]})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &st,
        "GET",
        "/api/admin/models/writer",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["description"], "Our writer");
    assert_eq!(r.body["stream_mode"], "force_stream");
    let r = call(
        &st,
        "GET",
        "/api/admin/models/az/gpt-4o",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.body["pulled_from"], "az", "{}", r.text);
    assert_eq!(
        call(
            &st,
            "GET",
            "/api/admin/models/nope",
            Some(&admin),
            None,
            NOW
        )
        .await
        .status,
        404
    );
    let r = call(
        &st,
        "GET",
        "/api/admin/models?provider=az",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2, "{}", r.text);
    let r = call(
        &st,
        "GET",
        "/api/admin/models?provider=other",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.body["data"], json!([]));

    // A new prefix renames the pulled model (not the hand-made one).
    let mut b = body.clone();
    b["prefix"] = json!("eu");
    b["credentials"] = json!([{"id": "az-1"}]);
    let r = call(
        &st,
        "PUT",
        "/api/admin/providers/az",
        Some(&admin),
        Some(b),
        NOW,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["renamed_models"],
        json!([["az/gpt-4o", "eu/gpt-4o"]])
    );
    let r = call(
        &st,
        "GET",
        "/api/admin/providers/az",
        Some(&admin),
        None,
        NOW,
    )
    .await;
    assert_eq!(r.body["prefix"], "eu");
    let names: Vec<&str> = r.body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eu/gpt-4o", "writer"], "{}", r.text);
    assert!(!r.text.contains("az-secret-123456789"));

    // Settings: CORS origins and the statistics timezone; the catalogue carries the
    // provider's fields and the origins.
    let r = call(
        &st,
        "PUT",
        "/api/admin/settings",
        Some(&admin),
        Some(json!({"timezone": "Asia/Shanghai"})),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = call(
        &st,
        "PUT",
        "/api/admin/settings",
        Some(&admin),
        Some(json!({"cors_origins": ["https://app.example.com"], "timezone": "+08:00"})),
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
    let cat = cat.body.unwrap();
    assert_eq!(
        cat["settings"]["cors_origins"],
        json!(["https://app.example.com"])
    );
    let p = &cat["providers"][0];
    assert_eq!(p["query"]["api-version"], "2024-10-21");
    assert_eq!(
        (
            p["auth"].clone(),
            p["timeout_ms"].clone(),
            p["prefix"].clone()
        ),
        (json!("api_key"), json!(15000), json!("eu"))
    );
    assert_eq!(cat["models"][0]["description"], "Our writer");
    assert!(
        p.get("name").is_none(),
        "the display name stays in the control plane"
    );
    let r = call(&st, "GET", "/api/admin/settings", Some(&admin), None, NOW).await;
    assert_eq!(r.body["timezone"], "+08:00");
}

#[test]
fn test_proration_is_integer_rounded_down_and_only_for_active_paid_periods() {
    let sub = |price: Option<u64>, status: &str| crate::model::Subscription {
        member_id: "m".into(),
        plan_id: "pro".into(),
        started_at: 1_000,
        period_start: 1_000,
        period_end: 4_000,
        expires_at: Some(4_000),
        status: status.into(),
        grant_id: "g1".into(),
        period: None,
        price_micros: price,
    };
    let p = sub(Some(10_000_000), "active");
    // 2000 of 3000 s left: 6_666_666.67 → 6_666_666 (rounded down).
    assert_eq!(
        crate::members::proration_credit(&p, 2_000),
        Some(("prorate-g1".into(), 6_666_666))
    );
    assert_eq!(
        crate::members::proration_credit(&p, 1_000).unwrap().1,
        10_000_000
    );
    assert_eq!(
        crate::members::proration_credit(&p, 500).unwrap().1,
        10_000_000
    );
    assert_eq!(
        crate::members::proration_credit(&p, 3_999).unwrap().1,
        3_333
    );
    assert_eq!(crate::members::proration_credit(&p, 4_000), None);
    assert_eq!(
        crate::members::proration_credit(&sub(None, "active"), 2_000),
        None
    );
    assert_eq!(
        crate::members::proration_credit(&sub(Some(0), "active"), 2_000),
        None
    );
    assert_eq!(
        crate::members::proration_credit(&sub(Some(9), "expired"), 2_000),
        None
    );
    // Large prices do not overflow.
    let big = sub(Some(u64::MAX / 2), "active");
    assert!(crate::members::proration_credit(&big, 2_000).is_some_and(|(_, a)| a > 0));
}

#[tokio::test]
async fn test_upgrade_credits_the_unused_part_once_and_plan_priority() {
    let st = state();
    let admin = admin_token(&st, Role::Admin).await;
    let plan = |id: &str, price: u64, priority: u32| {
        json!({"id": id, "name": id, "period": "day", "price_micros": price,
               "allowance_amount": 1000, "allowance_unit": "tokens", "priority": priority})
    };
    for p in [plan("pro", 9_000_000, 10), plan("max", 30_000_000, 50)] {
        let r = call(&st, "POST", "/api/admin/plans", Some(&admin), Some(p), NOW).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = call(
        &st,
        "POST",
        "/api/admin/plans",
        Some(&admin),
        Some(plan("x", 1, 101)),
        NOW,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = call(&st, "GET", "/api/plans", None, None, NOW).await;
    assert!(r.text.contains("\"priority\":50"), "{}", r.text);
    let (_, member) = signup(&st, "up@example.com").await;
    let start = |plan: &'static str, at: u64| {
        let st = &st;
        let path = format!("/api/admin/members/{member}/subscription");
        let admin = admin.clone();
        async move {
            call(
                st,
                "POST",
                &path,
                Some(&admin),
                Some(json!({"plan_id": plan, "action": "start"})),
                at,
            )
            .await
        }
    };
    let r = start("pro", NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sub = &r.body["subscription"];
    let (s, e) = (
        sub["period_start"].as_u64().unwrap(),
        sub["period_end"].as_u64().unwrap(),
    );
    let grant = sub["grant_id"].as_str().unwrap().to_owned();
    let credits = |st: &St| {
        st.sync
            .calls()
            .into_iter()
            .filter(|c| c.path == format!("/internal/v1/wallets/{member}/credits"))
            .map(|c| c.body.unwrap())
            .collect::<Vec<_>>()
    };
    assert!(credits(&st).is_empty(), "a first paid plan credits nothing");
    // Upgrade a third of the way in: two thirds of 9 USD back, rounded down.
    let at = s + (e - s) / 3;
    let r = start("max", at).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = credits(&st);
    assert_eq!(c.len(), 1, "{c:?}");
    let expected = (9_000_000u128 * u128::from(e - at) / u128::from(e - s)) as i64;
    assert_eq!(c[0]["amount_micros"], expected);
    assert_eq!(c[0]["credit_id"], format!("prorate-{grant}"));
    // Renewing the same plan, or starting it again, credits nothing more.
    let r = start("max", at + 10).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(credits(&st).len(), 1);
}
