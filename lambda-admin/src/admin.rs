//! The admin API (`/api/admin/...`): every mutation needs the `admin` role and is written
//! to the audit log; `viewer` accounts read only.

use std::collections::{BTreeMap, HashSet};

use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tollbooth_core::catalogue::{
    Catalogue, CatalogueSnapshot, Credential, Deployment, Model, PlanLimits, Provider,
    ProviderKind, Settings,
};

use crate::app::{created, issue_session, ok, push, session_claims, AppState, Claims, Ctx};
use crate::crypto::{self, hash_password, new_id, new_token};
use crate::error::{ApiError, ApiResult};
use crate::members::{self, check_password, normalize_email, KeyBody};
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
    let mutating = !matches!(m, "GET" | "HEAD");
    let admin = require_admin(st, ctx, mutating).await?;
    let a = &admin;
    match (m, segs) {
        ("GET", ["me"]) => ok(json!({"email": a.sub, "role": a.role})),
        ("GET", ["admins"]) => list_admins(st, ctx).await,
        ("POST", ["admins"]) => create_admin(st, ctx, a).await,
        ("GET", ["members"]) => list_members(st, ctx).await,
        ("GET", ["members", id]) => view_member(st, ctx, id).await,
        ("POST", ["members", id, "suspend"]) => {
            set_status(st, ctx, a, id, MemberStatus::Suspended).await
        }
        ("POST", ["members", id, "resume"]) => {
            set_status(st, ctx, a, id, MemberStatus::Active).await
        }
        ("POST", ["members", id, "credits"]) => credit(st, ctx, a, id).await,
        ("POST", ["members", id, "subscription"]) => admin_subscribe(st, ctx, a, id).await,
        ("GET", ["members", id, "keys"]) => {
            member_exists(st, ctx, id).await?;
            let keys = members::member_keys(&st.store, id, ctx.now).await?;
            ok(json!({"data": keys.iter().map(MemberKey::public).collect::<Vec<_>>()}))
        }
        ("POST", ["members", id, "keys"]) => {
            member_exists(st, ctx, id).await?;
            let b: KeyBody = ctx.json()?;
            let (k, full, edge) = members::create_key(st, id, &b.name, None, ctx.now).await?;
            audit(
                st,
                ctx,
                a,
                "key.create",
                &k.public_id,
                json!({"member_id": id}),
            )
            .await?;
            let mut v = k.public();
            if let Some(o) = v.as_object_mut() {
                o.insert("key".into(), json!(full));
                o.insert("edge".into(), edge);
            }
            created(v)
        }
        ("DELETE", ["keys", pid]) => {
            let item = st
                .store
                .query(index1(&format!("KEY#{pid}")))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found("key"))?;
            let k: MemberKey = from_item(&item)?;
            let edge = members::revoke_key(st, &k.member_id, pid, ctx.now).await?;
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
        ("POST", ["plans"]) => save_plan(st, ctx, a, None).await,
        ("PUT", ["plans", id]) => save_plan(st, ctx, a, Some(id)).await,
        ("DELETE", ["plans", id]) => {
            load::<Plan, _>(&st.store, &plan_pk(id), ONE, ctx.now)
                .await?
                .ok_or_else(|| ApiError::not_found("plan"))?;
            st.store.delete(&plan_pk(id), ONE).await?;
            audit(st, ctx, a, "plan.delete", id, Value::Null).await?;
            let published = publish(st, ctx.now).await?;
            ok(with_publish(json!({"ok": true}), published))
        }
        ("GET", ["apps"]) => {
            let apps: Vec<App> = load_all(&st.store, index1("APPS"), ctx.now).await?;
            ok(json!({"data": apps.iter().map(App::public).collect::<Vec<_>>()}))
        }
        ("POST", ["apps"]) => create_app(st, ctx, a).await,
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
        ("POST", ["providers"]) => save_provider(st, ctx, a, None).await,
        ("PUT", ["providers", id]) => save_provider(st, ctx, a, Some(id)).await,
        ("DELETE", ["providers", id]) => {
            get_provider(st, ctx, id).await?;
            st.store.delete(&provider_pk(id), ONE).await?;
            audit(st, ctx, a, "provider.delete", id, Value::Null).await?;
            ok(json!({"ok": true}))
        }
        ("POST", ["providers", id, "pull"]) => pull_models(st, ctx, a, id).await,
        ("GET", ["models"]) => {
            let ms: Vec<ModelEntry> = load_all(&st.store, index1("MODELS"), ctx.now).await?;
            ok(json!({"data": ms.iter().map(ModelEntry::public).collect::<Vec<_>>()}))
        }
        ("POST", ["models"]) => save_model(st, ctx, a, None).await,
        ("PUT", ["models", rest @ ..]) if !rest.is_empty() => {
            save_model(st, ctx, a, Some(&rest.join("/"))).await
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
            let edge = publish(st, ctx.now).await?;
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
            put(&st.store, to_item(SETTINGS_PK.into(), ONE, &s)?).await?;
            audit(st, ctx, a, "settings.update", "settings", json!(s)).await?;
            let published = publish(st, ctx.now).await?;
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
            let report = crate::jobs::run(st, ctx.now, force).await?;
            audit(st, ctx, a, "jobs.run", "jobs", Value::Null).await?;
            ok(report)
        }
        ("GET", ["edge-outbox"]) => {
            let entries = crate::outbox::pending(&st.store).await?;
            ok(json!({"data": entries}))
        }
        ("GET", ["summary"]) => ok(crate::summary::summary(&st.sync, &ctx.query, ctx.now).await?),
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

pub(crate) async fn require_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    mutating: bool,
) -> ApiResult<Claims> {
    let claims = session_claims(st, ctx, "admin").await?;
    let current: Option<Admin> = load(&st.store, &admin_pk(&claims.sub), ONE, ctx.now).await?;
    let Some(current) = current else {
        return Err(ApiError::unauthorized("admin account no longer exists"));
    };
    if mutating && current.role != Role::Admin {
        return Err(ApiError::forbidden(
            "the viewer role cannot change anything",
        ));
    }
    Ok(Claims {
        role: Some(current.role),
        ..claims
    })
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
            .ttl(exp);
            put(&st.store, item).await?;
            ok(json!({"token": token, "token_type": "Bearer", "expires_at": exp, "role": a.role}))
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
    let admin = Admin {
        email,
        role: Role::Admin,
        password_hash: hash_password(password)?,
        created_at: now,
    };
    match store.put(admin.item()?, Put::IfAbsent).await {
        Ok(()) => Ok(true),
        Err(crate::store::StoreError::Conflict) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAdmin {
    email: String,
    password: String,
    role: Role,
}

async fn list_admins<S: ItemStore, E>(st: &AppState<S, E>, ctx: &Ctx) -> ApiResult<Response<Body>> {
    let admins: Vec<Admin> = load_all(&st.store, index1("ADMINS"), ctx.now).await?;
    ok(
        json!({"data": admins.iter().map(|a| json!({"email": a.email, "role": a.role, "created_at": a.created_at})).collect::<Vec<_>>()}),
    )
}

async fn create_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
) -> ApiResult<Response<Body>> {
    let b: NewAdmin = ctx.json()?;
    let email = normalize_email(&b.email)?;
    check_password(&b.password, &email, "password")?;
    let admin = Admin {
        email: email.clone(),
        role: b.role,
        password_hash: hash_password(&b.password)?,
        created_at: ctx.now,
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
    created(json!({"email": email, "role": b.role}))
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
            let (sub, edge) = members::subscribe(st, id, &plan, ctx.now).await?;
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
    let mut creds = Vec::new();
    for (i, c) in b.credentials.iter().enumerate() {
        let cid = c.id.clone().unwrap_or_else(|| format!("{pid}-{}", i + 1));
        valid_id(&cid, "credentials.id")?;
        let weight = c.weight.unwrap_or(1);
        let stored = match &c.secret {
            Some(s) if !s.trim().is_empty() && s.len() <= 4096 => StoredCredential {
                id: cid,
                sealed: crypto::seal(&st.master_key, s.trim())?,
                masked: crypto::mask(s.trim()),
                weight,
            },
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
    let p = StoredProvider {
        id: pid.clone(),
        kind: b.kind,
        base_url: b.base_url.trim_end_matches('/').to_owned(),
        credentials: creds,
        // Off unless the operator turns it on: a prefix route reaches any upstream model.
        prefix_routing: b.prefix_routing.unwrap_or(false),
        enabled: b.enabled.unwrap_or(true),
        headers: BTreeMap::new(),
        sealed_headers,
    };
    put_new_or_edit(
        &st.store,
        to_item(provider_pk(&pid), ONE, &p)?.gsi1("PROVIDERS", pid.clone()),
        id.is_some(),
        "id",
        "a provider with this id exists",
    )
    .await?;
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
        json!({"base_url": p.base_url, "kind": p.kind}),
    )
    .await?;
    let body = p.public();
    if id.is_some() {
        ok(body)
    } else {
        created(body)
    }
}

/// Lists the provider's models (`GET {base_url}/models`), adds new ones as disabled
/// `<provider>/<model>` entries, and marks those it no longer lists as removed.
async fn pull_models<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    id: &str,
) -> ApiResult<Response<Body>> {
    let p = get_provider(st, ctx, id).await?;
    let cred = p
        .credentials
        .first()
        .map(|c| crypto::open(&st.master_key, &c.sealed))
        .transpose()?;
    let url = format!("{}/models", p.base_url);
    // Checked again at pull time (DNS may answer differently than at save time); the
    // client connects only to the addresses checked here and follows no redirect.
    let dest = crate::ssrf::check(&url, st.policy.allow_loopback_upstreams)
        .await
        .map_err(|e| crate::ssrf::refused("base_url", &e))?;
    let client = crate::ssrf::client_for(&dest, std::time::Duration::from_secs(20))?;
    let mut req = client.get(url);
    if let Some(secret) = &cred {
        req = match p.kind.default_auth() {
            tollbooth_core::catalogue::AuthStyle::Bearer => req.bearer_auth(secret),
            tollbooth_core::catalogue::AuthStyle::XApiKey => req
                .header("x-api-key", secret)
                .header("anthropic-version", "2023-06-01"),
            tollbooth_core::catalogue::AuthStyle::Google => req.header("x-goog-api-key", secret),
            tollbooth_core::catalogue::AuthStyle::ApiKey => req.header("api-key", secret),
        };
    }
    let upstream_err = |m: String| ApiError::new(502, "api_error", "upstream_error", m);
    // Never echo the URL or the credential: reqwest errors without the URL only.
    let resp = req
        .send()
        .await
        .map_err(|e| upstream_err(format!("provider unreachable: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(upstream_err(format!(
            "provider answered HTTP {}",
            resp.status().as_u16()
        )));
    }
    let body: Value = resp
        .json()
        .await
        .map_err(|_| upstream_err("provider's model list is not JSON".into()))?;
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
        let name = format!("{}/{up}", p.id);
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
            auth: None,
            headers: p.open_headers(&st.master_key)?,
            query: BTreeMap::new(),
            prefix_routing: p.prefix_routing,
            default_price: None,
            timeout_ms: 60_000,
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
