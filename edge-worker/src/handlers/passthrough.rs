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
//! **Bring your own key** (opt-in per key, `KeyRecord::byok`): the caller authenticates
//! with its Tollbooth key in `x-tollbooth-key` and sends its own provider key in the
//! usual header (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`, or Google's
//! `?key=`). The auth style comes from the path and host
//! (`tollbooth_core::capture::passthrough::byok_kind`: `/anthropic/` or `/v1/messages` →
//! `x-api-key`, a `*.googleapis.com` host → `x-goog-api-key`, else Bearer). The provider
//! key is forwarded in that one header and never stored or logged. The same allow-list
//! and SSRF checks apply; each call is admitted and settled as one request (price zero:
//! the caller pays the provider) so plan request allowances and rate limits count it.
//!
//! **Capture**: BYOK calls follow the key/plan/app opt-in; operator calls are captured
//! when the domain is in the catalogue's `settings.capture.passthrough_domains`. The
//! answer is teed while it streams to the caller and written after it ends, in
//! `ctx.wait_until` (docs/training-data.md).
//!
//! Config: `PASSTHROUGH_DOMAINS` — a JSON object `{"api.openai.com": "bearer", ...}` or a
//! list `api.openai.com=bearer,api.anthropic.com=x-api-key`; styles are `bearer`,
//! `x-api-key`, `google` (`x-goog-api-key`) and `api-key` (Azure). Unset = the defaults
//! below. `ALLOW_LOOPBACK_UPSTREAMS=true` (local mode only) permits `127.0.0.1:PORT` /
//! `localhost:PORT` entries, fetched over plain http.

use std::rc::Rc;

use futures_channel::mpsc::unbounded;
use futures_util::StreamExt;
use tollbooth_core::billing::{Ending, Observed, Price, ReservationEstimate};
use tollbooth_core::capture::passthrough::{
    auth_style, byok_kind, request_model, request_value, response_value,
};
use tollbooth_core::capture::settings::passthrough_captured;
use tollbooth_core::capture::{capture_enabled, CaptureSettings};
use tollbooth_core::catalogue::{AuthStyle, ProviderKind};
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
use crate::context::{EdgeError, ReqCtx};
use crate::middleware::Call;
use crate::pipeline::metering::{self, Finish, Meter};
use crate::protect;
use crate::util::{clock_ms, now_ms};

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

/// The BYOK header carrying the caller's Tollbooth key.
pub const BYOK_HEADER: &str = "x-tollbooth-key";

/// Authenticates a BYOK caller by its `x-tollbooth-key` (the shared key checks) and
/// requires the key's `byok` permission.
async fn authenticate_byok(
    tollbooth_key: &str,
    env: &Env,
    config: &Config,
) -> Result<Rc<KeyRecord>, GatewayError> {
    let store = KvKeyStore::new(env, config.key_cache_ttl_ms);
    let internal = |_| GatewayError::internal("could not read the credentials");
    let headers = Headers::new();
    headers
        .set("authorization", &format!("Bearer {}", tollbooth_key.trim()))
        .map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_headers(headers);
    let auth_req =
        Request::new_with_init("https://tollbooth.internal/auth", &init).map_err(internal)?;
    let record = authenticate(&auth_req, &store).await?;
    if !record.byok {
        return Err(GatewayError::permission_denied(
            "This key may not use bring-your-own-key pass-through.",
            "byok_not_allowed",
        ));
    }
    Ok(record)
}

/// The caller's own provider key: the header of its protocol first, then any of the
/// usual ones (and Google's `?key=`).
fn provider_key(req: &Request, query: Option<&str>, style: AuthStyle) -> Option<String> {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .ok()
            .flatten()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let bearer = || {
        h("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(|s| s.trim().to_owned())
        })
    };
    let query_key = || {
        query.and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == "key" && !v.is_empty()).then(|| v.to_owned())
            })
        })
    };
    match style {
        AuthStyle::XApiKey => h("x-api-key").or_else(bearer),
        AuthStyle::Google => h("x-goog-api-key").or_else(query_key).or_else(bearer),
        AuthStyle::Bearer | AuthStyle::ApiKey => bearer().or_else(|| h("x-api-key")),
    }
}

/// What a captured pass-through call carries to its write after the stream ends.
struct PassCapture {
    kind: ProviderKind,
    api_path: String,
    request_body: Vec<u8>,
    key: Rc<KeyRecord>,
    settings: CaptureSettings,
    domain: String,
}

/// `/{domain}/{api_path}` (after the optional path prefix): see the module docs.
pub async fn passthrough_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        env,
        ctx,
        config,
        path,
    } = call;
    let byok_key = req.headers().get(BYOK_HEADER).ok().flatten();
    let key = match &byok_key {
        Some(k) => authenticate_byok(k, env, config).await?,
        None => authenticate_operator(req, env, config).await?,
    };
    let byok = byok_key.is_some();
    rc.key_public_id = Some(key.public_id.clone());
    rc.operator = key.role == KeyRole::Operator;
    let url = req
        .url()
        .map_err(|_| GatewayError::invalid_request("bad request URL"))?;
    let (target, target_str, configured_style) = target_url(path, url.query(), config)?;
    let domain = domain_key(&target);
    rc.deployment = Some(format!("passthrough/{domain}"));
    let api_path = target_str
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .unwrap_or_else(|| "/".into());
    let kind = byok_kind(&api_path, &domain);
    let (style, secret) = if byok {
        let style = auth_style(kind);
        let secret = provider_key(req, url.query(), style).ok_or_else(|| {
            GatewayError::authentication(
                "Bring-your-own-key: send your provider key (Authorization, x-api-key or x-goog-api-key) beside x-tollbooth-key.",
                "provider_key_required",
            )
        })?;
        (style, secret)
    } else {
        (
            configured_style,
            credential_for(env, config, &target).await?,
        )
    };
    let catalogue = catalogue::load(env, config.catalogue_ttl_ms).await.ok();
    let settings = catalogue
        .as_ref()
        .map(|c| c.settings().capture.clone())
        .unwrap_or_default();
    let plan = catalogue.as_ref().and_then(|c| c.plan(&key.plan_id));
    let captured = if byok {
        capture_enabled(
            key.capture,
            plan.is_some_and(|p| p.capture),
            key.app_id.as_deref(),
            &settings,
        ) || passthrough_captured(&domain, &settings)
    } else {
        passthrough_captured(&domain, &settings)
    };

    let method = req.method();
    let body = match method {
        Method::Get | Method::Head => Vec::new(),
        _ => protect::read_body_limited(req, config.max_body_bytes).await?,
    };
    // BYOK calls are metered as requests: admitted before anything is sent.
    let settlement = if byok {
        let model = format!("byok/{domain}");
        let zero = ReservationEstimate {
            input_tokens: 0,
            output_tokens: 0,
        };
        Some(
            metering::admit(
                env,
                ctx,
                config,
                &Meter {
                    request_id: &rc.id,
                    key: &key,
                    plan,
                    model: &model,
                    price: Price::default(),
                    estimate: zero,
                    worst: zero,
                    now_s: rc.now_s,
                },
            )
            .await?,
        )
    } else {
        None
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
        message: format!("Could not reach the pass-through target `{domain}`."),
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
    if let Some(s) = settlement {
        let ending = if (200..300).contains(&status) {
            Ending::Completed
        } else {
            Ending::FailedBeforeOutput
        };
        s.finish(Finish {
            observed: Observed {
                ending,
                usage: None,
                output_chars: 0,
                output_tokens_est: 0,
            },
            deployment: Some(format!("passthrough/{domain}")),
            ttft_ms: None,
            response: None,
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
        .set("x-tollbooth-passthrough", &domain)
        .map_err(internal)?;
    let capture = (captured && !body.is_empty()).then(|| PassCapture {
        kind,
        api_path,
        request_body: body,
        key: key.clone(),
        settings,
        domain: domain.clone(),
    });
    // The body's shape, read before the stream is taken.
    let whole: Option<Option<Vec<u8>>> = match upstream.body() {
        ResponseBody::Stream(_) => None,
        ResponseBody::Body(b) => Some(Some(b.clone())),
        ResponseBody::Empty => Some(None),
    };
    let resp = match (whole, capture) {
        (None, Some(cap)) => {
            let sse = upstream
                .headers()
                .get("content-type")
                .ok()
                .flatten()
                .is_some_and(|c| c.contains("text/event-stream"));
            let mut stream = upstream.stream().map_err(internal)?;
            let (tx, rx) = unbounded::<Result<Vec<u8>, worker::Error>>();
            let resp = Response::from_stream(rx).map_err(internal)?;
            let env = env.clone();
            let config = config.clone();
            let ids = CaptureIds::from(rc, status);
            ctx.wait_until(async move {
                let mut buf = Vec::new();
                let bound =
                    usize::try_from(cap.settings.max_bytes.saturating_mul(4)).unwrap_or(usize::MAX);
                let mut complete = true;
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(bytes) => {
                            if buf.len() < bound {
                                buf.extend_from_slice(&bytes);
                            }
                            // A gone client does not stop the capture of the answer.
                            let _ = tx.unbounded_send(Ok(bytes));
                        }
                        Err(e) => {
                            complete = false;
                            let _ = tx.unbounded_send(Err(e));
                            break;
                        }
                    }
                }
                drop(tx);
                write_capture(&env, &config, cap, ids, sse, &buf, complete).await;
            });
            resp
        }
        (None, None) => {
            let stream = upstream.stream().map_err(internal)?;
            Response::from_stream(stream).map_err(internal)?
        }
        (Some(Some(bytes)), cap) => {
            if let Some(cap) = cap {
                let env = env.clone();
                let config = config.clone();
                let ids = CaptureIds::from(rc, status);
                let body = bytes.clone();
                ctx.wait_until(async move {
                    write_capture(&env, &config, cap, ids, false, &body, true).await;
                });
            }
            Response::from_bytes(bytes).map_err(internal)?
        }
        (Some(None), _) => Response::empty().map_err(internal)?,
    };
    Ok(resp.with_status(status).with_headers(out_headers))
}

/// The request's ids and clock, copied before the handler returns.
struct CaptureIds {
    request_id: String,
    status: u16,
    now_s: u64,
    started_ms: u64,
}

impl CaptureIds {
    fn from(rc: &ReqCtx, status: u16) -> Self {
        CaptureIds {
            request_id: rc.id.clone(),
            status,
            now_s: rc.now_s,
            started_ms: now_ms(),
        }
    }
}

async fn write_capture(
    env: &Env,
    config: &Config,
    cap: PassCapture,
    ids: CaptureIds,
    sse: bool,
    answer: &[u8],
    complete: bool,
) {
    let Some(request) = request_value(cap.kind, &cap.api_path, &cap.request_body) else {
        return;
    };
    let model = request_model(cap.kind, &cap.api_path, &request);
    let response = response_value(cap.kind, sse, answer, &ids.request_id, ids.now_s, &model);
    let usage = response
        .as_ref()
        .and_then(|r| r.get("usage"))
        .map(|u| {
            let n = |k: &str| u.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            (n("prompt_tokens"), n("completion_tokens"))
        })
        .unwrap_or((0, 0));
    let status = match (complete, (200..300).contains(&ids.status)) {
        (true, true) => "ok".to_owned(),
        (false, _) => "upstream_error".to_owned(),
        (true, false) => format!("http_{}", ids.status),
    };
    let latency = now_ms().saturating_sub(ids.started_ms);
    let served = format!("passthrough/{}", cap.domain);
    crate::capture::store::write(
        env,
        config,
        crate::capture::store::Input {
            request_id: &ids.request_id,
            member_id: &cap.key.member_id,
            key_id: &cap.key.public_id,
            app_id: cap.key.app_id.as_deref(),
            ingress: "passthrough",
            model: &model,
            served: Some(&served),
            status,
            input_tokens: usage.0,
            output_tokens: usage.1,
            cost_micros: 0,
            latency_ms: latency,
            finished_at: ids.now_s.saturating_add(latency / 1000),
            request,
            response,
            settings: &cap.settings,
        },
    )
    .await;
}
