//! The admin API (`/api/admin/...`): every mutation needs the `admin` role and is written
//! to the audit log; `viewer` accounts read only.

use std::collections::{BTreeMap, HashSet};

use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tollbooth_core::catalogue::{
    AuthStyle, Catalogue, CatalogueSnapshot, Credential, Deployment, Model, PlanLimits, Provider,
    ProviderKind, Settings,
};

use crate::app::{created, issue_session, ok, push, session_claims, AppState, Claims, Ctx};
use crate::crypto::{self, hash_password, new_id, new_token};
use crate::error::{ApiError, ApiResult};
use crate::members::{self, check_password, normalize_email};
use crate::model::*;
use crate::store::{Item, ItemStore, Put, Query};
use crate::sync::{calls, EdgeSync};

pub async fn route<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    segs: &[&str],
) -> ApiResult<Response<Body>> {
    let m = ctx.method.as_str();
    if (m, segs) == ("POST", &["login"][..]) {
        return login_handler(st, ctx).await;
    }
    // Every account may see itself, change its own password and log out, whatever its
    // role and even before its initial password is changed.
    let own = matches!(
        (m, segs),
        ("GET", ["me"]) | ("POST", ["password"]) | ("POST", ["logout"])
    );
    let (admin, account) = require_admin(st, ctx, !matches!(m, "GET" | "HEAD"), own).await?;
    let a = &admin;
    match (m, segs) {
        ("GET", ["me"]) => ok(json!({"email": a.sub, "role": a.role,
                                     "must_change_password": account.must_change_password})),
        ("POST", ["password"]) => Box::pin(change_admin_password(st, ctx, a, account)).await,
        ("POST", ["logout"]) => {
            st.store.delete(&session_pk(&a.sid), ONE).await?;
            ok(json!({"ok": true}))
        }
        ("GET", ["admins"]) => Box::pin(list_admins(st, ctx)).await,
        ("POST", ["admins"]) => Box::pin(create_admin(st, ctx, a)).await,
        ("PATCH", ["admins", email]) => Box::pin(update_admin(st, ctx, a, email)).await,
        ("DELETE", ["admins", email]) => Box::pin(remove_admin(st, ctx, a, email)).await,
        ("GET", ["members"]) => Box::pin(list_members(st, ctx)).await,
        ("POST", ["members"]) => Box::pin(create_member_admin(st, ctx, a)).await,
        ("GET", ["members", id]) => Box::pin(view_member(st, ctx, id)).await,
        ("PATCH", ["members", id]) => Box::pin(edit_member(st, ctx, a, id)).await,
        ("DELETE", ["members", id]) => Box::pin(delete_member(st, ctx, a, id)).await,
        ("POST", ["members", id, "suspend"]) => {
            Box::pin(set_status(st, ctx, a, id, MemberStatus::Suspended)).await
        }
        ("POST", ["members", id, "resume"]) => {
            Box::pin(set_status(st, ctx, a, id, MemberStatus::Active)).await
        }
        ("POST", ["members", id, "credits"]) => Box::pin(credit(st, ctx, a, id)).await,
        ("POST", ["members", id, "subscription"]) => {
            Box::pin(admin_subscribe(st, ctx, a, id)).await
        }
        ("GET", ["members", id, "keys"]) => {
            member_exists(st, ctx, id).await?;
            let keys = members::member_keys(&st.store, id, ctx.now).await?;
            ok(json!({"data": keys.iter().map(MemberKey::public).collect::<Vec<_>>()}))
        }
        ("POST", ["members", id, "keys"]) => {
            member_exists(st, ctx, id).await?;
            let b: AdminKeyBody = ctx.json()?;
            let settings = KeySettings {
                expires_at: b.expires_at,
                allowed_models: b.allowed_models,
                rpm: b.rpm,
                tpm: b.tpm,
                disabled: false,
                role: b.role.unwrap_or_default(),
            };
            let (k, full, edge) = Box::pin(members::create_key_with(
                st, id, &b.name, None, settings, ctx.now,
            ))
            .await?;
            audit(
                st,
                ctx,
                a,
                "key.create",
                &k.public_id,
                json!({"member_id": id, "role": k.settings.role}),
            )
            .await?;
            let mut v = k.public();
            if let Some(o) = v.as_object_mut() {
                o.insert("key".into(), json!(full));
                o.insert("edge".into(), edge);
            }
            created(v)
        }
        ("GET", ["keys", pid]) => {
            let k = find_key(st, pid).await?;
            if k.revoked_at.is_some() {
                return Err(ApiError::not_found("key"));
            }
            let mut v = k.public();
            if let Some(o) = v.as_object_mut() {
                o.insert("member_id".into(), json!(k.member_id));
            }
            ok(v)
        }
        ("PATCH", ["keys", pid]) => {
            let k = find_key(st, pid).await?;
            let patch: members::KeyPatch = ctx.json()?;
            let (k, edge) = Box::pin(members::update_key(
                st,
                &k.member_id,
                pid,
                &patch,
                members::KeyEditor::Admin,
                ctx.now,
            ))
            .await?;
            audit(
                st,
                ctx,
                a,
                "key.update",
                pid,
                json!({"member_id": k.member_id, "settings": k.settings, "name": k.name}),
            )
            .await?;
            ok(json!({"key": k.public(), "edge": edge}))
        }
        ("DELETE", ["keys", pid]) => {
            let k = find_key(st, pid).await?;
            let edge = Box::pin(members::revoke_key(st, &k.member_id, pid, ctx.now)).await?;
            audit(
                st,
                ctx,
                a,
                "key.revoke",
                pid,
                json!({"member_id": k.member_id}),
            )
            .await?;
            ok(json!({"ok": true, "edge": edge}))
        }
        ("GET", ["plans"]) => ok(json!({"data": all_plans(st, ctx).await?})),
        ("POST", ["plans"]) => Box::pin(save_plan(st, ctx, a, None)).await,
        ("PUT", ["plans", id]) => Box::pin(save_plan(st, ctx, a, Some(id))).await,
        ("DELETE", ["plans", id]) => {
            load::<Plan, _>(&st.store, &plan_pk(id), ONE, ctx.now)
                .await?
                .ok_or_else(|| ApiError::not_found("plan"))?;
            st.store.delete(&plan_pk(id), ONE).await?;
            audit(st, ctx, a, "plan.delete", id, Value::Null).await?;
            let published = Box::pin(publish(st, ctx.now)).await?;
            ok(with_publish(json!({"ok": true}), published))
        }
        ("GET", ["apps"]) => {
            let apps: Vec<App> = load_all(&st.store, index1("APPS"), ctx.now).await?;
            ok(json!({"data": apps.iter().map(App::public).collect::<Vec<_>>()}))
        }
        ("POST", ["apps"]) => Box::pin(create_app(st, ctx, a)).await,
        ("GET", ["apps", id]) => {
            let app: App = load(&st.store, &app_pk(id), ONE, ctx.now)
                .await?
                .ok_or_else(|| ApiError::not_found("app"))?;
            ok(app.public())
        }
        ("PATCH", ["apps", id]) => Box::pin(update_app(st, ctx, a, id)).await,
        ("POST", ["apps", id, "rotate-secret"]) => {
            Box::pin(rotate_app_secret(st, ctx, a, id)).await
        }
        ("DELETE", ["apps", id]) => {
            load::<App, _>(&st.store, &app_pk(id), ONE, ctx.now)
                .await?
                .ok_or_else(|| ApiError::not_found("app"))?;
            st.store.delete(&app_pk(id), ONE).await?;
            audit(st, ctx, a, "app.delete", id, Value::Null).await?;
            ok(json!({"ok": true}))
        }
        ("GET", ["providers"]) => {
            let ps: Vec<StoredProvider> = load_all(&st.store, index1("PROVIDERS"), ctx.now).await?;
            ok(json!({"data": ps.iter().map(StoredProvider::public).collect::<Vec<_>>()}))
        }
        ("POST", ["providers"]) => Box::pin(save_provider(st, ctx, a, None)).await,
        ("PUT", ["providers", id]) => Box::pin(save_provider(st, ctx, a, Some(id))).await,
        ("DELETE", ["providers", id]) => {
            get_provider(st, ctx, id).await?;
            st.store.delete(&provider_pk(id), ONE).await?;
            audit(st, ctx, a, "provider.delete", id, Value::Null).await?;
            ok(json!({"ok": true}))
        }
        ("GET", ["providers", id]) => Box::pin(view_provider(st, ctx, id)).await,
        ("POST", ["providers", id, "pull"]) => Box::pin(pull_models(st, ctx, a, id)).await,
        ("GET", ["models"]) => {
            let ms: Vec<ModelEntry> = load_all(&st.store, index1("MODELS"), ctx.now).await?;
            // `?provider=<id>`: the models deployed on that provider.
            let provider = ctx.query.get("provider");
            ok(json!({"data": ms
                .iter()
                .filter(|m| provider.is_none_or(|p| {
                    m.model.deployments.iter().any(|d| d.provider == *p)
                }))
                .map(ModelEntry::public)
                .collect::<Vec<_>>()}))
        }
        ("GET", ["models", rest @ ..]) if !rest.is_empty() => {
            let name = rest.join("/");
            let m: ModelEntry = load(&st.store, &model_pk(&name), ONE, ctx.now)
                .await?
                .ok_or_else(|| ApiError::not_found("model"))?;
            ok(m.public())
        }
        ("POST", ["models"]) => Box::pin(save_model(st, ctx, a, None)).await,
        ("PUT", ["models", rest @ ..]) if !rest.is_empty() => {
            Box::pin(save_model(st, ctx, a, Some(&rest.join("/")))).await
        }
        ("DELETE", ["models", rest @ ..]) if !rest.is_empty() => {
            let name = rest.join("/");
            load::<ModelEntry, _>(&st.store, &model_pk(&name), ONE, ctx.now)
                .await?
                .ok_or_else(|| ApiError::not_found("model"))?;
            st.store.delete(&model_pk(&name), ONE).await?;
            audit(st, ctx, a, "model.delete", &name, Value::Null).await?;
            ok(json!({"ok": true}))
        }
        ("GET", ["catalogue"]) => {
            let versions = st
                .store
                .query(Query::table("CATALOGUE", "V#").desc().limit(20))
                .await?;
            let list: Vec<Value> = versions.iter().map(from_item).collect::<ApiResult<_>>()?;
            ok(json!({"data": list}))
        }
        ("POST", ["catalogue", "publish"]) => {
            let edge = Box::pin(publish(st, ctx.now)).await?;
            audit(
                st,
                ctx,
                a,
                "catalogue.publish",
                edge.get("version").and_then(Value::as_str).unwrap_or(""),
                Value::Null,
            )
            .await?;
            ok(edge)
        }
        ("GET", ["settings"]) => ok(json!(settings(st, ctx.now).await?)),
        ("PUT", ["settings"]) => {
            let s: AdminSettings = ctx.json()?;
            for o in &s.cors_origins {
                if o != "*" && !(o.starts_with("https://") || o.starts_with("http://"))
                    || o.ends_with('/')
                {
                    return Err(ApiError::invalid(
                        "cors_origins",
                        format!("{o:?} is not an origin like https://app.example.com"),
                    ));
                }
            }
            if s.timezone
                .as_deref()
                .is_some_and(|tz| crate::summary::parse_utc_offset(tz).is_none())
            {
                return Err(ApiError::invalid(
                    "timezone",
                    "timezone must be UTC or a fixed offset like +08:00 or -05:00",
                ));
            }
            put(&st.store, to_item(SETTINGS_PK.into(), ONE, &s)?).await?;
            audit(st, ctx, a, "settings.update", "settings", json!(s)).await?;
            let published = Box::pin(publish(st, ctx.now)).await?;
            ok(with_publish(json!({"settings": s}), published))
        }
        // Orders arrive with the payments function; the list is already served.
        ("GET", ["orders"]) => {
            let orders: Vec<Value> = load_all(
                &st.store,
                index1("ORDERS").desc().limit(limit(ctx)),
                ctx.now,
            )
            .await?;
            ok(json!({"data": orders}))
        }
        // The scheduled job, at once (ops, tests); and what the edge has not acknowledged.
        ("POST", ["jobs", "run"]) => {
            let force = matches!(
                ctx.query.get("force").map(String::as_str),
                Some("1" | "true")
            );
            let report = Box::pin(crate::jobs::run(st, ctx.now, force)).await?;
            audit(st, ctx, a, "jobs.run", "jobs", Value::Null).await?;
            ok(report)
        }
        ("GET", ["edge-outbox"]) => {
            let entries = crate::outbox::pending(&st.store).await?;
            ok(json!({"data": entries}))
        }
        ("GET", ["summary"]) => {
            let offset = settings(st, ctx.now).await?.utc_offset_secs();
            ok(Box::pin(crate::summary::summary(
                &st.sync, &ctx.query, ctx.now, offset,
            ))
            .await?)
        }
        ("GET", ["audit"]) => {
            let entries: Vec<Value> = load_all(
                &st.store,
                Query::table("AUDIT", "").desc().limit(limit(ctx)),
                ctx.now,
            )
            .await?;
            ok(json!({"data": entries}))
        }
        // The capture review API, proxied to the worker (captures.rs).
        (_, ["conversations", ..]) | (_, ["members", _, "captures"]) => {
            crate::captures::route(st, ctx, a, segs).await
        }
        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("Unknown route: {} {}", ctx.method, ctx.path),
        )),
    }
}

/// A key by public id, whoever owns it (revoked ones too: callers decide).
async fn find_key<S: ItemStore, E>(st: &AppState<S, E>, pid: &str) -> ApiResult<MemberKey> {
    let item = st
        .store
        .query(index1(&format!("KEY#{pid}")))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("key"))?;
    from_item(&item)
}

/// An admin-issued key: a member key, or an operator key (`role: operator`) for the
/// pass-through, with the key's own limits.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminKeyBody {
    name: String,
    #[serde(default)]
    role: Option<tollbooth_core::keyrecord::KeyRole>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    tpm: Option<u64>,
}

/// Adds a republish outcome to a response: `catalogue_version` and `edge`.
fn with_publish(mut body: Value, published: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.insert(
            "catalogue_version".into(),
            published.get("version").cloned().unwrap_or(Value::Null),
        );
        o.insert(
            "edge".into(),
            published.get("edge").cloned().unwrap_or(Value::Null),
        );
    }
    body
}

fn limit(ctx: &Ctx) -> usize {
    ctx.query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000)
}

/// The admin behind the session, with the role as stored now (a changed role takes
/// effect at once). `own` calls (me, password, logout) skip the role and first-password
/// checks.
pub(crate) async fn require_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    mutating: bool,
    own: bool,
) -> ApiResult<(Claims, Admin)> {
    let claims = session_claims(st, ctx, "admin").await?;
    let current: Option<Admin> = load(&st.store, &admin_pk(&claims.sub), ONE, ctx.now).await?;
    let Some(current) = current else {
        return Err(ApiError::unauthorized("admin account no longer exists"));
    };
    if !own {
        current.authorize(mutating)?;
    }
    Ok((
        Claims {
            role: Some(current.role),
            ..claims
        },
        current,
    ))
}

fn require_owner(a: &Claims) -> ApiResult<()> {
    if a.role != Some(Role::Owner) {
        return Err(ApiError::forbidden("only an owner manages admin accounts"));
    }
    Ok(())
}

/// Appends to the audit log: who, what, on which object, when.
pub async fn audit<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    admin: &Claims,
    action: &str,
    target: &str,
    detail: Value,
) -> ApiResult<()> {
    let id = new_id()?;
    let entry = json!({"id": id, "at": ctx.now, "admin": admin.sub, "action": action,
                       "target": target, "detail": detail});
    put(
        &st.store,
        to_item("AUDIT".into(), format!("{:010}#{id}", ctx.now), &entry)?,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminLogin {
    email: String,
    password: String,
}

async fn login_handler<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let b: AdminLogin = ctx.json()?;
    let email = normalize_email(&b.email)
        .map_err(|_| ApiError::unauthorized("email or password is wrong"))?;
    let admin: Option<Admin> = load(&st.store, &admin_pk(&email), ONE, ctx.now).await?;
    let account = admin.map(|a| {
        let hash = a.password_hash.clone();
        (a, hash)
    });
    let address = crate::login::client_address(&st.policy, ctx);
    let a = crate::login::check(
        st,
        crate::login::Realm::Admin,
        &email,
        &address,
        &b.password,
        account,
        ctx.now,
    )
    .await?;
    {
        {
            let sid = new_token()?;
            let (token, exp) = issue_session(st, &a.email, &sid, "admin", Some(a.role), ctx.now)?;
            let item = to_item(
                session_pk(&sid),
                ONE,
                &Session {
                    member_id: a.email.clone(),
                    expires_at: exp,
                },
            )?
            .gsi1(admin_pk(&a.email), sid.clone())
            .ttl(exp);
            put(&st.store, item).await?;
            ok(
                json!({"token": token, "token_type": "Bearer", "expires_at": exp, "role": a.role,
                      "must_change_password": a.must_change_password}),
            )
        }
    }
}

/// Creates the first admin from the environment if no such admin exists yet.
pub async fn bootstrap_admin<S: ItemStore>(
    store: &S,
    email: &str,
    password: &str,
    now: u64,
) -> ApiResult<bool> {
    let email = normalize_email(email)?;
    check_password(password, &email, "ADMIN_PASSWORD")?;
    // The first account owns the deployment; its password sat in the environment, so
    // it must be changed at the first login.
    let admin = Admin {
        email,
        role: Role::Owner,
        password_hash: hash_password(password)?,
        created_at: now,
        must_change_password: true,
    };
    match store.put(admin.item()?, Put::IfAbsent).await {
        Ok(()) => Ok(true),
        Err(crate::store::StoreError::Conflict) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An invitation: the account gets a temporary password (given, or generated and shown
/// once) that must be changed at its first login.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdmin {
    email: String,
    #[serde(default)]
    password: Option<String>,
    role: Role,
}

async fn list_admins<S: ItemStore, E>(st: &AppState<S, E>, ctx: &Ctx) -> ApiResult<Response<Body>> {
    let admins: Vec<Admin> = load_all(&st.store, index1("ADMINS"), ctx.now).await?;
    ok(
        json!({"data": admins.iter().map(|a| json!({"email": a.email, "role": a.role, "created_at": a.created_at,
                                                    "must_change_password": a.must_change_password})).collect::<Vec<_>>()}),
    )
}

async fn create_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
) -> ApiResult<Response<Body>> {
    require_owner(a)?;
    let b: NewAdmin = ctx.json()?;
    let email = normalize_email(&b.email)?;
    let (password, generated) = match b.password {
        Some(p) => (p, false),
        None => (format!("tmp-{}", new_token()?), true),
    };
    check_password(&password, &email, "password")?;
    let admin = Admin {
        email: email.clone(),
        role: b.role,
        password_hash: hash_password(&password)?,
        created_at: ctx.now,
        must_change_password: true,
    };
    st.store
        .put(admin.item()?, Put::IfAbsent)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => {
                ApiError::conflict("an admin with this email exists")
            }
            e => e.into(),
        })?;
    audit(st, ctx, a, "admin.create", &email, json!({"role": b.role})).await?;
    let mut body = json!({"email": email, "role": b.role, "must_change_password": true});
    if let (true, Some(o)) = (generated, body.as_object_mut()) {
        // Shown once: hand it to the invitee, who must replace it at the first login.
        o.insert("temporary_password".into(), json!(password));
    }
    created(body)
}

async fn owners<S: ItemStore, E>(st: &AppState<S, E>, now: u64) -> ApiResult<usize> {
    let admins: Vec<Admin> = load_all(&st.store, index1("ADMINS"), now).await?;
    Ok(admins.iter().filter(|x| x.role == Role::Owner).count())
}

async fn load_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    email: &str,
) -> ApiResult<Admin> {
    let email =
        normalize_email(&percent_decode(email)).map_err(|_| ApiError::not_found("admin"))?;
    load(&st.store, &admin_pk(&email), ONE, ctx.now)
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))
}

/// `%XX` escapes of a path segment decoded (an email may arrive as `a%40b.com`);
/// anything malformed is kept as it is.
fn percent_decode(seg: &str) -> String {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (c, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Ends every session of the admin `email` except `keep`.
async fn end_admin_sessions<S: ItemStore, E>(
    st: &AppState<S, E>,
    email: &str,
    keep: Option<&str>,
) -> ApiResult<()> {
    for it in st.store.query(index1(&admin_pk(email))).await? {
        if it.pk.starts_with("SESSION#") && Some(it.pk.as_str()) != keep.map(session_pk).as_deref()
        {
            st.store.delete(&it.pk, ONE).await?;
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPatch {
    role: Role,
}

/// An owner changes another account's role; the last owner cannot step down.
async fn update_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    email: &str,
) -> ApiResult<Response<Body>> {
    require_owner(a)?;
    let b: AdminPatch = ctx.json()?;
    let mut target = load_admin(st, ctx, email).await?;
    if target.role == Role::Owner && b.role != Role::Owner && owners(st, ctx.now).await? <= 1 {
        return Err(ApiError::invalid(
            "role",
            "the last owner cannot be given another role",
        ));
    }
    target.role = b.role;
    put(&st.store, target.item()?).await?;
    audit(
        st,
        ctx,
        a,
        "admin.role",
        &target.email,
        json!({"role": b.role}),
    )
    .await?;
    ok(json!({"email": target.email, "role": target.role}))
}

/// An owner removes another account: it and its sessions end at once.
async fn remove_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    email: &str,
) -> ApiResult<Response<Body>> {
    require_owner(a)?;
    let target = load_admin(st, ctx, email).await?;
    if target.email == a.sub {
        return Err(ApiError::invalid(
            "email",
            "an owner cannot remove their own account",
        ));
    }
    st.store.delete(&admin_pk(&target.email), ONE).await?;
    end_admin_sessions(st, &target.email, None).await?;
    audit(st, ctx, a, "admin.remove", &target.email, Value::Null).await?;
    ok(json!({"ok": true}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the caller's own password (the current one is checked, with the login's
/// lockout); every other session of the account ends, this one stays.
async fn change_admin_password<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    account: Admin,
) -> ApiResult<Response<Body>> {
    let b: AdminPasswordBody = ctx.json()?;
    check_password(&b.new_password, &account.email, "new_password")?;
    if b.new_password == b.current_password {
        return Err(ApiError::invalid(
            "new_password",
            "the new password must differ from the current one",
        ));
    }
    let address = crate::login::client_address(&st.policy, ctx);
    let hash = account.password_hash.clone();
    let mut account = crate::login::check(
        st,
        crate::login::Realm::Admin,
        &account.email.clone(),
        &address,
        &b.current_password,
        Some((account, hash)),
        ctx.now,
    )
    .await
    .map_err(|e| match e.status {
        401 => ApiError {
            param: Some("current_password".into()),
            ..ApiError::unauthorized("the current password is wrong")
        },
        _ => e,
    })?;
    account.password_hash = hash_password(&b.new_password)?;
    account.must_change_password = false;
    put(&st.store, account.item()?).await?;
    end_admin_sessions(st, &account.email, Some(&a.sid)).await?;
    audit(st, ctx, a, "admin.password", &account.email, Value::Null).await?;
    ok(json!({"ok": true, "must_change_password": false}))
}

async fn member_exists<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<Member> {
    load(&st.store, &member_pk(id), PROFILE, ctx.now)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))
}

async fn list_members<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let q = ctx
        .query
        .get("q")
        .map(|q| q.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let status = ctx.query.get("status").cloned();
    let all: Vec<Member> = load_all(&st.store, index1("MEMBERS"), ctx.now).await?;
    let data: Vec<Value> = all
        .iter()
        .filter(|m| {
            q.is_empty()
                || m.email.contains(&q)
                || m.username.to_ascii_lowercase().contains(&q)
                || m.id == q
        })
        .filter(|m| status.as_deref().is_none_or(|s| m.status.as_str() == s))
        .take(limit(ctx))
        .map(Member::public)
        .collect();
    ok(json!({"data": data}))
}

async fn view_member<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<Response<Body>> {
    let m = member_exists(st, ctx, id).await?;
    let sub: Option<Subscription> = load(&st.store, &member_pk(id), SUBSCRIPTION, ctx.now).await?;
    let keys = members::member_keys(&st.store, id, ctx.now).await?;
    let credits: Vec<Value> = load_all(
        &st.store,
        Query::table(member_pk(id), "CREDIT#").desc().limit(50),
        ctx.now,
    )
    .await?;
    // Usage and balance live at the edge (D1); ask it, and say so when it cannot answer.
    let balance = st
        .sync
        .send(crate::sync::SyncCall {
            method: "GET",
            path: format!("/internal/v1/members/{id}/balance"),
            body: None,
            idempotency_key: String::new(),
        })
        .await
        .unwrap_or_else(|e| json!({"unavailable": e.to_string()}));
    let mut v = m.public();
    if let Some(o) = v.as_object_mut() {
        o.insert("subscription".into(), json!(sub));
        o.insert(
            "keys".into(),
            json!(keys.iter().map(MemberKey::public).collect::<Vec<_>>()),
        );
        o.insert("credits".into(), json!(credits));
        o.insert("edge_balance".into(), balance);
    }
    ok(v)
}

/// Suspends or resumes a member: a versioned write of the member (a concurrent profile
/// update cannot write the old status back) and the status push, at that version,
/// through the outbox.
async fn set_status<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
    status: MemberStatus,
) -> ApiResult<Response<Body>> {
    member_exists(st, ctx, id).await?;
    let mut done = None;
    for _ in 0..members::CAS_TRIES {
        let (mut m, before) = members::load_member(&st.store, id, ctx.now)
            .await?
            .ok_or_else(|| ApiError::not_found("member"))?;
        m.status = status;
        m.version = before.saturating_add(1);
        let call = calls::member_status(
            id,
            status.as_str(),
            m.version,
            format!("status-{id}-v{}-{}", m.version, status.as_str()),
        );
        if let Some(edge) =
            members::commit_member(st, before, &m, vec![], vec![call], ctx.now).await?
        {
            done = Some((m, edge));
            break;
        }
    }
    let (m, edge) = done.ok_or_else(members::busy)?;
    audit(
        st,
        ctx,
        a,
        &format!("member.{}", status.as_str()),
        id,
        Value::Null,
    )
    .await?;
    ok(json!({"member": m.public(), "edge": edge}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    email: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

/// An admin creates a member account: with the given password, or a generated one
/// shown once in the answer.
async fn create_member_admin<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
) -> ApiResult<Response<Body>> {
    let b: NewMember = ctx.json()?;
    let (password, generated) = match b.password {
        Some(p) => (p, false),
        None => (format!("tmp-{}", new_token()?), true),
    };
    let m = members::create_member(
        &st.store,
        &b.email,
        &password,
        b.username.as_deref(),
        ctx.now,
    )
    .await?;
    let edge =
        crate::outbox::send(st, vec![members::member_push(&m, None, ctx.now)], ctx.now).await?;
    audit(
        st,
        ctx,
        a,
        "member.create",
        &m.id,
        json!({"email": m.email}),
    )
    .await?;
    let mut body = json!({"member": m.public(), "edge": edge});
    if let (true, Some(o)) = (generated, body.as_object_mut()) {
        o.insert("password".into(), json!(password));
    }
    created(body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberPatch {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// `active` or `suspended`.
    #[serde(default)]
    status: Option<MemberStatus>,
}

/// Edits a member's name and email (one versioned write; a new email claims its
/// uniqueness item in the same transaction), then the status if asked.
async fn edit_member<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let b: MemberPatch = ctx.json()?;
    member_exists(st, ctx, id).await?;
    let username = b
        .username
        .as_deref()
        .map(members::check_username)
        .transpose()?;
    let email = b.email.as_deref().map(normalize_email).transpose()?;
    let mut edge = Value::Null;
    if username.is_some() || email.is_some() {
        let mut done = None;
        for _ in 0..members::CAS_TRIES {
            let (mut m, before) = members::load_member(&st.store, id, ctx.now)
                .await?
                .ok_or_else(|| ApiError::not_found("member"))?;
            let old_email = m.email.clone();
            if let Some(u) = &username {
                m.username = u.clone();
            }
            let mut extra = Vec::new();
            if let Some(e) = email.as_ref().filter(|e| **e != old_email) {
                m.email = e.clone();
                extra.push((
                    to_item(
                        email_pk(e),
                        ONE,
                        &EmailClaim {
                            member_id: m.id.clone(),
                        },
                    )?,
                    Put::IfAbsent,
                ));
            }
            m.version = before.saturating_add(1);
            let sub: Option<Subscription> =
                load(&st.store, &member_pk(id), SUBSCRIPTION, ctx.now).await?;
            let call = members::member_push(
                &m,
                sub.filter(|s| s.active(ctx.now)).and_then(|s| s.expires_at),
                ctx.now,
            );
            let claimed = !extra.is_empty();
            match members::commit_member(st, before, &m, extra, vec![call], ctx.now).await? {
                Some(e) => {
                    if claimed {
                        st.store.delete(&email_pk(&old_email), ONE).await?;
                    }
                    done = Some(e);
                    break;
                }
                // Either the member changed (retry) or the email is taken.
                None => {
                    let taken = claimed
                        && load::<EmailClaim, _>(&st.store, &email_pk(&m.email), ONE, ctx.now)
                            .await?
                            .is_some_and(|c| c.member_id != m.id);
                    if taken {
                        return Err(ApiError {
                            param: Some("email".into()),
                            ..ApiError::conflict("an account with this email already exists")
                        });
                    }
                }
            }
        }
        edge = done.ok_or_else(members::busy)?;
        audit(
            st,
            ctx,
            a,
            "member.update",
            id,
            json!({"username": username, "email": email}),
        )
        .await?;
    }
    if let Some(status) = b.status {
        return Box::pin(set_status(st, ctx, a, id, status)).await;
    }
    let m = member_exists(st, ctx, id).await?;
    ok(json!({"member": m.public(), "edge": edge}))
}

/// Deletes a member with their data: every key is revoked at the edge (tombstones,
/// through the outbox), the member is suspended there (nothing it holds works again),
/// and its sessions, email claim and whole partition (profile, keys, subscription,
/// history, credits) are deleted here.
async fn delete_member<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let m = member_exists(st, ctx, id).await?;
    // Captured conversations first: when the edge cannot be reached nothing is deleted
    // yet and the call can simply be repeated.
    let (conversations, captures, captures_more) =
        Box::pin(crate::captures::delete_member_captures(&st.sync, id)).await?;
    let mut revoked = Vec::new();
    for k in members::member_keys(&st.store, id, ctx.now).await? {
        Box::pin(members::revoke_key(st, id, &k.public_id, ctx.now)).await?;
        revoked.push(k.public_id);
    }
    let status = Box::pin(set_status(st, ctx, a, id, MemberStatus::Suspended)).await?;
    let edge_ok = serde_json::from_slice::<Value>(status.body().as_ref())
        .ok()
        .and_then(|v| v.get("edge").cloned())
        .unwrap_or(Value::Null);
    for it in st.store.query(index1(&member_pk(id))).await? {
        if it.pk.starts_with("SESSION#") {
            st.store.delete(&it.pk, ONE).await?;
        }
    }
    st.store.delete(&email_pk(&m.email), ONE).await?;
    let items = st.store.query(Query::table(member_pk(id), "")).await?;
    let n = items.len();
    for it in items {
        st.store.delete(&it.pk, &it.sk).await?;
    }
    audit(
        st,
        ctx,
        a,
        "member.delete",
        id,
        json!({"email": m.email, "keys_revoked": revoked, "items_deleted": n,
               "conversations_deleted": conversations, "captures_deleted": captures}),
    )
    .await?;
    ok(json!({"ok": true, "keys_revoked": revoked, "edge": edge_ok,
              "captures": {"conversations": conversations, "captures": captures,
                           "more": captures_more}}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditBody {
    amount_micros: i64,
    reason: String,
    /// The client's idempotency key (or the `Idempotency-Key` header): a retried credit
    /// with the same key is applied once.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A wallet adjustment, idempotent by the client's key: the first request claims the
/// key (conditional write); a retry with the same key and body answers the stored
/// credit (and re-sends it, which the edge applies once by `credit_id`); the same key
/// with a different body is a 409.
async fn credit<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let b: CreditBody = ctx.json()?;
    if b.amount_micros == 0 {
        return Err(ApiError::invalid(
            "amount_micros",
            "amount_micros must not be 0",
        ));
    }
    let reason = b.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::invalid(
            "reason",
            "a reason (1-500 characters) is required",
        ));
    }
    let key = b
        .idempotency_key
        .clone()
        .or_else(|| {
            ctx.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "idempotency_key",
                "an idempotency_key (or Idempotency-Key header) is required",
            )
        })?;
    if key.len() < 8
        || key.len() > 64
        || !key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
    {
        return Err(ApiError::invalid(
            "idempotency_key",
            "idempotency_key must be 8-64 characters from [A-Za-z0-9_-]",
        ));
    }
    member_exists(st, ctx, id).await?;
    let credit_id = format!("adm-{key}");
    let rec = json!({"credit_id": credit_id, "amount_micros": b.amount_micros, "reason": reason,
                     "admin": a.sub, "at": ctx.now});
    let claim_sk = format!("CREDITKEY#{credit_id}");
    let call = calls::credit(id, &credit_id, b.amount_micros, reason);
    let entries = crate::outbox::entries(std::slice::from_ref(&call), ctx.now)?;
    let mut items = vec![
        (
            to_item(member_pk(id), claim_sk.clone(), &rec)?,
            Put::IfAbsent,
        ),
        (
            to_item(
                member_pk(id),
                format!("CREDIT#{:010}#{credit_id}", ctx.now),
                &rec,
            )?,
            Put::IfAbsent,
        ),
    ];
    items.extend(crate::outbox::items(&entries)?);
    match st.store.put_all(items).await {
        Ok(()) => {
            audit(st, ctx, a, "wallet.adjust", id, rec.clone()).await?;
            let edge = crate::outbox::deliver(st, entries, ctx.now).await;
            ok(json!({"credit": rec, "edge": edge}))
        }
        Err(crate::store::StoreError::Conflict) => {
            let stored: Value = load(&st.store, &member_pk(id), &claim_sk, ctx.now)
                .await?
                .ok_or_else(|| ApiError::conflict("the credit is being written; retry"))?;
            let same = stored.get("amount_micros") == rec.get("amount_micros")
                && stored.get("reason") == rec.get("reason");
            if !same {
                return Err(ApiError {
                    param: Some("idempotency_key".into()),
                    ..ApiError::conflict("idempotency_key was used for a different credit")
                });
            }
            let edge = crate::outbox::send(st, vec![call], ctx.now).await?;
            ok(json!({"credit": stored, "replayed": true, "edge": edge}))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSubscribeBody {
    plan_id: String,
    /// `start` (new plan or upgrade), `renew`, or `expire`.
    action: String,
}

async fn admin_subscribe<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let b: AdminSubscribeBody = ctx.json()?;
    member_exists(st, ctx, id).await?;
    let plan: Plan = load(&st.store, &plan_pk(&b.plan_id), ONE, ctx.now)
        .await?
        .ok_or_else(|| ApiError {
            param: Some("plan_id".into()),
            ..ApiError::not_found("plan")
        })?;
    match b.action.as_str() {
        "start" | "renew" => {
            let (sub, edge) = Box::pin(members::subscribe(st, id, &plan, ctx.now)).await?;
            audit(
                st,
                ctx,
                a,
                &format!("subscription.{}", b.action),
                id,
                json!({"plan_id": plan.id}),
            )
            .await?;
            ok(json!({"subscription": sub, "edge": edge}))
        }
        "expire" => {
            let sub: Subscription = load(&st.store, &member_pk(id), SUBSCRIPTION, ctx.now)
                .await?
                .filter(|s: &Subscription| s.plan_id == plan.id)
                .ok_or_else(|| ApiError::not_found("subscription to this plan"))?;
            let (sub, edge) = crate::jobs::expire_subscription(st, sub, ctx.now).await?;
            audit(
                st,
                ctx,
                a,
                "subscription.expire",
                id,
                json!({"plan_id": plan.id}),
            )
            .await?;
            ok(json!({"subscription": sub, "edge": edge}))
        }
        _ => Err(ApiError::invalid(
            "action",
            "action must be start, renew or expire",
        )),
    }
}

// ---- plans ---------------------------------------------------------------------------

async fn all_plans<S: ItemStore, E>(st: &AppState<S, E>, ctx: &Ctx) -> ApiResult<Vec<Plan>> {
    load_all(&st.store, index1("PLANS"), ctx.now).await
}

pub async fn public_plans_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let plans: Vec<Plan> = all_plans(st, ctx)
        .await?
        .into_iter()
        .filter(|p| p.visible)
        .collect();
    ok(json!({"data": plans}))
}

fn valid_id(id: &str, param: &str) -> ApiResult<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ApiError::invalid(
            param,
            format!("{param} must be 1-64 characters from [A-Za-z0-9._-]"),
        ));
    }
    Ok(())
}

async fn save_plan<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: Option<&str>,
) -> ApiResult<Response<Body>> {
    let mut plan: Plan = ctx.json()?;
    if let Some(id) = id {
        if !plan.id.is_empty() && plan.id != id {
            return Err(ApiError::invalid(
                "id",
                "id in the body differs from the path",
            ));
        }
        plan.id = id.to_owned();
        load::<Plan, _>(&st.store, &plan_pk(id), ONE, ctx.now)
            .await?
            .ok_or_else(|| ApiError::not_found("plan"))?;
    }
    valid_id(&plan.id, "id")?;
    if plan.name.trim().is_empty() || plan.name.len() > 100 {
        return Err(ApiError::invalid("name", "name must be 1-100 characters"));
    }
    if plan.currency.len() != 3 || !plan.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::invalid(
            "currency",
            "currency must be a 3-letter ISO code like USD",
        ));
    }
    if plan.allowed_models.is_empty() || plan.allowed_models.iter().any(|m| m.trim().is_empty()) {
        return Err(ApiError::invalid(
            "allowed_models",
            "allowed_models needs at least one model name (or \"*\")",
        ));
    }
    if plan.priority > 100 {
        return Err(ApiError::invalid("priority", "priority must be 0-100"));
    }
    if plan.rpm == Some(0) || plan.tpm == Some(0) {
        return Err(ApiError::invalid(
            "rpm",
            "rpm and tpm must be positive when set",
        ));
    }
    put_new_or_edit(
        &st.store,
        plan.item()?,
        id.is_some(),
        "id",
        "a plan with this id exists",
    )
    .await?;
    audit(
        st,
        ctx,
        a,
        if id.is_some() {
            "plan.update"
        } else {
            "plan.create"
        },
        &plan.id,
        json!(plan),
    )
    .await?;
    let published = publish(st, ctx.now).await?;
    let body = with_publish(json!({"plan": plan}), published);
    if id.is_some() {
        ok(body)
    } else {
        created(body)
    }
}

// ---- apps ----------------------------------------------------------------------------

/// https URLs, http only on loopback, or a custom scheme (`x-my-app://auth-callback`);
/// never `javascript:`/`data:` or URLs with a fragment.
pub fn valid_callback(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if rest.is_empty()
        || url.contains('#')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
        || url.len() > 2000
    {
        return false;
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = rest.split(['/', '?']).next().unwrap_or("");
    match scheme.as_str() {
        "https" => !host.is_empty(),
        "http" => {
            let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
            matches!(h, "localhost" | "127.0.0.1" | "[::1]")
        }
        "javascript" | "data" | "file" | "vbscript" | "ftp" => false,
        s => {
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
    callback_urls: Vec<String>,
    /// A public client (no secret kept): its token exchanges use PKCE only.
    #[serde(default)]
    public: bool,
}

async fn create_app<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
) -> ApiResult<Response<Body>> {
    let b: NewApp = ctx.json()?;
    let name = b.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid("name", "name must be 1-100 characters"));
    }
    if b.callback_urls.is_empty() || b.callback_urls.len() > 20 {
        return Err(ApiError::invalid(
            "callback_urls",
            "give 1-20 callback URLs",
        ));
    }
    if let Some(bad) = b.callback_urls.iter().find(|u| !valid_callback(u)) {
        return Err(ApiError::invalid(
            "callback_urls",
            format!("{bad:?} is not an https URL, a loopback http URL or a custom scheme URL"),
        ));
    }
    let secret = format!("as-{}", new_token()?);
    let app = App {
        id: format!("app_{}", new_id()?),
        name: name.to_owned(),
        sealed_secret: crypto::seal(&st.master_key, &secret)?,
        callback_urls: b.callback_urls,
        created_at: ctx.now,
        public: b.public,
    };
    st.store
        .put(
            to_item(app_pk(&app.id), ONE, &app)?.gsi1("APPS", app.id.clone()),
            Put::IfAbsent,
        )
        .await?;
    audit(
        st,
        ctx,
        a,
        "app.create",
        &app.id,
        json!({"name": app.name, "callback_urls": app.callback_urls}),
    )
    .await?;
    let mut v = app.public();
    if let Some(o) = v.as_object_mut() {
        // Shown once: the app verifies callback signs with it.
        o.insert("secret".into(), json!(secret));
    }
    created(v)
}

fn check_app_fields(name: Option<&str>, callback_urls: Option<&[String]>) -> ApiResult<()> {
    if name.is_some_and(|n| n.trim().is_empty() || n.trim().len() > 100) {
        return Err(ApiError::invalid("name", "name must be 1-100 characters"));
    }
    if let Some(urls) = callback_urls {
        if urls.is_empty() || urls.len() > 20 {
            return Err(ApiError::invalid(
                "callback_urls",
                "give 1-20 callback URLs",
            ));
        }
        if let Some(bad) = urls.iter().find(|u| !valid_callback(u)) {
            return Err(ApiError::invalid(
                "callback_urls",
                format!("{bad:?} is not an https URL, a loopback http URL or a custom scheme URL"),
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    callback_urls: Option<Vec<String>>,
    #[serde(default)]
    public: Option<bool>,
}

/// Renames an app, replaces its callback URLs or changes whether it is public; the
/// secret stays (rotate it apart).
async fn update_app<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let b: AppPatch = ctx.json()?;
    check_app_fields(b.name.as_deref(), b.callback_urls.as_deref())?;
    let mut app: App = load(&st.store, &app_pk(id), ONE, ctx.now)
        .await?
        .ok_or_else(|| ApiError::not_found("app"))?;
    if let Some(n) = &b.name {
        app.name = n.trim().to_owned();
    }
    if let Some(u) = b.callback_urls {
        app.callback_urls = u;
    }
    if let Some(p) = b.public {
        app.public = p;
    }
    put(
        &st.store,
        to_item(app_pk(&app.id), ONE, &app)?.gsi1("APPS", app.id.clone()),
    )
    .await?;
    audit(
        st,
        ctx,
        a,
        "app.update",
        &app.id,
        json!({"name": app.name, "callback_urls": app.callback_urls, "public": app.public}),
    )
    .await?;
    ok(app.public())
}

/// A new secret for the app, shown once; the old one stops verifying at once.
async fn rotate_app_secret<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let mut app: App = load(&st.store, &app_pk(id), ONE, ctx.now)
        .await?
        .ok_or_else(|| ApiError::not_found("app"))?;
    let secret = format!("as-{}", new_token()?);
    app.sealed_secret = crypto::seal(&st.master_key, &secret)?;
    put(
        &st.store,
        to_item(app_pk(&app.id), ONE, &app)?.gsi1("APPS", app.id.clone()),
    )
    .await?;
    audit(st, ctx, a, "app.rotate_secret", &app.id, Value::Null).await?;
    let mut v = app.public();
    if let Some(o) = v.as_object_mut() {
        o.insert("secret".into(), json!(secret));
    }
    ok(v)
}

// ---- providers and models ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialIn {
    #[serde(default)]
    id: Option<String>,
    /// Absent on update = keep the stored secret of the credential with this id.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    weight: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderIn {
    #[serde(default)]
    id: Option<String>,
    kind: ProviderKind,
    base_url: String,
    #[serde(default)]
    credentials: Vec<CredentialIn>,
    #[serde(default)]
    prefix_routing: Option<bool>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<AuthStyle>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    prefix: Option<String>,
    /// Check each new credential against the provider before saving (default on): a
    /// credential the provider refuses (401/403) is not saved.
    #[serde(default)]
    validate: Option<bool>,
}

async fn get_provider<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<StoredProvider> {
    load(&st.store, &provider_pk(id), ONE, ctx.now)
        .await?
        .ok_or_else(|| ApiError::not_found("provider"))
}

fn valid_base_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() > 8
        && !u.contains(['?', '#', ' '])
        && !u.contains('@')
}

/// Name, description, query, timeout and prefix of a provider, checked.
fn check_provider_fields(b: &ProviderIn) -> ApiResult<()> {
    let text = |v: &Option<String>, max: usize, lines: bool, param: &str| match v {
        Some(t)
            if t.trim().is_empty()
                || t.chars().count() > max
                || (!lines && t.contains(['\r', '\n'])) =>
        {
            Err(ApiError::invalid(
                param,
                format!("{param} must be 1-{max} characters"),
            ))
        }
        _ => Ok(()),
    };
    text(&b.name, 100, false, "name")?;
    text(&b.description, 1000, true, "description")?;
    if b.query.len() > 20 {
        return Err(ApiError::invalid("query", "at most 20 query parameters"));
    }
    for (k, v) in &b.query {
        let token = !k.is_empty()
            && k.len() <= 100
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        // A credential never travels in the URL (it would end up in logs).
        if !token
            || k.eq_ignore_ascii_case("key")
            || v.is_empty()
            || v.len() > 500
            || v.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ApiError::invalid(
                "query",
                format!("query parameter {k:?} needs a token name (not \"key\") and a 1-500 character value"),
            ));
        }
    }
    if b.timeout_ms
        .is_some_and(|t| !(1_000..=600_000).contains(&t))
    {
        return Err(ApiError::invalid(
            "timeout_ms",
            "timeout_ms must be 1000-600000",
        ));
    }
    if let Some(p) = &b.prefix {
        valid_id(p, "prefix")?;
    }
    Ok(())
}

/// How a probe of the provider's model list went.
enum Probe {
    Listed(Value),
    /// The provider refused the credential (401/403).
    Refused(u16),
    /// Anything else: unreachable, another status, not JSON. Never names the URL.
    Failed(Option<u16>, String),
}

/// `GET {base_url}/models` (with the provider's query parameters) as the edge would
/// call it: the same destination check, no redirect, the credential in its auth style.
async fn probe_models<S, E>(
    st: &AppState<S, E>,
    p: &StoredProvider,
    secret: Option<&str>,
) -> ApiResult<Probe> {
    let mut url = format!("{}/models", p.base_url);
    if !p.query.is_empty() {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p.query.iter())
            .finish();
        url = format!("{url}?{q}");
    }
    // Checked at call time (DNS may answer differently than at save time); the client
    // connects only to the addresses checked here and follows no redirect.
    let dest = crate::ssrf::check(&url, st.policy.allow_loopback_upstreams)
        .await
        .map_err(|e| crate::ssrf::refused("base_url", &e))?;
    let client = crate::ssrf::client_for(&dest, std::time::Duration::from_secs(20))?;
    let mut req = client.get(url);
    if let Some(secret) = secret {
        req = match p.auth.unwrap_or_else(|| p.kind.default_auth()) {
            AuthStyle::Bearer => req.bearer_auth(secret),
            AuthStyle::XApiKey => req
                .header("x-api-key", secret)
                .header("anthropic-version", "2023-06-01"),
            AuthStyle::Google => req.header("x-goog-api-key", secret),
            AuthStyle::ApiKey => req.header("api-key", secret),
        };
    }
    // Never echo the URL or the credential: reqwest errors without the URL only.
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Ok(Probe::Failed(
                None,
                format!("provider unreachable: {}", e.without_url()),
            ))
        }
    };
    let status = resp.status().as_u16();
    if matches!(status, 401 | 403) {
        return Ok(Probe::Refused(status));
    }
    if !resp.status().is_success() {
        return Ok(Probe::Failed(
            Some(status),
            format!("provider answered HTTP {status}"),
        ));
    }
    Ok(match resp.json::<Value>().await {
        Ok(v) => Probe::Listed(v),
        Err(_) => Probe::Failed(Some(status), "provider's model list is not JSON".into()),
    })
}

fn health_of(probe: &Probe, now: u64) -> CredentialHealth {
    match probe {
        Probe::Listed(_) => CredentialHealth {
            ok: true,
            checked_at: now,
            status: Some(200),
            last_error: None,
        },
        Probe::Refused(s) => CredentialHealth {
            ok: false,
            checked_at: now,
            status: Some(*s),
            last_error: Some(format!("the provider refused the credential (HTTP {s})")),
        },
        Probe::Failed(s, m) => CredentialHealth {
            ok: false,
            checked_at: now,
            status: *s,
            last_error: Some(m.clone()),
        },
    }
}

async fn save_provider<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: Option<&str>,
) -> ApiResult<Response<Body>> {
    let b: ProviderIn = ctx.json()?;
    let pid = match (id, &b.id) {
        (Some(p), Some(bid)) if p != bid => {
            return Err(ApiError::invalid(
                "id",
                "id in the body differs from the path",
            ))
        }
        (Some(p), _) => p.to_owned(),
        (None, Some(bid)) => bid.clone(),
        (None, None) => return Err(ApiError::invalid("id", "id is required")),
    };
    valid_id(&pid, "id")?;
    if !valid_base_url(&b.base_url) {
        return Err(ApiError::invalid(
            "base_url",
            "base_url must be an http(s) URL without query, fragment or userinfo",
        ));
    }
    check_provider_fields(&b)?;
    // The same destination check as the edge, and the name's DNS answers (a model pull
    // from here sends the provider credential to this address).
    crate::ssrf::check_saved(&b.base_url, st.policy.allow_loopback_upstreams)
        .await
        .map_err(|e| crate::ssrf::refused("base_url", &e))?;
    if b.headers.len() > 20 {
        return Err(ApiError::invalid("headers", "at most 20 custom headers"));
    }
    let old = match id {
        Some(p) => Some(get_provider(st, ctx, p).await?),
        None => None,
    };
    let all: Vec<StoredProvider> = load_all(&st.store, index1("PROVIDERS"), ctx.now).await?;
    let prefix = b.prefix.clone().filter(|p| *p != pid);
    let wanted = prefix.as_deref().unwrap_or(&pid);
    if let Some(other) = all
        .iter()
        .find(|o| o.id != pid && (o.model_prefix() == wanted || o.id == wanted))
    {
        return Err(ApiError {
            param: Some("prefix".into()),
            ..ApiError::conflict(format!(
                "the prefix {wanted:?} is used by provider {:?}",
                other.id
            ))
        });
    }
    let mut creds = Vec::new();
    let mut fresh = Vec::new();
    for (i, c) in b.credentials.iter().enumerate() {
        let cid = c.id.clone().unwrap_or_else(|| format!("{pid}-{}", i + 1));
        valid_id(&cid, "credentials.id")?;
        let weight = c.weight.unwrap_or(1);
        let stored = match &c.secret {
            Some(s) if !s.trim().is_empty() && s.len() <= 4096 => {
                fresh.push((creds.len(), s.trim().to_owned()));
                StoredCredential {
                    id: cid,
                    sealed: crypto::seal(&st.master_key, s.trim())?,
                    masked: crypto::mask(s.trim()),
                    weight,
                    health: None,
                }
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "credentials.secret",
                    "secret must be 1-4096 characters",
                ))
            }
            None => {
                let prev = old
                    .as_ref()
                    .and_then(|o| o.credentials.iter().find(|p| p.id == cid))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "credentials.secret",
                            format!("credential {cid:?} needs a secret"),
                        )
                    })?;
                StoredCredential {
                    weight,
                    ..prev.clone()
                }
            }
        };
        creds.push(stored);
    }
    let mut sealed_headers = BTreeMap::new();
    for (name, value) in &b.headers {
        let valid_name = !name.is_empty()
            && name.len() <= 100
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
        if !valid_name || value.is_empty() || value.len() > 4096 || value.contains(['\r', '\n']) {
            return Err(ApiError::invalid(
                "headers",
                format!("header {name:?} needs a token name and a 1-4096 character value"),
            ));
        }
        // Values are shown masked; sending a masked value back keeps the stored one
        // (sealed, or a plain value stored before headers were sealed).
        let key = name.to_ascii_lowercase();
        let prev = old.as_ref().and_then(|o| o.sealed_headers.get(&key));
        let legacy = old
            .as_ref()
            .and_then(|o| o.headers.get(name).or_else(|| o.headers.get(&key)))
            .filter(|plain| crypto::mask(plain) == *value);
        let stored = match (prev, legacy) {
            (Some(p), _) if p.masked == *value => p.clone(),
            (_, Some(plain)) => StoredSecret {
                sealed: crypto::seal(&st.master_key, plain)?,
                masked: crypto::mask(plain),
            },
            _ => StoredSecret {
                sealed: crypto::seal(&st.master_key, value)?,
                masked: crypto::mask(value),
            },
        };
        sealed_headers.insert(key, stored);
    }
    let mut p = StoredProvider {
        id: pid.clone(),
        kind: b.kind,
        base_url: b.base_url.trim_end_matches('/').to_owned(),
        credentials: creds,
        // Off unless the operator turns it on: a prefix route reaches any upstream model.
        prefix_routing: b.prefix_routing.unwrap_or(false),
        enabled: b.enabled.unwrap_or(true),
        headers: BTreeMap::new(),
        sealed_headers,
        name: b.name.as_deref().map(|n| n.trim().to_owned()),
        description: b.description.as_deref().map(|d| d.trim().to_owned()),
        query: b.query.clone(),
        auth: b.auth,
        timeout_ms: b.timeout_ms,
        prefix,
    };
    // Each new credential is tried against the provider first: one it refuses is not
    // saved; one that could not be checked is saved with the failure as its health.
    if b.validate.unwrap_or(true) {
        for (i, secret) in &fresh {
            // A destination the check refuses now (a name without DNS answers yet) is
            // saved unchecked; the pull checks it again.
            let probe = match probe_models(st, &p, Some(secret)).await {
                Ok(probe) => probe,
                Err(e) => Probe::Failed(None, format!("not checked: {}", e.message)),
            };
            if let Probe::Refused(status) = probe {
                let cid = p
                    .credentials
                    .get(*i)
                    .map(|c| c.id.clone())
                    .unwrap_or_default();
                return Err(ApiError {
                    param: Some("credentials.secret".into()),
                    ..ApiError::new(
                        400,
                        "invalid_request_error",
                        "credential_rejected",
                        format!(
                            "the provider refused credential {cid:?} (HTTP {status}); nothing was saved"
                        ),
                    )
                });
            }
            if let Some(c) = p.credentials.get_mut(*i) {
                c.health = Some(health_of(&probe, ctx.now));
            }
        }
    }
    put_new_or_edit(
        &st.store,
        to_item(provider_pk(&pid), ONE, &p)?.gsi1("PROVIDERS", pid.clone()),
        id.is_some(),
        "id",
        "a provider with this id exists",
    )
    .await?;
    // A new prefix renames the provider's pulled models.
    let old_prefix = old.as_ref().map(|o| o.model_prefix().to_owned());
    let mut renamed = Vec::new();
    if let Some(from) = old_prefix.filter(|f| f != p.model_prefix()) {
        renamed = rename_pulled(st, ctx, &pid, &from, p.model_prefix()).await?;
    }
    audit(
        st,
        ctx,
        a,
        if id.is_some() {
            "provider.update"
        } else {
            "provider.create"
        },
        &pid,
        json!({"base_url": p.base_url, "kind": p.kind, "prefix": p.model_prefix(),
               "renamed": renamed}),
    )
    .await?;
    let mut body = p.public();
    if let Some(o) = body.as_object_mut() {
        o.insert("renamed_models".into(), json!(renamed));
    }
    if id.is_some() {
        ok(body)
    } else {
        created(body)
    }
}

/// Renames the models pulled from `pid` from `<from>/<model>` to `<to>/<model>`
/// (a new entry, then the old one deleted); answers `[old, new]` pairs.
async fn rename_pulled<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    pid: &str,
    from: &str,
    to: &str,
) -> ApiResult<Vec<(String, String)>> {
    let models: Vec<ModelEntry> = load_all(&st.store, index1("MODELS"), ctx.now).await?;
    let mut out = Vec::new();
    for e in models
        .into_iter()
        .filter(|e| e.pulled_from.as_deref() == Some(pid))
    {
        let Some(rest) = e.model.name.strip_prefix(&format!("{from}/")) else {
            continue;
        };
        let new_name = format!("{to}/{rest}");
        let old_name = e.model.name.clone();
        let mut moved = e;
        moved.model.name = new_name.clone();
        st.store
            .put(moved.item()?, Put::IfAbsent)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict => ApiError {
                    param: Some("prefix".into()),
                    ..ApiError::conflict(format!("a model named {new_name:?} exists"))
                },
                e => e.into(),
            })?;
        st.store.delete(&model_pk(&old_name), ONE).await?;
        out.push((old_name, new_name));
    }
    Ok(out)
}

/// `GET /api/admin/providers/{id}`: one provider, masked, with each credential's health.
async fn view_provider<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<Response<Body>> {
    let p = get_provider(st, ctx, id).await?;
    let models: Vec<ModelEntry> = load_all(&st.store, index1("MODELS"), ctx.now).await?;
    let mut v = p.public();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "models".into(),
            json!(models
                .iter()
                .filter(|m| m.model.deployments.iter().any(|d| d.provider == p.id))
                .map(ModelEntry::public)
                .collect::<Vec<_>>()),
        );
    }
    ok(v)
}

/// Lists the provider's models (`GET {base_url}/models`), adds new ones as disabled
/// `<prefix>/<model>` entries, and marks those it no longer lists as removed (flagged
/// `removed`, disabled, never published). The first credential's health records the
/// outcome.
async fn pull_models<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let mut p = get_provider(st, ctx, id).await?;
    let cred = p
        .credentials
        .first()
        .map(|c| crypto::open(&st.master_key, &c.sealed))
        .transpose()?;
    let probe = probe_models(st, &p, cred.as_deref()).await?;
    if let Some(c) = p.credentials.first_mut() {
        c.health = Some(health_of(&probe, ctx.now));
        // Recorded whatever the outcome; a concurrent edit of the provider wins.
        let _ = st
            .store
            .put(
                to_item(provider_pk(&p.id), ONE, &p)?.gsi1("PROVIDERS", p.id.clone()),
                Put::Upsert,
            )
            .await;
    }
    let upstream_err = |m: String| ApiError::new(502, "api_error", "upstream_error", m);
    let body = match probe {
        Probe::Listed(v) => v,
        Probe::Refused(s) => {
            return Err(upstream_err(format!(
                "the provider refused the credential (HTTP {s})"
            )))
        }
        Probe::Failed(_, m) => return Err(upstream_err(m)),
    };
    let listed: Vec<String> = body
        .get("data")
        .and_then(Value::as_array)
        .or_else(|| body.get("models").and_then(Value::as_array))
        .map(|arr| {
            arr.iter()
                .filter_map(|m| {
                    m.get("id")
                        .or_else(|| m.get("name"))
                        .and_then(Value::as_str)
                })
                .map(|s| s.trim_start_matches("models/").to_owned())
                .collect()
        })
        .ok_or_else(|| upstream_err("provider's model list has no data array".into()))?;
    let existing: Vec<ModelEntry> = load_all(&st.store, index1("MODELS"), ctx.now).await?;
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for up in &listed {
        let name = format!("{}/{up}", p.model_prefix());
        match existing.iter().find(|e| e.model.name == name) {
            Some(e) if !e.removed => {}
            Some(e) => {
                put(
                    &st.store,
                    ModelEntry {
                        removed: false,
                        ..e.clone()
                    }
                    .item()?,
                )
                .await?;
                added.push(name);
            }
            None => {
                let entry = ModelEntry {
                    model: Model {
                        name: name.clone(),
                        aliases: Vec::new(),
                        kind: Default::default(),
                        deployments: vec![Deployment {
                            provider: p.id.clone(),
                            model: up.clone(),
                            weight: 1,
                        }],
                        stream_mode: None,
                        price: Default::default(),
                        max_output_tokens: 16_384,
                        max_input_tokens: None,
                        // Members see `owned_by`: never the provider id.
                        owned_by: None,
                        enabled: false,
                        free: false,
                        description: None,
                    },
                    pulled_from: Some(p.id.clone()),
                    removed: false,
                };
                put(&st.store, entry.item()?).await?;
                added.push(name);
            }
        }
    }
    for e in existing
        .iter()
        .filter(|e| e.pulled_from.as_deref() == Some(p.id.as_str()) && !e.removed)
    {
        let up = e
            .model
            .deployments
            .first()
            .map(|d| d.model.as_str())
            .unwrap_or("");
        if !listed_set.contains(up) {
            let mut gone = e.clone();
            gone.removed = true;
            gone.model.enabled = false;
            put(&st.store, gone.item()?).await?;
            removed.push(e.model.name.clone());
        }
    }
    audit(
        st,
        ctx,
        a,
        "provider.pull",
        id,
        json!({"added": added, "removed": removed}),
    )
    .await?;
    ok(json!({"added": added, "removed": removed, "listed": listed.len()}))
}

async fn save_model<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    name: Option<&str>,
) -> ApiResult<Response<Body>> {
    let model: Model = ctx.json()?;
    if let Some(n) = name {
        if model.name != n {
            return Err(ApiError::invalid(
                "name",
                "name in the body differs from the path",
            ));
        }
    }
    let n = model.name.trim();
    if n.is_empty() || n.len() > 128 || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1-128 characters without spaces",
        ));
    }
    if model.deployments.is_empty() {
        return Err(ApiError::invalid(
            "deployments",
            "a model needs at least one deployment",
        ));
    }
    let providers: Vec<StoredProvider> = load_all(&st.store, index1("PROVIDERS"), ctx.now).await?;
    for d in &model.deployments {
        if !providers.iter().any(|p| p.id == d.provider) {
            return Err(ApiError::invalid(
                "deployments",
                format!("unknown provider {:?}", d.provider),
            ));
        }
        if d.weight == 0 || d.model.trim().is_empty() {
            return Err(ApiError::invalid(
                "deployments",
                "deployments need a model and a positive weight",
            ));
        }
    }
    if model
        .max_input_tokens
        .is_some_and(|t| !(1..=MAX_INPUT_TOKENS_LIMIT).contains(&t))
    {
        return Err(ApiError::invalid(
            "max_input_tokens",
            format!("max_input_tokens must be 1-{MAX_INPUT_TOKENS_LIMIT} when set"),
        ));
    }
    if model
        .description
        .as_ref()
        .is_some_and(|d| d.trim().is_empty() || d.chars().count() > 1000)
    {
        return Err(ApiError::invalid(
            "description",
            "description must be 1-1000 characters",
        ));
    }
    check_priced(&model)?;
    let prev: Option<ModelEntry> = load(&st.store, &model_pk(n), ONE, ctx.now).await?;
    if name.is_some() && prev.is_none() {
        return Err(ApiError::not_found("model"));
    }
    let entry = ModelEntry {
        pulled_from: prev.as_ref().and_then(|p| p.pulled_from.clone()),
        removed: prev.as_ref().is_some_and(|p| p.removed),
        model,
    };
    put_new_or_edit(
        &st.store,
        entry.item()?,
        name.is_some(),
        "name",
        "a model with this name exists",
    )
    .await?;
    audit(
        st,
        ctx,
        a,
        if name.is_some() {
            "model.update"
        } else {
            "model.create"
        },
        &entry.model.name,
        Value::Null,
    )
    .await?;
    let body = entry.public();
    if name.is_some() {
        ok(body)
    } else {
        created(body)
    }
}

/// The largest input context limit an operator may set on a model. The edge counts each
/// document or file sent by reference at this limit in the reservation's upper bound.
const MAX_INPUT_TOKENS_LIMIT: u64 = 10_000_000;

/// The edge refuses an enabled model priced at zero unless it is marked `free`
/// (403 `model_not_priced`): refuse it here first, naming the model.
fn check_priced(m: &Model) -> ApiResult<()> {
    if m.enabled && m.price.is_zero() && !m.free {
        return Err(ApiError::invalid(
            "price",
            format!(
                "model {:?} is enabled without a price: set a price or \"free\": true",
                m.name
            ),
        ));
    }
    Ok(())
}

async fn settings<S: ItemStore, E>(st: &AppState<S, E>, now: u64) -> ApiResult<AdminSettings> {
    Ok(load(&st.store, SETTINGS_PK, ONE, now)
        .await?
        .unwrap_or_default())
}

/// Builds the next catalogue version from the store, validates it as the edge will, and
/// pushes it. The stored history keeps counts only: credentials stay sealed at rest.
pub async fn publish<S: ItemStore, E: EdgeSync>(st: &AppState<S, E>, now: u64) -> ApiResult<Value> {
    let providers: Vec<StoredProvider> = load_all(&st.store, index1("PROVIDERS"), now).await?;
    let models: Vec<ModelEntry> = load_all(&st.store, index1("MODELS"), now).await?;
    let plans: Vec<Plan> = load_all(&st.store, index1("PLANS"), now).await?;
    let s = settings(st, now).await?;
    let mut out_providers = Vec::new();
    for p in &providers {
        let mut credentials = Vec::new();
        for c in &p.credentials {
            credentials.push(Credential {
                id: c.id.clone(),
                secret: crypto::open(&st.master_key, &c.sealed)?,
                weight: c.weight,
            });
        }
        out_providers.push(Provider {
            id: p.id.clone(),
            kind: p.kind,
            base_url: p.base_url.clone(),
            credentials,
            auth: p.auth,
            headers: p.open_headers(&st.master_key)?,
            query: p.query.clone(),
            prefix_routing: p.prefix_routing,
            prefix: p.prefix.clone(),
            default_price: None,
            timeout_ms: p.timeout_ms.unwrap_or(DEFAULT_PROVIDER_TIMEOUT_MS),
            enabled: p.enabled,
        });
    }
    let last = st
        .store
        .query(Query::table("CATALOGUE", "V#").desc().limit(1))
        .await?;
    let n = last
        .first()
        .and_then(|it| it.sk.trim_start_matches("V#").parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    for m in models.iter().filter(|m| m.model.enabled && !m.removed) {
        check_priced(&m.model)?;
    }
    let snapshot = CatalogueSnapshot {
        version: format!("v{n}"),
        providers: out_providers,
        models: models
            .iter()
            .filter(|m| m.model.enabled && !m.removed)
            .map(|m| m.model.clone())
            .collect(),
        plans: plans
            .iter()
            .map(|p| PlanLimits {
                id: p.id.clone(),
                name: Some(p.name.clone()),
                allowed_models: p.allowed_models.clone(),
                rpm: p.rpm,
                tpm: p.tpm,
                allowance_unit: Some(p.allowance_unit),
                allowance: Some(p.allowance_amount),
                period: Some(p.period),
                overage: p.overage,
                capture: p.capture || s.capture_default,
            })
            .collect(),
        settings: Settings {
            stream_mode: s.force_stream_default,
            // Empty: the worker's CORS_ORIGINS stays in force.
            cors_origins: (!s.cors_origins.is_empty()).then(|| s.cors_origins.clone()),
            ..Settings::default()
        },
    };
    Catalogue::new(snapshot.clone())
        .map_err(|e| ApiError::bad_request(format!("the catalogue does not validate: {e}")))?;
    let summary = json!({"version": snapshot.version, "published_at": now,
        "providers": snapshot.providers.len(), "models": snapshot.models.len(), "plans": snapshot.plans.len()});
    // Conditional: two concurrent publishers cannot both claim the same version.
    st.store
        .put(
            to_item("CATALOGUE".into(), format!("V#{n:010}"), &summary)?,
            Put::IfAbsent,
        )
        .await?;
    let edge = push(&st.sync, vec![calls::catalogue(&snapshot)]).await;
    Ok(json!({"version": snapshot.version, "summary": summary, "edge": edge}))
}

/// Writes an admin-managed entity: a create (`editing == false`) must not overwrite an
/// existing one (409 naming `param`); an edit by id replaces it.
async fn put_new_or_edit(
    store: &impl ItemStore,
    item: Item,
    editing: bool,
    param: &str,
    conflict: &str,
) -> ApiResult<()> {
    let mode = if editing { Put::Upsert } else { Put::IfAbsent };
    store.put(item, mode).await.map_err(|e| match e {
        crate::store::StoreError::Conflict => ApiError {
            param: Some(param.into()),
            ..ApiError::conflict(conflict)
        },
        e => e.into(),
    })
}
