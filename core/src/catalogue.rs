//! The catalogue: what the edge serves and how. Published by the control plane as a
//! versioned JSON snapshot in KV `CONFIG` (`catalogue:current` holds the version,
//! `catalogue:v:<version>` the snapshot) and validated once into [`Catalogue`].
//!
//! Virtual model names (what members ask for) map to one or more deployments (a
//! provider plus the upstream's model name, with a weight). A provider with
//! `prefix_routing` (off by default) also serves `<provider id>/<upstream model>`
//! directly, priced as the enabled catalogue model deploying that upstream model, else
//! at the provider's `default_price`, else not at all.
//!
//! No free path (issue 10, invariant 1): a disabled model is unreachable by every path
//! (its name, its aliases, and a prefix route to its deployment), and
//! [`Resolved::unpriced`] tells admission to refuse a zero price unless the operator
//! marked the model `free`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::billing::{AllowanceUnit, PlanPeriod, Price};

/// Wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible API (DeepSeek, SiliconFlow, Moonshot,
    /// DashScope, Ollama, vLLM, ...). `base_url` ends with the version, e.g. `/v1`.
    Openai,
    /// Azure OpenAI: OpenAI protocol, `api-key` header, deployment in the path.
    Azure,
    /// Anthropic Messages. `base_url` like `https://api.anthropic.com/v1`.
    Anthropic,
    /// Google Gemini. `base_url` like `https://generativelanguage.googleapis.com/v1beta`.
    Gemini,
    /// The OpenAI Responses API (`POST {base_url}/responses`, Bearer), for models served
    /// only through it. `base_url` ends with the version, e.g. `/v1`.
    Responses,
}

/// How a credential is presented upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStyle {
    /// `Authorization: Bearer <secret>`
    Bearer,
    /// `x-api-key: <secret>` (Anthropic)
    XApiKey,
    /// `x-goog-api-key: <secret>` (Gemini; never `?key=` in the URL)
    Google,
    /// `api-key: <secret>` (Azure)
    ApiKey,
}

impl ProviderKind {
    pub fn default_auth(self) -> AuthStyle {
        match self {
            Self::Openai | Self::Responses => AuthStyle::Bearer,
            Self::Azure => AuthStyle::ApiKey,
            Self::Anthropic => AuthStyle::XApiKey,
            Self::Gemini => AuthStyle::Google,
        }
    }
}

/// One API key of a provider. Weighted against the provider's other credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Stable id used for health state and logs (never the secret).
    pub id: String,
    pub secret: String,
    #[serde(default = "one")]
    pub weight: u32,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("weight", &self.weight)
            .finish()
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub id: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub credentials: Vec<Credential>,
    /// Overrides the kind's default auth style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStyle>,
    /// Extra headers sent upstream (e.g. `anthropic-version`, `api-version` for Azure
    /// goes in `query`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters appended to every upstream URL (Azure `api-version`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Serve `<id>/<model>` for models of this provider (off unless set). Such a route is
    /// priced as the enabled catalogue model that deploys `<model>` on this provider, else
    /// at `default_price`; without either it does not resolve.
    #[serde(default)]
    pub prefix_routing: bool,
    /// The prefix of its prefix routes (`<prefix>/<model>`) when it is not the id (the
    /// admin API lets operators rename it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The price of prefix routes to upstream models no catalogue model deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_price: Option<Price>,
    /// Give up on an attempt after this long without response headers.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn yes() -> bool {
    true
}

impl Provider {
    /// What its prefix routes start with: `prefix`, else the id.
    pub fn route_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.id)
    }

    pub fn auth_style(&self) -> AuthStyle {
        self.auth.unwrap_or_else(|| self.kind.default_auth())
    }
}

/// Force-stream modes: convert between streaming and non-streaming upstream calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// Call the upstream the way the client asked.
    #[default]
    Auto,
    /// Always stream from the upstream; assemble a full response for non-stream clients.
    ForceStream,
    /// Never stream from the upstream; emit chunks from the full response for stream clients.
    ForceNonStream,
}

/// What an endpoint a model serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Chat,
    Embedding,
    Rerank,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Provider id.
    pub provider: String,
    /// The upstream's model name.
    pub model: String,
    #[serde(default = "one")]
    pub weight: u32,
}

/// A model members can ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The virtual name members use.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub kind: ModelKind,
    pub deployments: Vec<Deployment>,
    /// `None` = the catalogue's default stream mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_mode: Option<StreamMode>,
    #[serde(default)]
    pub price: Price,
    /// The model's output cap; reservations never exceed it.
    #[serde(default = "default_max_output")]
    pub max_output_tokens: u64,
    /// The model's input context limit in tokens. Documents and files sent by reference
    /// (URL or file id) count at this in the reservation's upper bound; without it they
    /// are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The operator serves this model at price zero on purpose. A zero-priced model
    /// without this flag is refused at admission.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub free: bool,
    /// The operator's description (admin API and console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_max_output() -> u64 {
    16_384
}

/// A plan's edge-side facts (the control plane owns the rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Virtual model names the plan may use; `["*"]` = all.
    pub allowed_models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance_unit: Option<AllowanceUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<PlanPeriod>,
    /// When the allowance is used up, charge the wallet instead of refusing.
    #[serde(default)]
    pub overage: bool,
    /// Capture conversations of members on this plan.
    #[serde(default)]
    pub capture: bool,
}

/// Gateway-wide settings carried in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub stream_mode: StreamMode,
    /// Output tokens reserved when a request names no `max_tokens`.
    #[serde(default = "default_reserve_output")]
    pub default_max_tokens: u64,
    /// Maximum upstream attempts per request (first try included).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Conversation capture: apps and pass-through domains that opt in, redaction,
    /// size cap, retention (`crate::capture::CaptureSettings`).
    #[serde(default)]
    pub capture: crate::capture::CaptureSettings,
    /// Browser origins allowed by CORS, set from the admin API: exact origins, `["*"]`
    /// for any, `[]` for none. `None` leaves the worker's `CORS_ORIGINS` in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,
    /// Speculative admission (docs/edge.md): start the upstream call while the D1
    /// reservation commits, when this isolate expects the member to be admitted. The
    /// kill switch: `false` makes admission strictly precede the upstream call.
    #[serde(default = "default_true")]
    pub speculative_admission: bool,
    /// No speculation for a prompt estimated above this many input tokens (what a refused
    /// speculative request can cost the operator is at most one such prompt).
    #[serde(default = "default_speculative_cap")]
    pub speculative_max_input_tokens: u64,
}

fn default_true() -> bool {
    true
}

fn default_speculative_cap() -> u64 {
    32_000
}

fn default_reserve_output() -> u64 {
    crate::billing::DEFAULT_OUTPUT_TOKENS
}

fn default_attempts() -> u32 {
    3
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stream_mode: StreamMode::Auto,
            default_max_tokens: default_reserve_output(),
            max_attempts: default_attempts(),
            capture: crate::capture::CaptureSettings::default(),
            cors_origins: None,
            speculative_admission: true,
            speculative_max_input_tokens: default_speculative_cap(),
        }
    }
}

/// The raw snapshot as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSnapshot {
    pub version: String,
    #[serde(default)]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub models: Vec<Model>,
    #[serde(default)]
    pub plans: Vec<PlanLimits>,
    #[serde(default)]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("catalogue is not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

/// A deployment resolved against its provider.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub provider: &'a Provider,
    pub upstream_model: &'a str,
    pub weight: u32,
}

/// A resolved request model: the catalogue entry (for a prefix route, the catalogue
/// model deploying that upstream model, if any), its price and its deployments.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    /// The virtual name the request is billed and permitted under (for a prefix route,
    /// the `<provider>/<model>` the caller asked for).
    pub name: &'a str,
    pub model: Option<&'a Model>,
    /// What the request is billed at.
    pub price: Price,
    /// The operator marked the model free.
    pub free: bool,
    pub targets: Vec<Target<'a>>,
}

impl Resolved<'_> {
    /// Priced at zero without the operator's `free` mark: admission refuses it.
    pub fn unpriced(&self) -> bool {
        self.price.is_zero() && !self.free
    }

    /// The model's output cap (none for a prefix route priced by the provider default).
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.model.map(|m| m.max_output_tokens)
    }

    /// The output cap to reserve for when `cap` is sent: raised to the Responses API's
    /// minimum ([`crate::translate::responses_upstream::MIN_MAX_OUTPUT_TOKENS`], which a
    /// Responses upstream is always sent at least) when a deployment is a Responses
    /// upstream, so the reservation is never below what an upstream may produce.
    pub fn reserved_output_cap(&self, cap: u64) -> u64 {
        if self
            .targets
            .iter()
            .any(|t| t.provider.kind == ProviderKind::Responses)
        {
            cap.max(crate::translate::responses_upstream::MIN_MAX_OUTPUT_TOKENS)
        } else {
            cap
        }
    }

    /// The model's input context limit, if the catalogue states one.
    pub fn max_input_tokens(&self) -> Option<u64> {
        self.model.and_then(|m| m.max_input_tokens)
    }

    /// The model's kind (a prefix route priced by the provider default is a chat model).
    pub fn kind(&self) -> ModelKind {
        self.model.map_or(ModelKind::Chat, |m| m.kind)
    }
}

/// A validated catalogue with lookup indexes.
#[derive(Debug, Clone)]
pub struct Catalogue {
    snapshot: CatalogueSnapshot,
    providers: HashMap<String, usize>,
    /// Route prefix → provider index (the id unless a `prefix` is set).
    prefixes: HashMap<String, usize>,
    models: HashMap<String, usize>,
    plans: HashMap<String, usize>,
}

impl Catalogue {
    pub fn from_json(json: &str) -> Result<Self, CatalogueError> {
        let snapshot: CatalogueSnapshot =
            serde_json::from_str(json).map_err(|e| CatalogueError::Json(e.to_string()))?;
        Self::new(snapshot)
    }

    /// Validates the snapshot: unique ids and names, deployments naming known
    /// providers, providers with at least one credential and an http(s) base URL.
    pub fn new(snapshot: CatalogueSnapshot) -> Result<Self, CatalogueError> {
        let invalid = |m: String| Err(CatalogueError::Invalid(m));
        let mut providers = HashMap::new();
        let mut prefixes = HashMap::new();
        for (i, p) in snapshot.providers.iter().enumerate() {
            if providers.insert(p.id.clone(), i).is_some() {
                return invalid(format!("duplicate provider id {:?}", p.id));
            }
            let prefix = p.route_prefix();
            if prefix.is_empty() || prefix.contains('/') {
                return invalid(format!(
                    "provider {:?}: prefix {prefix:?} must be non-empty without '/'",
                    p.id
                ));
            }
            if prefixes.insert(prefix.to_owned(), i).is_some() {
                return invalid(format!("provider prefix {prefix:?} is used twice"));
            }
            if p.id.is_empty() || p.id.contains('/') {
                return invalid(format!(
                    "provider id {:?} must be non-empty without '/'",
                    p.id
                ));
            }
            if !(p.base_url.starts_with("https://") || p.base_url.starts_with("http://")) {
                return invalid(format!("provider {:?}: base_url must be http(s)", p.id));
            }
            if p.credentials.is_empty() {
                return invalid(format!("provider {:?} has no credentials", p.id));
            }
        }
        let mut models = HashMap::new();
        for (i, m) in snapshot.models.iter().enumerate() {
            for name in std::iter::once(&m.name).chain(m.aliases.iter()) {
                if models.insert(name.clone(), i).is_some() {
                    return invalid(format!("model name or alias {name:?} is used twice"));
                }
            }
            if m.deployments.is_empty() {
                return invalid(format!("model {:?} has no deployments", m.name));
            }
            for d in &m.deployments {
                if !providers.contains_key(&d.provider) {
                    return invalid(format!(
                        "model {:?}: deployment names unknown provider {:?}",
                        m.name, d.provider
                    ));
                }
            }
        }
        let mut plans = HashMap::new();
        for (i, p) in snapshot.plans.iter().enumerate() {
            if plans.insert(p.id.clone(), i).is_some() {
                return invalid(format!("duplicate plan id {:?}", p.id));
            }
        }
        Ok(Self {
            snapshot,
            providers,
            prefixes,
            models,
            plans,
        })
    }

    pub fn version(&self) -> &str {
        &self.snapshot.version
    }

    pub fn snapshot(&self) -> &CatalogueSnapshot {
        &self.snapshot
    }

    pub fn settings(&self) -> &Settings {
        &self.snapshot.settings
    }

    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers
            .get(id)
            .and_then(|&i| self.snapshot.providers.get(i))
    }

    /// A model by virtual name or alias.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models
            .get(name)
            .and_then(|&i| self.snapshot.models.get(i))
    }

    pub fn plan(&self, id: &str) -> Option<&PlanLimits> {
        self.plans.get(id).and_then(|&i| self.snapshot.plans.get(i))
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.snapshot.models.iter()
    }

    /// Resolves what a request asked for: a virtual name or alias first, then
    /// `<provider>/<model>` for providers with prefix routing (see the module docs).
    /// Disabled models and providers resolve to nothing, by every path: a name that
    /// belongs to a disabled model never falls through to a prefix route, and a prefix
    /// route to a disabled model's deployment does not resolve.
    pub fn resolve<'a>(&'a self, requested: &'a str) -> Option<Resolved<'a>> {
        if let Some(model) = self.model(requested) {
            if !model.enabled {
                return None;
            }
            let targets: Vec<Target<'a>> = model
                .deployments
                .iter()
                .filter_map(|d| {
                    let provider = self.provider(&d.provider).filter(|p| p.enabled)?;
                    Some(Target {
                        provider,
                        upstream_model: &d.model,
                        weight: d.weight,
                    })
                })
                .collect();
            if targets.is_empty() {
                return None;
            }
            return Some(Resolved {
                name: &model.name,
                model: Some(model),
                price: model.price,
                free: model.free,
                targets,
            });
        }
        let (prefix, upstream_model) = requested.split_once('/')?;
        let provider = self
            .prefixes
            .get(prefix)
            .and_then(|&i| self.snapshot.providers.get(i))
            .filter(|p| p.enabled && p.prefix_routing)?;
        if upstream_model.is_empty() {
            return None;
        }
        let deploying: Vec<&Model> = self
            .snapshot
            .models
            .iter()
            .filter(|m| {
                m.deployments
                    .iter()
                    .any(|d| d.provider == provider.id && d.model == upstream_model)
            })
            .collect();
        let (model, price, free) = match deploying.iter().find(|m| m.enabled) {
            Some(m) => (Some(*m), m.price, m.free),
            // Only disabled models deploy it: the operator switched it off.
            None if !deploying.is_empty() => return None,
            None => (None, provider.default_price?, false),
        };
        Some(Resolved {
            name: requested,
            model,
            price,
            free,
            targets: vec![Target {
                provider,
                upstream_model,
                weight: 1,
            }],
        })
    }
}

/// Whether a list of allowed model names permits `name` (`*` permits all; an entry
/// ending in `/*` permits a provider prefix).
pub fn model_allowed(allowed: &[String], name: &str) -> bool {
    allowed.iter().any(|a| {
        a == "*"
            || a == name
            || a.strip_suffix('*')
                .is_some_and(|p| p.ends_with('/') && name.starts_with(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> serde_json::Value {
        json!({
            "version": "7",
            "providers": [
                {"id": "oa", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                 "credentials": [{"id": "k1", "secret": "sk-upstream-1"}, {"id": "k2", "secret": "sk-upstream-2", "weight": 3}],
                 "prefix_routing": true},
                {"id": "an", "kind": "anthropic", "base_url": "https://api.anthropic.com/v1",
                 "credentials": [{"id": "a1", "secret": "sk-ant"}], "enabled": false}
            ],
            "models": [
                {"name": "writer", "aliases": ["writer-pro"], "deployments": [
                    {"provider": "oa", "model": "gpt-4o-mini", "weight": 2},
                    {"provider": "an", "model": "claude-haiku"}],
                 "price": {"input_per_mtok": 150000, "output_per_mtok": 600000}},
                {"name": "emb", "kind": "embedding", "deployments": [{"provider": "oa", "model": "text-embedding-3-small"}]}
            ],
            "plans": [{"id": "free", "allowed_models": ["writer", "oa/*"], "rpm": 10}]
        })
    }

    #[test]
    fn test_reserved_output_cap_floors_for_responses_upstreams() {
        let mut v = sample();
        v["providers"].as_array_mut().unwrap().push(json!({"id": "rs", "kind": "responses",
            "base_url": "https://api.openai.com/v1", "credentials": [{"id": "r1", "secret": "sk-r"}]}));
        v["models"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "reasoner", "deployments": [
            {"provider": "oa", "model": "gpt-x"}, {"provider": "rs", "model": "o-x"}],
            "price": {"input_per_mtok": 1, "output_per_mtok": 1}}));
        let c = Catalogue::new(serde_json::from_value(v).unwrap()).unwrap();
        let r = c.resolve("reasoner").unwrap();
        assert_eq!(r.reserved_output_cap(1), 16);
        assert_eq!(r.reserved_output_cap(500), 500);
        let w = c.resolve("writer").unwrap();
        assert_eq!(w.reserved_output_cap(1), 1);
    }

    #[test]
    fn test_resolve_alias_skips_disabled_provider() {
        let c = Catalogue::new(serde_json::from_value(sample()).unwrap()).unwrap();
        let r = c.resolve("writer-pro").unwrap();
        assert_eq!(r.name, "writer");
        assert_eq!(r.targets.len(), 1);
        assert_eq!(r.targets[0].upstream_model, "gpt-4o-mini");
        assert_eq!(r.targets[0].provider.auth_style(), AuthStyle::Bearer);
    }

    #[test]
    fn test_provider_prefix_routing_priced_or_refused() {
        let c = Catalogue::new(serde_json::from_value(sample()).unwrap()).unwrap();
        // Deployed by the enabled catalogue model `writer`: its price.
        let r = c.resolve("oa/gpt-4o-mini").unwrap();
        assert_eq!(r.name, "oa/gpt-4o-mini");
        assert_eq!(r.model.unwrap().name, "writer");
        assert_eq!(r.price.input_per_mtok, 150_000);
        assert!(!r.unpriced());
        // In no catalogue model and no provider default price: not reachable.
        assert!(c.resolve("oa/o1-pro").is_none());
        assert!(c.resolve("an/claude").is_none(), "disabled provider");
        assert!(c.resolve("oa/").is_none());
        assert!(c.resolve("nope").is_none());
        // With a provider default price it resolves at that price.
        let mut v = sample();
        v["providers"][0]["default_price"] = json!({"input_per_mtok": 5, "output_per_mtok": 9});
        let c = Catalogue::new(serde_json::from_value(v).unwrap()).unwrap();
        let r = c.resolve("oa/o1-pro").unwrap();
        assert!(r.model.is_none());
        assert_eq!(r.price.output_per_mtok, 9);
        assert_eq!(r.targets[0].upstream_model, "o1-pro");
    }

    #[test]
    fn test_prefix_routing_is_off_by_default() {
        let mut v = sample();
        v["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("prefix_routing");
        v["providers"][0]["default_price"] = json!({"input_per_mtok": 5});
        let c = Catalogue::new(serde_json::from_value(v).unwrap()).unwrap();
        assert!(c.resolve("oa/gpt-4o-mini").is_none());
        assert!(c.resolve("oa/o1-pro").is_none());
    }

    #[test]
    fn test_disabled_model_unreachable_by_every_path() {
        let mut v = sample();
        v["models"][0]["enabled"] = json!(false);
        v["providers"][0]["default_price"] = json!({"input_per_mtok": 5});
        // A provider id that is also a model name must not fall through either.
        let c = Catalogue::new(serde_json::from_value(v).unwrap()).unwrap();
        assert!(c.resolve("writer").is_none());
        assert!(c.resolve("writer-pro").is_none());
        assert!(
            c.resolve("oa/gpt-4o-mini").is_none(),
            "prefix route to a disabled model's deployment"
        );
        let mut v = sample();
        v["models"][0]["name"] = json!("oa/gpt-4o-mini");
        v["models"][0]["enabled"] = json!(false);
        v["providers"][0]["default_price"] = json!({"input_per_mtok": 5});
        let c = Catalogue::new(serde_json::from_value(v).unwrap()).unwrap();
        assert!(c.resolve("oa/gpt-4o-mini").is_none());
    }

    #[test]
    fn test_zero_price_is_unpriced_unless_free() {
        let c = Catalogue::new(serde_json::from_value(sample()).unwrap()).unwrap();
        let r = c.resolve("emb").unwrap();
        assert!(r.unpriced());
        let mut v = sample();
        v["models"][1]["free"] = json!(true);
        let c = Catalogue::new(serde_json::from_value(v).unwrap()).unwrap();
        let r = c.resolve("emb").unwrap();
        assert!(r.free && !r.unpriced());
    }

    #[test]
    fn test_validation_errors_name_the_problem() {
        let mut bad = sample();
        bad["models"][0]["deployments"][0]["provider"] = json!("ghost");
        let e = Catalogue::new(serde_json::from_value(bad).unwrap()).unwrap_err();
        assert!(e.to_string().contains("ghost"), "{e}");

        let mut dup = sample();
        dup["models"][1]["aliases"] = json!(["writer"]);
        assert!(Catalogue::new(serde_json::from_value(dup).unwrap()).is_err());

        let mut unknown = sample();
        unknown["providers"][0]["surprise"] = json!(1);
        assert!(matches!(
            Catalogue::from_json(&unknown.to_string()),
            Err(CatalogueError::Json(_))
        ));
    }

    #[test]
    fn test_debug_never_shows_credential_secret() {
        let c = Catalogue::new(serde_json::from_value(sample()).unwrap()).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-upstream-1"));
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn test_model_allowed_patterns() {
        let allowed = vec!["writer".to_string(), "oa/*".to_string()];
        assert!(model_allowed(&allowed, "writer"));
        assert!(model_allowed(&allowed, "oa/gpt-4.1"));
        assert!(!model_allowed(&allowed, "emb"));
        assert!(model_allowed(&["*".to_string()], "anything"));
    }
}
