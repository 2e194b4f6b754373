//! Entities of the control plane and where each lives in the single table
//! (docs/dynamodb.md is the reference; keep the two in step).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollbooth_core::billing::{AllowanceUnit, PlanPeriod};
use tollbooth_core::catalogue::{AuthStyle, Model, ProviderKind, StreamMode};

/// The upstream attempt timeout of a provider that sets none (the edge's default).
pub const DEFAULT_PROVIDER_TIMEOUT_MS: u64 = 60_000;
use tollbooth_core::keyrecord::KeyRole;

use crate::error::{ApiError, ApiResult};
use crate::store::{Index, Item, ItemStore, Put, Query};

// ---- keys ------------------------------------------------------------------------

pub fn member_pk(id: &str) -> String {
    format!("MEMBER#{id}")
}
pub const PROFILE: &str = "PROFILE";
pub fn email_pk(email: &str) -> String {
    format!("EMAIL#{email}")
}
pub fn session_pk(sid: &str) -> String {
    format!("SESSION#{sid}")
}
pub fn lock_pk(email: &str) -> String {
    format!("LOGIN#{email}")
}
pub fn key_sk(public_id: &str) -> String {
    format!("KEY#{public_id}")
}
pub fn app_pk(id: &str) -> String {
    format!("APP#{id}")
}
pub fn app_token_pk(token_hash: &str) -> String {
    format!("APPTOKEN#{token_hash}")
}
pub fn plan_pk(id: &str) -> String {
    format!("PLAN#{id}")
}
pub fn provider_pk(id: &str) -> String {
    format!("PROVIDER#{id}")
}
pub fn model_pk(name: &str) -> String {
    format!("MODEL#{name}")
}
pub fn admin_pk(email: &str) -> String {
    format!("ADMIN#{email}")
}
/// The one sort key of single-item partitions.
pub const ONE: &str = "#";

// ---- typed access ----------------------------------------------------------------

pub fn to_item<T: Serialize>(pk: String, sk: impl Into<String>, v: &T) -> ApiResult<Item> {
    let data = serde_json::to_string(v).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Item::new(pk, sk, data))
}

pub fn from_item<T: DeserializeOwned>(item: &Item) -> ApiResult<T> {
    serde_json::from_str(&item.data)
        .map_err(|e| ApiError::internal(format!("stored item {} is corrupt: {e}", item.pk)))
}

/// Reads one entity; expired items count as absent.
pub async fn load<T: DeserializeOwned, S: ItemStore>(
    store: &S,
    pk: &str,
    sk: &str,
    now: u64,
) -> ApiResult<Option<T>> {
    match store.get(pk, sk).await? {
        Some(it) if !it.expired(now) => Ok(Some(from_item(&it)?)),
        _ => Ok(None),
    }
}

pub async fn load_all<T: DeserializeOwned, S: ItemStore>(
    store: &S,
    q: Query,
    now: u64,
) -> ApiResult<Vec<T>> {
    store
        .query(q)
        .await?
        .iter()
        .filter(|it| !it.expired(now))
        .map(from_item)
        .collect()
}

// ---- members ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    Suspended,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Suspended => "suspended",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub status: MemberStatus,
    pub created_at: u64,
    /// Bumped by every write (compare-and-swap, [`crate::store::Put::IfVersion`]) and
    /// sent with every edge push of the member and its keys, so the edge ignores stale
    /// pushes and a concurrent write cannot undo another (a suspension).
    #[serde(default)]
    pub version: u64,
}

impl Member {
    /// What may be shown: never the password hash.
    pub fn public(&self) -> Value {
        json!({"id": self.id, "email": self.email, "username": self.username,
               "status": self.status, "created_at": self.created_at})
    }
    pub fn item(&self) -> ApiResult<Item> {
        Ok(to_item(member_pk(&self.id), PROFILE, self)?
            .gsi1("MEMBERS", self.email.clone())
            .version(self.version))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailClaim {
    pub member_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub member_id: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LoginFailures {
    pub count: u32,
    pub locked_until: u64,
}

// ---- keys ------------------------------------------------------------------------

#[derive(Clone, Serialize, Deserialize)]
pub struct MemberKey {
    pub public_id: String,
    pub member_id: String,
    pub name: String,
    pub secret_hash: String,
    pub created_at: u64,
    /// Set on keys created for an app by the login flow: the key sealed under the master
    /// key, so `/v1/verify-token` can hand the same key to the app again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_key: Option<String>,
    /// Set when revoked: the key stays as a tombstone (never listed, never pushed) and
    /// its revocation goes to the edge through the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// The key's own settings, pushed in its edge record (docs/admin-api.md, keys).
    #[serde(default, flatten)]
    pub settings: KeySettings,
}

/// What an admin (all of it) or the key's member (name, expiry, models) may change on
/// a key. The edge enforces each field (`core::keyrecord`, the rate limiter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeySettings {
    /// Unix seconds after which the edge refuses the key; `None` = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Narrows the plan's models; `None` = whatever the plan allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// A disabled key is refused at the edge until enabled again (unlike a revocation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// `operator`: may also use the pass-through proxy. Set at creation by an admin.
    #[serde(default, skip_serializing_if = "is_member_role")]
    pub role: KeyRole,
}

fn is_member_role(r: &KeyRole) -> bool {
    *r == KeyRole::Member
}

impl MemberKey {
    pub fn public(&self) -> Value {
        let s = &self.settings;
        json!({"public_id": self.public_id, "name": self.name, "created_at": self.created_at,
               "app_id": self.app_id, "prefix": format!("sk-{}-", self.public_id),
               "status": if s.disabled { "disabled" } else { "active" },
               "role": s.role, "expires_at": s.expires_at,
               "allowed_models": s.allowed_models, "rpm": s.rpm, "tpm": s.tpm})
    }
    pub fn item(&self) -> ApiResult<Item> {
        Ok(
            to_item(member_pk(&self.member_id), key_sk(&self.public_id), self)?
                .gsi1(format!("KEY#{}", self.public_id), ONE),
        )
    }
}

// ---- apps ------------------------------------------------------------------------

#[derive(Clone, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub sealed_secret: String,
    pub callback_urls: Vec<String>,
    pub created_at: u64,
    /// A public client (mobile, desktop, single-page app) cannot keep its secret: its
    /// exchanges are authenticated by PKCE alone. Server apps also sign them.
    #[serde(default)]
    pub public: bool,
}

impl App {
    pub fn public(&self) -> Value {
        json!({"id": self.id, "name": self.name, "callback_urls": self.callback_urls,
               "created_at": self.created_at, "public": self.public})
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppToken {
    pub member_id: String,
    pub app_id: String,
    pub expires_at: u64,
    /// The callback the token was issued for: the exchange must name it.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// PKCE S256 challenge: the exchange must send its verifier.
    #[serde(default)]
    pub code_challenge: Option<String>,
}

// ---- plans and subscriptions -------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub id: String,
    pub name: String,
    /// Price per period in micro-units of `currency`; 0 = free.
    #[serde(default)]
    pub price_micros: u64,
    #[serde(default = "usd")]
    pub currency: String,
    pub period: PlanPeriod,
    pub allowance_amount: u64,
    pub allowance_unit: AllowanceUnit,
    #[serde(default = "all_models")]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub overage: bool,
    #[serde(default = "yes")]
    pub visible: bool,
    #[serde(default)]
    pub sort_order: u32,
    #[serde(default)]
    pub capture: bool,
    /// Support priority (higher first, 0-100): shown with the plan and in the admin's
    /// member view; the edge does not route by it.
    #[serde(default)]
    pub priority: u32,
}

fn usd() -> String {
    "USD".into()
}
fn all_models() -> Vec<String> {
    vec!["*".into()]
}
fn yes() -> bool {
    true
}

impl Plan {
    pub fn item(&self) -> ApiResult<Item> {
        Ok(to_item(plan_pk(&self.id), ONE, self)?
            .gsi1("PLANS", format!("{:010}#{}", self.sort_order, self.id)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub member_id: String,
    pub plan_id: String,
    pub started_at: u64,
    pub period_start: u64,
    pub period_end: u64,
    /// `None` = renews by itself (free plans).
    pub expires_at: Option<u64>,
    pub status: String,
    pub grant_id: String,
    /// The plan's period (free plans renew by it at the edge), to roll the current
    /// period forward when the member switches plans.
    #[serde(default)]
    pub period: Option<PlanPeriod>,
    /// What the current paid period cost (micro-units), for the upgrade proration
    /// (docs/billing.md); absent for free plans and for subscriptions made before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_micros: Option<u64>,
}

impl Subscription {
    /// The subscription item; a subscription that expires is also indexed (`gsi2`
    /// `SUBEXP`, by expiry) for the downgrade job.
    pub fn item(&self) -> ApiResult<Item> {
        let it = to_item(member_pk(&self.member_id), SUBSCRIPTION, self)?;
        Ok(match self.expires_at {
            Some(t) if self.status == "active" => {
                it.gsi2(SUB_EXPIRY_PK, format!("{t:010}#{}", self.member_id))
            }
            _ => it,
        })
    }

    /// Active at `now`: not expired, not ended.
    pub fn active(&self, now: u64) -> bool {
        self.status == "active" && self.expires_at.is_none_or(|t| t > now)
    }

    /// The period of this subscription that contains `now`, if any: a renewing plan
    /// rolls forward from its first period; a fixed one has only its own.
    pub fn current_period(&self, now: u64) -> Option<(u64, u64)> {
        if !self.active(now) {
            return None;
        }
        match (self.expires_at, self.period) {
            (None, Some(p)) if p != PlanPeriod::None => Some(p.bounds(self.started_at, now)),
            _ => (self.period_start <= now && now < self.period_end)
                .then_some((self.period_start, self.period_end)),
        }
    }
}

pub const SUBSCRIPTION: &str = "SUB";
/// The `gsi2` partition of expiring subscriptions.
pub const SUB_EXPIRY_PK: &str = "SUBEXP";

// ---- providers and models ------------------------------------------------------------

#[derive(Clone, Serialize, Deserialize)]
pub struct StoredCredential {
    pub id: String,
    pub sealed: String,
    pub masked: String,
    pub weight: u32,
    /// The last check against the provider (validation on save, model pulls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<CredentialHealth>,
}

/// What the provider answered the last time the control plane used a credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialHealth {
    pub ok: bool,
    pub checked_at: u64,
    /// The HTTP status, when the provider answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Never the credential or the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A secret value at rest: sealed under the master key, with its masked form.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredSecret {
    pub sealed: String,
    pub masked: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct StoredProvider {
    pub id: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub credentials: Vec<StoredCredential>,
    pub prefix_routing: bool,
    pub enabled: bool,
    /// Plain header values of providers saved before headers were sealed; never
    /// written now (a save moves them into `sealed_headers`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Custom upstream headers (often auth: `cf-aig-authorization`, `Helicone-Auth`),
    /// sealed like credentials and only ever shown masked.
    #[serde(default)]
    pub sealed_headers: std::collections::BTreeMap<String, StoredSecret>,
    /// Display name and description (the console's; never sent to members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Query parameters on every upstream URL (Azure `api-version`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub query: std::collections::BTreeMap<String, String>,
    /// Overrides the kind's auth style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStyle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The prefix of its pulled model names and prefix routes; the id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl StoredProvider {
    /// Header names with masked values, for every response.
    pub fn masked_headers(&self) -> std::collections::BTreeMap<String, String> {
        let mut out: std::collections::BTreeMap<String, String> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), crate::crypto::mask(v)))
            .collect();
        for (k, v) in &self.sealed_headers {
            out.insert(k.clone(), v.masked.clone());
        }
        out
    }

    /// The header values in clear, for the catalogue pushed to the edge only.
    pub fn open_headers(
        &self,
        master_key: &[u8; 32],
    ) -> ApiResult<std::collections::BTreeMap<String, String>> {
        let mut out = self.headers.clone();
        for (k, v) in &self.sealed_headers {
            out.insert(k.clone(), crate::crypto::open(master_key, &v.sealed)?);
        }
        Ok(out)
    }

    /// The prefix of its model names: `prefix`, else the id.
    pub fn model_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.id)
    }

    pub fn public(&self) -> Value {
        json!({"id": self.id, "kind": self.kind, "base_url": self.base_url,
               "name": self.name, "description": self.description,
               "prefix": self.model_prefix(), "query": self.query,
               "auth": self.auth.unwrap_or_else(|| self.kind.default_auth()),
               "timeout_ms": self.timeout_ms.unwrap_or(DEFAULT_PROVIDER_TIMEOUT_MS),
               "prefix_routing": self.prefix_routing, "enabled": self.enabled,
               "headers": self.masked_headers(),
               "credentials": self.credentials.iter().map(|c| json!({
                   "id": c.id, "secret": c.masked, "weight": c.weight,
                   "health": c.health})).collect::<Vec<_>>()})
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct ModelEntry {
    pub model: Model,
    /// Pulled from this provider's `/models`.
    #[serde(default)]
    pub pulled_from: Option<String>,
    /// No longer listed by the provider: never published.
    #[serde(default)]
    pub removed: bool,
}

impl ModelEntry {
    pub fn public(&self) -> Value {
        let mut v = serde_json::to_value(&self.model).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("pulled_from".into(), json!(self.pulled_from));
            o.insert("removed".into(), json!(self.removed));
        }
        v
    }
    pub fn item(&self) -> ApiResult<Item> {
        Ok(to_item(model_pk(&self.model.name), ONE, self)?.gsi1("MODELS", self.model.name.clone()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(default)]
    pub cors_origins: Vec<String>,
    #[serde(default)]
    pub capture_default: bool,
    #[serde(default)]
    pub force_stream_default: StreamMode,
    /// The timezone of statistics (the summary's per-day buckets): `UTC` or a fixed
    /// offset like `+08:00`. Absent = UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl AdminSettings {
    /// Seconds east of UTC of [`AdminSettings::timezone`].
    pub fn utc_offset_secs(&self) -> i64 {
        self.timezone
            .as_deref()
            .and_then(crate::summary::parse_utc_offset)
            .unwrap_or(0)
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            cors_origins: Vec::new(),
            capture_default: false,
            force_stream_default: StreamMode::Auto,
            timezone: None,
        }
    }
}

pub const SETTINGS_PK: &str = "SETTINGS";

// ---- admins and audit ------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything an admin may, and managing admin accounts (invite, role, remove).
    Owner,
    Admin,
    Viewer,
}

impl Role {
    /// May change the catalogue, members, keys, plans and settings.
    pub fn writes(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Admin {
    pub email: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: u64,
    /// Set on the bootstrap account and on invited ones (their password was chosen or
    /// seen by someone else): until the owner of the account changes it, every admin
    /// call but `me`, `password` and `logout` is refused.
    #[serde(default)]
    pub must_change_password: bool,
}

/// The error of a call made before the first password change.
pub fn password_change_required() -> ApiError {
    ApiError::new(
        403,
        "permission_error",
        "password_change_required",
        "change this account's initial password first: POST /api/admin/password",
    )
}

impl Admin {
    /// May this account make the call? `mutating` calls need a writing role; nothing
    /// but the password change is allowed while the initial password is unchanged.
    pub fn authorize(&self, mutating: bool) -> ApiResult<()> {
        if self.must_change_password {
            return Err(password_change_required());
        }
        if mutating && !self.role.writes() {
            return Err(ApiError::forbidden(
                "the viewer role cannot change anything",
            ));
        }
        Ok(())
    }

    pub fn item(&self) -> ApiResult<Item> {
        Ok(to_item(admin_pk(&self.email), ONE, self)?.gsi1("ADMINS", self.email.clone()))
    }
}

pub async fn put<S: ItemStore>(store: &S, item: Item) -> ApiResult<()> {
    Ok(store.put(item, Put::Upsert).await?)
}

pub fn index1(pk: &str) -> Query {
    Query::index(Index::Gsi1, pk, "")
}
