//! The hub pipeline's pure composition: everything between the upstream's bytes and the
//! caller's bytes, for every upstream protocol and every ingress.
//!
//! ```text
//! upstream bytes ──HubDecoder──▶ hub chunks (OpenAI chat chunks) ──HubEncoder──▶ caller events
//!  (SSE of OpenAI,               + usage, + the upstream's own     (OpenAI SSE, Anthropic SSE,
//!   Anthropic or Gemini)           events when forwarded raw)        or raw Anthropic events)
//! ```
//!
//! - [`HubDecoder`] owns the byte-level SSE decoder and the upstream's stream translator:
//!   feed it network reads in any split with [`HubDecoder::push`], end it with
//!   [`HubDecoder::finish`]. It reports an upstream error (in-stream error event, or a
//!   stream that stopped before its end) once, and counts events it could not read
//!   ([`HubDecoder::unreadable_events`]) instead of dropping them silently.
//! - [`HubEncoder`] turns hub chunks into the caller's events ([`sse::Event`]s: the SSE
//!   transport encodes them with [`sse::encode`], the WebSocket transport sends their
//!   `data`).
//! - [`decode_full`] / [`encode_full`] do the same for whole (non-stream) answers; the
//!   usage is read from the upstream's native answer, so Anthropic cache writes keep
//!   their own price.
//! - [`Ingress`] names the caller's protocol: its error shape, its endpoint, its encoder.
//!   Adding an ingress is a new variant and one arm in each `match` here.
//!
//! No I/O, no clock: ids and timestamps come in as arguments.

use serde_json::Value;

use crate::catalogue::ProviderKind;
use crate::error::{redact_secrets, GatewayError};
use crate::protocol::anthropic as an;
use crate::protocol::gemini as g;
use crate::protocol::openai as oa;
use crate::protocol::responses as rs;
use crate::sse;
use crate::translate::responses_ingress::{self as ri, ResponsesEcho};
use crate::translate::{
    anthropic as tan, gemini as tg, gemini_ingress as gi, responses_upstream as tru,
};
use crate::usage::Usage;

/// The protocol the caller speaks on the model API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// `POST /v1/chat/completions` (also the WebSocket chat).
    OpenAiChat,
    /// `POST /v1/messages`.
    AnthropicMessages,
    /// `POST /v1/responses` (OpenAI Responses API).
    Responses,
    /// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`.
    Gemini,
}

impl Ingress {
    /// The endpoint name recorded in logs and usage.
    pub fn endpoint(self) -> &'static str {
        match self {
            Ingress::OpenAiChat => "/v1/chat/completions",
            Ingress::AnthropicMessages => "/v1/messages",
            Ingress::Responses => "/v1/responses",
            Ingress::Gemini => "/v1beta/models:generateContent",
        }
    }

    /// The error body in this protocol's shape.
    pub fn error_body(self, err: &GatewayError) -> Value {
        match self {
            Ingress::OpenAiChat | Ingress::Responses => err.openai_body(),
            Ingress::AnthropicMessages => err.anthropic_body(),
            Ingress::Gemini => gemini_error_body(err),
        }
    }
}

/// A gateway error in Gemini's shape: `{"error":{"code","message","status"}}`.
pub fn gemini_error_body(err: &GatewayError) -> Value {
    serde_json::to_value(gi::error_response(err.http_status(), err.safe_message()))
        .unwrap_or(Value::Null)
}

/// What an ingress's answers need from its request beyond the model name: the
/// Responses echo (ids, echoed parameters, the tool map), Gemini's stream framing.
#[derive(Debug, Clone)]
pub enum IngressContext {
    OpenAiChat,
    AnthropicMessages,
    Responses(Box<ResponsesEcho>),
    /// `alt_sse`: the request had `alt=sse` (else the streamed JSON array).
    Gemini {
        alt_sse: bool,
    },
}

impl IngressContext {
    /// The ingress this context belongs to.
    pub fn ingress(&self) -> Ingress {
        match self {
            IngressContext::OpenAiChat => Ingress::OpenAiChat,
            IngressContext::AnthropicMessages => Ingress::AnthropicMessages,
            IngressContext::Responses(_) => Ingress::Responses,
            IngressContext::Gemini { .. } => Ingress::Gemini,
        }
    }

    /// A context without request facts (a Responses echo of an empty request, Gemini
    /// SSE framing), for callers that have none.
    pub fn bare(ingress: Ingress, id: &str, model: &str) -> Self {
        match ingress {
            Ingress::OpenAiChat => IngressContext::OpenAiChat,
            Ingress::AnthropicMessages => IngressContext::AnthropicMessages,
            Ingress::Responses => IngressContext::Responses(Box::new(ResponsesEcho::new(
                &rs::ResponsesRequest::default(),
                id,
                0,
                model,
                false,
            ))),
            Ingress::Gemini => IngressContext::Gemini { alt_sse: true },
        }
    }
}

/// A per-event stream translator: feed events one at a time, then `finish` at the end of
/// the stream. Implemented by every translator in [`crate::translate`].
pub trait StreamTranslator {
    type Input;
    type Output;
    fn on_input(&mut self, input: Self::Input) -> Vec<Self::Output>;
    fn finish_stream(&mut self) -> Vec<Self::Output>;
}

impl StreamTranslator for tan::AnthropicToOpenAiStream {
    type Input = an::StreamEvent;
    type Output = oa::ChatCompletionChunk;
    fn on_input(&mut self, input: an::StreamEvent) -> Vec<oa::ChatCompletionChunk> {
        self.on_event(input)
    }
    fn finish_stream(&mut self) -> Vec<oa::ChatCompletionChunk> {
        self.finish()
    }
}

impl StreamTranslator for tg::GeminiStreamTranslator {
    type Input = g::StreamPayload;
    type Output = oa::ChatCompletionChunk;
    fn on_input(&mut self, input: g::StreamPayload) -> Vec<oa::ChatCompletionChunk> {
        self.on_payload(input)
    }
    fn finish_stream(&mut self) -> Vec<oa::ChatCompletionChunk> {
        self.finish()
    }
}

impl StreamTranslator for tan::OpenAiToAnthropicStream {
    type Input = oa::ChatCompletionChunk;
    type Output = an::StreamEvent;
    fn on_input(&mut self, input: oa::ChatCompletionChunk) -> Vec<an::StreamEvent> {
        self.on_event(input)
    }
    fn finish_stream(&mut self) -> Vec<an::StreamEvent> {
        self.finish()
    }
}

/// What one push into a [`HubDecoder`] produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    /// Hub chunks, in order.
    pub chunks: Vec<oa::ChatCompletionChunk>,
    /// The upstream's own events, when the decoder keeps them (raw forwarding).
    pub raw: Vec<sse::Event>,
    /// The upstream failed: an in-stream error, or the stream ended before it was
    /// complete. Safe to show (redacted). Reported once; nothing is decoded after it.
    pub error: Option<String>,
}

impl Decoded {
    /// Nothing was decoded.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.raw.is_empty() && self.error.is_none()
    }

    fn append(&mut self, other: Decoded) {
        self.chunks.extend(other.chunks);
        self.raw.extend(other.raw);
        if self.error.is_none() {
            self.error = other.error;
        }
    }
}

enum Upstream {
    OpenAi { usage: Option<Usage>, done: bool },
    Anthropic(Box<tan::AnthropicToOpenAiStream>),
    Gemini(Box<tg::GeminiStreamTranslator>),
    Responses(Box<tru::ResponsesToHubStream>),
}

/// Upstream stream bytes → hub chunks, whatever the upstream protocol (see the module
/// docs). Translators always produce the usage chunk; the encoder decides whether the
/// caller sees it.
pub struct HubDecoder {
    sse: sse::Decoder,
    upstream: Upstream,
    keep_raw: bool,
    failed: bool,
    unreadable: u64,
}

impl HubDecoder {
    /// `id`, `created` and `model` label the hub chunks of protocols that do not carry
    /// them (Gemini). `keep_raw` also returns the upstream's own events.
    pub fn new(kind: ProviderKind, id: &str, created: u64, model: &str, keep_raw: bool) -> Self {
        let upstream = match kind {
            ProviderKind::Openai | ProviderKind::Azure => Upstream::OpenAi {
                usage: None,
                done: false,
            },
            ProviderKind::Anthropic => {
                Upstream::Anthropic(Box::new(tan::AnthropicToOpenAiStream::new(created, true)))
            }
            ProviderKind::Gemini => Upstream::Gemini(Box::new(tg::GeminiStreamTranslator::new(
                id, created, model, true,
            ))),
            ProviderKind::Responses => Upstream::Responses(Box::new(
                tru::ResponsesToHubStream::new(id, created, model, true),
            )),
        };
        HubDecoder {
            sse: sse::Decoder::new(),
            upstream,
            keep_raw,
            failed: false,
            unreadable: 0,
        }
    }

    /// Feeds the next bytes of the upstream body.
    pub fn push(&mut self, bytes: &[u8]) -> Decoded {
        let events = self.sse.push(bytes);
        self.events(events)
    }

    /// The upstream body ended: flushes the last event and ends the translator. An
    /// upstream that stopped before its end is reported as an error.
    pub fn finish(&mut self) -> Decoded {
        let events = self.sse.finish();
        let mut out = self.events(events);
        if self.failed {
            return out;
        }
        let end = match &mut self.upstream {
            Upstream::OpenAi { .. } => Ok(Vec::new()),
            Upstream::Anthropic(t) => {
                let chunks = t.finish_stream();
                match t.error() {
                    Some(e) => Err(redact_secrets(&e.message)),
                    None => Ok(chunks),
                }
            }
            Upstream::Gemini(t) => {
                let chunks = t.finish_stream();
                match t.upstream_error() {
                    Some(e) => Err(redact_secrets(&e.message)),
                    None => Ok(chunks),
                }
            }
            Upstream::Responses(t) => {
                let chunks = t.finish();
                match t.error() {
                    Some(e) => Err(redact_secrets(&e.message)),
                    None => Ok(chunks),
                }
            }
        };
        match end {
            Ok(chunks) => out.chunks.extend(chunks),
            Err(m) => {
                self.failed = true;
                out.error.get_or_insert(m);
            }
        }
        out
    }

    fn events(&mut self, events: Vec<sse::Event>) -> Decoded {
        let mut out = Decoded::default();
        for ev in events {
            if self.failed {
                break;
            }
            let decoded = self.event(&ev);
            // An OpenAI upstream's raw events are the chunks only (relayed as they are);
            // `[DONE]`, errors and unreadable events are the encoder's to write.
            let relay = match self.upstream {
                Upstream::OpenAi { .. } => !decoded.chunks.is_empty(),
                _ => true,
            };
            if self.keep_raw && relay {
                out.raw.push(ev);
            }
            if decoded.error.is_some() {
                self.failed = true;
            }
            out.append(decoded);
        }
        out
    }

    fn event(&mut self, ev: &sse::Event) -> Decoded {
        let mut out = Decoded::default();
        match &mut self.upstream {
            Upstream::OpenAi { usage, done } => {
                if *done {
                    return out;
                }
                match oa::ChatStreamItem::parse(&ev.data) {
                    Ok(oa::ChatStreamItem::Chunk(c)) => {
                        if let Some(u) = &c.usage {
                            *usage = Some(Usage::from(u));
                        }
                        out.chunks.push(c);
                    }
                    Ok(oa::ChatStreamItem::Done) => *done = true,
                    Ok(oa::ChatStreamItem::Error(e)) => {
                        out.error = Some(redact_secrets(&e.error.message))
                    }
                    Err(_) => self.unreadable = self.unreadable.saturating_add(1),
                }
            }
            Upstream::Anthropic(t) => match an::StreamEvent::from_data(&ev.data) {
                Ok(event) => {
                    out.chunks = t.on_input(event);
                    if let Some(e) = t.error() {
                        out.error = Some(redact_secrets(&e.message));
                    }
                }
                Err(_) => self.unreadable = self.unreadable.saturating_add(1),
            },
            Upstream::Gemini(t) => match g::StreamPayload::parse(&ev.data) {
                Ok(payload) => {
                    out.chunks = t.on_input(payload);
                    if let Some(e) = t.upstream_error() {
                        out.error = Some(redact_secrets(&e.message));
                    }
                }
                Err(_) => self.unreadable = self.unreadable.saturating_add(1),
            },
            Upstream::Responses(t) => match rs::StreamEvent::from_data(&ev.data) {
                Ok(event) => {
                    out.chunks = t.on_event(event);
                    if let Some(e) = t.error() {
                        out.error = Some(redact_secrets(&e.message));
                    }
                }
                Err(_) => self.unreadable = self.unreadable.saturating_add(1),
            },
        }
        out
    }

    /// Usage the provider reported so far.
    pub fn usage(&self) -> Option<Usage> {
        match &self.upstream {
            Upstream::OpenAi { usage, .. } => *usage,
            Upstream::Anthropic(t) => t.usage(),
            Upstream::Gemini(t) => t.usage(),
            Upstream::Responses(t) => t.usage(),
        }
    }

    /// Events that could not be read: unparseable payloads and events over the SSE size
    /// bound. Logged by the caller; a billing-relevant final event lost this way shows up
    /// as a missing usage (billed as an estimate).
    pub fn unreadable_events(&self) -> u64 {
        self.unreadable.saturating_add(self.sse.dropped_events())
    }

    /// Whether the upstream reported an error (nothing more is decoded).
    pub fn failed(&self) -> bool {
        self.failed
    }
}

/// Hub chunks → the caller's events.
pub enum HubEncoder {
    /// OpenAI chat SSE; the usage chunk only when the caller asked for it.
    OpenAi { include_usage: bool, model: String },
    /// OpenAI chat SSE from an OpenAI-compatible upstream: each chunk's bytes relayed
    /// as the upstream sent them, with `model` patched in place ([`patch_model`]) and the
    /// usage-only chunk dropped unless asked for; no chunk is re-serialised. The
    /// gateway still writes errors and `[DONE]` itself, as [`HubEncoder::OpenAi`].
    OpenAiRelay { include_usage: bool, model: String },
    /// Anthropic Messages events translated from the hub.
    Anthropic(Box<tan::OpenAiToAnthropicStream>),
    /// `/v1/messages` against an Anthropic upstream: the upstream's own events, only
    /// `message.model` rewritten, so thinking signatures, cache usage and unknown event
    /// types reach the caller unchanged.
    AnthropicRaw { model: String },
    /// OpenAI Responses events translated from the hub.
    Responses(Box<ri::HubToResponsesStream>),
    /// `/v1/responses` against a Responses upstream: the upstream's own events, only the
    /// response's `model` rewritten (reasoning items with `encrypted_content` pass).
    ResponsesRaw { model: String },
    /// Gemini stream chunks, already framed for the wire (SSE or the JSON array): the
    /// events' `data` is written verbatim (see [`HubEncoder::wire`]).
    Gemini {
        stream: Box<gi::HubToGeminiStream>,
        framer: gi::GeminiStreamFramer,
    },
}

impl HubEncoder {
    /// The encoder for `ingress`. `model` is the name the caller asked for (what it sees
    /// in every event), `message_id` the id of an Anthropic message, `include_usage` the
    /// OpenAI caller's `stream_options.include_usage`, `raw` forwards Anthropic events.
    pub fn new(
        ingress: Ingress,
        model: &str,
        message_id: &str,
        include_usage: bool,
        raw: bool,
    ) -> Self {
        let ctx = IngressContext::bare(ingress, message_id, model);
        Self::for_context(&ctx, model, message_id, include_usage, raw)
    }

    /// The encoder for the ingress of `ctx`, with the request's facts (see
    /// [`HubEncoder::new`]; `message_id` is also the Gemini response id, `raw` forwards
    /// Anthropic or Responses events).
    pub fn for_context(
        ctx: &IngressContext,
        model: &str,
        message_id: &str,
        include_usage: bool,
        raw: bool,
    ) -> Self {
        match ctx.ingress() {
            Ingress::OpenAiChat if raw => HubEncoder::OpenAiRelay {
                include_usage,
                model: model.to_owned(),
            },
            Ingress::OpenAiChat => HubEncoder::OpenAi {
                include_usage,
                model: model.to_owned(),
            },
            Ingress::AnthropicMessages if raw => HubEncoder::AnthropicRaw {
                model: model.to_owned(),
            },
            Ingress::AnthropicMessages => HubEncoder::Anthropic(Box::new(
                tan::OpenAiToAnthropicStream::new(message_id, model),
            )),
            Ingress::Responses if raw => HubEncoder::ResponsesRaw {
                model: model.to_owned(),
            },
            Ingress::Responses => {
                let echo = match ctx {
                    IngressContext::Responses(echo) => (**echo).clone(),
                    _ => ResponsesEcho::new(
                        &rs::ResponsesRequest::default(),
                        message_id,
                        0,
                        model,
                        false,
                    ),
                };
                HubEncoder::Responses(Box::new(ri::HubToResponsesStream::new(echo)))
            }
            Ingress::Gemini => {
                let alt_sse = match ctx {
                    IngressContext::Gemini { alt_sse } => *alt_sse,
                    _ => true,
                };
                HubEncoder::Gemini {
                    stream: Box::new(gi::HubToGeminiStream::new(model, message_id)),
                    framer: gi::GeminiStreamFramer::new(alt_sse),
                }
            }
        }
    }

    /// Whether the encoder forwards the upstream's own events.
    pub fn is_raw(&self) -> bool {
        matches!(
            self,
            HubEncoder::AnthropicRaw { .. } | HubEncoder::ResponsesRaw { .. }
        )
    }

    /// The `Content-Type` of the stream this encoder writes.
    pub fn content_type(&self) -> &'static str {
        match self {
            HubEncoder::Gemini { framer, .. } => framer.content_type(),
            _ => "text/event-stream; charset=utf-8",
        }
    }

    /// Whether the events' `data` is already the wire text (Gemini's framing).
    pub fn is_verbatim(&self) -> bool {
        matches!(self, HubEncoder::Gemini { .. })
    }

    /// The bytes of `events` on the wire (see [`wire_bytes`]).
    pub fn wire(&self, events: &[sse::Event]) -> String {
        wire_bytes(events, self.is_verbatim())
    }

    /// Encodes what a decoder produced (its error is the caller's to handle: see
    /// [`HubEncoder::error`]).
    pub fn encode(&mut self, decoded: Decoded, out: &mut Vec<sse::Event>) {
        if self.is_raw() || matches!(self, HubEncoder::OpenAiRelay { .. }) {
            for ev in &decoded.raw {
                self.raw(ev, out);
            }
        } else {
            for c in decoded.chunks {
                self.chunk(c, out);
            }
        }
    }

    /// One hub chunk (ignored in raw mode).
    pub fn chunk(&mut self, mut c: oa::ChatCompletionChunk, out: &mut Vec<sse::Event>) {
        match self {
            HubEncoder::OpenAi {
                include_usage,
                model,
            } => {
                if !*include_usage {
                    if c.choices.is_empty() && c.usage.is_some() {
                        return;
                    }
                    c.usage = None;
                }
                c.model.clone_from(model);
                if let Ok(s) = serde_json::to_string(&c) {
                    out.push(sse::Event::data(s));
                }
            }
            HubEncoder::Anthropic(t) => {
                for ev in t.on_input(c) {
                    push_anthropic(&ev, out);
                }
            }
            HubEncoder::Responses(t) => {
                for ev in t.on_event(c) {
                    push_responses(&ev, out);
                }
            }
            HubEncoder::Gemini { stream, framer } => {
                for g in stream.on_event(c) {
                    out.push(sse::Event::data(framer.chunk(&g)));
                }
            }
            HubEncoder::AnthropicRaw { .. } | HubEncoder::ResponsesRaw { .. } => {}
            HubEncoder::OpenAiRelay {
                include_usage,
                model,
            } => {
                // A hub chunk given to the relay (a whole answer re-emitted): as OpenAi.
                if !*include_usage {
                    if c.choices.is_empty() && c.usage.is_some() {
                        return;
                    }
                    c.usage = None;
                }
                c.model.clone_from(model);
                if let Ok(s) = serde_json::to_string(&c) {
                    out.push(sse::Event::data(s));
                }
            }
        }
    }

    /// One upstream event forwarded as is (raw mode only).
    pub fn raw(&mut self, ev: &sse::Event, out: &mut Vec<sse::Event>) {
        if let HubEncoder::OpenAiRelay {
            include_usage,
            model,
        } = self
        {
            let data = ev.data.as_str();
            if !*include_usage && is_usage_only(data) {
                return;
            }
            let mut patched = match patch_model(data, model) {
                Some(p) => p,
                None => match serde_json::from_str::<Value>(data) {
                    // Unusual JSON (the pattern was not found): parse, set, serialise.
                    Ok(mut v) => {
                        if let Some(o) = v.as_object_mut() {
                            o.insert("model".into(), Value::String(model.clone()));
                        }
                        v.to_string()
                    }
                    Err(_) => return,
                },
            };
            if !*include_usage {
                patched = patched.replace(",\"usage\":null", "");
            }
            out.push(sse::Event::data(patched));
            return;
        }
        if let HubEncoder::ResponsesRaw { model } = self {
            let mut ev = ev.clone();
            if let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) {
                tru::rewrite_model(&mut v, model);
                ev.data = v.to_string();
            }
            out.push(ev);
            return;
        }
        let HubEncoder::AnthropicRaw { model } = self else {
            return;
        };
        let mut ev = ev.clone();
        if ev.event.as_deref() == Some("message_start") {
            if let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) {
                if let Some(m) = v.get_mut("message").and_then(Value::as_object_mut) {
                    m.insert("model".into(), Value::String(model.clone()));
                }
                ev.data = v.to_string();
            }
        }
        out.push(ev);
    }

    /// Ends the stream with an error event (no `[DONE]` follows).
    pub fn error(&mut self, err: &GatewayError, out: &mut Vec<sse::Event>) {
        match self {
            HubEncoder::OpenAi { .. } | HubEncoder::OpenAiRelay { .. } => {
                out.push(sse::Event::data(err.openai_body().to_string()))
            }
            HubEncoder::Anthropic(t) => {
                let body = oa::ErrorResponse::new(err.openai_type(), err.safe_message()).error;
                for ev in t.on_error(&body) {
                    push_anthropic(&ev, out);
                }
            }
            HubEncoder::AnthropicRaw { .. } => {
                out.push(sse::Event::named("error", err.anthropic_body().to_string()))
            }
            HubEncoder::Responses(t) => {
                let body = oa::ErrorResponse::new(err.openai_type(), err.safe_message()).error;
                for ev in t.on_error(&body) {
                    push_responses(&ev, out);
                }
            }
            HubEncoder::ResponsesRaw { .. } => {
                let body = serde_json::json!({"type": "error", "code": "server_error",
                    "message": err.safe_message(), "param": null, "sequence_number": 0});
                out.push(sse::Event::named("error", body.to_string()));
            }
            HubEncoder::Gemini { framer, .. } => {
                let body = gi::error_response(err.http_status(), err.safe_message());
                out.push(sse::Event::data(framer.error(&body)));
            }
        }
    }

    /// Ends a complete stream.
    pub fn finish(&mut self, out: &mut Vec<sse::Event>) {
        match self {
            HubEncoder::OpenAi { .. } | HubEncoder::OpenAiRelay { .. } => {
                out.push(sse::Event::data(sse::DONE_DATA))
            }
            HubEncoder::Anthropic(t) => {
                for ev in t.finish_stream() {
                    push_anthropic(&ev, out);
                }
            }
            // The upstream's own `message_stop` / `response.completed` was forwarded.
            HubEncoder::AnthropicRaw { .. } | HubEncoder::ResponsesRaw { .. } => {}
            HubEncoder::Responses(t) => {
                for ev in t.finish() {
                    push_responses(&ev, out);
                }
            }
            HubEncoder::Gemini { stream, framer } => {
                let mut text = String::new();
                for g in stream.finish() {
                    text.push_str(&framer.chunk(&g));
                }
                text.push_str(&framer.finish());
                if !text.is_empty() {
                    out.push(sse::Event::data(text));
                }
            }
        }
    }
}

/// Whether an OpenAI chunk's JSON is the usage-only chunk (`"choices":[]` with a usage
/// object), by a byte scan of the compact JSON providers send.
fn is_usage_only(data: &str) -> bool {
    let compact = |k: &str| data.contains(k);
    (compact("\"choices\":[]") || compact("\"choices\": []"))
        && (compact("\"usage\":{") || compact("\"usage\": {"))
}

/// Replaces the string value of the first `"model"` key of a JSON object's text with
/// `model` (JSON-escaped), without parsing the rest; `None` when the key is not found
/// as `"model":"..."` (optional spaces around the colon).
pub fn patch_model(data: &str, model: &str) -> Option<String> {
    let key = data.find("\"model\"")?;
    let after_key = key + "\"model\"".len();
    let rest = &data[after_key..];
    let colon = rest.len() - rest.trim_start().len();
    let rest_after_ws = rest.trim_start();
    let rest_value = rest_after_ws.strip_prefix(':')?;
    let ws2 = rest_value.len() - rest_value.trim_start().len();
    let value = rest_value.trim_start().strip_prefix('"')?;
    let start = after_key + colon + 1 + ws2; // at the opening quote
                                             // The closing quote: the first `"` not escaped by an odd run of backslashes.
    let bytes = value.as_bytes();
    let mut i = 0;
    let end = loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => break i,
            _ => i += 1,
        }
    };
    let close = start + 1 + end; // at the closing quote
    let quoted = serde_json::to_string(model).ok()?;
    let mut out = String::with_capacity(data.len() + quoted.len());
    out.push_str(&data[..start]);
    out.push_str(&quoted);
    out.push_str(&data[close + 1..]);
    Some(out)
}

fn push_anthropic(ev: &an::StreamEvent, out: &mut Vec<sse::Event>) {
    if let Ok(e) = ev.to_sse() {
        out.push(e);
    }
}

fn push_responses(ev: &rs::StreamEvent, out: &mut Vec<sse::Event>) {
    if let Ok(e) = ev.to_sse() {
        out.push(e);
    }
}

/// The bytes of an encoder's events on the wire: SSE, or with `verbatim` (Gemini, see
/// [`HubEncoder::is_verbatim`]) their `data` as it is.
pub fn wire_bytes(events: &[sse::Event], verbatim: bool) -> String {
    if verbatim {
        events.iter().map(|e| e.data.as_str()).collect()
    } else {
        sse_bytes(events)
    }
}

/// Encodes events for the SSE wire.
pub fn sse_bytes(events: &[sse::Event]) -> String {
    let mut s = String::new();
    for ev in events {
        s.push_str(&sse::encode(ev));
    }
    s
}

/// Generated output: characters (for characters allowances) and estimated tokens (for
/// billing when the provider reports no usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Output {
    pub chars: u64,
    pub tokens: u64,
}

impl Output {
    fn add(&mut self, s: Option<&str>) {
        if let Some(s) = s {
            self.chars = self
                .chars
                .saturating_add(u64::try_from(s.chars().count()).unwrap_or(u64::MAX));
            self.tokens = self
                .tokens
                .saturating_add(crate::billing::estimate_text_tokens(s));
        }
    }

    /// Adds another count.
    pub fn merge(&mut self, other: Output) {
        self.chars = self.chars.saturating_add(other.chars);
        self.tokens = self.tokens.saturating_add(other.tokens);
    }
}

/// Generated output in a chunk: text, reasoning, refusals, tool-call arguments and legacy
/// `function_call` arguments (every field a characters allowance must count).
pub fn chunk_output(c: &oa::ChatCompletionChunk) -> Output {
    let mut out = Output::default();
    for ch in &c.choices {
        let d = &ch.delta;
        out.add(d.content.as_deref());
        out.add(d.reasoning_content.as_deref());
        out.add(d.refusal.as_deref());
        out.add(
            d.function_call
                .as_ref()
                .and_then(|f| f.arguments.as_deref()),
        );
        for t in d.tool_calls.iter().flatten() {
            out.add(t.function.as_ref().and_then(|f| f.arguments.as_deref()));
        }
    }
    out
}

/// Characters of generated output in a chunk (see [`chunk_output`]).
pub fn chunk_chars(c: &oa::ChatCompletionChunk) -> u64 {
    chunk_output(c).chars
}

/// Generated output in a whole answer (see [`chunk_output`]).
pub fn response_output(r: &oa::ChatCompletionResponse) -> Output {
    let mut out = Output::default();
    for ch in &r.choices {
        let m = &ch.message;
        if let Some(c) = &m.content {
            out.add(Some(&c.joined_text()));
        }
        out.add(m.reasoning_content.as_deref());
        out.add(m.refusal.as_deref());
        out.add(m.function_call.as_ref().map(|f| f.arguments.as_str()));
        for t in m.tool_calls.iter().flatten() {
            out.add(Some(&t.function.arguments));
        }
    }
    out
}

/// Characters of generated output in a whole answer (see [`chunk_output`]).
pub fn response_chars(r: &oa::ChatCompletionResponse) -> u64 {
    response_output(r).chars
}

/// A whole (non-stream) upstream answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FullAnswer {
    /// The answer in the hub format.
    pub hub: oa::ChatCompletionResponse,
    /// The usage as the provider reported it in its own protocol.
    pub usage: Option<Usage>,
    /// The upstream's JSON, kept for raw forwarding.
    pub raw: Option<Value>,
}

/// Parses a whole upstream chat answer. `id`, `created` and `model` label protocols
/// that do not carry them; `keep_raw` keeps the upstream's JSON.
pub fn decode_full(
    kind: ProviderKind,
    body: &str,
    id: &str,
    created: u64,
    model: &str,
    keep_raw: bool,
) -> Result<FullAnswer, String> {
    match kind {
        ProviderKind::Openai | ProviderKind::Azure => {
            let hub: oa::ChatCompletionResponse =
                serde_json::from_str(body).map_err(|e| e.to_string())?;
            let usage = hub.usage.as_ref().map(Usage::from);
            Ok(FullAnswer {
                hub,
                usage,
                raw: None,
            })
        }
        ProviderKind::Anthropic => {
            let value: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            let msg: an::MessagesResponse =
                serde::Deserialize::deserialize(&value).map_err(|e| e.to_string())?;
            Ok(FullAnswer {
                hub: tan::anthropic_to_openai_response(&msg, created),
                usage: Some(Usage::from(&msg.usage)),
                raw: keep_raw.then_some(value),
            })
        }
        ProviderKind::Gemini => {
            let resp: g::GenerateContentResponse =
                serde_json::from_str(body).map_err(|e| e.to_string())?;
            Ok(FullAnswer {
                usage: tg::gemini_usage(&resp),
                hub: tg::from_gemini_response(&resp, id, created, model),
                raw: None,
            })
        }
        ProviderKind::Responses => {
            let value: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            let resp: rs::Response =
                serde::Deserialize::deserialize(&value).map_err(|e| e.to_string())?;
            if let Some(e) = tru::response_error(&resp) {
                return Err(redact_secrets(&e.error.message));
            }
            Ok(FullAnswer {
                hub: tru::responses_to_hub_response(&resp, id, created, model),
                usage: resp.usage.as_ref().map(Usage::from),
                raw: keep_raw.then_some(value),
            })
        }
    }
}

/// The caller's JSON for a whole answer: OpenAI's chat completion, Anthropic's message
/// (translated, or the upstream's own with `raw`), with `model` set to what the caller
/// asked for.
pub fn encode_full(
    ingress: Ingress,
    answer: &FullAnswer,
    model: &str,
    raw: bool,
) -> Result<String, GatewayError> {
    let ctx = IngressContext::bare(ingress, "", model);
    encode_full_for(&ctx, answer, model, "", raw)
}

/// [`encode_full`] with the request's facts: the Responses echo, and the Gemini
/// `responseId` (`message_id`).
pub fn encode_full_for(
    ctx: &IngressContext,
    answer: &FullAnswer,
    model: &str,
    message_id: &str,
    raw: bool,
) -> Result<String, GatewayError> {
    let with_usage = || {
        let mut hub = answer.hub.clone();
        if hub.usage.is_none() {
            hub.usage = answer.usage.as_ref().map(oa::CompletionUsage::from);
        }
        hub
    };
    let encoded = match (ctx, raw, &answer.raw) {
        (IngressContext::Responses(_), true, Some(v)) => {
            let mut v = v.clone();
            tru::rewrite_model(&mut v, model);
            Ok(v.to_string())
        }
        (IngressContext::Responses(echo), _, _) => {
            serde_json::to_string(&ri::hub_to_responses_response(&with_usage(), echo))
        }
        (IngressContext::Gemini { .. }, _, _) => serde_json::to_string(
            &gi::hub_to_gemini_response(&with_usage(), model, message_id),
        ),
        (IngressContext::AnthropicMessages, true, Some(v)) => {
            let mut v = v.clone();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("model".into(), Value::String(model.to_owned()));
            }
            Ok(v.to_string())
        }
        (IngressContext::AnthropicMessages, _, _) => {
            let mut msg = tan::openai_to_anthropic_response(&answer.hub);
            msg.model = model.to_owned();
            serde_json::to_string(&msg)
        }
        (IngressContext::OpenAiChat, _, _) => {
            let mut hub = answer.hub.clone();
            hub.model = model.to_owned();
            serde_json::to_string(&hub)
        }
    };
    encoded.map_err(|_| GatewayError::internal("could not encode the response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn openai_stream(chunks: &[&str]) -> String {
        let mut s = String::new();
        for (i, t) in chunks.iter().enumerate() {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": "up", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
            s.push_str(&format!("data: {c}\n\n"));
            if i == 0 {
                s.push_str(": keep-alive\n\n");
            }
        }
        let fin = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}});
        s.push_str(&format!("data: {fin}\n\ndata: {usage}\n\ndata: [DONE]\n\n"));
        s
    }

    /// Feeds `bytes` split at every position and checks the result is the same.
    fn decode_all_splits(kind: ProviderKind, bytes: &[u8]) -> Vec<Decoded> {
        let mut outs = Vec::new();
        for at in 0..=bytes.len() {
            let mut d = HubDecoder::new(kind, "id", 1, "m", true);
            let mut all = d.push(&bytes[..at]);
            all.append(d.push(&bytes[at..]));
            all.append(d.finish());
            outs.push(all);
        }
        outs
    }

    #[test]
    fn test_openai_stream_decodes_the_same_at_every_split() {
        let s = openai_stream(&["Hel", "lo"]);
        let outs = decode_all_splits(ProviderKind::Openai, s.as_bytes());
        let first = outs.first().unwrap().clone();
        assert!(outs.iter().all(|o| *o == first));
        let text: String = first
            .chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .filter_map(|c| c.delta.content.clone())
            .collect();
        assert_eq!(text, "Hello");
        assert!(first.error.is_none());
        let mut d = HubDecoder::new(ProviderKind::Openai, "id", 1, "m", false);
        d.push(s.as_bytes());
        d.finish();
        assert_eq!(d.usage().unwrap().total_tokens(), 6);
    }

    #[test]
    fn test_in_stream_error_reported_once_and_unreadable_counted() {
        let s = "data: {\"choices\": [oops\n\ndata: {\"error\": {\"message\": \"bad sk-abcdefghijklmnopqrstu\"}}\n\ndata: {\"id\":\"x\",\"model\":\"m\",\"choices\":[]}\n\n";
        let mut d = HubDecoder::new(ProviderKind::Openai, "id", 1, "m", false);
        let out = d.push(s.as_bytes());
        let err = out.error.unwrap();
        assert!(!err.contains("abcdefghijklmnop"), "{err}");
        assert!(out.chunks.is_empty(), "nothing after the error");
        assert!(d.failed());
        assert_eq!(d.unreadable_events(), 1);
        assert!(d.finish().error.is_none(), "reported once");
    }

    fn anthropic_stream(stop: bool) -> String {
        let mut s = String::new();
        let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        s.push_str(&ev("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-up", "usage": {"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": 5}}})));
        s.push_str(&ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        s.push_str(&ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}})));
        if stop {
            s.push_str(&ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            s.push_str(&ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}})));
            s.push_str(&ev("message_stop", json!({"type": "message_stop"})));
        }
        s
    }

    #[test]
    fn test_anthropic_stream_to_openai_and_raw_forwarding() {
        let s = anthropic_stream(true);
        let outs = decode_all_splits(ProviderKind::Anthropic, s.as_bytes());
        let first = outs.first().unwrap().clone();
        assert!(outs.iter().all(|o| *o == first));
        assert_eq!(first.raw.len(), 6);
        let chars: u64 = first.chunks.iter().map(chunk_chars).sum();
        assert_eq!(chars, 5);
        let mut d = HubDecoder::new(ProviderKind::Anthropic, "id", 1, "m", true);
        d.push(s.as_bytes());
        let end = d.finish();
        assert!(end.error.is_none());
        let u = d.usage().unwrap();
        assert_eq!(u.cache_creation_input_tokens, 5);
        assert_eq!(u.output_tokens, 7);

        // Raw forwarding rewrites only the model.
        let mut enc = HubEncoder::new(Ingress::AnthropicMessages, "virtual", "msg_x", false, true);
        let mut out = Vec::new();
        enc.encode(first, &mut out);
        assert_eq!(out.len(), 6);
        let start: Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(start["message"]["model"], "virtual");
        assert_eq!(
            out[2].data,
            s.split("\n\n")
                .nth(2)
                .unwrap()
                .split("data: ")
                .nth(1)
                .unwrap()
        );
    }

    #[test]
    fn test_anthropic_stream_cut_short_is_an_error() {
        let s = anthropic_stream(false);
        let mut d = HubDecoder::new(ProviderKind::Anthropic, "id", 1, "m", false);
        let out = d.push(s.as_bytes());
        assert!(out.error.is_none());
        assert!(!out.chunks.is_empty());
        assert!(d.finish().error.is_some());
    }

    #[test]
    fn test_gemini_stream_and_error_payload() {
        let ok = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1, "totalTokenCount": 3}});
        let s = format!("data: {ok}\n\n");
        let mut d = HubDecoder::new(ProviderKind::Gemini, "gid", 9, "gm", false);
        let out = d.push(s.as_bytes());
        assert!(out.chunks.iter().all(|c| c.id == "gid" && c.model == "gm"));
        assert!(d.finish().error.is_none());
        assert_eq!(d.usage().unwrap().input_tokens, 2);
        let err = json!({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}});
        let mut d = HubDecoder::new(ProviderKind::Gemini, "gid", 9, "gm", false);
        assert_eq!(
            d.push(format!("data: {err}\n\n").as_bytes())
                .error
                .as_deref(),
            Some("boom")
        );
    }

    fn chunk(delta: Value, usage: Option<Value>) -> oa::ChatCompletionChunk {
        let choices = if delta.is_null() {
            json!([])
        } else {
            json!([{"index": 0, "delta": delta, "finish_reason": null}])
        };
        serde_json::from_value(
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "up", "choices": choices, "usage": usage}),
        )
        .unwrap()
    }

    #[test]
    fn test_openai_encoder_strips_usage_unless_asked_and_renames_model() {
        let usage = json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2});
        for include in [false, true] {
            let mut enc = HubEncoder::new(Ingress::OpenAiChat, "virtual", "", include, false);
            let mut out = Vec::new();
            enc.chunk(chunk(json!({"content": "x"}), None), &mut out);
            enc.chunk(chunk(Value::Null, Some(usage.clone())), &mut out);
            enc.finish(&mut out);
            assert_eq!(out.len(), if include { 3 } else { 2 });
            let first: Value = serde_json::from_str(&out[0].data).unwrap();
            assert_eq!(first["model"], "virtual");
            assert_eq!(out.last().unwrap().data, "[DONE]");
        }
        let mut enc = HubEncoder::new(Ingress::OpenAiChat, "v", "", false, false);
        let mut out = Vec::new();
        enc.error(&GatewayError::from_upstream_status(502, "broke"), &mut out);
        assert!(out[0].data.contains("\"error\""));
        assert!(sse_bytes(&out).starts_with("data: {"));
    }

    #[test]
    fn test_patch_model_rewrites_only_the_model_value() {
        let d =
            r#"{"id":"c","model":"gpt-4o-mini@ttft=1","choices":[{"delta":{"content":"model"}}]}"#;
        let p = patch_model(d, "vir\"tual").unwrap();
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["model"], "vir\"tual");
        assert_eq!(v["choices"][0]["delta"]["content"], "model");
        let spaced = r#"{"model" : "a\"b\\", "x": 1}"#;
        let v: Value = serde_json::from_str(&patch_model(spaced, "m").unwrap()).unwrap();
        assert_eq!((v["model"].as_str(), v["x"].as_i64()), (Some("m"), Some(1)));
        assert!(patch_model(r#"{"model":null}"#, "m").is_none());
        assert!(patch_model(r#"{"id":"x"}"#, "m").is_none());
        assert!(patch_model(r#"{"model":"unterminated"#, "m").is_none());
    }

    #[test]
    fn test_openai_relay_matches_the_translating_encoder() {
        // The same upstream stream through the relay and through the hub encoder gives
        // the same JSON values (the relay keeps the upstream's bytes otherwise).
        let s = openai_stream(&["Hel", "lo"]);
        for include in [false, true] {
            let mut d = HubDecoder::new(ProviderKind::Openai, "id", 1, "m", true);
            let mut all = d.push(s.as_bytes());
            all.append(d.finish());
            let mut relay = HubEncoder::new(Ingress::OpenAiChat, "virtual", "", include, true);
            let mut hub = HubEncoder::new(Ingress::OpenAiChat, "virtual", "", include, false);
            assert!(!relay.is_raw(), "errors stay the gateway's");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            relay.encode(all.clone(), &mut a);
            relay.finish(&mut a);
            hub.encode(all, &mut b);
            hub.finish(&mut b);
            assert_eq!(a.len(), b.len(), "include_usage {include}");
            for (x, y) in a.iter().zip(&b) {
                if x.data == "[DONE]" {
                    assert_eq!(y.data, "[DONE]");
                    continue;
                }
                let mut vx: Value = serde_json::from_str(&x.data).unwrap();
                let mut vy: Value = serde_json::from_str(&y.data).unwrap();
                assert_eq!(vx["model"], "virtual");
                fn strip_nulls(v: &mut Value) {
                    match v {
                        Value::Object(o) => {
                            o.retain(|_, val| !val.is_null());
                            o.values_mut().for_each(strip_nulls);
                        }
                        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
                        _ => {}
                    }
                }
                strip_nulls(&mut vx);
                strip_nulls(&mut vy);
                assert_eq!(vx["choices"], vy["choices"]);
                assert_eq!(vx.get("usage"), vy.get("usage"));
            }
        }
        // Unreadable events, errors and [DONE] are never relayed.
        let s = "data: {\"choices\": [oops\n\ndata: {\"id\":\"x\",\"model\":\"up\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        let mut d = HubDecoder::new(ProviderKind::Openai, "id", 1, "m", true);
        let out = d.push(s.as_bytes());
        assert_eq!(out.raw.len(), 1);
        assert!(out.raw[0].data.contains("\"up\""));
    }

    #[test]
    fn test_anthropic_encoder_translates_hub_chunks() {
        let mut enc = HubEncoder::new(Ingress::AnthropicMessages, "virtual", "msg_1", false, false);
        let mut out = Vec::new();
        enc.chunk(
            chunk(json!({"role": "assistant", "content": "hi"}), None),
            &mut out,
        );
        enc.finish(&mut out);
        let names: Vec<_> = out.iter().filter_map(|e| e.event.clone()).collect();
        assert_eq!(names.first().map(String::as_str), Some("message_start"));
        assert_eq!(names.last().map(String::as_str), Some("message_stop"));
        let start: Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(start["message"]["model"], "virtual");
    }

    #[test]
    fn test_chars_count_every_generated_field() {
        let c = chunk(
            json!({"content": "ab", "reasoning_content": "cd", "refusal": "e",
                "tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":1}"}}],
                "function_call": {"arguments": "12345"}}),
            None,
        );
        assert_eq!(chunk_chars(&c), 2 + 2 + 1 + 7 + 5);
        let r: oa::ChatCompletionResponse =
            serde_json::from_value(json!({"id": "r", "object": "chat.completion",
            "created": 1, "model": "m", "choices": [{"index": 0, "finish_reason": "function_call",
            "message": {"role": "assistant", "content": null, "refusal": "no",
                "function_call": {"name": "f", "arguments": "1234567890"}}}]}))
            .unwrap();
        assert_eq!(response_chars(&r), 2 + 10);
    }

    #[test]
    fn test_full_anthropic_answer_keeps_cache_writes_in_usage() {
        let body =
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 2, "cache_creation_input_tokens": 1000,
                      "cache_read_input_tokens": 5}})
            .to_string();
        let a = decode_full(ProviderKind::Anthropic, &body, "id", 1, "m", true).unwrap();
        let u = a.usage.unwrap();
        assert_eq!(u.cache_creation_input_tokens, 1000);
        assert_eq!(u.cached_input_tokens, 5);
        assert_eq!(u.input_tokens, 1015);
        let raw = encode_full(Ingress::AnthropicMessages, &a, "virtual", true).unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["model"], "virtual");
        assert_eq!(v["usage"]["cache_creation_input_tokens"], 1000);
        let oa_json = encode_full(Ingress::OpenAiChat, &a, "virtual", false).unwrap();
        let v: Value = serde_json::from_str(&oa_json).unwrap();
        assert_eq!(v["model"], "virtual");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert!(decode_full(ProviderKind::Openai, "{nope", "i", 1, "m", false).is_err());
    }

    fn responses_upstream_stream() -> String {
        let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let resp = |status: &str, usage: Value| {
            json!({"id": "resp_up", "object": "response", "created_at": 1, "model": "up",
                   "status": status, "output": [], "usage": usage})
        };
        let mut s = String::new();
        s.push_str(&ev(
            "response.created",
            json!({"type": "response.created", "sequence_number": 0,
            "response": resp("in_progress", Value::Null)}),
        ));
        s.push_str(&ev(
            "response.output_item.added",
            json!({"type": "response.output_item.added",
            "sequence_number": 1, "output_index": 0, "item": {"type": "message", "id": "m1",
            "role": "assistant", "status": "in_progress", "content": []}}),
        ));
        s.push_str(&ev("response.output_text.delta", json!({"type": "response.output_text.delta",
            "sequence_number": 2, "item_id": "m1", "output_index": 0, "content_index": 0, "delta": "hé"})));
        s.push_str(&ev("response.completed", json!({"type": "response.completed", "sequence_number": 3,
            "response": resp("completed", json!({"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}))})));
        s
    }

    #[test]
    fn test_responses_upstream_stream_to_every_encoder() {
        let s = responses_upstream_stream();
        let outs = decode_all_splits(ProviderKind::Responses, s.as_bytes());
        let first = outs.first().unwrap().clone();
        assert!(outs.iter().all(|o| *o == first));
        assert!(first.error.is_none());
        let text: String = first
            .chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .filter_map(|c| c.delta.content.clone())
            .collect();
        assert_eq!(text, "hé");
        let mut d = HubDecoder::new(ProviderKind::Responses, "id", 1, "m", false);
        d.push(s.as_bytes());
        assert!(d.finish().error.is_none());
        assert_eq!(d.usage().unwrap().total_tokens(), 6);

        // Raw forwarding to a Responses caller rewrites only the model.
        let mut enc = HubEncoder::new(Ingress::Responses, "virtual", "msg_1", false, true);
        assert!(enc.is_raw());
        let mut out = Vec::new();
        enc.encode(first.clone(), &mut out);
        enc.finish(&mut out);
        assert_eq!(out.len(), 4);
        let done: Value = serde_json::from_str(&out[3].data).unwrap();
        assert_eq!(done["response"]["model"], "virtual");
        assert_eq!(
            out[2].data,
            serde_json::from_str::<Value>(&out[2].data)
                .unwrap()
                .to_string()
        );

        // Translated to the Responses events of another request.
        let req: rs::ResponsesRequest =
            serde_json::from_value(json!({"model": "virtual", "input": "hi"})).unwrap();
        let ctx = IngressContext::Responses(Box::new(ResponsesEcho::new(
            &req, "resp_x", 5, "virtual", false,
        )));
        let mut enc = HubEncoder::for_context(&ctx, "virtual", "msg_1", false, false);
        let mut out = Vec::new();
        enc.encode(first.clone(), &mut out);
        enc.finish(&mut out);
        let names: Vec<_> = out.iter().filter_map(|e| e.event.clone()).collect();
        assert_eq!(names.first().map(String::as_str), Some("response.created"));
        assert_eq!(names.last().map(String::as_str), Some("response.completed"));
        let done: Value = serde_json::from_str(&out.last().unwrap().data).unwrap();
        assert_eq!(done["response"]["id"], "resp_x");
        assert_eq!(done["response"]["usage"]["total_tokens"], 6);
        assert!(!enc.is_verbatim());
        assert!(enc.content_type().starts_with("text/event-stream"));

        // Gemini, as the streamed JSON array: the wire text is the events' data.
        let ctx = IngressContext::Gemini { alt_sse: false };
        let mut enc = HubEncoder::for_context(&ctx, "virtual", "gid", false, false);
        let mut out = Vec::new();
        enc.encode(first, &mut out);
        enc.finish(&mut out);
        assert!(enc.is_verbatim());
        assert!(enc.content_type().starts_with("application/json"));
        let wire = enc.wire(&out);
        let arr: Value = serde_json::from_str(&wire).unwrap();
        let text: String = arr
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| {
                c["candidates"][0]["content"]["parts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(text, "hé");
        assert_eq!(arr[0]["modelVersion"], "virtual");
    }

    #[test]
    fn test_gemini_errors_in_their_shape_mid_stream_and_whole() {
        let err = GatewayError::from_upstream_status(502, "broke");
        let v = Ingress::Gemini.error_body(&err);
        assert_eq!(v["error"]["code"], 502);
        assert!(v["error"]["status"].is_string());
        assert!(v["error"].get("type").is_none());
        assert!(Ingress::Responses.error_body(&err)["error"]["type"].is_string());

        let ctx = IngressContext::Gemini { alt_sse: true };
        let mut enc = HubEncoder::for_context(&ctx, "g", "gid", false, false);
        let mut out = Vec::new();
        enc.chunk(
            chunk(json!({"role": "assistant", "content": "x"}), None),
            &mut out,
        );
        enc.error(&err, &mut out);
        let wire = enc.wire(&out);
        assert!(wire.starts_with("data: {"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n"), "{wire}");
        assert!(wire.contains("\"code\":502"), "{wire}");

        // Whole answers: Gemini and Responses from a decoded Responses upstream answer.
        let body = json!({"id": "resp_up", "object": "response", "created_at": 1, "model": "up",
            "status": "completed", "output": [{"type": "message", "id": "m1", "role": "assistant",
            "status": "completed", "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
            "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}})
        .to_string();
        let a = decode_full(ProviderKind::Responses, &body, "id", 1, "m", true).unwrap();
        assert_eq!(a.usage.unwrap().total_tokens(), 4);
        let g = encode_full_for(&ctx, &a, "virtual", "gid", false).unwrap();
        let g: Value = serde_json::from_str(&g).unwrap();
        assert_eq!(g["candidates"][0]["content"]["parts"][0]["text"], "hi");
        assert_eq!(g["usageMetadata"]["totalTokenCount"], 4);
        let raw = encode_full(Ingress::Responses, &a, "virtual", true).unwrap();
        let raw: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(raw["model"], "virtual");
        assert_eq!(raw["id"], "resp_up");
        let failed = json!({"id": "r", "object": "response", "created_at": 1, "model": "up",
            "status": "failed", "output": [], "error": {"code": "server_error", "message": "boom"}})
        .to_string();
        assert_eq!(
            decode_full(ProviderKind::Responses, &failed, "i", 1, "m", false).unwrap_err(),
            "boom"
        );
    }
}
