//! Golden tests for OpenAI <-> Anthropic translation: fixture in
//! `tests/fixtures/{openai,anthropic}/`, translate, compare parsed JSON.

// clippy.toml only relaxes these inside `#[test]` fns; the fixture helpers here are test
// code too, and a panic is how they report a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::translate::anthropic::*;
use tollbooth_core::usage::Usage;

const CREATED: u64 = 1_700_000_000;

fn fixture_text(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn fixture(path: &str) -> Value {
    serde_json::from_str(&fixture_text(path)).unwrap()
}

fn parse<T: serde::de::DeserializeOwned>(path: &str) -> T {
    serde_json::from_value(fixture(path)).unwrap()
}

/// The `data:` payloads of an SSE fixture, decoded by the production decoder.
fn sse_data(path: &str) -> Vec<String> {
    let mut dec = tollbooth_core::sse::Decoder::new();
    let mut events = dec.push(fixture_text(path).as_bytes());
    events.extend(dec.finish());
    assert_eq!(dec.dropped_events(), 0);
    events.into_iter().map(|e| e.data).collect()
}

fn anthropic_events(path: &str) -> Vec<an::StreamEvent> {
    sse_data(path)
        .iter()
        .map(|d| an::StreamEvent::from_data(d).unwrap())
        .collect()
}

fn openai_items(path: &str) -> Vec<oa::ChatStreamItem> {
    sse_data(path)
        .iter()
        .map(|d| oa::ChatStreamItem::parse(d).unwrap())
        .collect()
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn run_anthropic_stream(
    t: &mut AnthropicToOpenAiStream,
    events: Vec<an::StreamEvent>,
) -> Vec<oa::ChatCompletionChunk> {
    let mut out = Vec::new();
    for e in events {
        out.extend(t.on_event(e));
    }
    out.extend(t.finish());
    out
}

fn run_openai_stream(
    t: &mut OpenAiToAnthropicStream,
    items: Vec<oa::ChatStreamItem>,
) -> Vec<an::StreamEvent> {
    let mut out = Vec::new();
    for item in items {
        match item {
            oa::ChatStreamItem::Chunk(c) => out.extend(t.on_event(c)),
            oa::ChatStreamItem::Done => break,
            oa::ChatStreamItem::Error(e) => out.extend(t.on_error(&e.error)),
        }
    }
    out.extend(t.finish());
    out
}

// --- 1. OpenAI request -> Anthropic request -------------------------------------------

#[test]
fn test_openai_request_with_tools_to_anthropic() {
    let req: oa::ChatCompletionRequest = parse("openai/request_tools.json");
    let out = openai_to_anthropic_request(&req, 4096).unwrap();
    assert_eq!(
        to_value(&out),
        fixture("anthropic/request_from_openai_tools.json")
    );
}

#[test]
fn test_openai_simple_request_merges_turns_and_uses_default_max_tokens() {
    let req: oa::ChatCompletionRequest = parse("openai/request_simple.json");
    let out = openai_to_anthropic_request(&req, 4096).unwrap();
    assert_eq!(
        to_value(&out),
        fixture("anthropic/request_from_openai_simple.json")
    );
}

#[test]
fn test_invalid_tool_arguments_are_a_clear_error() {
    let req: oa::ChatCompletionRequest = serde_json::from_value(json!({
        "model": "claude",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "x"}
        ]
    }))
    .unwrap();
    let err = openai_to_anthropic_request(&req, 1024).unwrap_err();
    let TranslateError::InvalidRequest { message, param } = &err;
    assert!(message.contains("not valid JSON"), "{message}");
    assert_eq!(
        param.as_deref(),
        Some("messages[1].tool_calls[0].function.arguments")
    );
    assert_eq!(
        to_value(&err.to_openai())["error"]["type"],
        "invalid_request_error"
    );
}

#[test]
fn test_meaning_changing_options_are_rejected() {
    let base = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        ("n", json!(2)),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ),
    ];
    for (field, value) in cases {
        let mut v = base.clone();
        v[field] = value;
        let req: oa::ChatCompletionRequest = serde_json::from_value(v).unwrap();
        let TranslateError::InvalidRequest { param, .. } =
            openai_to_anthropic_request(&req, 1024).unwrap_err();
        assert_eq!(param.as_deref(), Some(field));
    }
    let mut v = base.clone();
    v["messages"][0]["content"] =
        json!([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]);
    let req: oa::ChatCompletionRequest = serde_json::from_value(v).unwrap();
    assert!(openai_to_anthropic_request(&req, 1024).is_err());
}

#[test]
fn test_tool_choice_mapping() {
    let cases = [
        (json!("none"), json!({"type": "none"})),
        (json!("auto"), json!({"type": "auto"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ];
    for (choice, expected) in cases {
        let req: oa::ChatCompletionRequest = serde_json::from_value(json!({
            "model": "claude",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": choice
        }))
        .unwrap();
        let out = openai_to_anthropic_request(&req, 1024).unwrap();
        assert_eq!(to_value(&out)["tool_choice"], expected);
    }
}

#[test]
fn test_legacy_functions_map_to_tools() {
    let req: oa::ChatCompletionRequest = serde_json::from_value(json!({
        "model": "claude",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null,
             "function_call": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
            {"role": "function", "name": "get_weather", "content": "-3C"}
        ],
        "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
        "function_call": {"name": "get_weather"}
    }))
    .unwrap();
    let out = to_value(&openai_to_anthropic_request(&req, 1024).unwrap());
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_legacy_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_legacy_1", "content": "-3C"}]}
        ])
    );
    assert_eq!(
        out["tools"],
        json!([{"name": "get_weather", "input_schema": {"type": "object"}}])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
}

// --- 2. Anthropic response -> OpenAI response -----------------------------------------

#[test]
fn test_anthropic_tool_use_response_to_openai() {
    let resp: an::MessagesResponse = parse("anthropic/response_tool_use.json");
    let out = anthropic_to_openai_response(&resp, CREATED);
    assert_eq!(
        to_value(&out),
        fixture("openai/response_from_anthropic_tool_use.json")
    );
}

#[test]
fn test_anthropic_text_response_to_openai() {
    let resp: an::MessagesResponse = parse("anthropic/response_text.json");
    let out = anthropic_to_openai_response(&resp, CREATED);
    assert_eq!(
        to_value(&out),
        fixture("openai/response_from_anthropic_text.json")
    );
}

#[test]
fn test_finish_reason_mapping_table() {
    let anthropic_to_openai = [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ];
    for (a, o) in anthropic_to_openai {
        let r = an::StopReason::from(a.to_owned());
        assert_eq!(anthropic_stop_to_openai(&r).as_str(), o, "{a}");
    }
    let openai_to_anthropic = [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        ("something_new", "end_turn"),
    ];
    for (o, a) in openai_to_anthropic {
        let r = oa::FinishReason::from(o.to_owned());
        assert_eq!(openai_finish_to_anthropic(&r).as_str(), a, "{o}");
    }
}

#[test]
fn test_usage_with_cache_tokens() {
    let resp: an::MessagesResponse = parse("anthropic/response_tool_use.json");
    assert_eq!(
        Usage::from(&resp.usage),
        Usage {
            input_tokens: 2050,
            output_tokens: 95,
            cached_input_tokens: 1800,
            cache_creation_input_tokens: 200,
            reasoning_tokens: 0,
        }
    );
    let resp: oa::ChatCompletionResponse = parse("openai/response_tool_calls.json");
    assert_eq!(
        Usage::from(resp.usage.as_ref().unwrap()),
        Usage {
            input_tokens: 1200,
            output_tokens: 60,
            cached_input_tokens: 1024,
            cache_creation_input_tokens: 0,
            reasoning_tokens: 0,
        }
    );
}

// --- 3. Anthropic stream -> OpenAI chunks ---------------------------------------------

#[test]
fn test_anthropic_stream_with_split_tool_arguments_to_openai() {
    let mut t = AnthropicToOpenAiStream::new(CREATED, true);
    let chunks = run_anthropic_stream(&mut t, anthropic_events("anthropic/stream_tool_use.sse"));
    assert_eq!(
        to_value(&chunks),
        fixture("openai/stream_from_anthropic_tool_use.json")
    );
    assert!(t.error().is_none());
    assert_eq!(
        t.usage(),
        Some(Usage {
            input_tokens: 2520,
            output_tokens: 89,
            cached_input_tokens: 2048,
            cache_creation_input_tokens: 0,
            reasoning_tokens: 0,
        })
    );
    // Reassembled arguments are the complete JSON.
    let args: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .filter(|tc| tc.index == 0)
        .filter_map(|tc| tc.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "San Francisco, CA", "unit": "f"})
    );
}

#[test]
fn test_anthropic_stream_without_usage_chunk_when_not_requested() {
    let mut t = AnthropicToOpenAiStream::new(CREATED, false);
    let chunks = run_anthropic_stream(&mut t, anthropic_events("anthropic/stream_tool_use.sse"));
    assert!(chunks
        .iter()
        .all(|c| c.usage.is_none() && !c.choices.is_empty()));
    assert_eq!(t.usage().unwrap().output_tokens, 89);
}

#[test]
fn test_unknown_anthropic_event_is_preserved_and_ignored() {
    let events = anthropic_events("anthropic/stream_tool_use.sse");
    let unknown = events
        .iter()
        .find(|e| matches!(e, an::StreamEvent::Unknown(_)))
        .unwrap();
    assert_eq!(
        to_value(unknown),
        json!({"type": "brand_new_event", "payload": {"anything": true}})
    );
    let mut t = AnthropicToOpenAiStream::new(CREATED, false);
    t.on_event(events[0].clone());
    assert!(t.on_event(unknown.clone()).is_empty());
    assert!(t.error().is_none());
}

#[test]
fn test_anthropic_mid_stream_error_is_detectable() {
    let mut t = AnthropicToOpenAiStream::new(CREATED, true);
    let chunks = run_anthropic_stream(&mut t, anthropic_events("anthropic/stream_error.sse"));
    assert_eq!(chunks.len(), 2); // role chunk, "Partial"
    let err = t.error().unwrap();
    assert_eq!(err.kind, "overloaded_error");
    assert_eq!(
        to_value(&anthropic_error_to_openai(err)),
        json!({"error": {"message": "Overloaded", "type": "server_error",
                         "code": "overloaded_error", "param": null}})
    );
    // Nothing is emitted after the error.
    assert!(t.on_event(an::StreamEvent::MessageStop).is_empty());
}

#[test]
fn test_anthropic_stream_cut_before_stop_is_an_error() {
    let mut events = anthropic_events("anthropic/stream_tool_use.sse");
    events.truncate(8);
    let mut t = AnthropicToOpenAiStream::new(CREATED, true);
    let chunks = run_anthropic_stream(&mut t, events);
    assert!(chunks.iter().all(|c| c.choices[0].finish_reason.is_none()));
    assert!(t.error().is_some());
    assert!(t.output_chars() > 0);
}

#[test]
fn test_sse_decoder_with_split_reads_feeds_translator() {
    let raw = fixture_text("anthropic/stream_tool_use.sse");
    let mut decoder = tollbooth_core::sse::Decoder::new();
    let mut events = Vec::new();
    for piece in raw.as_bytes().chunks(7) {
        events.extend(decoder.push(piece));
    }
    events.extend(decoder.finish());
    let parsed: Vec<an::StreamEvent> = events
        .iter()
        .map(|e| an::StreamEvent::from_data(&e.data).unwrap())
        .collect();
    assert_eq!(parsed, anthropic_events("anthropic/stream_tool_use.sse"));
}

// --- 4. Anthropic request -> OpenAI request -------------------------------------------

#[test]
fn test_anthropic_request_with_tools_to_openai() {
    let req: an::MessagesRequest = parse("anthropic/request_tools.json");
    let out = anthropic_to_openai_request(&req).unwrap();
    assert_eq!(
        to_value(&out),
        fixture("openai/request_from_anthropic_tools.json")
    );
}

#[test]
fn test_anthropic_server_tool_is_rejected() {
    let req: an::MessagesRequest = serde_json::from_value(json!({
        "model": "claude", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]
    }))
    .unwrap();
    let err = anthropic_to_openai_request(&req).unwrap_err();
    assert_eq!(err.to_anthropic().error.kind, "invalid_request_error");
}

#[test]
fn test_request_round_trip_through_hub_keeps_conversation() {
    // Anthropic ingress -> OpenAI hub -> Anthropic upstream keeps the turns and tools.
    let req: an::MessagesRequest = parse("anthropic/request_tools.json");
    let hub = anthropic_to_openai_request(&req).unwrap();
    let back = to_value(&openai_to_anthropic_request(&hub, 1).unwrap());
    assert_eq!(back["max_tokens"], 2048);
    assert_eq!(back["tools"], to_value(&req.tools));
    assert_eq!(
        back["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"})
    );
    // The last assistant turn called a tool after signed thinking, and the signature
    // cannot cross the hub: thinking stays off rather than earn a 400 from Claude (the
    // edge forwards Anthropic to Anthropic untranslated, signatures and all).
    assert!(back.get("thinking").is_none(), "{back}");
}

// --- 5. OpenAI response -> Anthropic response -----------------------------------------

#[test]
fn test_openai_tool_calls_response_to_anthropic() {
    let resp: oa::ChatCompletionResponse = parse("openai/response_tool_calls.json");
    let out = openai_to_anthropic_response(&resp);
    assert_eq!(
        to_value(&out),
        fixture("anthropic/response_from_openai_tool_calls.json")
    );
}

// --- 6. OpenAI chunks -> Anthropic stream events --------------------------------------

#[test]
fn test_openai_stream_with_tool_calls_to_anthropic() {
    let mut t = OpenAiToAnthropicStream::new("msg_test", "gpt-4.1");
    let events = run_openai_stream(&mut t, openai_items("openai/stream_tool_calls.sse"));
    assert_eq!(
        to_value(&events),
        fixture("anthropic/stream_from_openai_tool_calls.json")
    );
    assert_eq!(t.usage().unwrap().cached_input_tokens, 1024);
    assert!(t.finish().is_empty(), "finish is idempotent");
}

#[test]
fn test_openai_stream_without_finish_reason_is_closed_by_finish() {
    let mut t = OpenAiToAnthropicStream::new("msg_test", "deepseek-reasoner");
    let events = run_openai_stream(&mut t, openai_items("openai/stream_text_truncated.sse"));
    assert_eq!(
        to_value(&events),
        fixture("anthropic/stream_from_openai_text_truncated.json")
    );
    assert_eq!(t.usage(), None);
}

#[test]
fn test_openai_stream_same_index_new_id_starts_new_tool_block() {
    let mut t = OpenAiToAnthropicStream::new("msg_test", "m");
    let mut out = Vec::new();
    for (id, args) in [("call_1", "{}"), ("call_2", "{\"a\":1}")] {
        let chunk: oa::ChatCompletionChunk = serde_json::from_value(json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": id, "type": "function",
                "function": {"name": "f", "arguments": args}}]}, "finish_reason": null}]
        }))
        .unwrap();
        out.extend(t.on_event(chunk));
    }
    out.extend(t.finish());
    let starts: Vec<Value> = out
        .iter()
        .filter_map(|e| match e {
            an::StreamEvent::ContentBlockStart { content_block, .. } => {
                Some(to_value(content_block))
            }
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["id"], "call_2");
    let last = to_value(&out[out.len() - 2]);
    assert_eq!(last["delta"]["stop_reason"], "tool_use");
}

#[test]
fn test_openai_mid_stream_error_becomes_anthropic_error_event() {
    let mut t = OpenAiToAnthropicStream::new("msg_test", "m");
    let item = oa::ChatStreamItem::parse(
        r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded","param":null}}"#,
    )
    .unwrap();
    let events = run_openai_stream(&mut t, vec![item]);
    assert_eq!(
        to_value(&events),
        json!([{"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}])
    );
}

// --- Wire types: unknown fields round-trip --------------------------------------------

#[test]
fn test_unknown_fields_round_trip_through_wire_types() {
    for path in [
        "openai/request_tools.json",
        "openai/request_simple.json",
        "openai/response_tool_calls.json",
    ] {
        let mut original = fixture(path);
        let value = if path.contains("request") {
            to_value(
                &serde_json::from_value::<oa::ChatCompletionRequest>(original.clone()).unwrap(),
            )
        } else {
            to_value(
                &serde_json::from_value::<oa::ChatCompletionResponse>(original.clone()).unwrap(),
            )
        };
        // `null` optionals are dropped on the way out; everything else must survive.
        strip_nulls(&mut original);
        assert_eq!(value, original, "{path}");
    }
    for path in [
        "anthropic/response_tool_use.json",
        "anthropic/response_text.json",
    ] {
        let original = fixture(path);
        let r: an::MessagesResponse = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(to_value(&r), original, "{path}");
    }
    let original = fixture("anthropic/request_tools.json");
    let r: an::MessagesRequest = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(to_value(&r), original);
}

/// Real Claude answers 400 ("a final assistant message must start with a thinking
/// block") when thinking is on and the last assistant turn used tools without its signed
/// thinking, which OpenAI history never carries: thinking stays off for that follow-up.
#[test]
fn test_reasoning_effort_is_not_enabled_on_an_unsigned_tool_follow_up() {
    let req = |messages: Value| -> oa::ChatCompletionRequest {
        serde_json::from_value(json!({
            "model": "claude", "max_tokens": 8192, "reasoning_effort": "low",
            "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "messages": messages
        }))
        .unwrap()
    };
    // First turn: thinking on.
    let first = openai_to_anthropic_request(&req(json!([{"role": "user", "content": "hi"}])), 1024)
        .unwrap();
    assert_eq!(to_value(&first)["thinking"]["type"], "enabled");
    // Follow-up to a tool call: thinking off (and temperature kept, as without thinking).
    let follow = req(json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "reasoning_content": "I should call f",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    ]));
    let out = to_value(&openai_to_anthropic_request(&follow, 1024).unwrap());
    assert!(out.get("thinking").is_none(), "{out}");
    assert_eq!(out["temperature"], 0.5);
    // A later plain assistant answer closes the tool loop: thinking is back on.
    let mut later = follow.clone();
    later.messages.extend(
        serde_json::from_value::<Vec<oa::ChatMessage>>(json!([
            {"role": "assistant", "content": "It is 42."},
            {"role": "user", "content": "thanks"}
        ]))
        .unwrap(),
    );
    let out = to_value(&openai_to_anthropic_request(&later, 1024).unwrap());
    assert_eq!(out["thinking"]["type"], "enabled", "{out}");
}
