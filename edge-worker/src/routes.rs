//! The one route table of the worker: every path it answers, after `PATH_PREFIX` was
//! stripped once ([`crate::config::Config::strip_prefix`]).
//!
//! # The model API pipeline, in order
//!
//! Every request first passes [`crate::middleware`]: request id and context, probe
//! filtering and CORS preflight, the declared body size (before anything is read or
//! authenticated); errors come back in the caller's shape, every response is stamped
//! (`x-request-id`, `x-tollbooth-overhead-ms`) and logged once. Then, for a model call
//! ([`crate::handlers::chat`], [`crate::handlers::json`]):
//!
//! 1. **body** — read with the streamed-length bound, parsed once into the ingress's
//!    shape ([`crate::pipeline::ingress`]: `Ingress::{OpenAiChat, AnthropicMessages,
//!    Responses, Gemini}`),
//!    screened by the forwarded-field allow-list (`tollbooth_core::provider`).
//! 2. **auth** — `Authorization: Bearer` / `x-api-key`, KV `KEYS`, hash check
//!    ([`crate::auth`]); 401 / 403.
//! 3. **permissions and price** — the plan and the key allow the model; the model is
//!    priced (or marked free); 404 / 403.
//! 4. **estimate** — the whole body, `n`, the output cap that is then always sent
//!    upstream ([`crate::pipeline::metering`]).
//! 5. **admission** — rate limits and the reservation in one D1 batch
//!    ([`crate::ledger::admit`]); 429 / 402. It yields a [`crate::pipeline::metering::Settlement`]
//!    guard that settles exactly once on every exit path.
//! 6. **attempts** — candidate order, breakers, retry and fallback before the first
//!    byte ([`crate::pipeline::attempts`]). Admission and attempts are separate steps
//!    with no data flowing from the first into the second (the seam for speculative
//!    admission).
//! 7. **translate and stream** — upstream bytes → hub chunks → the caller's events
//!    (`tollbooth_core::translate::hub`, [`crate::pipeline::stream`]); the first event
//!    is peeked before the 200 is committed.
//! 8. **settle** — with the provider's usage, in `ctx.wait_until`; a failed settlement
//!    is retried, then left as a durable pending record the cron finishes.

use tollbooth_core::translate::hub::Ingress;
use worker::Method;

/// What handles a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/internal/v1/...`: the signed internal API (any method).
    Internal,
    /// `GET /v1/user-profile`.
    MemberProfile,
    /// `GET /api/usage`.
    MemberUsage,
    /// `GET /api/v1/key`.
    MemberKey,
    /// Control-plane paths forwarded to `ADMIN_ORIGIN`.
    FrontDoor,
    /// `GET /v1/chat/completions/ws` (also `/chat/completions/ws` and `/ws/chat`).
    Ws,
    /// `/{domain}/{api_path}`: the operators' pass-through proxy.
    Passthrough,
    /// `GET /health`.
    Health,
    /// `POST /v1/chat/completions` (`/chat/completions`) and `POST /v1/messages`.
    Chat(Ingress),
    /// `POST /v1/embeddings` (`/embeddings`).
    Embeddings,
    /// `POST /v1/rerank` (`/rerank`).
    Rerank,
    /// `GET /v1/models` (`/models`).
    Models,
    // --- ingress stream: the other protocols' routes (issue 15) ---
    /// `GET` / `DELETE /v1/responses/{id}` (and below): responses are not stored, 404.
    ResponsesStored,
    /// `POST /v1/messages/count_tokens` (`AnthropicMessages`) and
    /// `POST /v1beta/models/{model}:countTokens` (`Gemini`): authenticated, not billed.
    CountTokens(Ingress),
    /// `GET /v1beta/models`.
    GeminiModels,
    /// `GET /v1beta/models/{model}`.
    GeminiModel,
    NotFound,
}

/// The method of a Gemini model route (`models/{model}:<method>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiMethod {
    Generate,
    Stream,
    CountTokens,
}

/// Gemini routes live under this prefix.
pub const GEMINI_MODELS_PREFIX: &str = "/v1beta/models/";

/// Percent-decodes a path segment (`%2F` → `/`); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The model and method of `/v1beta/models/{model}:<method>` (the model may itself hold
/// `/` or `:`: the method is after the last `:`).
pub fn gemini_target(path: &str) -> Option<(String, GeminiMethod)> {
    let rest = path.strip_prefix(GEMINI_MODELS_PREFIX)?;
    let (model, method) = rest.rsplit_once(':')?;
    let method = match method {
        "generateContent" => GeminiMethod::Generate,
        "streamGenerateContent" => GeminiMethod::Stream,
        "countTokens" => GeminiMethod::CountTokens,
        _ => return None,
    };
    let model = percent_decode(model);
    (!model.is_empty()).then_some((model, method))
}

/// The model of `GET /v1beta/models/{model}`.
pub fn gemini_model(path: &str) -> Option<String> {
    let model = percent_decode(path.strip_prefix(GEMINI_MODELS_PREFIX)?);
    (!model.is_empty()).then_some(model)
}

/// The routes of the Responses and Gemini ingresses and the count_tokens endpoints.
fn ingress_route(method: &Method, path: &str) -> Option<Route> {
    match (method, path) {
        (Method::Post, "/v1/responses") => return Some(Route::Chat(Ingress::Responses)),
        (Method::Post, "/v1/messages/count_tokens") => {
            return Some(Route::CountTokens(Ingress::AnthropicMessages))
        }
        (Method::Get, "/v1beta/models") => return Some(Route::GeminiModels),
        (Method::Get | Method::Delete, p) if p.starts_with("/v1/responses/") => {
            return Some(Route::ResponsesStored)
        }
        _ => {}
    }
    match method {
        Method::Post => match gemini_target(path)?.1 {
            GeminiMethod::Generate | GeminiMethod::Stream => Some(Route::Chat(Ingress::Gemini)),
            GeminiMethod::CountTokens => Some(Route::CountTokens(Ingress::Gemini)),
        },
        Method::Get if !path.contains(':') => gemini_model(path).map(|_| Route::GeminiModel),
        _ => None,
    }
}

/// The route for a method and a path (already without `PATH_PREFIX`).
pub fn route(method: &Method, path: &str) -> Route {
    if path.starts_with("/internal/v1/") {
        return Route::Internal;
    }
    match (method, path) {
        (Method::Get, "/v1/user-profile") => return Route::MemberProfile,
        (Method::Get, "/api/usage") => return Route::MemberUsage,
        (Method::Get, "/api/v1/key") => return Route::MemberKey,
        (Method::Get, "/health") => return Route::Health,
        (Method::Post, "/v1/chat/completions" | "/chat/completions") => {
            return Route::Chat(Ingress::OpenAiChat)
        }
        (Method::Post, "/v1/messages") => return Route::Chat(Ingress::AnthropicMessages),
        (Method::Post, "/v1/embeddings" | "/embeddings") => return Route::Embeddings,
        (Method::Post, "/v1/rerank" | "/rerank") => return Route::Rerank,
        (Method::Get, "/v1/models" | "/models") => return Route::Models,
        (Method::Get, "/v1/chat/completions/ws" | "/chat/completions/ws" | "/ws/chat") => {
            return Route::Ws
        }
        _ => {}
    }
    if let Some(r) = ingress_route(method, path) {
        return r;
    }
    if is_front_door_path(path) {
        return Route::FrontDoor;
    }
    if is_passthrough_path(path) {
        return Route::Passthrough;
    }
    Route::NotFound
}

impl Route {
    /// The protocol errors are rendered in.
    pub fn error_shape(self, path: &str) -> Ingress {
        match self {
            Route::Chat(ingress) | Route::CountTokens(ingress) => ingress,
            Route::GeminiModels | Route::GeminiModel => Ingress::Gemini,
            Route::NotFound if path.starts_with("/v1beta/") => Ingress::Gemini,
            Route::Passthrough if path.ends_with("/v1/messages") => Ingress::AnthropicMessages,
            _ => Ingress::OpenAiChat,
        }
    }

    /// The largest body the route accepts, checked on the declared length before
    /// anything is read or authenticated, and again on the bytes read.
    pub fn body_limit(self, max_body: u64, internal_max_body: u64) -> u64 {
        match self {
            Route::Internal => internal_max_body,
            _ => max_body,
        }
    }
}

/// Control-plane paths: `/api/...` (except the member endpoints the edge answers),
/// `/authorization`, `/v1/verify-token` and `/webhooks/...`.
pub fn is_front_door_path(path: &str) -> bool {
    if matches!(path, "/api/usage" | "/api/v1/key") {
        return false;
    }
    path.starts_with("/api/")
        || path == "/authorization"
        || path == "/v1/verify-token"
        || path.starts_with("/webhooks/")
}

/// Whether the first path segment names a host (the pass-through proxy).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_one_table_for_every_path() {
        let cases = [
            (Method::Post, "/internal/v1/keys/k1", Route::Internal),
            (Method::Get, "/internal/v1/usage", Route::Internal),
            (Method::Get, "/v1/user-profile", Route::MemberProfile),
            (Method::Get, "/api/usage", Route::MemberUsage),
            (Method::Get, "/api/v1/key", Route::MemberKey),
            (Method::Post, "/api/auth/login", Route::FrontDoor),
            (Method::Get, "/authorization", Route::FrontDoor),
            (Method::Get, "/v1/verify-token", Route::FrontDoor),
            (Method::Post, "/webhooks/stripe", Route::FrontDoor),
            (Method::Get, "/v1/chat/completions/ws", Route::Ws),
            (Method::Get, "/chat/completions/ws", Route::Ws),
            (Method::Get, "/ws/chat", Route::Ws),
            (Method::Post, "/ws/chat", Route::NotFound),
            (
                Method::Post,
                "/api.openai.com/v1/models",
                Route::Passthrough,
            ),
            (Method::Get, "/127.0.0.1:9/v1", Route::Passthrough),
            (Method::Get, "/health", Route::Health),
            (
                Method::Post,
                "/v1/chat/completions",
                Route::Chat(Ingress::OpenAiChat),
            ),
            (
                Method::Post,
                "/chat/completions",
                Route::Chat(Ingress::OpenAiChat),
            ),
            (
                Method::Post,
                "/v1/messages",
                Route::Chat(Ingress::AnthropicMessages),
            ),
            (Method::Post, "/embeddings", Route::Embeddings),
            (Method::Post, "/v1/rerank", Route::Rerank),
            (Method::Get, "/models", Route::Models),
            (Method::Get, "/v1/chat/completions", Route::NotFound),
            (Method::Get, "/apis", Route::NotFound),
            (Method::Get, "/authorization/x", Route::NotFound),
            (
                Method::Post,
                "/v1/responses",
                Route::Chat(Ingress::Responses),
            ),
            (Method::Get, "/v1/responses/resp_1", Route::ResponsesStored),
            (
                Method::Delete,
                "/v1/responses/resp_1",
                Route::ResponsesStored,
            ),
            (Method::Get, "/v1/responses", Route::NotFound),
            (
                Method::Post,
                "/v1/messages/count_tokens",
                Route::CountTokens(Ingress::AnthropicMessages),
            ),
            (
                Method::Post,
                "/v1beta/models/gemini-2.5-pro:generateContent",
                Route::Chat(Ingress::Gemini),
            ),
            (
                Method::Post,
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
                Route::Chat(Ingress::Gemini),
            ),
            (
                Method::Post,
                "/v1beta/models/g:countTokens",
                Route::CountTokens(Ingress::Gemini),
            ),
            (
                Method::Post,
                "/v1beta/models/g:embedContent",
                Route::NotFound,
            ),
            (
                Method::Post,
                "/v1beta/models/:generateContent",
                Route::NotFound,
            ),
            (Method::Get, "/v1beta/models", Route::GeminiModels),
            (
                Method::Get,
                "/v1beta/models/gemini-2.5-pro",
                Route::GeminiModel,
            ),
            (Method::Get, "/v1beta/models/", Route::NotFound),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(&m, p), want, "{m:?} {p}");
        }
    }

    #[test]
    fn test_gemini_targets_and_error_shapes() {
        assert_eq!(
            gemini_target("/v1beta/models/oa%2Fgpt-up:streamGenerateContent"),
            Some(("oa/gpt-up".to_owned(), GeminiMethod::Stream))
        );
        assert_eq!(
            gemini_target("/v1beta/models/a:b:generateContent"),
            Some(("a:b".to_owned(), GeminiMethod::Generate))
        );
        assert_eq!(gemini_target("/v1/models/g:generateContent"), None);
        assert_eq!(
            Route::NotFound.error_shape("/v1beta/models/x:nope"),
            Ingress::Gemini
        );
        assert_eq!(
            Route::Chat(Ingress::Gemini).error_shape("/v1beta/models/x:generateContent"),
            Ingress::Gemini
        );
        assert_eq!(
            Route::ResponsesStored.error_shape("/v1/responses/x"),
            Ingress::OpenAiChat
        );
    }

    #[test]
    fn test_error_shape_and_body_limits() {
        assert_eq!(
            Route::Chat(Ingress::AnthropicMessages).error_shape("/v1/messages"),
            Ingress::AnthropicMessages
        );
        assert_eq!(
            Route::Passthrough.error_shape("/api.anthropic.com/v1/messages"),
            Ingress::AnthropicMessages
        );
        assert_eq!(Route::Models.error_shape("/v1/models"), Ingress::OpenAiChat);
        assert_eq!(Route::Internal.body_limit(8, 4), 4);
        assert_eq!(Route::Embeddings.body_limit(8, 4), 8);
    }
}
