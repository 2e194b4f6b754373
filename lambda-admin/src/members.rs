//! Member accounts (signup, login with lockout, sessions, password, profile), member
//! keys and subscriptions, and the app-integration login flow.

use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tollbooth_core::auth::ApiKey;
use tollbooth_core::billing::PlanPeriod;
use tollbooth_core::keyrecord::{KeyRecord, KeyStatus};

use crate::app::{created, issue_session, ok, session_claims, AppState, Ctx};
use crate::crypto::{self, hash_password, new_id, new_token, verify_password};
use crate::error::{ApiError, ApiResult};
use crate::login::{self, Realm};
use crate::model::*;
use crate::outbox;
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

pub fn check_username(name: &str) -> ApiResult<String> {
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
        version: 0,
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

/// Checks email and password with lockout (see [`crate::login`]): after
/// `max_login_failures` attempts the account refuses every attempt (even a correct one)
/// until its window of `lockout_secs` ends.
pub async fn authenticate<S: ItemStore, E>(
    st: &AppState<S, E>,
    email: &str,
    password: &str,
    address: &str,
    now: u64,
) -> ApiResult<Member> {
    let email = normalize_email(email).map_err(|_| login::bad_credentials())?;
    let member: Option<Member> =
        match load::<EmailClaim, _>(&st.store, &email_pk(&email), ONE, now).await? {
            Some(c) => load(&st.store, &member_pk(&c.member_id), PROFILE, now).await?,
            None => None,
        };
    let account = member.map(|m| {
        let hash = m.password_hash.clone();
        (m, hash)
    });
    login::check(st, Realm::Member, &email, address, password, account, now).await
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
    let edge = outbox::send(st, vec![member_push(&member, None, ctx.now)], ctx.now).await?;
    let mut body = start_session(st, &member, ctx.now).await?;
    if let Some(o) = body.as_object_mut() {
        o.insert("edge".into(), edge);
    }
    created(body)
}

/// The member record for the edge (`PUT /internal/v1/members/{id}`), at the member's
/// version. It never carries `status` (the edge keeps the stored one): status changes
/// are the admin's, through [`calls::member_status`], so no member-initiated push can
/// undo a suspension.
pub fn member_push(m: &Member, plan_expires_at: Option<u64>, now: u64) -> SyncCall {
    calls::member(
        &m.id,
        json!({"email": m.email, "username": m.username,
               "plan_expires_at": plan_expires_at, "version": m.version}),
        format!(
            "member-{}-v{}-{now}-{}",
            m.id,
            m.version,
            crate::crypto::new_id().unwrap_or_default()
        ),
    )
}

/// Writes `m` (whose version the caller has bumped from `before`) with a
/// compare-and-swap on the stored version, together with `extra` items and outbox
/// entries for `calls`, in one transaction; then sends the entries. `None` when the
/// member changed under the writer (the caller reloads and retries).
pub async fn commit_member<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    before: u64,
    m: &Member,
    extra: Vec<(crate::store::Item, Put)>,
    calls: Vec<SyncCall>,
    now: u64,
) -> ApiResult<Option<Value>> {
    let entries = outbox::entries(&calls, now)?;
    let mut items = vec![(m.item()?, Put::IfVersion(before))];
    items.extend(extra);
    items.extend(outbox::items(&entries)?);
    match st.store.put_all(items).await {
        Ok(()) => Ok(Some(outbox::deliver(st, entries, now).await)),
        Err(crate::store::StoreError::Conflict) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How often a versioned write is retried after losing a race.
pub const CAS_TRIES: usize = 5;

pub fn busy() -> ApiError {
    ApiError::conflict("the account is changing; retry")
}

/// Loads the member for a versioned change: the member and its version before it.
pub async fn load_member<S: ItemStore>(
    store: &S,
    id: &str,
    now: u64,
) -> ApiResult<Option<(Member, u64)>> {
    Ok(load::<Member, _>(store, &member_pk(id), PROFILE, now)
        .await?
        .map(|m| {
            let v = m.version;
            (m, v)
        }))
}

pub async fn login_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let b: LoginBody = ctx.json()?;
    let address = login::client_address(&st.policy, ctx);
    let member = authenticate(st, &b.email, &b.password, &address, ctx.now).await?;
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
    let me = current_member(st, ctx).await?;
    let b: ProfileBody = ctx.json()?;
    let username = check_username(&b.username)?;
    // Versioned: only the username changes, on the member as stored now, so a
    // concurrent suspension is never written back as active.
    let mut done = None;
    for _ in 0..CAS_TRIES {
        let (mut m, before) = load_member(&st.store, &me.id, ctx.now)
            .await?
            .ok_or_else(|| ApiError::unauthorized("member no longer exists"))?;
        if m.status == MemberStatus::Suspended {
            return Err(ApiError::forbidden("this account is suspended"));
        }
        m.username = username.clone();
        m.version = before.saturating_add(1);
        let sub: Option<Subscription> =
            load(&st.store, &member_pk(&m.id), SUBSCRIPTION, ctx.now).await?;
        let call = member_push(&m, sub.and_then(|s| s.expires_at), ctx.now);
        if let Some(edge) = commit_member(st, before, &m, vec![], vec![call], ctx.now).await? {
            done = Some((m, edge));
            break;
        }
    }
    let (m, edge) = done.ok_or_else(busy)?;
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
    let me = current_member(st, ctx).await?;
    let b: PasswordBody = ctx.json()?;
    if !verify_password(&b.current_password, &me.password_hash) {
        return Err(ApiError {
            param: Some("current_password".into()),
            ..ApiError::unauthorized("current password is wrong")
        });
    }
    check_password(&b.new_password, &me.email, "new_password")?;
    let hash = hash_password(&b.new_password)?;
    let mut saved = None;
    for _ in 0..CAS_TRIES {
        let (mut m, before) = load_member(&st.store, &me.id, ctx.now)
            .await?
            .ok_or_else(|| ApiError::unauthorized("member no longer exists"))?;
        if m.status == MemberStatus::Suspended {
            return Err(ApiError::forbidden("this account is suspended"));
        }
        m.password_hash = hash.clone();
        m.version = before.saturating_add(1);
        if commit_member(st, before, &m, vec![], vec![], ctx.now)
            .await?
            .is_some()
        {
            saved = Some(m);
            break;
        }
    }
    let m = saved.ok_or_else(busy)?;
    for it in st.store.query(index1(&member_pk(&m.id))).await? {
        if it.sk == ONE && it.pk.starts_with("SESSION#") {
            st.store.delete(&it.pk, ONE).await?;
        }
    }
    ok(start_session(st, &m, ctx.now).await?)
}

// ---- keys ----------------------------------------------------------------------------

/// The edge record for a key: plan from the member's subscription (if active at
/// `now`), version = the member's version (the edge ignores lower versions).
pub fn key_record_for(
    key: &MemberKey,
    sub: Option<&Subscription>,
    version: u64,
    now: u64,
) -> KeyRecord {
    let plan_id = sub
        .filter(|s| s.active(now))
        .map(|s| s.plan_id.clone())
        .unwrap_or_else(|| "none".into());
    KeyRecord {
        public_id: key.public_id.clone(),
        secret_hash: key.secret_hash.clone(),
        member_id: key.member_id.clone(),
        plan_id,
        status: if key.settings.disabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        },
        role: key.settings.role,
        expires_at: key.settings.expires_at,
        allowed_models: key.settings.allowed_models.clone(),
        rpm: key.settings.rpm,
        tpm: key.settings.tpm,
        capture: false,
        app_id: None,
        byok: false,
        name: Some(key.name.clone()),
        version,
    }
}

/// [`key_record_for`] with the subscription and version as stored now.
pub async fn key_record<S: ItemStore>(
    store: &S,
    key: &MemberKey,
    now: u64,
) -> ApiResult<KeyRecord> {
    let sub: Option<Subscription> =
        load(store, &member_pk(&key.member_id), SUBSCRIPTION, now).await?;
    let version = load_member(store, &key.member_id, now)
        .await?
        .map_or(0, |(_, v)| v);
    Ok(key_record_for(key, sub.as_ref(), version, now))
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
    create_key_with(st, member_id, name, app_id, KeySettings::default(), now).await
}

fn check_key_name(name: &str) -> ApiResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1-64 printable characters",
        ));
    }
    Ok(name)
}

/// The checks every key setting passes, whoever sets it: a future expiry, 1-100
/// non-empty model names (patterns as in plans: `*`, `provider/*`), positive limits.
pub fn check_key_settings(s: &KeySettings, now: u64) -> ApiResult<()> {
    if s.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future (unix seconds); revoke or disable the key to stop it now",
        ));
    }
    if let Some(models) = &s.allowed_models {
        if models.is_empty()
            || models.len() > 100
            || models
                .iter()
                .any(|m| m.trim().is_empty() || m.len() > 128 || m.chars().any(char::is_whitespace))
        {
            return Err(ApiError::invalid(
                "allowed_models",
                "allowed_models needs 1-100 model names without spaces (or null for the plan's)",
            ));
        }
    }
    if s.rpm == Some(0) || s.tpm == Some(0) {
        return Err(ApiError::invalid(
            "rpm",
            "rpm and tpm must be positive when set",
        ));
    }
    Ok(())
}

/// [`create_key`] with settings (admins: operator keys, limits; members: expiry,
/// models).
pub async fn create_key_with<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    name: &str,
    app_id: Option<&str>,
    settings: KeySettings,
    now: u64,
) -> ApiResult<(MemberKey, String, Value)> {
    let name = check_key_name(name)?;
    check_key_settings(&settings, now)?;
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
        revoked_at: None,
        settings,
    };
    // A versioned change of the member: the key's record is built from the subscription
    // and version of this write, so a concurrent plan change (which lists the keys at
    // its own version) cannot leave the new key with an older plan at the edge.
    for _ in 0..CAS_TRIES {
        let (mut m, before) = load_member(&st.store, member_id, now)
            .await?
            .ok_or_else(|| ApiError::not_found("member"))?;
        m.version = before.saturating_add(1);
        let sub: Option<Subscription> =
            load(&st.store, &member_pk(member_id), SUBSCRIPTION, now).await?;
        let record = key_record_for(&entity, sub.as_ref(), m.version, now);
        let call = calls::put_key(
            &record,
            format!("key-put-{}-v{}-{now}", entity.public_id, record.version),
        );
        let extra = vec![(entity.item()?, Put::IfAbsent)];
        if let Some(edge) = commit_member(st, before, &m, extra, vec![call], now).await? {
            return Ok((entity, full, edge));
        }
    }
    Err(busy())
}

pub async fn revoke_key<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    public_id: &str,
    now: u64,
) -> ApiResult<Value> {
    let key: MemberKey = load(&st.store, &member_pk(member_id), &key_sk(public_id), now)
        .await?
        .filter(|k: &MemberKey| k.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found("key"))?;
    // A tombstone, not a deletion: the key is never listed or pushed again, and the
    // revocation (a tombstone at the edge too) is in the outbox until acknowledged.
    let tomb = MemberKey {
        revoked_at: Some(now),
        sealed_key: None,
        ..key
    };
    let entries = outbox::entries(
        &[calls::delete_key(public_id, format!("key-del-{public_id}"))],
        now,
    )?;
    let mut items = vec![(tomb.item()?, Put::Upsert)];
    items.extend(outbox::items(&entries)?);
    st.store.put_all(items).await?;
    Ok(outbox::deliver(st, entries, now).await)
}

/// What a key edit may change; `None` leaves a field as it is, and for the nullable
/// settings `Some(None)` (JSON `null`) clears it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "some")]
    pub expires_at: Option<Option<u64>>,
    #[serde(default, deserialize_with = "some")]
    pub allowed_models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "some")]
    pub rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "some")]
    pub tpm: Option<Option<u64>>,
    /// `active` or `disabled`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A present field (even `null`) is `Some`: tells "clear it" from "leave it".
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Who edits a key: the admin may change everything; the member only the name, the
/// expiry and the models (within the plan's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEditor {
    Admin,
    Member,
}

/// Applies `patch` to a live key of `member_id` and pushes its new record, as one
/// versioned change of the member (so a concurrent plan change or edit of the same key
/// cannot push an older record over it: the loser reloads the key and retries).
pub async fn update_key<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    public_id: &str,
    patch: &KeyPatch,
    editor: KeyEditor,
    now: u64,
) -> ApiResult<(MemberKey, Value)> {
    if editor == KeyEditor::Member
        && (patch.rpm.is_some() || patch.tpm.is_some() || patch.status.is_some())
    {
        return Err(ApiError::forbidden(
            "rpm, tpm and status of a key are set by an administrator",
        ));
    }
    for _ in 0..CAS_TRIES {
        let mut key: MemberKey = load(&st.store, &member_pk(member_id), &key_sk(public_id), now)
            .await?
            .filter(|k: &MemberKey| k.revoked_at.is_none())
            .ok_or_else(|| ApiError::not_found("key"))?;
        if let Some(n) = &patch.name {
            key.name = check_key_name(n)?.to_owned();
        }
        let s = &mut key.settings;
        if let Some(v) = patch.expires_at {
            s.expires_at = v;
        }
        if let Some(v) = &patch.allowed_models {
            s.allowed_models = v.clone();
        }
        if let Some(v) = patch.rpm {
            s.rpm = v;
        }
        if let Some(v) = patch.tpm {
            s.tpm = v;
        }
        match patch.status.as_deref() {
            None => {}
            Some("active") => s.disabled = false,
            Some("disabled") => s.disabled = true,
            Some(_) => {
                return Err(ApiError::invalid(
                    "status",
                    "status must be active or disabled",
                ))
            }
        }
        // Only what changed is checked against the clock: an unchanged past expiry
        // does not block renaming an expired key.
        let check = KeySettings {
            expires_at: patch.expires_at.flatten(),
            ..key.settings.clone()
        };
        check_key_settings(&check, now)?;
        let (mut m, before) = load_member(&st.store, member_id, now)
            .await?
            .ok_or_else(|| ApiError::not_found("member"))?;
        let sub: Option<Subscription> =
            load(&st.store, &member_pk(member_id), SUBSCRIPTION, now).await?;
        if editor == KeyEditor::Member {
            if let Some(Some(models)) = &patch.allowed_models {
                let plan: Option<Plan> = match sub.as_ref().filter(|s| s.active(now)) {
                    Some(s) => load(&st.store, &plan_pk(&s.plan_id), ONE, now).await?,
                    None => None,
                };
                let allowed = plan.map(|p| p.allowed_models).unwrap_or_default();
                if let Some(bad) = models
                    .iter()
                    .find(|m| !tollbooth_core::catalogue::model_allowed(&allowed, m))
                {
                    return Err(ApiError::invalid(
                        "allowed_models",
                        format!("{bad:?} is not among the models of your plan"),
                    ));
                }
            }
        }
        m.version = before.saturating_add(1);
        let record = key_record_for(&key, sub.as_ref(), m.version, now);
        let call = calls::put_key(
            &record,
            format!("key-put-{}-v{}-{now}", key.public_id, record.version),
        );
        let extra = vec![(key.item()?, Put::Upsert)];
        if let Some(edge) = commit_member(st, before, &m, extra, vec![call], now).await? {
            return Ok((key, edge));
        }
    }
    Err(busy())
}

pub async fn member_keys<S: ItemStore>(
    store: &S,
    member_id: &str,
    now: u64,
) -> ApiResult<Vec<MemberKey>> {
    let all: Vec<MemberKey> =
        load_all(store, Query::table(member_pk(member_id), "KEY#"), now).await?;
    Ok(all.into_iter().filter(|k| k.revoked_at.is_none()).collect())
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

/// `PATCH /api/me/keys/{id}`: the member renames a key, sets its expiry or narrows
/// its models within the plan.
pub async fn update_key_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let patch: KeyPatch = ctx.json()?;
    let (k, edge) = update_key(st, &m.id, id, &patch, KeyEditor::Member, ctx.now).await?;
    ok(json!({"key": k.public(), "edge": edge}))
}

pub async fn revoke_key_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let edge = revoke_key(st, &m.id, id, ctx.now).await?;
    ok(json!({"ok": true, "edge": edge}))
}

// ---- subscriptions -------------------------------------------------------------------

/// Starts, renews or changes (upgrade/downgrade) a member's subscription, then pushes
/// the allowance for the current period and the member's keys with the plan.
///
/// Periods are the member's, not the plan's: switching to a free plan inside the
/// member's current period keeps that period (same `period_start`, so the edge updates
/// the same allowance row and keeps what was used), so toggling between plans never
/// opens a fresh allowance. Only a paid plan (paid for) starts a new period now;
/// renewing the same paid plan keeps its anchor.
pub async fn subscribe<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    plan: &Plan,
    now: u64,
) -> ApiResult<(Subscription, Value)> {
    for _ in 0..CAS_TRIES {
        let (mut m, before) = load_member(&st.store, member_id, now)
            .await?
            .ok_or_else(|| ApiError::not_found("member"))?;
        let prev: Option<Subscription> =
            load(&st.store, &member_pk(member_id), SUBSCRIPTION, now).await?;
        let paid = plan.price_micros > 0 && plan.period != PlanPeriod::None;
        let (anchor, period_start, period_end) = if paid {
            let anchor = match &prev {
                Some(p) if p.plan_id == plan.id && p.status == "active" => p.started_at,
                _ => now,
            };
            let (s, e) = plan.period.bounds(anchor, now);
            (anchor, s, e)
        } else {
            match prev.as_ref().and_then(|p| p.current_period(now)) {
                Some((s, e)) => (s, s, e),
                None => {
                    let (s, e) = plan.period.bounds(now, now);
                    (now, s, e)
                }
            }
        };
        let expires_at = paid.then_some(period_end);
        m.version = before.saturating_add(1);
        // Unique per change (the edge applies a grant id once); the period start is the
        // allowance row it updates.
        let grant_id = format!("{member_id}-{period_start}-v{}", m.version);
        let sub = Subscription {
            member_id: member_id.to_owned(),
            plan_id: plan.id.clone(),
            started_at: anchor,
            period_start,
            period_end,
            expires_at,
            status: "active".into(),
            grant_id: grant_id.clone(),
            period: Some(plan.period),
            price_micros: paid.then_some(plan.price_micros),
        };
        let extra = vec![
            (sub.item()?, Put::Upsert),
            (
                to_item(
                    member_pk(member_id),
                    format!("SUBHIST#{now:010}#{}", plan.id),
                    &sub,
                )?,
                Put::Upsert,
            ),
        ];
        let mut pushes = vec![calls::allowance(
            member_id,
            json!({"plan_id": plan.id, "unit": plan.allowance_unit, "amount": plan.allowance_amount,
                   "period_start": period_start, "period_end": period_end, "grant_id": grant_id,
                   // Self-renewing (free) plans renew at the edge; paid ones end with the period.
                   "period": if expires_at.is_none() { plan.period } else { PlanPeriod::None }}),
            &grant_id,
        )];
        // An upgrade to another paid plan credits the unused part of the old one.
        if let Some((credit_id, amount)) = prev
            .as_ref()
            .filter(|p| paid && p.plan_id != plan.id)
            .and_then(|p| proration_credit(p, now))
        {
            pushes.push(calls::credit(
                member_id,
                &credit_id,
                amount,
                &format!(
                    "unused part of plan {} (upgrade to {})",
                    prev.as_ref().map_or("", |p| p.plan_id.as_str()),
                    plan.id
                ),
            ));
        }
        pushes.push(member_push(&m, expires_at, now));
        pushes.extend(key_calls(st, &m, Some(&sub), now).await?);
        if let Some(edge) = commit_member(st, before, &m, extra, pushes, now).await? {
            return Ok((sub, edge));
        }
    }
    Err(busy())
}

/// The proration policy (docs/billing.md, "Upgrades"): a member who moves from an
/// active paid period to another paid plan gets the unused share of what the old period
/// cost back in the wallet, `floor(price × remaining / length)` in micro-units (integer
/// arithmetic, rounded down), credited once: the credit id names the old subscription's
/// grant, and the edge applies a credit id once. `None` when nothing is owed (free or
/// pre-proration subscriptions, an ended period).
pub fn proration_credit(prev: &Subscription, now: u64) -> Option<(String, i64)> {
    let price = prev.price_micros.filter(|p| *p > 0)?;
    if prev.status != "active" || now >= prev.period_end || prev.period_end <= prev.period_start {
        return None;
    }
    let length = u128::from(prev.period_end - prev.period_start);
    let remaining = u128::from(prev.period_end - now.max(prev.period_start));
    let amount = u128::from(price) * remaining / length;
    let amount = i64::try_from(amount).ok().filter(|a| *a > 0)?;
    Some((format!("prorate-{}", prev.grant_id), amount))
}

/// The key records of every live key of `m` under `sub`, at `m.version`.
pub async fn key_calls<S: ItemStore, E>(
    st: &AppState<S, E>,
    m: &Member,
    sub: Option<&Subscription>,
    now: u64,
) -> ApiResult<Vec<SyncCall>> {
    let mut out = Vec::new();
    for k in member_keys(&st.store, &m.id, now).await? {
        let rec = key_record_for(&k, sub, m.version, now);
        out.push(calls::put_key(
            &rec,
            format!("key-put-{}-v{}-{}", k.public_id, rec.version, rec.plan_id),
        ));
    }
    Ok(out)
}

/// Re-pushes the member's keys with its subscription as stored (after a plan or
/// status change), as a new member version; returns the outbox outcome.
pub async fn repush_keys<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    member_id: &str,
    extra_for: impl Fn(&Option<Subscription>) -> ApiResult<Vec<(crate::store::Item, Put)>>,
    sub_override: Option<Subscription>,
    now: u64,
) -> ApiResult<Value> {
    for _ in 0..CAS_TRIES {
        let (mut m, before) = load_member(&st.store, member_id, now)
            .await?
            .ok_or_else(|| ApiError::not_found("member"))?;
        let sub: Option<Subscription> = match &sub_override {
            Some(s) => Some(s.clone()),
            None => load(&st.store, &member_pk(member_id), SUBSCRIPTION, now).await?,
        };
        m.version = before.saturating_add(1);
        let mut pushes = vec![member_push(
            &m,
            sub.as_ref()
                .filter(|s| s.active(now))
                .and_then(|s| s.expires_at),
            now,
        )];
        pushes.extend(key_calls(st, &m, sub.as_ref(), now).await?);
        let extra = extra_for(&sub)?;
        if let Some(edge) = commit_member(st, before, &m, extra, pushes, now).await? {
            return Ok(edge);
        }
    }
    Err(busy())
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
