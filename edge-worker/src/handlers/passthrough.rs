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

use std::rc::Rc;

use tollbooth_core::catalogue::AuthStyle;
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::{KeyRecord, KeyRole};
use tollbooth_core::provider::credential_header;
use tollbooth_core::ssrf::{self, Host, ParsedUrl, Scheme, SsrfError, SsrfPolicy};
use worker::{
    Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response, ResponseBody,
};

use crate::auth::{authenticate, KvKeyStore};
use crate::catalogue;
use crate::config::{domain_key, Config};
use crate::context::EdgeError;
use crate::middleware::Call;
use crate::protect;
use crate::util::clock_ms;

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

/// Authenticates the caller with the shared key store (same checks as every other
/// route) and requires the `operator` role.
pub async fn authenticate_operator(
    req: &Request,
    env: &Env,
    config: &Config,
) -> Result<Rc<KeyRecord>, GatewayError> {
    let store = KvKeyStore::new(env, config.key_cache_ttl_ms);
    let record = match req.headers().get("x-goog-api-key").ok().flatten() {
        // Gemini SDKs send the key as `x-goog-api-key`; the shared auth reads bearer
        // and `x-api-key` only.
        Some(k) if !req.headers().has("authorization").unwrap_or(false) => {
            let headers = Headers::new();
            let internal = |_| GatewayError::internal("could not read the credentials");
            headers
                .set("authorization", &format!("Bearer {}", k.trim()))
                .map_err(internal)?;
            let mut init = RequestInit::new();
            init.with_headers(headers);
            let auth_req = Request::new_with_init("https://tollbooth.internal/auth", &init)
                .map_err(internal)?;
            authenticate(&auth_req, &store).await?
        }
        _ => authenticate(req, &store).await?,
    };
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
    config: &Config,
) -> Result<(ParsedUrl, String, AuthStyle), GatewayError> {
    let allow_loopback = config.hooks.allow_loopback;
    let trimmed = path.trim_start_matches('/');
    let (domain, api_path) = match trimmed.split_once('/') {
        Some((d, p)) => (d, format!("/{p}")),
        None => (trimmed, "/".to_owned()),
    };
    let domain = domain.to_ascii_lowercase();
    let host = ssrf::parse_url(&format!("http://{domain}/")).map_err(ssrf_error)?;
    let scheme = match (&host.host, allow_loopback) {
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
    let parsed = ssrf::check_url(&url, SsrfPolicy { allow_loopback }).map_err(ssrf_error)?;
    if parsed.host != host.host {
        return Err(GatewayError::invalid_request(
            "Pass-through target refused: the URL's host is ambiguous",
        ));
    }
    let key = domain_key(&parsed);
    let style = config
        .passthrough_domains
        .get(&key)
        .copied()
        .ok_or_else(|| {
            GatewayError::permission_denied(
                format!("Pass-through target refused: `{key}` is not an allow-listed domain"),
                "domain_not_allowed",
            )
        })?;
    Ok((parsed, url, style))
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
async fn credential_for(
    env: &Env,
    config: &Config,
    target: &ParsedUrl,
) -> Result<String, GatewayError> {
    let key = domain_key(target);
    // No published catalogue is fine here: the secret may still name a key.
    if let Ok(cat) = catalogue::load(env, config.catalogue_ttl_ms).await {
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

/// `/{domain}/{api_path}` (after the optional path prefix): see the module docs.
pub async fn passthrough_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        env,
        config,
        path,
        ..
    } = call;
    let key = authenticate_operator(req, env, config).await?;
    rc.key_public_id = Some(key.public_id.clone());
    rc.operator = true;
    let url = req
        .url()
        .map_err(|_| GatewayError::invalid_request("bad request URL"))?;
    let (target, target_str, style) = target_url(path, url.query(), config)?;
    rc.deployment = Some(format!("passthrough/{}", domain_key(&target)));
    let secret = credential_for(env, config, &target).await?;

    let method = req.method();
    let body = match method {
        Method::Get | Method::Head => Vec::new(),
        _ => protect::read_body_limited(req, config.max_body_bytes).await?,
    };
    let internal = |_| GatewayError::internal("could not build the upstream request");
    let headers = Headers::new();
    for name in FORWARD_REQUEST_HEADERS {
        if let Ok(Some(v)) = req.headers().get(name) {
            headers.set(name, &v).map_err(internal)?;
        }
    }
    let (auth_name, auth_value) = credential_header(style, &secret);
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
    let t0 = clock_ms();
    let sent = Fetch::Request(upstream_req).send().await;
    rc.upstream_ms += clock_ms() - t0;
    let mut upstream = sent.map_err(|_| GatewayError::Upstream {
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
        }
        .into());
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
