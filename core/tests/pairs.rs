//! Golden fixtures for every ingress × upstream pair: 4 ingress protocols (OpenAI chat,
//! Anthropic Messages, OpenAI Responses, Gemini) × 4 upstream protocols (OpenAI chat,
//! Anthropic, Gemini, Responses), each for the request, the non-stream response and the
//! stream, with tool calls. Everything goes through the hub, as the edge composes it:
//!
//! ```text
//! ingress request -> hub -> upstream request
//! upstream response -> hub -> ingress response
//! upstream SSE bytes -> sse::Decoder -> upstream events -> hub chunks -> ingress events
//! ```
//!
//! Inputs live in `tests/fixtures/pairs/{ingress,upstream}/`, the expected outputs in
//! `tests/fixtures/pairs/expected/<ingress>-<upstream>.{request,response,stream}.json`,
//! compared as parsed JSON. `GOLDEN_UPDATE=1 cargo test -p tollbooth-core --test pairs`
//! rewrites the expected files (review the diff before committing it).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use serde_json::{json, Value};
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::gemini as g;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::protocol::responses as rs;
use tollbooth_core::sse;
use tollbooth_core::translate::anthropic as tan;
use tollbooth_core::translate::gemini as tg;
use tollbooth_core::translate::gemini_ingress as gi;
use tollbooth_core::translate::responses_ingress as ri;
use tollbooth_core::translate::responses_upstream as ru;

const CREATED: u64 = 1_700_000_000;
const CLIENT_MODEL: &str = "demo-model";
const UPSTREAM_MODEL: &str = "upstream-model";
const HUB_ID: &str = "chatcmpl-golden";
/// What Anthropic's ingress needs when the client sent no max_tokens (never here).
const DEFAULT_MAX_TOKENS: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingress {
    OpenAi,
    Anthropic,
    Responses,
    Gemini,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    OpenAi,
    Anthropic,
    Gemini,
    Responses,
}

const INGRESSES: [Ingress; 4] = [
    Ingress::OpenAi,
    Ingress::Anthropic,
    Ingress::Responses,
    Ingress::Gemini,
];
const UPSTREAMS: [Upstream; 4] = [
    Upstream::OpenAi,
    Upstream::Anthropic,
    Upstream::Gemini,
    Upstream::Responses,
];

impl Ingress {
    fn name(self) -> &'static str {
        match self {
            Ingress::OpenAi => "openai",
            Ingress::Anthropic => "anthropic",
            Ingress::Responses => "responses",
            Ingress::Gemini => "gemini",
        }
    }
}

impl Upstream {
    fn name(self) -> &'static str {
        match self {
            Upstream::OpenAi => "openai",
            Upstream::Anthropic => "anthropic",
            Upstream::Gemini => "gemini",
            Upstream::Responses => "responses",
        }
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pairs")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn read_json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Compares with the expected file (or writes it with `GOLDEN_UPDATE=1`).
fn golden(name: &str, actual: &Value) {
    let rel = format!("expected/{name}.json");
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
        std::fs::write(dir().join(&rel), text).unwrap();
        return;
    }
    let expected = read_json(&rel);
    assert_eq!(
        actual,
        &expected,
        "{rel} differs; actual:\n{}",
        serde_json::to_string_pretty(actual).unwrap()
    );
}

// --- ingress -> hub -> upstream --------------------------------------------------------

fn ingress_body(ingress: Ingress) -> Value {
    read_json(&format!("ingress/{}.request.json", ingress.name()))
}

fn responses_request() -> rs::ResponsesRequest {
    serde_json::from_value(ingress_body(Ingress::Responses)).unwrap()
}

fn to_hub(ingress: Ingress, stream: bool) -> oa::ChatCompletionRequest {
    let body = ingress_body(ingress);
    let mut hub = match ingress {
        Ingress::OpenAi => serde_json::from_value::<oa::ChatCompletionRequest>(body).unwrap(),
        Ingress::Anthropic => {
            let req: an::MessagesRequest = serde_json::from_value(body).unwrap();
            tan::anthropic_to_openai_request(&req).unwrap()
        }
        Ingress::Responses => {
            let req: rs::ResponsesRequest = serde_json::from_value(body).unwrap();
            ri::responses_to_hub_request(&req).unwrap()
        }
        Ingress::Gemini => {
            let req: g::GenerateContentRequest = serde_json::from_value(body).unwrap();
            gi::gemini_to_hub_request(&req, CLIENT_MODEL, stream).unwrap()
        }
    };
    if stream {
        hub.stream = Some(true);
        let mut opts = hub.stream_options.take().unwrap_or_default();
        opts.include_usage = Some(true);
        hub.stream_options = Some(opts);
    }
    hub
}

/// The upstream body, as the edge builds it (the model replaced by the upstream's name).
fn to_upstream(upstream: Upstream, hub: &oa::ChatCompletionRequest) -> Value {
    match upstream {
        Upstream::OpenAi => {
            let mut r = hub.clone();
            r.model = UPSTREAM_MODEL.to_owned();
            serde_json::to_value(r).unwrap()
        }
        Upstream::Anthropic => {
            let mut r = tan::openai_to_anthropic_request(hub, DEFAULT_MAX_TOKENS).unwrap();
            r.model = UPSTREAM_MODEL.to_owned();
            serde_json::to_value(r).unwrap()
        }
        Upstream::Gemini => {
            let r = tg::to_gemini_request(hub).unwrap();
            json!({"path": tg::upstream_path(UPSTREAM_MODEL, hub.is_stream()), "body": r})
        }
        Upstream::Responses => {
            serde_json::to_value(ru::hub_to_responses_request(hub, UPSTREAM_MODEL).unwrap())
                .unwrap()
        }
    }
}

// --- upstream response -> hub -> ingress ------------------------------------------------

fn response_to_hub(upstream: Upstream) -> oa::ChatCompletionResponse {
    let body = read(&format!("upstream/{}.response.json", upstream.name()));
    let mut hub = match upstream {
        Upstream::OpenAi => serde_json::from_str::<oa::ChatCompletionResponse>(&body).unwrap(),
        Upstream::Anthropic => {
            let r: an::MessagesResponse = serde_json::from_str(&body).unwrap();
            tan::anthropic_to_openai_response(&r, CREATED)
        }
        Upstream::Gemini => {
            let r: g::GenerateContentResponse = serde_json::from_str(&body).unwrap();
            tg::from_gemini_response(&r, HUB_ID, CREATED, CLIENT_MODEL)
        }
        Upstream::Responses => {
            let r: rs::Response = serde_json::from_str(&body).unwrap();
            assert!(ru::response_error(&r).is_none());
            ru::responses_to_hub_response(&r, HUB_ID, CREATED, CLIENT_MODEL)
        }
    };
    // The edge answers with its own id and the client's model name, never the upstream's.
    hub.id = HUB_ID.to_owned();
    hub.created = CREATED;
    hub.model = CLIENT_MODEL.to_owned();
    hub.system_fingerprint = None;
    hub
}

fn echo() -> ri::ResponsesEcho {
    ri::ResponsesEcho::new(
        &responses_request(),
        "resp_golden",
        CREATED,
        CLIENT_MODEL,
        false,
    )
}

fn hub_to_ingress(ingress: Ingress, hub: &oa::ChatCompletionResponse) -> Value {
    match ingress {
        Ingress::OpenAi => serde_json::to_value(hub).unwrap(),
        Ingress::Anthropic => {
            let mut r = tan::openai_to_anthropic_response(hub);
            r.id = "msg_golden".to_owned();
            serde_json::to_value(r).unwrap()
        }
        Ingress::Responses => {
            serde_json::to_value(ri::hub_to_responses_response(hub, &echo())).unwrap()
        }
        Ingress::Gemini => {
            serde_json::to_value(gi::hub_to_gemini_response(hub, CLIENT_MODEL, "golden")).unwrap()
        }
    }
}

// --- streams ----------------------------------------------------------------------------

/// Decodes the upstream SSE fixture with the production decoder, fed in 7-byte pieces so
/// events straddle reads.
fn sse_events(upstream: Upstream) -> Vec<sse::Event> {
    let bytes = read(&format!("upstream/{}.stream.sse", upstream.name())).into_bytes();
    let mut dec = sse::Decoder::new();
    let mut events = Vec::new();
    for piece in bytes.chunks(7) {
        events.extend(dec.push(piece));
    }
    events.extend(dec.finish());
    assert_eq!(dec.dropped_events(), 0);
    events
}

fn stream_to_hub(upstream: Upstream) -> Vec<oa::ChatCompletionChunk> {
    let mut out = Vec::new();
    match upstream {
        Upstream::OpenAi => {
            for ev in sse_events(upstream) {
                match oa::ChatStreamItem::parse(&ev.data).unwrap() {
                    oa::ChatStreamItem::Chunk(c) => out.push(c),
                    oa::ChatStreamItem::Done => break,
                    oa::ChatStreamItem::Error(e) => panic!("{e:?}"),
                }
            }
        }
        Upstream::Anthropic => {
            let mut t = tan::AnthropicToOpenAiStream::new(CREATED, true);
            for ev in sse_events(upstream) {
                out.extend(t.on_event(an::StreamEvent::from_data(&ev.data).unwrap()));
            }
            out.extend(t.finish());
            assert!(t.error().is_none(), "{:?}", t.error());
        }
        Upstream::Gemini => {
            let mut t = tg::GeminiStreamTranslator::new(HUB_ID, CREATED, CLIENT_MODEL, true);
            for ev in sse_events(upstream) {
                out.extend(t.on_payload(g::StreamPayload::parse(&ev.data).unwrap()));
            }
            out.extend(t.finish());
            assert!(t.upstream_error().is_none());
        }
        Upstream::Responses => {
            let mut t = ru::ResponsesToHubStream::new(HUB_ID, CREATED, CLIENT_MODEL, true);
            for ev in sse_events(upstream) {
                let event = rs::StreamEvent::from_data(&ev.data).unwrap();
                assert_eq!(ev.event.as_deref(), Some(event.event_name()));
                out.extend(t.on_event(event));
            }
            out.extend(t.finish());
            assert!(t.error().is_none(), "{:?}", t.error());
            assert_eq!(t.usage().map(|u| u.input_tokens), Some(50));
        }
    }
    for c in &mut out {
        c.id = HUB_ID.to_owned();
        c.created = CREATED;
        c.model = CLIENT_MODEL.to_owned();
        c.system_fingerprint = None;
    }
    out
}

fn named(event: &str, data: Value) -> Value {
    json!({"event": event, "data": data})
}

fn hub_stream_to_ingress(ingress: Ingress, chunks: Vec<oa::ChatCompletionChunk>) -> Value {
    match ingress {
        Ingress::OpenAi => serde_json::to_value(chunks).unwrap(),
        Ingress::Anthropic => {
            let mut t = tan::OpenAiToAnthropicStream::new("msg_golden", CLIENT_MODEL);
            let mut events = Vec::new();
            for c in chunks {
                events.extend(t.on_event(c));
            }
            events.extend(t.finish());
            Value::Array(
                events
                    .iter()
                    .map(|e| named(e.event_name(), serde_json::to_value(e).unwrap()))
                    .collect(),
            )
        }
        Ingress::Responses => {
            let mut t = ri::HubToResponsesStream::new(echo());
            let mut events = Vec::new();
            for c in chunks {
                events.extend(t.on_event(c));
            }
            events.extend(t.finish());
            for (i, e) in events.iter().enumerate() {
                assert_eq!(e.sequence_number(), i as u64, "sequence numbers count up");
            }
            Value::Array(
                events
                    .iter()
                    .map(|e| named(e.event_name(), serde_json::to_value(e).unwrap()))
                    .collect(),
            )
        }
        Ingress::Gemini => {
            let mut t = gi::HubToGeminiStream::new(CLIENT_MODEL, "golden");
            let mut out = Vec::new();
            for c in chunks {
                out.extend(t.on_event(c));
            }
            out.extend(t.finish());
            check_gemini_framing(&out);
            serde_json::to_value(out).unwrap()
        }
    }
}

/// Both Gemini framings carry exactly the chunks: SSE decodes back with the production
/// decoder, the array form parses as one JSON array.
fn check_gemini_framing(chunks: &[g::GenerateContentResponse]) {
    let expected = serde_json::to_value(chunks).unwrap();
    let mut sse_framer = gi::GeminiStreamFramer::new(true);
    let mut array_framer = gi::GeminiStreamFramer::new(false);
    let mut sse_text = String::new();
    let mut array_text = String::new();
    for c in chunks {
        sse_text.push_str(&sse_framer.chunk(c));
        array_text.push_str(&array_framer.chunk(c));
    }
    sse_text.push_str(&sse_framer.finish());
    array_text.push_str(&array_framer.finish());
    let mut dec = sse::Decoder::new();
    let mut events = dec.push(sse_text.as_bytes());
    events.extend(dec.finish());
    let decoded: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(Value::Array(decoded), expected);
    let parsed: Value = serde_json::from_str(&array_text).unwrap();
    assert_eq!(parsed, expected);
}

// --- the tests --------------------------------------------------------------------------

#[test]
fn test_golden_requests_for_every_pair() {
    for ingress in INGRESSES {
        for upstream in UPSTREAMS {
            let hub = to_hub(ingress, false);
            let body = to_upstream(upstream, &hub);
            golden(
                &format!("{}-{}.request", ingress.name(), upstream.name()),
                &body,
            );
        }
    }
}

#[test]
fn test_golden_responses_for_every_pair() {
    for ingress in INGRESSES {
        for upstream in UPSTREAMS {
            let hub = response_to_hub(upstream);
            let out = hub_to_ingress(ingress, &hub);
            golden(
                &format!("{}-{}.response", ingress.name(), upstream.name()),
                &out,
            );
        }
    }
}

#[test]
fn test_golden_streams_for_every_pair() {
    for ingress in INGRESSES {
        for upstream in UPSTREAMS {
            let chunks = stream_to_hub(upstream);
            let out = hub_stream_to_ingress(ingress, chunks);
            golden(
                &format!("{}-{}.stream", ingress.name(), upstream.name()),
                &out,
            );
        }
    }
}

/// Streaming and non-streaming agree: the stream's final response object (Responses)
/// equals the non-stream answer built from the same upstream.
#[test]
fn test_responses_stream_final_snapshot_matches_non_stream_answer() {
    for upstream in UPSTREAMS {
        let chunks = stream_to_hub(upstream);
        let stream = hub_stream_to_ingress(Ingress::Responses, chunks);
        let last = stream.as_array().unwrap().last().unwrap();
        assert_eq!(last["event"], "response.completed");
        let from_stream = &last["data"]["response"];
        let non_stream = hub_to_ingress(Ingress::Responses, &response_to_hub(upstream));
        assert_eq!(from_stream["output"], non_stream["output"], "{upstream:?}");
        assert_eq!(from_stream["usage"], non_stream["usage"], "{upstream:?}");
        assert_eq!(from_stream["status"], "completed");
    }
}
