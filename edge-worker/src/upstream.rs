//! Building and sending upstream requests, one `match` on the provider kind.
//!
//! - URL = provider `base_url` + the protocol's path (+ the provider's fixed `query`).
//! - Credentials go only in headers, in the provider's auth style: `Authorization:
//!   Bearer`, `x-api-key` (Anthropic, with `anthropic-version`), `x-goog-api-key`
//!   (Gemini: never `?key=`, URLs end up in logs), `api-key` (Azure).
//! - Redirects are not followed (a redirect could carry the credential elsewhere).
//! - Responses are decoded into the hub format (OpenAI chat chunks / completions) by
//!   [`ChatDecoder`] and [`decode_full_response`].

use futures_util::future::{select, Either};
use serde_json::Value;
use tollbooth_core::catalogue::{AuthStyle, Credential, Provider, ProviderKind};
use tollbooth_core::error::{redact_secrets, GatewayError};
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::gemini as g;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::routing::AttemptFailure;
use tollbooth_core::sse;
use tollbooth_core::translate::{anthropic as tan, gemini as tg};
use tollbooth_core::usage::Usage;
use worker::wasm_bindgen::JsValue;
use worker::{
    AbortController, Delay, Fetch, Headers, Method, Request, RequestInit, RequestRedirect,
    Response, Url,
};

/// The `anthropic-version` sent unless the provider's headers set another.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A fully built upstream call. `Debug` is deliberately not derived: headers hold the
/// credential.
pub struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

fn internal(msg: &str) -> GatewayError {
    GatewayError::internal(msg.to_owned())
}

/// `base_url` + `path` + the provider's query parameters. Refuses loopback and private
/// hosts unless `allow_loopback` (local mode).
fn upstream_url(
    provider: &Provider,
    path: &str,
    allow_loopback: bool,
) -> Result<String, GatewayError> {
    let base = provider.base_url.trim_end_matches('/');
    let mut url = Url::parse(&format!("{base}/{}", path.trim_start_matches('/')))
        .map_err(|_| internal("provider base URL is invalid"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(internal("provider base URL must be http(s)"));
    }
    if !allow_loopback && is_local_host(&url) {
        return Err(internal("provider address is not allowed"));
    }
    if !provider.query.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in &provider.query {
            q.append_pair(k, v);
        }
    }
    Ok(url.to_string())
}

/// Loopback, private, link-local and metadata addresses (literal hosts and `localhost`).
/// The full SSRF policy lives with the pass-through proxy; catalogue URLs come from
/// operators, so this only stops obvious mistakes in production.
fn is_local_host(url: &Url) -> bool {
    match url.host() {
        Some(worker::url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost") || d.ends_with(".internal")
        }
        Some(worker::url::Host::Ipv4(ip)) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.octets().first() == Some(&100)
                    && ip.octets().get(1).is_some_and(|b| (64..128).contains(b))
        }
        Some(worker::url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || (ip
                    .segments()
                    .first()
                    .is_some_and(|s| (s & 0xfe00) == 0xfc00))
                || (ip
                    .segments()
                    .first()
                    .is_some_and(|s| (s & 0xffc0) == 0xfe80))
        }
        None => true,
    }
}

fn auth_headers(provider: &Provider, cred: &Credential) -> Vec<(String, String)> {
    let mut h = vec![("content-type".to_owned(), "application/json".to_owned())];
    match provider.auth_style() {
        AuthStyle::Bearer => h.push(("authorization".into(), format!("Bearer {}", cred.secret))),
        AuthStyle::XApiKey => h.push(("x-api-key".into(), cred.secret.clone())),
        AuthStyle::Google => h.push(("x-goog-api-key".into(), cred.secret.clone())),
        AuthStyle::ApiKey => h.push(("api-key".into(), cred.secret.clone())),
    }
    if provider.kind == ProviderKind::Anthropic
        && !provider
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("anthropic-version"))
    {
        h.push(("anthropic-version".into(), ANTHROPIC_VERSION.into()));
    }
    for (k, v) in &provider.headers {
        h.push((k.clone(), v.clone()));
    }
    h
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, GatewayError> {
    serde_json::to_string(v).map_err(|_| internal("could not encode the upstream request"))
}

/// The upstream chat call for `req` (hub format) against one deployment.
pub fn chat_request(
    provider: &Provider,
    cred: &Credential,
    upstream_model: &str,
    req: &oa::ChatCompletionRequest,
    stream: bool,
    default_max_tokens: u64,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    let (path, body) = match provider.kind {
        ProviderKind::Openai | ProviderKind::Azure => {
            let mut r = req.clone();
            r.model = upstream_model.to_owned();
            if stream {
                // Always ask for usage: billing needs it; the egress strips the usage
                // chunk when the client did not ask for it.
                r.stream = Some(true);
                let mut opts = r.stream_options.take().unwrap_or_default();
                opts.include_usage = Some(true);
                r.stream_options = Some(opts);
            } else {
                r.stream = None;
                r.stream_options = None;
            }
            let path = if provider.kind == ProviderKind::Azure {
                format!(
                    "deployments/{}/chat/completions",
                    encode_segment(upstream_model)
                )
            } else {
                "chat/completions".to_owned()
            };
            (path, to_json(&r)?)
        }
        ProviderKind::Anthropic => {
            let mut r = tan::openai_to_anthropic_request(req, default_max_tokens)
                .map_err(|e| translate_error(e.to_openai()))?;
            r.model = upstream_model.to_owned();
            r.stream = stream.then_some(true);
            ("messages".to_owned(), to_json(&r)?)
        }
        ProviderKind::Gemini => {
            let r = tg::to_gemini_request(req)
                .map_err(|e| GatewayError::invalid_request(e.to_string()))?;
            (tg::upstream_path(upstream_model, stream), to_json(&r)?)
        }
    };
    Ok(UpstreamRequest {
        url: upstream_url(provider, &path, allow_loopback)?,
        headers: auth_headers(provider, cred),
        body,
    })
}

/// An Anthropic Messages body forwarded (almost) as the client sent it, for `/v1/messages`
/// against an Anthropic upstream: `cache_control`, thinking blocks with their signatures
/// and other Anthropic-only fields survive, which a trip through the hub format would
/// drop. Only `model` (the upstream's name) and `stream` are set.
pub fn anthropic_passthrough_request(
    provider: &Provider,
    cred: &Credential,
    upstream_model: &str,
    body: &Value,
    stream: bool,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    let mut body = body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(upstream_model.to_owned()));
        if stream {
            obj.insert("stream".into(), Value::Bool(true));
        } else {
            obj.remove("stream");
        }
    }
    Ok(UpstreamRequest {
        url: upstream_url(provider, "messages", allow_loopback)?,
        headers: auth_headers(provider, cred),
        body: to_json(&body)?,
    })
}

fn translate_error(e: oa::ErrorResponse) -> GatewayError {
    match e.error.param {
        Some(p) => GatewayError::invalid_param(e.error.message, p),
        None => GatewayError::invalid_request(e.error.message),
    }
}

/// Embeddings or rerank (OpenAI-compatible providers only): the client's JSON with the
/// model replaced.
pub fn json_request(
    provider: &Provider,
    cred: &Credential,
    upstream_model: &str,
    path: &str,
    body: &Value,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    if !matches!(provider.kind, ProviderKind::Openai | ProviderKind::Azure) {
        return Err(GatewayError::invalid_request(format!(
            "This model does not support /v1/{path}."
        )));
    }
    let mut body = body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(upstream_model.to_owned()));
    }
    let path = if provider.kind == ProviderKind::Azure {
        format!("deployments/{}/{path}", encode_segment(upstream_model))
    } else {
        path.to_owned()
    };
    Ok(UpstreamRequest {
        url: upstream_url(provider, &path, allow_loopback)?,
        headers: auth_headers(provider, cred),
        body: to_json(&body)?,
    })
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends `req`, giving up after `timeout_ms` without response headers. The returned
/// controller aborts the body later (e.g. when the first event does not come in time).
pub async fn send(
    req: &UpstreamRequest,
    timeout_ms: u64,
) -> Result<(Response, AbortController), AttemptFailure> {
    let headers = Headers::new();
    for (k, v) in &req.headers {
        headers.set(k, v).map_err(|_| AttemptFailure::Connect)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual)
        .with_body(Some(JsValue::from_str(&req.body)));
    let request = Request::new_with_init(&req.url, &init).map_err(|_| AttemptFailure::Connect)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sending = fetch.send_with_signal(&signal);
    let timeout = Delay::from(std::time::Duration::from_millis(timeout_ms));
    futures_util::pin_mut!(sending);
    match select(sending, timeout).await {
        Either::Left((Ok(resp), _)) => Ok((resp, controller)),
        Either::Left((Err(_), _)) => Err(AttemptFailure::Connect),
        Either::Right(_) => {
            controller.abort();
            Err(AttemptFailure::Timeout)
        }
    }
}

/// A safe, short message from an upstream error body (its `error.message` where there
/// is one), redacted, never the URL.
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let msg = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.pointer("/message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "The upstream provider returned an error.".to_owned());
    let short: String = msg.chars().take(500).collect();
    redact_secrets(&short)
}

/// Parses a whole (non-stream) upstream chat answer into the hub format.
pub fn decode_full_response(
    kind: ProviderKind,
    body: &str,
    id: &str,
    created: u64,
    model: &str,
) -> Result<oa::ChatCompletionResponse, String> {
    match kind {
        ProviderKind::Openai | ProviderKind::Azure => {
            serde_json::from_str::<oa::ChatCompletionResponse>(body).map_err(|e| e.to_string())
        }
        ProviderKind::Anthropic => serde_json::from_str::<an::MessagesResponse>(body)
            .map(|r| tan::anthropic_to_openai_response(&r, created))
            .map_err(|e| e.to_string()),
        ProviderKind::Gemini => serde_json::from_str::<g::GenerateContentResponse>(body)
            .map(|r| tg::from_gemini_response(&r, id, created, model))
            .map_err(|e| e.to_string()),
    }
}

/// Turns upstream SSE events into hub chunks, whatever the upstream protocol.
/// Translators always produce the final usage chunk; the egress decides whether the
/// client sees it.
pub enum ChatDecoder {
    OpenAi { usage: Option<Usage>, done: bool },
    Anthropic(Box<tan::AnthropicToOpenAiStream>),
    Gemini(Box<tg::GeminiStreamTranslator>),
}

impl ChatDecoder {
    pub fn new(kind: ProviderKind, id: &str, created: u64, model: &str) -> Self {
        match kind {
            ProviderKind::Openai | ProviderKind::Azure => ChatDecoder::OpenAi {
                usage: None,
                done: false,
            },
            ProviderKind::Anthropic => {
                ChatDecoder::Anthropic(Box::new(tan::AnthropicToOpenAiStream::new(created, true)))
            }
            ProviderKind::Gemini => ChatDecoder::Gemini(Box::new(tg::GeminiStreamTranslator::new(
                id, created, model, true,
            ))),
        }
    }

    /// One upstream event. `Err` carries a (safe) message when the upstream reported an
    /// error inside the stream; malformed events are skipped.
    pub fn on_event(&mut self, ev: &sse::Event) -> Result<Vec<oa::ChatCompletionChunk>, String> {
        match self {
            ChatDecoder::OpenAi { usage, done } => {
                if *done {
                    return Ok(Vec::new());
                }
                match oa::ChatStreamItem::parse(&ev.data) {
                    Ok(oa::ChatStreamItem::Chunk(c)) => {
                        if let Some(u) = &c.usage {
                            *usage = Some(Usage::from(u));
                        }
                        Ok(vec![c])
                    }
                    Ok(oa::ChatStreamItem::Done) => {
                        *done = true;
                        Ok(Vec::new())
                    }
                    Ok(oa::ChatStreamItem::Error(e)) => Err(redact_secrets(&e.error.message)),
                    Err(_) => Ok(Vec::new()),
                }
            }
            ChatDecoder::Anthropic(t) => {
                let Ok(event) = an::StreamEvent::from_data(&ev.data) else {
                    return Ok(Vec::new());
                };
                let out = t.on_event(event);
                match t.error() {
                    Some(e) => Err(redact_secrets(&e.message)),
                    None => Ok(out),
                }
            }
            ChatDecoder::Gemini(t) => {
                let Ok(payload) = g::StreamPayload::parse(&ev.data) else {
                    return Ok(Vec::new());
                };
                let out = t.on_payload(payload);
                match t.upstream_error() {
                    Some(e) => Err(redact_secrets(&e.message)),
                    None => Ok(out),
                }
            }
        }
    }

    /// The end of the upstream stream. `Err` when the upstream stopped before finishing.
    pub fn finish(&mut self) -> Result<Vec<oa::ChatCompletionChunk>, String> {
        match self {
            ChatDecoder::OpenAi { .. } => Ok(Vec::new()),
            ChatDecoder::Anthropic(t) => {
                let out = t.finish();
                match t.error() {
                    Some(e) => Err(redact_secrets(&e.message)),
                    None => Ok(out),
                }
            }
            ChatDecoder::Gemini(t) => {
                let out = t.finish();
                match t.upstream_error() {
                    Some(e) => Err(redact_secrets(&e.message)),
                    None => Ok(out),
                }
            }
        }
    }

    /// Usage the provider reported so far.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            ChatDecoder::OpenAi { usage, .. } => *usage,
            ChatDecoder::Anthropic(t) => t.usage(),
            ChatDecoder::Gemini(t) => t.usage(),
        }
    }
}
