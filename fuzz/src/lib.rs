//! What each fuzz target runs. Every function takes the fuzzer's bytes, drives the
//! parsers and translators of `tollbooth-core` with them, and checks the properties that
//! must hold for any input; a panic is a finding. Inputs are bytes of the wire format
//! (SSE streams, JSON bodies), so the committed seeds in `fuzz/seeds/` are real
//! fixtures that libFuzzer mutates.
//!
//! Targets: the SSE decoder; every stream translator fed with arbitrary event sequences
//! (each upstream protocol's translator to hub chunks, then every ingress translator on
//! those chunks); the request parsers and translators of all four ingress formats (to
//! the hub, then to every upstream protocol); non-stream upstream answers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
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
use tollbooth_core::translate::stream_convert;

const CREATED: u64 = 1_700_000_000;

/// Decodes SSE bytes in the pieces the first byte chooses (1..=64 bytes each).
fn decode(data: &[u8]) -> Vec<sse::Event> {
    let (step, body) = match data.split_first() {
        Some((b, rest)) => (usize::from(*b % 64) + 1, rest),
        None => (1, data),
    };
    let mut dec = sse::Decoder::new();
    let mut events = Vec::new();
    for piece in body.chunks(step) {
        events.extend(dec.push(piece));
    }
    events.extend(dec.finish());
    events
}

// ---------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------

/// The decoder gives the same events for every split of the input, also with a small
/// event-size bound; decoded events survive an encode/decode round trip.
pub fn sse_decoder(data: &[u8]) {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    for max in [sse::DEFAULT_MAX_EVENT_BYTES, 64] {
        let mut whole = sse::Decoder::with_max_event_bytes(max);
        let mut expected = whole.push(body);
        expected.extend(whole.finish());
        for step in [1, usize::from(seed % 31) + 2] {
            let mut dec = sse::Decoder::with_max_event_bytes(max);
            let mut got = Vec::new();
            for piece in body.chunks(step) {
                got.extend(dec.push(piece));
            }
            got.extend(dec.finish());
            assert_eq!(got, expected, "split every {step} bytes (max {max})");
            assert_eq!(dec.dropped_events(), whole.dropped_events());
        }
    }
    let mut dec = sse::Decoder::new();
    let mut events = dec.push(body);
    events.extend(dec.finish());
    for ev in events {
        let encoded = sse::encode(&ev);
        let mut again = sse::Decoder::new();
        let mut back = again.push(encoded.as_bytes());
        back.extend(again.finish());
        assert_eq!(back.len(), 1, "{encoded:?}");
        if let Some(b) = back.first() {
            assert_eq!(b.data, ev.data);
            assert_eq!(b.event, ev.event);
            assert_eq!(b.id, ev.id);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Streams: upstream events -> hub chunks -> every ingress
// ---------------------------------------------------------------------------------------

/// Feeds hub chunks to every ingress stream translator and checks each output's
/// protocol rules.
fn all_ingress(chunks: &[oa::ChatCompletionChunk], upstream_error: bool) {
    // OpenAI ingress: chunks as they are; aggregating them must work too.
    let mut agg = stream_convert::ChunkAggregator::new();
    for c in chunks {
        agg.push(c);
    }
    let _ = agg.finish();

    // Anthropic ingress.
    let mut t = tan::OpenAiToAnthropicStream::new("msg_fuzz", "m");
    let mut events = Vec::new();
    for c in chunks {
        events.extend(t.on_event(c.clone()));
    }
    if upstream_error {
        events.extend(t.on_error(&oa::ErrorResponse::new("server_error", "boom").error));
    }
    events.extend(t.finish());
    assert!(t.finish().is_empty(), "finish is idempotent");
    check_anthropic_events(&events);

    // Responses ingress.
    let req = rs::ResponsesRequest::default();
    let echo = ri::ResponsesEcho::new(&req, "resp_fuzz", CREATED, "m", false);
    let mut t = ri::HubToResponsesStream::new(echo);
    let mut events = Vec::new();
    for c in chunks {
        events.extend(t.on_event(c.clone()));
    }
    if upstream_error {
        events.extend(t.on_error(&oa::ErrorResponse::new("server_error", "boom").error));
    }
    events.extend(t.finish());
    assert!(t.finish().is_empty(), "finish is idempotent");
    check_responses_events(&events);

    // Gemini ingress, both framings.
    let mut t = gi::HubToGeminiStream::new("m", "fuzz");
    let mut out = Vec::new();
    for c in chunks {
        out.extend(t.on_event(c.clone()));
    }
    out.extend(t.finish());
    assert!(
        !out.is_empty(),
        "a Gemini stream always ends with a final chunk"
    );
    let mut array = gi::GeminiStreamFramer::new(false);
    let mut text = String::new();
    for c in &out {
        text.push_str(&array.chunk(c));
    }
    text.push_str(&array.finish());
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(parsed.as_array().map(Vec::len), Some(out.len()), "{text}");
}

/// Anthropic stream rules: `message_start` first, blocks opened and closed in order,
/// deltas only inside an open block, `message_stop` last (or an `error`).
fn check_anthropic_events(events: &[an::StreamEvent]) {
    let mut open: Option<u32> = None;
    let mut next = 0u32;
    for (i, e) in events.iter().enumerate() {
        match e {
            an::StreamEvent::MessageStart { .. } => assert_eq!(i, 0),
            an::StreamEvent::ContentBlockStart { index, .. } => {
                assert!(open.is_none(), "block {index} opened inside another");
                assert_eq!(*index, next);
                next = next.saturating_add(1);
                open = Some(*index);
            }
            an::StreamEvent::ContentBlockDelta { index, .. } => {
                assert_eq!(open, Some(*index), "delta outside its block");
            }
            an::StreamEvent::ContentBlockStop { index } => {
                assert_eq!(open, Some(*index));
                open = None;
            }
            an::StreamEvent::MessageDelta { .. } => assert!(open.is_none()),
            an::StreamEvent::MessageStop | an::StreamEvent::Error { .. } => {
                assert_eq!(i + 1, events.len(), "nothing after the end");
            }
            _ => {}
        }
    }
}

/// Responses stream rules the SDKs enforce: `response.created` first, sequence numbers
/// 0, 1, 2, ...; every item added once and done once before the one terminal event;
/// deltas only for an open item (and, for text, an added content part).
fn check_responses_events(events: &[rs::StreamEvent]) {
    let mut open: BTreeSet<u32> = BTreeSet::new();
    let mut done: BTreeSet<u32> = BTreeSet::new();
    let mut parts: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut terminal = false;
    for (i, e) in events.iter().enumerate() {
        assert!(!terminal, "event after the terminal event: {e:?}");
        assert_eq!(e.sequence_number(), i as u64);
        match e {
            rs::StreamEvent::Created { .. } => assert_eq!(i, 0),
            rs::StreamEvent::InProgress { .. } => assert_eq!(i, 1),
            rs::StreamEvent::OutputItemAdded { output_index, .. } => {
                assert!(open.insert(*output_index) && !done.contains(output_index));
            }
            rs::StreamEvent::ContentPartAdded {
                output_index,
                content_index,
                ..
            } => {
                assert!(open.contains(output_index));
                parts
                    .entry(*output_index)
                    .or_default()
                    .insert(*content_index);
            }
            rs::StreamEvent::OutputTextDelta {
                output_index,
                content_index,
                ..
            }
            | rs::StreamEvent::RefusalDelta {
                output_index,
                content_index,
                ..
            } => {
                assert!(open.contains(output_index));
                assert!(parts
                    .get(output_index)
                    .is_some_and(|p| p.contains(content_index)));
            }
            rs::StreamEvent::FunctionCallArgumentsDelta { output_index, .. }
            | rs::StreamEvent::CustomToolCallInputDelta { output_index, .. }
            | rs::StreamEvent::ReasoningSummaryTextDelta { output_index, .. } => {
                assert!(open.contains(output_index));
            }
            rs::StreamEvent::OutputItemDone { output_index, .. } => {
                assert!(open.remove(output_index), "done without added");
                done.insert(*output_index);
            }
            rs::StreamEvent::Completed { response, .. }
            | rs::StreamEvent::Incomplete { response, .. } => {
                assert!(open.is_empty(), "unfinished items at the end");
                assert_eq!(response.output.len(), done.len());
                terminal = true;
            }
            rs::StreamEvent::Failed { .. } => terminal = true,
            _ => {}
        }
    }
    assert!(terminal, "no terminal event");
}

/// Hub chunk sequences built from bytes, two bytes per chunk (the JSON targets rarely
/// reach odd orders): text, reasoning and refusal deltas, tool-call heads and argument
/// pieces for a few indexes (also interleaved), legacy function calls, choices other
/// than 0, finish reasons and usage chunks, in any order. Every ingress translator
/// must keep its protocol's rules.
pub fn hub_stream(data: &[u8]) {
    const TEXTS: [&str; 4] = ["", "a", "é\n", "{\"x\":"];
    const NAMES: [&str; 3] = ["f", "apply_patch", "ns__g"];
    const REASONS: [&str; 5] = ["stop", "length", "tool_calls", "content_filter", "weird"];
    let mut chunks = Vec::new();
    for pair in data.chunks(2) {
        let (op, arg) = match pair {
            [op, arg] => (*op, *arg),
            [op] => (*op, 0),
            _ => continue,
        };
        let text = TEXTS[usize::from(arg) % TEXTS.len()];
        let index = u32::from(arg % 3);
        let delta = match op % 10 {
            0 => serde_json::json!({"content": text}),
            1 => serde_json::json!({"reasoning_content": text}),
            2 => serde_json::json!({"refusal": text}),
            3 => serde_json::json!({"tool_calls": [{"index": index, "id": format!("call_{index}"),
                "type": "function", "function": {"name": NAMES[usize::from(arg / 3) % 3], "arguments": ""}}]}),
            4 => {
                serde_json::json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]})
            }
            5 => serde_json::json!({"function_call": {"name": "legacy", "arguments": text}}),
            6 => serde_json::json!({"role": "assistant", "content": ""}),
            _ => serde_json::json!({}),
        };
        let mut chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk",
            "created": 1, "model": "m",
            "choices": [{"index": u32::from(op / 10 % 2), "delta": delta, "finish_reason": null}]});
        match op % 10 {
            7 => {
                chunk["choices"][0]["finish_reason"] =
                    serde_json::json!(REASONS[usize::from(arg) % REASONS.len()])
            }
            8 => {
                chunk["choices"] = serde_json::json!([]);
                chunk["usage"] = serde_json::json!({"prompt_tokens": arg, "completion_tokens": op,
                    "total_tokens": u32::from(arg) + u32::from(op)});
            }
            _ => {}
        }
        if let Ok(c) = serde_json::from_value::<oa::ChatCompletionChunk>(chunk) {
            chunks.push(c);
        }
    }
    let error = data.len() % 7 == 3;
    all_ingress(&chunks, error);
}

/// An OpenAI-compatible upstream stream: its chunks are the hub.
pub fn stream_openai(data: &[u8]) {
    let mut chunks = Vec::new();
    let mut error = false;
    for ev in decode(data) {
        match oa::ChatStreamItem::parse(&ev.data) {
            Ok(oa::ChatStreamItem::Chunk(c)) => chunks.push(c),
            Ok(oa::ChatStreamItem::Error(_)) => {
                error = true;
                break;
            }
            Ok(oa::ChatStreamItem::Done) => break,
            Err(_) => {}
        }
    }
    let _ = stream_convert::aggregate_chunks(&chunks);
    all_ingress(&chunks, error);
}

pub fn stream_anthropic(data: &[u8]) {
    let mut t = tan::AnthropicToOpenAiStream::new(CREATED, true);
    let mut chunks = Vec::new();
    for ev in decode(data) {
        if let Ok(event) = an::StreamEvent::from_data(&ev.data) {
            chunks.extend(t.on_event(event));
        }
    }
    chunks.extend(t.finish());
    let _ = t.usage();
    all_ingress(&chunks, t.error().is_some());
}

pub fn stream_gemini(data: &[u8]) {
    let mut t = tg::GeminiStreamTranslator::new("chatcmpl-fuzz", CREATED, "m", true);
    let mut chunks = Vec::new();
    for ev in decode(data) {
        if let Ok(payload) = g::StreamPayload::parse(&ev.data) {
            chunks.extend(t.on_payload(payload));
        }
    }
    chunks.extend(t.finish());
    let _ = t.usage();
    all_ingress(&chunks, t.upstream_error().is_some());
}

pub fn stream_responses(data: &[u8]) {
    let mut t = ru::ResponsesToHubStream::new("chatcmpl-fuzz", CREATED, "m", true);
    let mut chunks = Vec::new();
    for ev in decode(data) {
        if let Ok(event) = rs::StreamEvent::from_data(&ev.data) {
            let _ = event.event_name();
            chunks.extend(t.on_event(event));
        }
        // The passthrough path rewrites the model of whatever the upstream sent.
        if let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) {
            ru::rewrite_model(&mut v, "client");
        }
    }
    chunks.extend(t.finish());
    let _ = t.usage();
    // Tool-call argument pieces for one call must form the call's arguments: for a
    // custom tool they are JSON-escaped into `{"input": ...}`, which must parse.
    let full = stream_convert::aggregate_chunks(&chunks);
    if t.error().is_none() {
        for call in full
            .choices
            .iter()
            .flat_map(|c| c.message.tool_calls.iter().flatten())
        {
            if call.function.arguments.starts_with("{\"input\":\"") {
                assert!(
                    serde_json::from_str::<Value>(&call.function.arguments).is_ok(),
                    "custom input is not valid JSON: {}",
                    call.function.arguments
                );
            }
        }
    }
    all_ingress(&chunks, t.error().is_some());
}

// ---------------------------------------------------------------------------------------
// Requests: ingress -> hub -> every upstream
// ---------------------------------------------------------------------------------------

/// Serialising a parsed value and parsing it again gives the same value.
fn round_trips<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(v).unwrap_or_default();
    let back: T = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => panic!("re-parse failed: {e}: {text}"),
    };
    assert_eq!(&back, v, "{text}");
}

fn all_upstreams(hub: &oa::ChatCompletionRequest) {
    let _ = tan::openai_to_anthropic_request(hub, 1024);
    let _ = tg::to_gemini_request(hub);
    let _ = ru::hub_to_responses_request(hub, "upstream");
    let _ = tg::upstream_path(&hub.model, hub.is_stream());
}

pub fn request_openai(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<oa::ChatCompletionRequest>(data) else {
        return;
    };
    round_trips(&req);
    all_upstreams(&req);
}

pub fn request_anthropic(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<an::MessagesRequest>(data) else {
        return;
    };
    round_trips(&req);
    if let Ok(hub) = tan::anthropic_to_openai_request(&req) {
        all_upstreams(&hub);
    }
}

pub fn request_responses(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<rs::ResponsesRequest>(data) else {
        return;
    };
    round_trips(&req);
    let _ = ri::ToolMap::from_request(&req);
    if let Ok(hub) = ri::responses_to_hub_request(&req) {
        all_upstreams(&hub);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = ru::passthrough_body(&v, "upstream", true);
    }
}

pub fn request_gemini(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    if let Ok(req) = serde_json::from_slice::<g::GenerateContentRequest>(body) {
        round_trips(&req);
        if let Ok(hub) = gi::gemini_to_hub_request(&req, "models/m", flags & 1 == 1) {
            all_upstreams(&hub);
        }
    }
    if let Ok(req) = serde_json::from_slice::<g::CountTokensRequest>(body) {
        let _ = gi::gemini_to_hub_request(&req.into_generate_request(), "m", false);
    }
}

// ---------------------------------------------------------------------------------------
// Non-stream answers: upstream -> hub -> every ingress
// ---------------------------------------------------------------------------------------

/// The first byte picks the upstream protocol; the rest is its JSON answer.
pub fn upstream_response(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let hub = match which % 4 {
        0 => serde_json::from_slice::<oa::ChatCompletionResponse>(body).ok(),
        1 => serde_json::from_slice::<an::MessagesResponse>(body)
            .ok()
            .map(|r| tan::anthropic_to_openai_response(&r, CREATED)),
        2 => serde_json::from_slice::<g::GenerateContentResponse>(body)
            .ok()
            .map(|r| tg::from_gemini_response(&r, "id", CREATED, "m")),
        _ => serde_json::from_slice::<rs::Response>(body).ok().map(|r| {
            let _ = ru::response_error(&r);
            ru::responses_to_hub_response(&r, "id", CREATED, "m")
        }),
    };
    let Some(hub) = hub else { return };
    let _ = tan::openai_to_anthropic_response(&hub);
    let echo = ri::ResponsesEcho::new(
        &rs::ResponsesRequest::default(),
        "resp_f",
        CREATED,
        "m",
        false,
    );
    let _ = ri::hub_to_responses_response(&hub, &echo);
    let _ = gi::hub_to_gemini_response(&hub, "m", "id");
    // A whole answer re-emitted as a stream (force-stream mode) feeds every ingress.
    let chunks = stream_convert::response_to_chunks(&hub, true);
    all_ingress(&chunks, false);
}
