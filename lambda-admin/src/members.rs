//! Member accounts (signup, login with lockout, sessions, password, profile), member
//! keys and subscriptions, and the app-integration login flow.

use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tollbooth_core::auth::{hash_secret, verify_callback, ApiKey};
use tollbooth_core::billing::PlanPeriod;
use tollbooth_core::keyrecord::{KeyRecord, KeyRole, KeyStatus};

use crate::app::{
    created, esc, issue_session, ok, push, raw_response, session_claims, AppState, Ctx,
};
use crate::crypto::{self, hash_password, new_id, new_token, verify_password};
use crate::error::{ApiError, ApiResult};
use crate::model::*;
use crate::store::{ItemStore, Put, Query};
use crate::sync::{calls, EdgeSync, SyncCall};

pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 256;

/// Lowercased, trimmed; a pragmatic check (one `@`, a dotted domain, no spaces).
pub fn normalize_email(raw: &str) -> ApiResult<String> {
    let e = raw.trim().to_ascii_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(e)
    } else {
        Err(ApiError::invalid("email", "email is not a valid address"))
    }
}

/// At least 10 characters, at most 256, with a letter and a digit, not the email.
pub fn check_password(password: &str, email: &str, param: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&n) {
        return Err(ApiError::invalid(
            param,
            format!("password must be {MIN_PASSWORD_LEN}-{MAX_PASSWORD_LEN} characters"),
        ));
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(ApiError::invalid(
            param,
            "password must contain a letter and a digit",
        ));
    }
    if password.eq_ignore_ascii_case(email) {
        return Err(ApiError::invalid(
            param,
            "password must not be the email address",
        ));
    }
    Ok(())
}

fn check_username(name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "username",
            "username must be 1-64 printable characters",
        ));
    }
    Ok(n.to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    email: String,
    password: String,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

/// Creates a member; the email is unique through a uniqueness item written in the same
/// transaction.
pub async fn create_member<S: ItemStore>(
    store: &S,
    email: &str,
    password: &str,
    username: Option<&str>,
    now: u64,
) -> ApiResult<Member> {
    let email = normalize_email(email)?;
    check_password(password, &email, "password")?;
    let username = match username {
        Some(u) => check_username(u)?,
        None => email.split('@').next().unwrap_or("member").to_owned(),
    };
    let member = Member {
        id: new_id()?,
        email: email.clone(),
        username,
        password_hash: hash_password(password)?,
        status: MemberStatus::Active,
        created_at: now,
    };
    let claim = to_item(
        email_pk(&email),
        ONE,
        &EmailClaim {
            member_id: member.id.clone(),
        },
    )?;
    match store
        .put_all(vec![
            (member.item()?, Put::IfAbsent),
            (claim, Put::IfAbsent),
        ])
        .await
    {
        Ok(()) => Ok(member),
        Err(crate::store::StoreError::Conflict) => Err(ApiError {
            param: Some("email".into()),
            ..ApiError::conflict("an account with this email already exists")
        }),
        Err(e) => Err(e.into()),
    }
}

/// Checks email and password with lockout: after `max_login_failures` failures the
/// account refuses every attempt (even a correct one) for `lockout_secs`.
pub async fn authenticate<S: ItemStore, E>(
    st: &AppState<S, E>,
    email: &str,
    password: &str,
    now: u64,
) -> ApiResult<Member> {
    let email = normalize_email(email).map_err(|_| bad_credentials())?;
    let fails: LoginFailures = load(&st.store, &lock_pk(&email), ONE, now)
        .await?
        .unwrap_or_default();
    if fails.locked_until > now {
        return Err(locked(fails.locked_until - now));
    }
    let member: Option<Member> =
        match load::<EmailClaim, _>(&st.store, &email_pk(&email), ONE, now).await? {
            Some(c) => load(&st.store, &member_pk(&c.member_id), PROFILE, now).await?,
            None => None,
        };
    let good = match &member {
        Some(m) => verify_password(password, &m.password_hash),
        None => {
            // Same work either way, so timing does not reveal which emails exist.
            let _ = verify_password(password, DUMMY_HASH);
            false
        }
    };
    match (good, member) {
        (true, Some(m)) => {
            if fails.count > 0 {
                st.store.delete(&lock_pk(&email), ONE).await?;
            }
            Ok(m)
        }
        _ => {
            let count = fails.count.saturating_add(1);
            let locked_until = if count >= st.policy.max_login_failures {
                now.saturating_add(st.policy.lockout_secs)
            } else {
                0
            };
            let item = to_item(
                lock_pk(&email),
                ONE,
                &LoginFailures {
                    count: if locked_until > 0 { 0 } else { count },
                    locked_until,
                },
            )?
            .ttl(now.saturating_add(st.policy.lockout_secs.max(3600)));
            put(&st.store, item).await?;
            if locked_until > 0 {
                Err(locked(st.policy.lockout_secs))
            } else {
                Err(bad_credentials())
            }
        }
    }
}

const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0n4zpnH2tYCm7V3S1lJp7sZJ0YlOu0fz4gB2o7fG5yE";

fn bad_credentials() -> ApiError {
    ApiError::unauthorized("email or password is wrong")
}

fn locked(retry_after: u64) -> ApiError {
    ApiError::new(
        429,
        "rate_limit_error",
        "account_locked",
        format!("too many failed logins; try again in {retry_after} s"),
    )
}

async fn start_session<S: ItemStore, E>(
    st: &AppState<S, E>,
    member: &Member,
    now: u64,
) -> ApiResult<Value> {
    let sid = new_token()?;
    let (token, exp) = issue_session(st, &member.id, &sid, "member", None, now)?;
    let item = to_item(
        session_pk(&sid),
        ONE,
        &Session {
            member_id: member.id.clone(),
            expires_at: exp,
        },
    )?
    .ttl(exp)
    .gsi1(member_pk(&member.id), format!("SESSION#{sid}"));
    put(&st.store, item).await?;
    Ok(
        json!({"token": token, "token_type": "Bearer", "expires_at": exp, "member": member.public()}),
    )
}

pub async fn signup_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let b: SignupBody = ctx.json()?;
    let member = create_member(
        &st.store,
        &b.email,
        &b.password,
        b.username.as_deref(),
        ctx.now,
    )
    .await?;
    let edge = push(&st.sync, vec![member_push(&member, None, ctx.now)]).await;
    let mut body = start_session(st, &member, ctx.now).await?;
    if let Some(o) = body.as_object_mut() {
        o.insert("edge".into(), edge);
    }
    created(body)
}

/// The member record for the edge (`PUT /internal/v1/members/{id}`).
pub fn member_push(m: &Member, plan_expires_at: Option<u64>, now: u64) -> SyncCall {
    calls::member(
        &m.id,
        json!({"email": m.email, "username": m.username, "status": m.status.as_str(),
               "plan_expires_at": plan_expires_at}),
        format!(
            "member-{}-{now}-{}",
            m.id,
            crate::crypto::new_id().unwrap_or_default()
        ),
    )
}

pub async fn login_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let b: LoginBody = ctx.json()?;
    let member = authenticate(st, &b.email, &b.password, ctx.now).await?;
    if member.status == MemberStatus::Suspended {
        return Err(ApiError::forbidden("this account is suspended"));
    }
    ok(start_session(st, &member, ctx.now).await?)
}

pub async fn logout_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let claims = session_claims(st, ctx, "member").await?;
    st.store.delete(&session_pk(&claims.sid), ONE).await?;
    ok(json!({"ok": true}))
}

/// The member behind a valid session; suspended members are refused.
pub async fn current_member<S: ItemStore, E>(st: &AppState<S, E>, ctx: &Ctx) -> ApiResult<Member> {
    let claims = session_claims(st, ctx, "member").await?;
    let m: Member = load(&st.store, &member_pk(&claims.sub), PROFILE, ctx.now)
        .await?
        .ok_or_else(|| ApiError::unauthorized("member no longer exists"))?;
    if m.status == MemberStatus::Suspended {
        return Err(ApiError::forbidden("this account is suspended"));
    }
    Ok(m)
}

pub async fn profile_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let sub: Option<Subscription> =
        load(&st.store, &member_pk(&m.id), SUBSCRIPTION, ctx.now).await?;
    let mut v = m.public();
    if let Some(o) = v.as_object_mut() {
        o.insert("subscription".into(), json!(sub));
    }
    ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    username: String,
}

pub async fn update_profile_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let mut m = current_member(st, ctx).await?;
    let b: ProfileBody = ctx.json()?;
    m.username = check_username(&b.username)?;
    put(&st.store, m.item()?).await?;
    let sub: Option<Subscription> =
        load(&st.store, &member_pk(&m.id), SUBSCRIPTION, ctx.now).await?;
    let edge = push(
        &st.sync,
        vec![member_push(&m, sub.and_then(|s| s.expires_at), ctx.now)],
    )
    .await;
    let mut v = m.public();
    if let Some(o) = v.as_object_mut() {
        o.insert("edge".into(), edge);
    }
    ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the password and ends every other session of the member.
pub async fn password_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let mut m = current_member(st, ctx).await?;
    let b: PasswordBody = ctx.json()?;
    if !verify_password(&b.current_password, &m.password_hash) {
        return Err(ApiError {
            param: Some("current_password".into()),
            ..ApiError::unauthorized("current password is wrong")
        });
    }
    check_password(&b.new_password, &m.email, "new_password")?;
    m.password_hash = hash_password(&b.new_password)?;
    put(&st.store, m.item()?).await?;
    for it in st.store.query(index1(&member_pk(&m.id))).await? {
        if it.sk == ONE && it.pk.starts_with("SESSION#") {
            st.store.delete(&it.pk, ONE).await?;
        }
    }
    ok(start_session(st, &m, ctx.now).await?)
}

// ---- keys ----------------------------------------------------------------------------

/// The edge record for a key: plan from the member's subscription, status from the
/// member's status.
pub async fn key_record<S: ItemStore>(
    store: &S,
    key: &MemberKey,
    now: u64,
) -> ApiResult<KeyRecord> {
    let sub: Option<Subscription> =
        load(store, &member_pk(&key.member_id), SUBSCRIPTION, now).await?;
    let plan_id = sub
        .filter(|s| s.status == "active" && s.expires_at.is_none_or(|t| t > now))
        .map(|s| s.plan_id)
        .unwrap_or_else(|| "none".into());
    Ok(KeyRecord {
        public_id: key.public_id.clone(),
        secret_hash: key.secret_hash.clone(),
        member_id: key.member_id.clone(),
        plan_id,
        status: KeyStatus::Active,
        role: KeyRole::Member,
        expires_at: None,
        allowed_models: None,
        rpm: None,
        tpm: None,
        capture: false,
        app_id: None,
        byok: false,
        name: Some(key.name.clone()),
        version: 0,
    })
}

/// Creates a key for a member and pushes it to the edge. Returns the key entity, the
/// full key (shown once) and the push outcome.
pub async fn create_key<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    name: &str,
    app_id: Option<&str>,
    now: u64,
) -> ApiResult<(MemberKey, String, Value)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1-64 printable characters",
        ));
    }
    let key = ApiKey::generate(&crypto::random_bytes::<32>()?);
    let full = key.expose();
    let entity = MemberKey {
        public_id: key.public_id().to_owned(),
        member_id: member_id.to_owned(),
        name: name.to_owned(),
        secret_hash: key.secret_hash(),
        created_at: now,
        app_id: app_id.map(str::to_owned),
        sealed_key: match app_id {
            Some(_) => Some(crypto::seal(&st.master_key, &full)?),
            None => None,
        },
    };
    st.store.put(entity.item()?, Put::IfAbsent).await?;
    let record = key_record(&st.store, &entity, now).await?;
    let edge = push(
        &st.sync,
        vec![calls::put_key(
            &record,
            format!("key-put-{}-{now}", entity.public_id),
        )],
    )
    .await;
    Ok((entity, full, edge))
}

pub async fn revoke_key<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    public_id: &str,
) -> ApiResult<Value> {
    let existing = st
        .store
        .get(&member_pk(member_id), &key_sk(public_id))
        .await?;
    if existing.is_none() {
        return Err(ApiError::not_found("key"));
    }
    st.store
        .delete(&member_pk(member_id), &key_sk(public_id))
        .await?;
    Ok(push(
        &st.sync,
        vec![calls::delete_key(public_id, format!("key-del-{public_id}"))],
    )
    .await)
}

pub async fn member_keys<S: ItemStore>(
    store: &S,
    member_id: &str,
    now: u64,
) -> ApiResult<Vec<MemberKey>> {
    load_all(store, Query::table(member_pk(member_id), "KEY#"), now).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    pub name: String,
}

pub async fn list_keys_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let keys = member_keys(&st.store, &m.id, ctx.now).await?;
    ok(json!({"data": keys.iter().map(MemberKey::public).collect::<Vec<_>>()}))
}

pub async fn create_key_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let b: KeyBody = ctx.json()?;
    let (k, full, edge) = create_key(st, &m.id, &b.name, None, ctx.now).await?;
    let mut v = k.public();
    if let Some(o) = v.as_object_mut() {
        o.insert("key".into(), json!(full));
        o.insert("edge".into(), edge);
    }
    created(v)
}

pub async fn revoke_key_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let edge = revoke_key(st, &m.id, id).await?;
    ok(json!({"ok": true, "edge": edge}))
}

// ---- subscriptions -------------------------------------------------------------------

/// Starts, renews or changes (upgrade/downgrade) a member's subscription, then pushes
/// the allowance for the current period and re-pushes the member's keys with the plan.
pub async fn subscribe<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    plan: &Plan,
    now: u64,
) -> ApiResult<(Subscription, Value)> {
    let prev: Option<Subscription> =
        load(&st.store, &member_pk(member_id), SUBSCRIPTION, now).await?;
    // Renewing the same plan keeps its anchor; a new plan starts a new anchor now.
    let anchor = match &prev {
        Some(p) if p.plan_id == plan.id && p.status == "active" => p.started_at,
        _ => now,
    };
    let (period_start, period_end) = plan.period.bounds(anchor, now);
    let expires_at = if plan.price_micros == 0 || plan.period == PlanPeriod::None {
        None
    } else {
        Some(period_end)
    };
    let grant_id = format!("{member_id}-{}-{period_start}", plan.id);
    let sub = Subscription {
        member_id: member_id.to_owned(),
        plan_id: plan.id.clone(),
        started_at: anchor,
        period_start,
        period_end,
        expires_at,
        status: "active".into(),
        grant_id: grant_id.clone(),
    };
    put(
        &st.store,
        to_item(member_pk(member_id), SUBSCRIPTION, &sub)?,
    )
    .await?;
    put(
        &st.store,
        to_item(
            member_pk(member_id),
            format!("SUBHIST#{now:010}#{}", plan.id),
            &sub,
        )?,
    )
    .await?;
    let mut pushes = vec![calls::allowance(
        member_id,
        json!({"plan_id": plan.id, "unit": plan.allowance_unit, "amount": plan.allowance_amount,
               "period_start": period_start, "period_end": period_end, "grant_id": grant_id,
               // Self-renewing (free) plans renew at the edge; paid ones end with the period.
               "period": if expires_at.is_none() { plan.period } else { PlanPeriod::None }}),
        &grant_id,
    )];
    if let Some(m) = load::<Member, _>(&st.store, &member_pk(member_id), PROFILE, now).await? {
        pushes.push(member_push(&m, expires_at, now));
    }
    pushes.extend(key_pushes(st, member_id, now).await?);
    Ok((sub, push(&st.sync, pushes).await))
}

/// Re-pushes every key of a member (after a plan or status change).
pub async fn key_pushes<S: ItemStore, E>(
    st: &AppState<S, E>,
    member_id: &str,
    now: u64,
) -> ApiResult<Vec<SyncCall>> {
    let mut out = Vec::new();
    for k in member_keys(&st.store, member_id, now).await? {
        let rec = key_record(&st.store, &k, now).await?;
        out.push(calls::put_key(
            &rec,
            format!("key-put-{}-{now}-{}", k.public_id, rec.plan_id),
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    plan_id: String,
}

pub async fn subscription_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let sub: Option<Subscription> =
        load(&st.store, &member_pk(&m.id), SUBSCRIPTION, ctx.now).await?;
    ok(json!({"subscription": sub}))
}

/// Members subscribe themselves to free, visible plans; paid plans go through checkout.
pub async fn subscribe_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let b: SubscribeBody = ctx.json()?;
    let plan: Plan = load(&st.store, &plan_pk(&b.plan_id), ONE, ctx.now)
        .await?
        .filter(|p: &Plan| p.visible)
        .ok_or_else(|| ApiError {
            param: Some("plan_id".into()),
            ..ApiError::not_found("plan")
        })?;
    if plan.price_micros > 0 {
        return Err(ApiError::new(
            402,
            "invalid_request_error",
            "payment_required",
            "this plan is paid: create an order and pay for it",
        ));
    }
    let (sub, edge) = subscribe(st, &m.id, &plan, ctx.now).await?;
    ok(json!({"subscription": sub, "edge": edge}))
}

// ---- the app login flow --------------------------------------------------------------

async fn app_and_redirect<S: ItemStore>(
    store: &S,
    app_id: &str,
    redirect_uri: &str,
    now: u64,
) -> ApiResult<App> {
    let app: App = load(store, &app_pk(app_id), ONE, now)
        .await?
        .ok_or_else(|| ApiError {
            param: Some("app_id".into()),
            ..ApiError::bad_request("unknown app_id")
        })?;
    // Exact match only: a prefix match would let `https://app.example.com.evil.io` in.
    if !app.callback_urls.iter().any(|u| u == redirect_uri) {
        return Err(ApiError {
            param: Some("redirect_uri".into()),
            ..ApiError::bad_request("redirect_uri is not registered for this app")
        });
    }
    Ok(app)
}

fn login_page(status: u16, app: &App, redirect_uri: &str, error: Option<&str>) -> Response<Body> {
    let err = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in to {name}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
label,input,button{{display:block;width:100%;margin:.4rem 0}}input{{padding:.5rem}}button{{padding:.6rem}}
.error{{color:#b00020}}</style></head>
<body><h1>Sign in</h1><p>to continue to <strong>{name}</strong></p>{err}
<form method="post" action="/authorization">
<input type="hidden" name="app_id" value="{app_id}">
<input type="hidden" name="redirect_uri" value="{redirect}">
<label>Email <input type="email" name="email" autocomplete="email" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required minlength="{min}"></label>
<button type="submit" name="action" value="login">Sign in</button>
<button type="submit" name="action" value="signup">Create account</button>
</form></body></html>"#,
        name = esc(&app.name),
        app_id = esc(&app.id),
        redirect = esc(redirect_uri),
        min = MIN_PASSWORD_LEN,
    );
    let mut resp = raw_response(status, "text/html; charset=utf-8", html);
    resp.headers_mut().insert(
        http::header::HeaderName::from_static("content-security-policy"),
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    resp
}

pub async fn authorization_page_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let app_id = ctx.query.get("app_id").map(String::as_str).unwrap_or("");
    let redirect = ctx
        .query
        .get("redirect_uri")
        .map(String::as_str)
        .unwrap_or("");
    let app = app_and_redirect(&st.store, app_id, redirect, ctx.now).await?;
    Ok(login_page(200, &app, redirect, None))
}

/// Logs in (or signs up) and redirects to the app's callback with a single-use token.
pub async fn authorization_submit_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let form = ctx.form();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let redirect = field("redirect_uri");
    let app = app_and_redirect(&st.store, field("app_id"), redirect, ctx.now).await?;
    let result = match field("action") {
        "signup" => {
            create_member(&st.store, field("email"), field("password"), None, ctx.now).await
        }
        _ => authenticate(st, field("email"), field("password"), ctx.now).await,
    };
    let member = match result {
        Ok(m) if m.status == MemberStatus::Suspended => {
            return Ok(login_page(
                403,
                &app,
                redirect,
                Some("this account is suspended"),
            ))
        }
        Ok(m) => m,
        Err(e) => return Ok(login_page(e.status, &app, redirect, Some(&e.message))),
    };
    let token = new_token()?;
    let expires_at = ctx.now.saturating_add(st.policy.app_token_ttl_secs);
    let item = to_item(
        app_token_pk(&hash_secret(&token)),
        ONE,
        &AppToken {
            member_id: member.id.clone(),
            app_id: app.id.clone(),
            expires_at,
        },
    )?
    .ttl(expires_at);
    put(&st.store, item).await?;
    let secret = crypto::open(&st.master_key, &app.sealed_secret)?;
    let sign = tollbooth_core::auth::sign_callback(secret.as_bytes(), &token, ctx.now);
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let location = format!("{redirect}{sep}token={token}&sign={sign}&time={}", ctx.now);
    let mut resp = raw_response(302, "text/plain; charset=utf-8", String::new());
    let loc = http::HeaderValue::from_str(&location).map_err(|_| {
        ApiError::invalid("redirect_uri", "redirect_uri is not a valid header value")
    })?;
    resp.headers_mut().insert(http::header::LOCATION, loc);
    Ok(resp)
}

/// Exchanges a callback token (once) for the member's profile and an API key bound to
/// the app. When the app passes `sign` and `time` (query), they are checked first and a
/// mismatch leaves the token unused.
pub async fn verify_token_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let token = ctx
        .bearer()
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?
        .to_owned();
    let pk = app_token_pk(&hash_secret(&token));
    let invalid = || ApiError {
        code: "invalid_token",
        ..ApiError::unauthorized("token is invalid, expired or already used")
    };
    let pending: AppToken = load(&st.store, &pk, ONE, ctx.now)
        .await?
        .ok_or_else(invalid)?;
    if pending.expires_at <= ctx.now {
        return Err(invalid());
    }
    let app: App = load(&st.store, &app_pk(&pending.app_id), ONE, ctx.now)
        .await?
        .ok_or_else(invalid)?;
    if let (Some(sign), Some(time)) = (ctx.query.get("sign"), ctx.query.get("time")) {
        let time: u64 = time
            .parse()
            .map_err(|_| ApiError::invalid("time", "time must be unix seconds"))?;
        let secret = crypto::open(&st.master_key, &app.sealed_secret)?;
        verify_callback(
            secret.as_bytes(),
            &token,
            time,
            sign,
            ctx.now,
            st.policy.app_token_ttl_secs.max(60),
        )
        .map_err(|e| ApiError {
            code: "invalid_sign",
            ..ApiError::unauthorized(format!("sign rejected: {e}"))
        })?;
    }
    // Atomic: of two concurrent exchanges only one gets the token.
    let taken = st.store.take(&pk, ONE).await?;
    if taken.is_none() {
        return Err(invalid());
    }
    let member: Member = load(&st.store, &member_pk(&pending.member_id), PROFILE, ctx.now)
        .await?
        .ok_or_else(invalid)?;
    if member.status == MemberStatus::Suspended {
        return Err(ApiError::forbidden("this account is suspended"));
    }
    let existing = member_keys(&st.store, &member.id, ctx.now)
        .await?
        .into_iter()
        .find(|k| k.app_id.as_deref() == Some(app.id.as_str()) && k.sealed_key.is_some());
    let api_token = match existing.and_then(|k| k.sealed_key) {
        Some(sealed) => crypto::open(&st.master_key, &sealed)?,
        None => {
            create_key(st, &member.id, &app.name, Some(&app.id), ctx.now)
                .await?
                .1
        }
    };
    let sub: Option<Subscription> =
        load(&st.store, &member_pk(&member.id), SUBSCRIPTION, ctx.now).await?;
    let plan_name = match &sub {
        Some(s) => load::<Plan, _>(&st.store, &plan_pk(&s.plan_id), ONE, ctx.now)
            .await?
            .map(|p| p.name),
        None => None,
    };
    ok(json!({
        "email": member.email,
        "username": member.username,
        "user_plan": plan_name,
        "api_token": api_token,
        "expire_at": sub.and_then(|s| s.expires_at).map(rfc3339),
    }))
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    let rem = unix % 86_400;
    let (y, m, d) = tollbooth_core::billing::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
