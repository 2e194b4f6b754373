//! Stream ⇄ non-stream conversion of OpenAI chat completions: golden aggregation and
//! emission tests over `tests/fixtures/openai/stream_convert/`, and round trips.

// Test helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use serde_json::{json, Value};
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::translate::stream_convert::{
    aggregate_chunks, response_to_chunks, ChunkAggregator,
};

fn json_fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openai/stream_convert")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn chunks_fixture(name: &str) -> Vec<oa::ChatCompletionChunk> {
    serde_json::from_value(json_fixture(name)).unwrap()
}

fn response_fixture(name: &str) -> oa::ChatCompletionResponse {
    serde_json::from_value(json_fixture(name)).unwrap()
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn test_aggregate_tool_call_fragments_reasoning_and_usage() {
    let chunks = chunks_fixture("chunks_tools.json");
    let mut agg = ChunkAggregator::new();
    assert!(!agg.has_chunks());
    for c in &chunks {
        agg.push(c);
    }
    assert!(agg.has_chunks());
    assert_eq!(
        to_json(&agg.finish()),
        json_fixture("chunks_tools.expected.json")
    );
}

#[test]
fn test_aggregate_interleaved_choices() {
    let chunks = chunks_fixture("chunks_two_choices.json");
    assert_eq!(
        to_json(&aggregate_chunks(&chunks)),
        json_fixture("chunks_two_choices.expected.json")
    );
}

#[test]
fn test_aggregate_legacy_function_call_and_logprobs() {
    let chunks: Vec<oa::ChatCompletionChunk> = serde_json::from_value(json!([
        {"id": "c", "created": 5, "model": "m", "choices": [{"index": 0,
            "delta": {"role": "assistant", "function_call": {"name": "lookup", "arguments": ""}},
            "finish_reason": null}]},
        {"id": "c", "created": 5, "model": "m", "choices": [{"index": 0,
            "delta": {"function_call": {"arguments": "{\"q\":"}}, "finish_reason": null}]},
        {"id": "c", "created": 5, "model": "m", "choices": [{"index": 0,
            "delta": {"function_call": {"arguments": "\"x\"}"}}, "finish_reason": "function_call"}]},
        {"id": "c", "created": 5, "model": "m", "choices": [{"index": 1,
            "delta": {"role": "assistant", "content": "a"},
            "logprobs": {"content": [{"token": "a", "logprob": -0.1}]}, "finish_reason": null}]},
        {"id": "c", "created": 5, "model": "m", "choices": [{"index": 1,
            "delta": {"content": "b"},
            "logprobs": {"content": [{"token": "b", "logprob": -0.2}]}, "finish_reason": "stop"}]}
    ]))
    .unwrap();
    let resp = to_json(&aggregate_chunks(&chunks));
    assert_eq!(
        resp["choices"],
        json!([
            {"index": 0, "message": {"role": "assistant",
                "function_call": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
             "finish_reason": "function_call"},
            {"index": 1, "message": {"role": "assistant", "content": "ab"},
             "finish_reason": "stop",
             "logprobs": {"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.2}]}}
        ])
    );
    assert!(resp.get("usage").is_none());
}

#[test]
fn test_emit_text_response_golden_with_usage() {
    let resp = response_fixture("response_text.json");
    let chunks: Vec<Value> = response_to_chunks(&resp, true)
        .iter()
        .map(to_json)
        .collect();
    assert_eq!(
        Value::Array(chunks),
        json_fixture("response_text.chunks.expected.json")
    );
}

#[test]
fn test_emit_usage_chunk_only_when_asked() {
    let resp = response_fixture("response_text.json");
    let chunks = response_to_chunks(&resp, false);
    assert!(chunks
        .iter()
        .all(|c| c.usage.is_none() && !c.choices.is_empty()));
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason,
        Some(oa::FinishReason::Stop)
    );
}

#[test]
fn test_emit_one_chunk_per_tool_call() {
    let resp = response_fixture("response_tools.json");
    let chunks = response_to_chunks(&resp, true);
    let tool_chunks: Vec<&oa::ChatCompletionChunk> = chunks
        .iter()
        .filter(|c| {
            c.choices
                .first()
                .is_some_and(|ch| ch.delta.tool_calls.is_some())
        })
        .collect();
    assert_eq!(tool_chunks.len(), 2);
    assert_eq!(
        to_json(&tool_chunks[1].choices[0].delta),
        json!({"tool_calls": [{"index": 1, "id": "call_b2", "type": "function",
                               "function": {"name": "get_time", "arguments": "{}"}}]})
    );
    // No content chunk for a tool-only answer.
    assert!(chunks
        .iter()
        .all(|c| c.choices.iter().all(|ch| ch.delta.content.is_none())));
}

fn assert_round_trip(resp: &oa::ChatCompletionResponse, include_usage: bool) {
    let chunks = response_to_chunks(resp, include_usage);
    // Through the wire format, as a real stream would go.
    let wire: Vec<oa::ChatCompletionChunk> = chunks
        .iter()
        .map(|c| serde_json::from_str(&serde_json::to_string(c).unwrap()).unwrap())
        .collect();
    let back = aggregate_chunks(&wire);
    let mut expected = to_json(resp);
    if !include_usage {
        expected.as_object_mut().unwrap().remove("usage");
    }
    assert_eq!(to_json(&back), expected);
}

#[test]
fn test_round_trip_text_response() {
    let resp = response_fixture("response_text.json");
    assert_round_trip(&resp, true);
    assert_round_trip(&resp, false);
}

#[test]
fn test_round_trip_tool_call_response() {
    let resp = response_fixture("response_tools.json");
    assert_round_trip(&resp, true);
    assert_round_trip(&resp, false);
}

#[test]
fn test_round_trip_mixed_and_multi_choice() {
    let resp: oa::ChatCompletionResponse = serde_json::from_value(json!({
        "id": "chatcmpl-mixed", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Let me look.",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "search", "arguments": "{\"q\":\"rust\"}"}}]},
             "finish_reason": "tool_calls"},
            {"index": 1, "message": {"role": "assistant", "content": "", "refusal": "I can't help with that."},
             "finish_reason": "stop"},
            {"index": 2, "message": {"role": "assistant", "content": "Truncated"},
             "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                  "completion_tokens_details": {"reasoning_tokens": 1}}
    }))
    .unwrap();
    assert_round_trip(&resp, true);
}

#[test]
fn test_gemini_stream_aggregates_to_gemini_response() {
    // The force-non-stream path for a Gemini upstream: translated chunks, aggregated, match
    // the direct non-stream translation of the same content.
    use tollbooth_core::protocol::gemini as g;
    use tollbooth_core::translate::gemini::{from_gemini_response, GeminiStreamTranslator};
    let events: Vec<g::GenerateContentResponse> = serde_json::from_value(json!([
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi "}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [
            {"text": "there."},
            {"functionCall": {"name": "f", "args": {"a": 1}}}
        ]}, "finishReason": "STOP", "index": 0}],
         "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "totalTokenCount": 10}}
    ]))
    .unwrap();
    let mut t = GeminiStreamTranslator::new("id1", 9, "m", true);
    let mut agg = ChunkAggregator::new();
    for ev in events {
        for c in t.on_event(ev) {
            agg.push(&c);
        }
    }
    for c in t.finish() {
        agg.push(&c);
    }
    let whole: g::GenerateContentResponse = serde_json::from_value(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Hi there."},
            {"functionCall": {"name": "f", "args": {"a": 1}}}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "totalTokenCount": 10}
    }))
    .unwrap();
    assert_eq!(
        to_json(&agg.finish()),
        to_json(&from_gemini_response(&whole, "id1", 9, "m"))
    );
}
