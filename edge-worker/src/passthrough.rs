//! Dynamic pass-through proxy for operators: `/{domain}/{api_path}` is forwarded to
//! `https://{domain}/{api_path}` with the gateway's own credential for that domain.
//!
//! Pipeline: operator key (KV `KEYS`, role `operator`) → SSRF check of the final URL
//! (`tollbooth_core::ssrf`) → domain allow-list → credential (the catalogue provider
//! whose `base_url` has this host, else the secret `PASSTHROUGH_KEY_<DOMAIN>`) → fetch
//! with `redirect: manual` (a 3xx is an error, never followed) → stream back.
//!
//! The caller's own `Authorization` / `x-api-key` / `x-goog-api-key` never go upstream,
//! nor do cookies or `cf-*`/`x-forwarded-*` headers; only an allow-list of protocol
//! headers is forwarded. A `key` query parameter is dropped: keys never travel in URLs.
//!
//! Config: `PASSTHROUGH_DOMAINS` — a JSON object `{"api.openai.com": "bearer", ...}` or a
//! list `api.openai.com=bearer,api.anthropic.com=x-api-key`; styles are `bearer`,
//! `x-api-key`, `google` (`x-goog-api-key`) and `api-key` (Azure). Unset = the defaults
//! below. `ALLOW_LOOPBACK_UPSTREAMS=true` (local mode only) permits `127.0.0.1:PORT` /
//! `localhost:PORT` entries, fetched over plain http.

use std::collections::BTreeMap;

use tollbooth_core::auth::{bearer_token, ApiKey};
use tollbooth_core::catalogue::{AuthStyle, Catalogue};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::{KeyRecord, KeyRejection, KeyRole};
use tollbooth_core::ssrf::{self, Host, ParsedUrl, Scheme, SsrfError, SsrfPolicy};
use worker::{
    Date, Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response,
    ResponseBody,
};

use crate::protect::{self, ProtectConfig};

/// Allow-listed domains when `PASSTHROUGH_DOMAINS` is unset.
pub const DEFAULT_DOMAINS: &[(&str, AuthStyle)] = &[
    ("api.openai.com", AuthStyle::Bearer),
    ("api.anthropic.com", AuthStyle::XApiKey),
    ("api.deepseek.com", AuthStyle::Bearer),
    ("api.siliconflow.cn", AuthStyle::Bearer),
    ("api.moonshot.cn", AuthStyle::Bearer),
    ("dashscope.aliyuncs.com", AuthStyle::Bearer),
    ("models.inference.ai.azure.com", AuthStyle::Bearer),
    ("generativelanguage.googleapis.com", AuthStyle::Google),
];

/// Request headers forwarded upstream; everything else stays at the gateway.
const FORWARD_REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "user-agent",
];

/// Response headers passed back to the caller.
const FORWARD_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    "x-request-id",
    "request-id",
    "openai-processing-ms",
];

/// Whether the first path segment names a host, i.e. the path is a pass-through route.
pub fn is_passthrough_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.is_empty() {
        return false;
    }
    let lower = first.to_ascii_lowercase();
    lower.contains('.')
        || lower.contains(':')
        || lower.starts_with('[')
        || lower.starts_with("0x")
        || lower.bytes().all(|b| b.is_ascii_digit())
        || lower == "localhost"
}

/// The allow-list: normalised authority (`host` or `host:port`) → auth style.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    domains: BTreeMap<String, AuthStyle>,
    allow_loopback: bool,
}

fn parse_style(s: &str) -> Option<AuthStyle> {
    match s.trim().to_ascii_lowercase().as_str() {
        "bearer" | "openai" => Some(AuthStyle::Bearer),
        "x-api-key" | "anthropic" => Some(AuthStyle::XApiKey),
        "google" | "x-goog-api-key" | "gemini" => Some(AuthStyle::Google),
        "api-key" | "azure" => Some(AuthStyle::ApiKey),
        _ => None,
    }
}

/// Normalises a configured domain (`Host[:port]`) to the key used for lookups.
fn normalise_domain(domain: &str) -> Option<String> {
    let url = ssrf::parse_url(&format!("https://{}/", domain.trim())).ok()?;
    Some(domain_key(&url))
}

fn domain_key(url: &ParsedUrl) -> String {
    if url.explicit_port {
        format!("{}:{}", url.host, url.port)
    } else {
        url.host.to_string()
    }
}

impl DomainPolicy {
    pub fn from_env(env: &Env) -> Self {
        let allow_loopback = env
            .var("ALLOW_LOOPBACK_UPSTREAMS")
            .map(|v| v.to_string().trim().eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        let raw = env.var("PASSTHROUGH_DOMAINS").ok().map(|v| v.to_string());
        let domains = match raw {
            Some(raw) => Self::parse(&raw),
            None => DEFAULT_DOMAINS
                .iter()
                .map(|(d, s)| ((*d).to_owned(), *s))
                .collect(),
        };
        Self {
            domains,
            allow_loopback,
        }
    }

    /// Parses the JSON object or `domain=style` list form; invalid entries are skipped.
    fn parse(raw: &str) -> BTreeMap<String, AuthStyle> {
        let pairs: Vec<(String, String)> =
            match serde_json::from_str::<BTreeMap<String, String>>(raw) {
                Ok(map) => map.into_iter().collect(),
                Err(_) => raw
                    .split(',')
                    .filter_map(|e| {
                        let (d, s) = e.split_once('=')?;
                        Some((d.to_owned(), s.to_owned()))
                    })
                    .collect(),
            };
        pairs
            .into_iter()
            .filter_map(|(d, s)| Some((normalise_domain(&d)?, parse_style(&s)?)))
            .collect()
    }

    fn ssrf_policy(&self) -> SsrfPolicy {
        SsrfPolicy {
            allow_loopback: self.allow_loopback,
        }
    }
}

fn now_secs() -> u64 {
    Date::now().as_millis() / 1000
}

/// The key the caller presented: `Authorization: Bearer`, `x-api-key` or
/// `x-goog-api-key`.
fn presented_key(req: &Request) -> worker::Result<Option<String>> {
    let h = req.headers();
    if let Some(v) = h.get("authorization")? {
        return Ok(bearer_token(&v).map(str::to_owned));
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(v) = h.get(name)? {
            return Ok(Some(v.trim().to_owned()));
        }
    }
    Ok(None)
}

/// Authenticates an operator key against KV `KEYS`.
pub async fn authenticate_operator(req: &Request, env: &Env) -> Result<KeyRecord, GatewayError> {
    let presented = presented_key(req)
        .map_err(|_| GatewayError::invalid_api_key())?
        .ok_or_else(|| {
            GatewayError::authentication(
                "Missing API key: send `Authorization: Bearer <key>`.",
                "missing_api_key",
            )
        })?;
    let key = ApiKey::parse(&presented).map_err(|_| GatewayError::invalid_api_key())?;
    let kv = env
        .kv("KEYS")
        .map_err(|_| GatewayError::internal("key store unavailable"))?;
    let record: Option<KeyRecord> = kv
        .get(&KeyRecord::kv_key(key.public_id()))
        .json()
        .await
        .map_err(|_| GatewayError::internal("key store unavailable"))?;
    let record = record.ok_or_else(GatewayError::invalid_api_key)?;
    match record.check(key.secret(), now_secs()) {
        Ok(()) => {}
        Err(KeyRejection::BadSecret) => return Err(GatewayError::invalid_api_key()),
        Err(KeyRejection::Disabled) => {
            return Err(GatewayError::authentication(
                "This API key is disabled.",
                "key_disabled",
            ))
        }
        Err(KeyRejection::Expired) => {
            return Err(GatewayError::authentication(
                "This API key has expired.",
                "key_expired",
            ))
        }
    }
    if record.role != KeyRole::Operator {
        return Err(GatewayError::permission_denied(
            "The pass-through proxy is for operator keys only.",
            "operator_key_required",
        ));
    }
    Ok(record)
}

fn ssrf_error(e: SsrfError) -> GatewayError {
    match e {
        SsrfError::Malformed(_) | SsrfError::Scheme | SsrfError::UserInfo => {
            GatewayError::InvalidRequest {
                message: format!("Pass-through target refused: {e}"),
                param: None,
                code: Some("invalid_target".into()),
            }
        }
        SsrfError::BlockedAddress(_) | SsrfError::BlockedName(_) => {
            GatewayError::permission_denied(
                format!("Pass-through target refused: {e}"),
                "destination_not_allowed",
            )
        }
    }
}

/// Builds the upstream URL for `/{domain}/{api_path}?query`, checks it and returns it
/// with the domain's auth style.
pub fn target_url(
    path: &str,
    query: Option<&str>,
    policy: &DomainPolicy,
) -> Result<(ParsedUrl, String, AuthStyle), GatewayError> {
    let trimmed = path.trim_start_matches('/');
    let (domain, api_path) = match trimmed.split_once('/') {
        Some((d, p)) => (d, format!("/{p}")),
        None => (trimmed, "/".to_owned()),
    };
    let domain = domain.to_ascii_lowercase();
    let host = ssrf::parse_url(&format!("http://{domain}/")).map_err(ssrf_error)?;
    let scheme = match (&host.host, policy.allow_loopback) {
        (Host::Ipv4(_) | Host::Ipv6(_), true) => Scheme::Http,
        (Host::Domain(d), true) if d == "localhost" => Scheme::Http,
        _ => Scheme::Https,
    };
    let query = query
        .map(|q| {
            q.split('&')
                .filter(|kv| {
                    let name = kv.split('=').next().unwrap_or("");
                    !name.is_empty() && !name.eq_ignore_ascii_case("key")
                })
                .collect::<Vec<_>>()
                .join("&")
        })
        .filter(|q| !q.is_empty());
    let url = match query {
        Some(q) => format!("{}://{domain}{api_path}?{q}", scheme.as_str()),
        None => format!("{}://{domain}{api_path}", scheme.as_str()),
    };
    // The SSRF check runs on the exact URL that will be fetched.
    let parsed = ssrf::check_url(&url, policy.ssrf_policy()).map_err(ssrf_error)?;
    if parsed.host != host.host {
        return Err(GatewayError::invalid_request(
            "Pass-through target refused: the URL's host is ambiguous",
        ));
    }
    let key = domain_key(&parsed);
    let style = policy.domains.get(&key).copied().ok_or_else(|| {
        GatewayError::permission_denied(
            format!("Pass-through target refused: `{key}` is not an allow-listed domain"),
            "domain_not_allowed",
        )
    })?;
    Ok((parsed, url, style))
}

/// Loads the current catalogue from KV `CONFIG` (`catalogue:current` →
/// `catalogue:v:<version>`).
pub async fn load_catalogue(env: &Env) -> Result<Option<Catalogue>, GatewayError> {
    let kv = env
        .kv("CONFIG")
        .map_err(|_| GatewayError::internal("config store unavailable"))?;
    let Some(version) = kv
        .get("catalogue:current")
        .text()
        .await
        .map_err(|_| GatewayError::internal("config store unavailable"))?
    else {
        return Ok(None);
    };
    let Some(json) = kv
        .get(&format!("catalogue:v:{}", version.trim()))
        .text()
        .await
        .map_err(|_| GatewayError::internal("config store unavailable"))?
    else {
        return Ok(None);
    };
    Catalogue::from_json(&json)
        .map(Some)
        .map_err(|_| GatewayError::internal("the published catalogue is invalid"))
}

fn env_secret_name(domain_key: &str) -> String {
    let mut s = String::from("PASSTHROUGH_KEY_");
    s.extend(domain_key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// The gateway's credential for `domain_key`: the first enabled catalogue provider with
/// that host, else the secret `PASSTHROUGH_KEY_<DOMAIN>`.
async fn credential_for(env: &Env, target: &ParsedUrl) -> Result<String, GatewayError> {
    let key = domain_key(target);
    if let Some(cat) = load_catalogue(env).await? {
        for p in cat.snapshot().providers.iter().filter(|p| p.enabled) {
            let same_host = ssrf::parse_url(&p.base_url)
                .map(|u| u.host == target.host && u.port == target.port)
                .unwrap_or(false);
            if same_host {
                if let Some(c) = p.credentials.first() {
                    return Ok(c.secret.clone());
                }
            }
        }
    }
    let name = env_secret_name(&key);
    if let Ok(s) = env.secret(&name) {
        return Ok(s.to_string());
    }
    if let Ok(s) = env.var(&name) {
        return Ok(s.to_string());
    }
    Err(GatewayError::Overloaded {
        message: format!("No credential is configured for `{key}`."),
        retry_after_secs: None,
    })
}

fn auth_header(style: AuthStyle, secret: &str) -> (&'static str, String) {
    match style {
        AuthStyle::Bearer => ("authorization", format!("Bearer {secret}")),
        AuthStyle::XApiKey => ("x-api-key", secret.to_owned()),
        AuthStyle::Google => ("x-goog-api-key", secret.to_owned()),
        AuthStyle::ApiKey => ("api-key", secret.to_owned()),
    }
}

/// `/{domain}/{api_path}`: see the module docs.
pub async fn passthrough_handler(
    mut req: Request,
    env: &Env,
    cfg: &ProtectConfig,
) -> worker::Result<Response> {
    let path = req.path();
    match forward(&mut req, env, cfg).await {
        Ok(resp) => Ok(resp),
        Err(e) => protect::error_response(&path, &e),
    }
}

async fn forward(
    req: &mut Request,
    env: &Env,
    cfg: &ProtectConfig,
) -> Result<Response, GatewayError> {
    authenticate_operator(req, env).await?;
    let policy = DomainPolicy::from_env(env);
    let url = req
        .url()
        .map_err(|_| GatewayError::invalid_request("bad request URL"))?;
    let (target, target_str, style) = target_url(url.path(), url.query(), &policy)?;
    let secret = credential_for(env, &target).await?;

    let method = req.method();
    let body = match method {
        Method::Get | Method::Head => Vec::new(),
        _ => protect::read_body_limited(req, cfg.max_body_bytes).await?,
    };
    let internal = |_| GatewayError::internal("could not build the upstream request");
    let headers = Headers::new();
    for name in FORWARD_REQUEST_HEADERS {
        if let Ok(Some(v)) = req.headers().get(name) {
            headers.set(name, &v).map_err(internal)?;
        }
    }
    let (auth_name, auth_value) = auth_header(style, &secret);
    headers.set(auth_name, &auth_value).map_err(internal)?;

    let mut init = RequestInit::new();
    init.with_method(method.clone())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if !body.is_empty() {
        let array = worker::js_sys::Uint8Array::from(body.as_slice());
        init.with_body(Some(array.into()));
    }
    let upstream_req = Request::new_with_init(&target_str, &init).map_err(internal)?;
    let mut upstream =
        Fetch::Request(upstream_req)
            .send()
            .await
            .map_err(|_| GatewayError::Upstream {
                status: 0,
                message: format!(
                    "Could not reach the pass-through target `{}`.",
                    domain_key(&target)
                ),
            })?;
    let status = upstream.status_code();
    if (300..400).contains(&status) {
        return Err(GatewayError::Upstream {
            status,
            message: format!(
                "The pass-through target answered with a redirect ({status}); redirects are not followed."
            ),
        });
    }

    let out_headers = Headers::new();
    for name in FORWARD_RESPONSE_HEADERS {
        if let Ok(Some(v)) = upstream.headers().get(name) {
            out_headers.set(name, &v).map_err(internal)?;
        }
    }
    for (name, value) in upstream.headers().entries() {
        if name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-") {
            out_headers.set(&name, &value).map_err(internal)?;
        }
    }
    out_headers
        .set("x-tollbooth-passthrough", &domain_key(&target))
        .map_err(internal)?;
    let resp = match upstream.body() {
        ResponseBody::Stream(_) => {
            let stream = upstream.stream().map_err(internal)?;
            Response::from_stream(stream).map_err(internal)?
        }
        ResponseBody::Body(b) => Response::from_bytes(b.clone()).map_err(internal)?,
        ResponseBody::Empty => Response::empty().map_err(internal)?,
    };
    Ok(resp.with_status(status).with_headers(out_headers))
}
