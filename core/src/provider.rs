//! Provider request knowledge, in one place: the upstream URL of each protocol, the
//! credential header of each auth style, the Anthropic API version, the models probe,
//! and which request fields may be forwarded to which provider kind.
//!
//! Sans-IO: every function builds an [`UpstreamRequest`] (method, URL, headers, body) and
//! the adapter does the fetch. Every URL passes [`crate::ssrf::check_url`] on the exact
//! string that will be fetched; credentials go only in headers (never `?key=`: URLs end
//! up in logs).
//!
//! # What is forwarded (issue 10, invariant 4)
//!
//! The gateway bills from the provider's reported token usage, so a request field that
//! makes the provider charge for something else (a web search per call, a priority tier,
//! audio tokens) must not pass unnoticed. [`screen_chat_request`] and
//! [`screen_anthropic_body`] apply an allow-list to the caller's request before anything
//! is estimated or sent:
//!
//! - OpenAI chat: the typed fields of [`oa::ChatCompletionRequest`] plus
//!   [`OPENAI_EXTRA_FIELDS`]; other extra fields are dropped. `web_search_options`,
//!   `audio`, `modalities` with audio and tools that are not `function` tools are refused
//!   (400 `unsupported_parameter`); `service_tier` is dropped (the default tier is what
//!   the catalogue prices); `n` is at most [`MAX_N`].
//! - Anthropic Messages (forwarded as is to Anthropic upstreams): [`ANTHROPIC_FIELDS`];
//!   server tools (a `type` other than `custom`, e.g. `web_search_20250305`),
//!   `mcp_servers` and `container` are refused; `service_tier` is dropped.
//! - Responses (forwarded as is to Responses upstreams): [`RESPONSES_FIELDS`]; hosted
//!   tools are dropped and `store` is forced false (`edge-worker` screens the body).
//! - Translated requests (OpenAI → Anthropic or Gemini) carry only what the translators
//!   map from typed fields, so they need no extra list.

use std::fmt;

use serde_json::{Map, Value};

use crate::catalogue::{AuthStyle, Credential, Provider, ProviderKind};
use crate::error::{redact_secrets, GatewayError};
use crate::protocol::openai as oa;
use crate::ssrf::{self, SsrfPolicy};
use crate::translate::{anthropic as tan, gemini as tg, responses_upstream as tru};

/// The `anthropic-version` sent unless the provider's headers set another.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The largest `n` (choices per request) accepted; the reservation multiplies the output
/// by it.
pub const MAX_N: u32 = 16;

/// Extra (untyped) OpenAI chat fields forwarded to OpenAI-compatible upstreams. None of
/// them is billed other than by tokens in the reported usage.
pub const OPENAI_EXTRA_FIELDS: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "metadata",
    "store",
    "prediction",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    // Vendor sampling and reasoning switches of OpenAI-compatible servers (vLLM, Qwen,
    // DeepSeek): all billed as output tokens.
    "top_k",
    "min_p",
    "repetition_penalty",
    "enable_thinking",
    "thinking",
];

/// OpenAI chat fields refused because they are billed outside the token usage.
pub const OPENAI_REFUSED_FIELDS: &[&str] = &["web_search_options", "audio"];

/// Top-level Anthropic Messages fields forwarded to Anthropic upstreams.
pub const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
];

/// Top-level Responses fields forwarded to Responses upstreams (the pass-through of
/// `/v1/responses`); everything else is dropped. Not forwarded: `prompt` (a stored prompt
/// template), `previous_response_id` and `conversation` (server-side state the gateway
/// did not see or estimate), `background`, `max_tool_calls`, `service_tier` (the default
/// tier is what the catalogue prices) and unknown fields.
pub const RESPONSES_FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "stream",
    "stream_options",
    "store",
    "metadata",
    "reasoning",
    "text",
    "include",
    "truncation",
    "user",
    "safety_identifier",
    "prompt_cache_key",
];

/// Anthropic fields refused because they are billed outside the token usage (or run
/// code on the provider's side).
pub const ANTHROPIC_REFUSED_FIELDS: &[&str] = &["mcp_servers", "container"];

/// HTTP method of an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMethod {
    Get,
    Post,
}

/// A fully built upstream call. `Debug` never shows header values (they hold the
/// credential).
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub method: UpstreamMethod,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("url", &redact_secrets(&self.url))
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl UpstreamRequest {
    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn internal(msg: &str) -> GatewayError {
    GatewayError::internal(msg.to_owned())
}

/// `application/x-www-form-urlencoded` encoding of one query component.
fn form_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// Percent-encodes one path segment (unreserved characters kept).
pub fn encode_segment(s: &str) -> String {
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

/// `base_url` + `/` + `path` (which may carry its own query) + the provider's fixed query
/// parameters. Refuses what the SSRF policy refuses: private, loopback, link-local,
/// metadata and numeric-form hosts; `allow_loopback` (local mode) permits exactly
/// 127.0.0.1 / localhost / [::1].
pub fn request_url(
    provider: &Provider,
    path: &str,
    allow_loopback: bool,
) -> Result<String, GatewayError> {
    let base = provider.base_url.trim_end_matches('/');
    if base.contains(['?', '#']) {
        return Err(internal("provider base URL must not carry a query"));
    }
    let mut url = format!("{base}/{}", path.trim_start_matches('/'));
    if !provider.query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        for (i, (k, v)) in provider.query.iter().enumerate() {
            if i > 0 {
                url.push('&');
            }
            form_encode(k, &mut url);
            url.push('=');
            form_encode(v, &mut url);
        }
    }
    ssrf::check_url(&url, SsrfPolicy { allow_loopback })
        .map_err(|_| internal("provider address is not allowed"))?;
    Ok(url)
}

/// The header that carries a credential in `style`.
pub fn credential_header(style: AuthStyle, secret: &str) -> (&'static str, String) {
    match style {
        AuthStyle::Bearer => ("authorization", format!("Bearer {secret}")),
        AuthStyle::XApiKey => ("x-api-key", secret.to_owned()),
        AuthStyle::Google => ("x-goog-api-key", secret.to_owned()),
        AuthStyle::ApiKey => ("api-key", secret.to_owned()),
    }
}

/// Every header of a call to `provider` with `cred`: content type, the credential in the
/// provider's auth style, `anthropic-version` for Anthropic (unless the provider's own
/// headers name one, compared case-insensitively), then the provider's custom headers.
pub fn auth_headers(provider: &Provider, cred: &Credential) -> Vec<(String, String)> {
    let mut h = vec![("content-type".to_owned(), "application/json".to_owned())];
    let (name, value) = credential_header(provider.auth_style(), &cred.secret);
    h.push((name.to_owned(), value));
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

fn translate_error(e: oa::ErrorResponse) -> GatewayError {
    match e.error.param {
        Some(p) => GatewayError::invalid_param(e.error.message, p),
        None => GatewayError::invalid_request(e.error.message),
    }
}

/// The upstream chat call for `req` (hub format, already screened, with the output cap
/// set) against one deployment. OpenAI-style upstreams are always asked for
/// `stream_options.include_usage` when streaming: billing needs it.
pub fn chat_request(
    provider: &Provider,
    cred: &Credential,
    upstream_model: &str,
    req: &oa::ChatCompletionRequest,
    stream: bool,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    let (path, body) = match provider.kind {
        ProviderKind::Openai | ProviderKind::Azure => {
            let mut r = req.clone();
            r.model = upstream_model.to_owned();
            if stream {
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
            let cap = req
                .max_output_tokens()
                .unwrap_or(crate::billing::DEFAULT_OUTPUT_TOKENS);
            let mut r = tan::openai_to_anthropic_request(req, cap)
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
        ProviderKind::Responses => {
            let mut r = tru::hub_to_responses_request(req, upstream_model)
                .map_err(|e| translate_error(e.to_openai()))?;
            r.stream = stream.then_some(true);
            (tru::UPSTREAM_PATH.to_owned(), to_json(&r)?)
        }
    };
    Ok(UpstreamRequest {
        method: UpstreamMethod::Post,
        url: request_url(provider, &path, allow_loopback)?,
        headers: auth_headers(provider, cred),
        body,
    })
}

/// An Anthropic Messages body forwarded as the client sent it (after
/// [`screen_anthropic_body`]), for `/v1/messages` against an Anthropic upstream:
/// `cache_control`, thinking blocks with their signatures and other Anthropic-only
/// fields survive. Only `model`, `stream` and the output cap `max_tokens` are set.
pub fn anthropic_passthrough_request(
    provider: &Provider,
    cred: &Credential,
    upstream_model: &str,
    body: &Map<String, Value>,
    max_tokens: u64,
    stream: bool,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    let mut body = body.clone();
    body.insert("model".into(), Value::String(upstream_model.to_owned()));
    body.insert("max_tokens".into(), Value::from(max_tokens));
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    } else {
        body.remove("stream");
    }
    Ok(UpstreamRequest {
        method: UpstreamMethod::Post,
        url: request_url(provider, "messages", allow_loopback)?,
        headers: auth_headers(provider, cred),
        body: to_json(&body)?,
    })
}

/// A Responses body forwarded as the client sent it (after the edge's screening:
/// hosted tools dropped, `store` false), for `/v1/responses` against a Responses
/// upstream: reasoning items with their `encrypted_content` and every other field
/// survive. Only `model`, `stream` and the output cap `max_output_tokens` are set.
pub fn responses_passthrough_request(
    provider: &Provider,
    cred: &Credential,
    upstream_model: &str,
    body: &Value,
    max_output_tokens: u64,
    stream: bool,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    let mut body = tru::passthrough_body(body, upstream_model, stream);
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "max_output_tokens".into(),
            Value::from(max_output_tokens.max(tru::MIN_MAX_OUTPUT_TOKENS)),
        );
    }
    Ok(UpstreamRequest {
        method: UpstreamMethod::Post,
        url: request_url(provider, tru::UPSTREAM_PATH, allow_loopback)?,
        headers: auth_headers(provider, cred),
        body: to_json(&body)?,
    })
}

/// Embeddings or rerank (OpenAI-compatible providers only): the client's JSON with the
/// model replaced. `path` is `embeddings` or `rerank`.
pub fn json_request(
    provider: &Provider,
    cred: &Credential,
    upstream_model: &str,
    path: &str,
    body: &Map<String, Value>,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    if !matches!(provider.kind, ProviderKind::Openai | ProviderKind::Azure) {
        return Err(GatewayError::invalid_request(format!(
            "This model does not support /v1/{path}."
        )));
    }
    let mut body = body.clone();
    body.insert("model".into(), Value::String(upstream_model.to_owned()));
    let path = if provider.kind == ProviderKind::Azure {
        format!("deployments/{}/{path}", encode_segment(upstream_model))
    } else {
        path.to_owned()
    };
    Ok(UpstreamRequest {
        method: UpstreamMethod::Post,
        url: request_url(provider, &path, allow_loopback)?,
        headers: auth_headers(provider, cred),
        body: to_json(&body)?,
    })
}

/// The health probe of one credential: an authenticated `GET {base_url}/models`.
pub fn models_probe(
    provider: &Provider,
    cred: &Credential,
    allow_loopback: bool,
) -> Result<UpstreamRequest, GatewayError> {
    let mut headers = auth_headers(provider, cred);
    headers.retain(|(k, _)| k != "content-type");
    Ok(UpstreamRequest {
        method: UpstreamMethod::Get,
        url: request_url(provider, "models", allow_loopback)?,
        headers,
        body: String::new(),
    })
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

fn unsupported(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param: Some(param.to_owned()),
        code: Some("unsupported_parameter".into()),
    }
}

/// Applies the OpenAI chat allow-list (see the module docs) to a parsed request.
pub fn screen_chat_request(req: &mut oa::ChatCompletionRequest) -> Result<(), GatewayError> {
    for field in OPENAI_REFUSED_FIELDS {
        if req.extra.get(*field).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                format!("`{field}` is not supported by this gateway (it is billed per use)."),
                field,
            ));
        }
    }
    if let Some(m) = req.extra.get("modalities").and_then(Value::as_array) {
        if m.iter().any(|v| v.as_str() != Some("text")) {
            return Err(unsupported(
                "Only text output is supported (`modalities`).",
                "modalities",
            ));
        }
    }
    if let Some(tools) = &req.tools {
        if let Some((i, t)) = tools.iter().enumerate().find(|(_, t)| t.kind != "function") {
            return Err(unsupported(
                format!(
                    "Tool type `{}` is not supported; use function tools.",
                    t.kind
                ),
                &format!("tools[{i}].type"),
            ));
        }
    }
    if let Some(n) = req.n {
        if n == 0 || n > MAX_N {
            return Err(GatewayError::invalid_param(
                format!("`n` must be between 1 and {MAX_N}."),
                "n",
            ));
        }
    }
    req.extra
        .retain(|k, _| OPENAI_EXTRA_FIELDS.contains(&k.as_str()));
    Ok(())
}

/// Applies the Anthropic Messages allow-list (see the module docs) to a body object.
pub fn screen_anthropic_body(body: &mut Map<String, Value>) -> Result<(), GatewayError> {
    for field in ANTHROPIC_REFUSED_FIELDS {
        if body.get(*field).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                format!("`{field}` is not supported by this gateway."),
                field,
            ));
        }
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        for (i, t) in tools.iter().enumerate() {
            let kind = t.get("type").and_then(Value::as_str);
            if kind.is_some_and(|k| k != "custom") {
                return Err(unsupported(
                    format!(
                        "Server tool `{}` is not supported by this gateway (it is billed per use).",
                        kind.unwrap_or_default()
                    ),
                    &format!("tools[{i}].type"),
                ));
            }
        }
    }
    body.retain(|k, _| ANTHROPIC_FIELDS.contains(&k.as_str()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider(kind: &str, base: &str) -> Provider {
        serde_json::from_value(json!({"id": "p", "kind": kind, "base_url": base,
            "credentials": [{"id": "c1", "secret": "sk-test-secret-123456"}]}))
        .unwrap()
    }

    fn req() -> oa::ChatCompletionRequest {
        serde_json::from_value(json!({"model": "virtual", "stream": true, "max_tokens": 7,
            "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap()
    }

    #[test]
    fn test_url_and_auth_per_provider_kind() {
        let p = provider("openai", "https://api.example.com/v1/");
        let c = &p.credentials[0];
        let r = chat_request(&p, c, "gpt-x", &req(), true, false).unwrap();
        assert_eq!(r.url, "https://api.example.com/v1/chat/completions");
        assert_eq!(r.method, UpstreamMethod::Post);
        assert_eq!(
            r.header("authorization"),
            Some("Bearer sk-test-secret-123456")
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["model"], "gpt-x");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 7);

        let p = provider("anthropic", "https://api.anthropic.com/v1");
        let r = chat_request(&p, &p.credentials[0], "claude", &req(), false, false).unwrap();
        assert_eq!(r.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(r.header("x-api-key"), Some("sk-test-secret-123456"));
        assert_eq!(r.header("anthropic-version"), Some(ANTHROPIC_VERSION));
        assert_eq!(r.header("authorization"), None);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["max_tokens"], 7);

        let p = provider("gemini", "https://generativelanguage.googleapis.com/v1beta");
        let r = chat_request(&p, &p.credentials[0], "gemini-2.5", &req(), true, false).unwrap();
        assert_eq!(
            r.url,
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5:streamGenerateContent?alt=sse"
        );
        assert!(!r.url.contains("key="));
        assert_eq!(r.header("x-goog-api-key"), Some("sk-test-secret-123456"));
    }

    #[test]
    fn test_provider_query_is_encoded_and_appended() {
        let mut p = provider("azure", "https://x.openai.azure.com/openai");
        p.query
            .insert("api-version".into(), "2024-10 preview&x".into());
        let r = chat_request(&p, &p.credentials[0], "dep 1", &req(), false, false).unwrap();
        assert_eq!(
            r.url,
            "https://x.openai.azure.com/openai/deployments/dep%201/chat/completions?api-version=2024-10+preview%26x"
        );
        assert_eq!(r.header("api-key"), Some("sk-test-secret-123456"));
        let mut g = provider("gemini", "https://g.example.com/v1beta");
        g.query.insert("x".into(), "1".into());
        let r = chat_request(&g, &g.credentials[0], "m", &req(), true, false).unwrap();
        assert!(
            r.url.ends_with(":streamGenerateContent?alt=sse&x=1"),
            "{}",
            r.url
        );
    }

    #[test]
    fn test_anthropic_version_not_doubled_when_provider_sets_it() {
        let mut p = provider("anthropic", "https://api.anthropic.com/v1");
        p.headers
            .insert("Anthropic-Version".into(), "2024-01-01".into());
        let h = auth_headers(&p, &p.credentials[0]);
        let versions: Vec<_> = h
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("anthropic-version"))
            .collect();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].1, "2024-01-01");
        let probe = models_probe(&p, &p.credentials[0], false).unwrap();
        assert_eq!(probe.method, UpstreamMethod::Get);
        assert_eq!(probe.url, "https://api.anthropic.com/v1/models");
        assert!(probe.header("content-type").is_none());
    }

    #[test]
    fn test_loopback_refused_unless_allowed() {
        for base in [
            "http://127.0.0.1:9/v1",
            "http://localhost/v1",
            "http://[::1]/v1",
        ] {
            let p = provider("openai", base);
            assert!(chat_request(&p, &p.credentials[0], "m", &req(), false, false).is_err());
            assert!(chat_request(&p, &p.credentials[0], "m", &req(), false, true).is_ok());
        }
        for base in ["http://10.0.0.2/v1", "http://169.254.169.254/v1"] {
            let p = provider("openai", base);
            for allow in [false, true] {
                assert!(chat_request(&p, &p.credentials[0], "m", &req(), false, allow).is_err());
            }
        }
    }

    #[test]
    fn test_debug_hides_credentials() {
        let p = provider("openai", "https://api.example.com/v1");
        let r = chat_request(&p, &p.credentials[0], "m", &req(), false, false).unwrap();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("sk-test-secret"), "{dbg}");
    }

    #[test]
    fn test_error_message_is_short_and_redacted() {
        let m =
            error_message(r#"{"error":{"message":"bad key sk-abcdefghijklmnopqrstuvwxyz used"}}"#);
        assert!(!m.contains("abcdefghijklmnop"), "{m}");
        assert_eq!(
            error_message("<html>502</html>"),
            "The upstream provider returned an error."
        );
    }

    fn chat(v: Value) -> oa::ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn test_screen_openai_refuses_priced_extras_and_drops_unknown() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        for (field, value) in [
            ("web_search_options", json!({})),
            ("audio", json!({"voice": "alloy", "format": "wav"})),
            ("modalities", json!(["text", "audio"])),
        ] {
            let mut v = base.clone();
            v[field] = value;
            let e = screen_chat_request(&mut chat(v)).unwrap_err();
            assert_eq!(e.http_status(), 400);
            assert_eq!(e.param(), Some(field));
        }
        let mut v = base.clone();
        v["tools"] = json!([{"type": "builtin_function", "function": {"name": "$web_search"}}]);
        assert!(screen_chat_request(&mut chat(v)).is_err());
        let mut v = base.clone();
        v["n"] = json!(MAX_N + 1);
        assert!(screen_chat_request(&mut chat(v)).is_err());

        let mut v = base;
        v["service_tier"] = json!("priority");
        v["logprobs"] = json!(true);
        v["surprise"] = json!(1);
        v["modalities"] = json!(["text"]);
        let mut r = chat(v);
        screen_chat_request(&mut r).unwrap();
        assert!(r.extra.get("service_tier").is_none());
        assert!(r.extra.get("surprise").is_none());
        assert_eq!(r.extra.get("logprobs"), Some(&json!(true)));
    }

    #[test]
    fn test_screen_anthropic_refuses_server_tools() {
        let mut ok = json!({"model": "m", "max_tokens": 5, "messages": [],
            "tools": [{"name": "f", "input_schema": {}}, {"type": "custom", "name": "g", "input_schema": {}}],
            "service_tier": "auto", "cache_stuff": 1});
        let obj = ok.as_object_mut().unwrap();
        screen_anthropic_body(obj).unwrap();
        assert!(obj.get("service_tier").is_none());
        assert!(obj.get("cache_stuff").is_none());
        assert!(obj.get("tools").is_some());
        for bad in [
            json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 50}]}),
            json!({"mcp_servers": [{"type": "url", "url": "https://x"}]}),
            json!({"container": "c1"}),
        ] {
            let mut b = bad;
            let e = screen_anthropic_body(b.as_object_mut().unwrap()).unwrap_err();
            assert_eq!(e.http_status(), 400, "{e}");
        }
    }
}
