//! Golden tests for OpenAI ⇄ Gemini translation: fixtures in `tests/fixtures/gemini/`
//! are translated and compared as parsed JSON against the `.expected.json` files.

// Test helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use serde_json::{json, Value};
use tollbooth_core::protocol::gemini as g;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::translate::gemini::{
    from_gemini_response, map_finish_reason, to_gemini_request, upstream_path,
    GeminiStreamTranslator, GeminiTranslateError,
};
use tollbooth_core::usage::Usage;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemini")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The `data:` payloads of an SSE fixture, decoded by the production decoder.
fn sse_data(name: &str) -> Vec<String> {
    let mut dec = tollbooth_core::sse::Decoder::new();
    let mut events = dec.push(read(name).as_bytes());
    events.extend(dec.finish());
    assert_eq!(dec.dropped_events(), 0);
    events.into_iter().map(|e| e.data).collect()
}

fn openai_request(name: &str) -> oa::ChatCompletionRequest {
    serde_json::from_value(json_fixture(name)).unwrap()
}

fn request_from(v: Value) -> oa::ChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

// --- requests ------------------------------------------------------------------------

#[test]
fn test_request_chat_golden() {
    let out = to_gemini_request(&openai_request("request_chat.openai.json")).unwrap();
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json_fixture("request_chat.expected.json")
    );
}

#[test]
fn test_request_tools_golden() {
    let out = to_gemini_request(&openai_request("request_tools.openai.json")).unwrap();
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json_fixture("request_tools.expected.json")
    );
}

#[test]
fn test_request_invalid_tool_arguments_is_a_clear_error() {
    let req = request_from(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": "}}
            ]}
        ]
    }));
    let err = to_gemini_request(&req).unwrap_err();
    assert!(matches!(
        &err,
        GeminiTranslateError::InvalidToolArguments { index: 1, id, .. } if id == "call_1"
    ));
    assert!(err.to_string().contains("messages[1]"));

    let req = request_from(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
            ]}
        ]
    }));
    assert!(matches!(
        to_gemini_request(&req),
        Err(GeminiTranslateError::ToolArgumentsNotObject { index: 1, .. })
    ));
}

#[test]
fn test_request_tool_result_with_unknown_id_is_rejected() {
    let req = request_from(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_missing", "content": "x"}
        ]
    }));
    assert_eq!(
        to_gemini_request(&req),
        Err(GeminiTranslateError::UnknownToolCallId {
            index: 1,
            id: "call_missing".into()
        })
    );
}

#[test]
fn test_request_tool_choice_modes() {
    let cases = [
        (
            json!("auto"),
            json!({"functionCallingConfig": {"mode": "AUTO"}}),
        ),
        (
            json!("none"),
            json!({"functionCallingConfig": {"mode": "NONE"}}),
        ),
        (
            json!("required"),
            json!({"functionCallingConfig": {"mode": "ANY"}}),
        ),
    ];
    for (choice, expected) in cases {
        let req = request_from(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": choice
        }));
        let out = serde_json::to_value(to_gemini_request(&req).unwrap()).unwrap();
        assert_eq!(out["toolConfig"], expected);
        assert_eq!(
            out["tools"],
            json!([{"functionDeclarations": [{"name": "f"}]}])
        );
    }
}

#[test]
fn test_request_json_object_and_legacy_function_messages() {
    let req = request_from(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "function_call": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
            {"role": "function", "name": "lookup", "content": "{\"found\":true}"}
        ],
        "functions": [{"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
        "function_call": {"name": "lookup"},
        "response_format": {"type": "json_object"}
    }));
    let out = serde_json::to_value(to_gemini_request(&req).unwrap()).unwrap();
    assert_eq!(
        out,
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "x"}}, "thoughtSignature": "skip_thought_signature_validator"}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"found": true}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}},
            "generationConfig": {"responseMimeType": "application/json"}
        })
    );
}

#[test]
fn test_request_rejects_bad_data_url_and_system_only() {
    let req = request_from(json!({
        "model": "m",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}
        ]}]
    }));
    assert_eq!(
        to_gemini_request(&req),
        Err(GeminiTranslateError::InvalidDataUrl { index: 0 })
    );
    let req = request_from(json!({
        "model": "m",
        "messages": [{"role": "system", "content": "only me"}]
    }));
    assert_eq!(
        to_gemini_request(&req),
        Err(GeminiTranslateError::NoContents)
    );
}

#[test]
fn test_upstream_path_never_carries_a_key_and_escapes_the_model() {
    assert_eq!(
        upstream_path("gemini-2.5-flash", false),
        "models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        upstream_path("models/gemini-2.5-flash", true),
        "models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        upstream_path("evil?key=x#", false),
        "models/evil%3Fkey%3Dx%23:generateContent"
    );
}

// --- responses -----------------------------------------------------------------------

fn translate_response(name: &str, id: &str, created: u64, model: &str) -> Value {
    let resp: g::GenerateContentResponse = serde_json::from_value(json_fixture(name)).unwrap();
    serde_json::to_value(from_gemini_response(&resp, id, created, model)).unwrap()
}

#[test]
fn test_response_text_with_thoughts_and_cached_usage_golden() {
    assert_eq!(
        translate_response(
            "response_text.json",
            "chatcmpl-test-1",
            1_700_000_000,
            "my-flash"
        ),
        json_fixture("response_text.expected.json")
    );
}

#[test]
fn test_response_tool_calls_golden() {
    assert_eq!(
        translate_response(
            "response_tool_calls.json",
            "chatcmpl-test-2",
            1_700_000_001,
            "my-pro"
        ),
        json_fixture("response_tool_calls.expected.json")
    );
}

#[test]
fn test_response_blocked_prompt_golden() {
    assert_eq!(
        translate_response(
            "response_blocked.json",
            "chatcmpl-test-3",
            1_700_000_002,
            "my-flash"
        ),
        json_fixture("response_blocked.expected.json")
    );
}

#[test]
fn test_response_unknown_fields_round_trip() {
    for name in [
        "response_text.json",
        "response_tool_calls.json",
        "response_blocked.json",
    ] {
        let v = json_fixture(name);
        let resp: g::GenerateContentResponse = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&resp).unwrap(), v, "{name}");
    }
    let resp: g::GenerateContentResponse =
        serde_json::from_value(json_fixture("response_text.json")).unwrap();
    assert_eq!(resp.candidates[0].extra["avgLogprobs"], json!(-0.21));
    assert!(resp
        .usage_metadata
        .as_ref()
        .unwrap()
        .extra
        .contains_key("cacheTokensDetails"));
}

#[test]
fn test_error_body_parses() {
    let v = json_fixture("error.json");
    let err: g::ErrorResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(err.error.code, Some(400));
    assert_eq!(err.error.status.as_deref(), Some("INVALID_ARGUMENT"));
    assert_eq!(serde_json::to_value(&err).unwrap(), v);
    assert!(matches!(
        g::StreamPayload::parse(&read("error.json")).unwrap(),
        g::StreamPayload::Error(_)
    ));
}

#[test]
fn test_finish_reason_table() {
    use g::FinishReason as G;
    use oa::FinishReason as O;
    let table = [
        ("STOP", false, O::Stop),
        ("STOP", true, O::ToolCalls),
        ("MAX_TOKENS", false, O::Length),
        ("MAX_TOKENS", true, O::Length),
        ("SAFETY", false, O::ContentFilter),
        ("RECITATION", false, O::ContentFilter),
        ("BLOCKLIST", false, O::ContentFilter),
        ("PROHIBITED_CONTENT", false, O::ContentFilter),
        ("SPII", true, O::ContentFilter),
        ("IMAGE_SAFETY", false, O::ContentFilter),
        ("MALFORMED_FUNCTION_CALL", false, O::Stop),
        ("LANGUAGE", false, O::Stop),
        ("OTHER", false, O::Stop),
        ("FINISH_REASON_UNSPECIFIED", false, O::Stop),
        ("SOMETHING_NEW", false, O::Stop),
    ];
    for (gemini, has_calls, expected) in table {
        let reason: G = serde_json::from_value(json!(gemini)).unwrap();
        assert_eq!(
            map_finish_reason(&reason, has_calls),
            expected,
            "{gemini} (tool calls: {has_calls})"
        );
    }
}

// --- streams -------------------------------------------------------------------------

fn run_stream(name: &str, translator: &mut GeminiStreamTranslator) -> Vec<Value> {
    let mut out = Vec::new();
    for data in sse_data(name) {
        out.extend(translator.on_payload(g::StreamPayload::parse(&data).unwrap()));
    }
    out.extend(translator.finish());
    out.iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect()
}

#[test]
fn test_stream_text_golden_with_usage_chunk() {
    let mut t = GeminiStreamTranslator::new("chatcmpl-s1", 1_700_000_000, "my-flash", true);
    let chunks = run_stream("stream_text.sse", &mut t);
    assert!(t.upstream_error().is_none());
    assert_eq!(
        Value::Array(chunks),
        json_fixture("stream_text.expected.json")
    );
    // The last cumulative usageMetadata wins.
    assert_eq!(
        t.usage(),
        Some(Usage {
            input_tokens: 1200,
            output_tokens: 182,
            cached_input_tokens: 1024,
            cache_creation_input_tokens: 0,
            reasoning_tokens: 168,
        })
    );
}

#[test]
fn test_stream_tool_calls_golden() {
    let mut t = GeminiStreamTranslator::new("chatcmpl-s2", 1_700_000_001, "my-pro", false);
    let chunks = run_stream("stream_tool_calls.sse", &mut t);
    assert!(t.upstream_error().is_none());
    assert_eq!(
        Value::Array(chunks),
        json_fixture("stream_tool_calls.expected.json")
    );
    assert_eq!(t.usage().map(|u| u.output_tokens), Some(41));
}

#[test]
fn test_stream_error_payload_is_detected() {
    let mut t = GeminiStreamTranslator::new("chatcmpl-s3", 1_700_000_002, "my-flash", true);
    let chunks = run_stream("stream_error.sse", &mut t);
    // No finish or usage chunk after an error: the caller decides what the client sees.
    assert_eq!(
        Value::Array(chunks),
        json_fixture("stream_error.expected.json")
    );
    let error = t.upstream_error().unwrap();
    assert_eq!(error.code, Some(503));
    assert_eq!(error.status.as_deref(), Some("UNAVAILABLE"));

    // An error body fed to `on_event` as if it were a response is recognised too.
    let mut t = GeminiStreamTranslator::new("x", 0, "m", true);
    let data = sse_data("stream_error.sse");
    for d in &data {
        let ev: g::GenerateContentResponse = serde_json::from_str(d).unwrap();
        t.on_event(ev);
    }
    assert_eq!(t.upstream_error().and_then(|e| e.code), Some(503));
    assert!(t.finish().is_empty());
    assert_eq!(t.usage().map(|u| u.input_tokens), Some(8));
}

#[test]
fn test_stream_without_finish_reason_is_closed_by_finish() {
    let mut t = GeminiStreamTranslator::new("id", 1, "m", false);
    let ev: g::GenerateContentResponse = serde_json::from_value(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "partial"}]}}]
    }))
    .unwrap();
    let first = t.on_event(ev);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].choices[0].delta.role, Some(oa::Role::Assistant));
    let end = t.finish();
    assert_eq!(end.len(), 1);
    assert_eq!(
        end[0].choices[0].finish_reason,
        Some(oa::FinishReason::Stop)
    );
    assert!(t.finish().is_empty(), "finish is idempotent");
    assert!(t.usage().is_none());
}

#[test]
fn test_stream_max_tokens_and_blocked_prompt() {
    let mut t = GeminiStreamTranslator::new("id", 1, "m", false);
    let ev: g::GenerateContentResponse = serde_json::from_value(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "cut"}]}, "finishReason": "MAX_TOKENS"}]
    }))
    .unwrap();
    let chunks = t.on_event(ev);
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason,
        Some(oa::FinishReason::Length)
    );
    assert!(t.finish().is_empty());

    let mut t = GeminiStreamTranslator::new("id", 1, "m", false);
    let ev: g::GenerateContentResponse = serde_json::from_value(json!({
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}
    }))
    .unwrap();
    let chunks: Vec<Value> = t
        .on_event(ev)
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    assert_eq!(
        chunks[1]["choices"][0]["finish_reason"],
        json!("content_filter")
    );
    assert!(t.prompt_blocked());
    assert!(t.finish().is_empty());
}
