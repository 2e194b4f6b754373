//! Gemini-native ingress: request mapping and refusals, the response and stream shapes,
//! the two stream framings, countTokens, the model list and the error shape.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use tollbooth_core::protocol::gemini as g;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::sse;
use tollbooth_core::translate::gemini_ingress as gi;

fn greq(v: Value) -> g::GenerateContentRequest {
    serde_json::from_value(v).unwrap()
}

fn hub(v: Value) -> oa::ChatCompletionRequest {
    gi::gemini_to_hub_request(&greq(v), "models/gemini-x", false).unwrap()
}

fn refusal(v: Value) -> String {
    gi::gemini_to_hub_request(&greq(v), "m", false)
        .unwrap_err()
        .to_string()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

#[test]
fn test_function_responses_pair_with_calls_by_id_then_by_name() {
    let h = hub(json!({"contents": [
        user("go"),
        {"role": "model", "parts": [
            {"text": "thinking", "thought": true},
            {"functionCall": {"name": "a", "args": {"n": 1}}},
            {"functionCall": {"id": "given", "name": "b"}},
            {"functionCall": {"name": "a", "args": {"n": 2}}, "thoughtSignature": "sig"}
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "b", "id": "given", "response": {"ok": true}}},
            {"functionResponse": {"name": "a", "response": {"r": 1}}},
            {"functionResponse": {"name": "a", "response": {"r": 2}}},
            {"text": "thanks"}
        ]}
    ]}));
    assert_eq!(h.model, "gemini-x");
    let v = serde_json::to_value(&h.messages).unwrap();
    let calls = v[1]["tool_calls"].as_array().unwrap();
    let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["call_1_1", "given", "call_1_3"]);
    assert_eq!(calls[1]["function"]["arguments"], "{}");
    assert_eq!(v[1]["reasoning_content"], "thinking");
    assert_eq!(
        v[2],
        json!({"role": "tool", "content": "{\"ok\":true}", "tool_call_id": "given"})
    );
    assert_eq!(v[3]["tool_call_id"], "call_1_1");
    assert_eq!(v[4]["tool_call_id"], "call_1_3");
    assert_eq!(v[5], json!({"role": "user", "content": "thanks"}));
}

#[test]
fn test_inline_data_kinds_and_file_data_rules() {
    let h = hub(json!({"contents": [{"role": "user", "parts": [
        {"text": "see"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
        {"inlineData": {"mimeType": "audio/mpeg", "data": "SUQz"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x/y.jpg"}}
    ]}]}));
    let parts = serde_json::to_value(&h.messages[0].content).unwrap();
    assert_eq!(parts[1]["image_url"]["url"], "data:image/png;base64,iVBO");
    assert_eq!(
        parts[2]["input_audio"],
        json!({"data": "SUQz", "format": "mp3"})
    );
    assert_eq!(
        parts[3]["file"]["file_data"],
        "data:application/pdf;base64,JVBE"
    );
    assert_eq!(parts[4]["image_url"]["url"], "https://x/y.jpg");
    let m = refusal(json!({"contents": [{"role": "user", "parts": [
        {"fileData": {"mimeType": "video/mp4", "fileUri": "gs://b/v.mp4"}}]}]}));
    assert!(
        m.contains("contents[0].parts[0]") || m.contains("fileData"),
        "{m}"
    );
}

#[test]
fn test_refusals_name_the_field() {
    assert!(refusal(json!({"contents": []})).contains("contents"));
    assert!(
        refusal(json!({"contents": [user("x")], "cachedContent": "cachedContents/1"}))
            .contains("cachedContent")
    );
    assert!(
        refusal(json!({"contents": [{"role": "tool", "parts": [{"text": "x"}]}]})).contains("role")
    );
    assert!(refusal(json!({"contents": [{"role": "user", "parts": [
        {"executableCode": {"language": "PYTHON", "code": "1"}}]}]}))
    .contains("executableCode"));
    let err = gi::gemini_to_hub_request(&greq(json!({"contents": []})), "m", false).unwrap_err();
    let body = serde_json::to_value(gi::translate_error(&err)).unwrap();
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
}

#[test]
fn test_schemas_tools_tool_config_and_generation_config() {
    let decls = json!([{"functionDeclarations": [
        {"name": "a", "parameters": {"type": "OBJECT", "properties": {
            "x": {"type": "STRING", "nullable": true},
            "y": {"type": "ARRAY", "items": {"type": "INTEGER"}}}, "propertyOrdering": ["x", "y"]}},
        {"name": "b", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
        {"name": "c"}
    ]}, {"googleSearch": {}}]);
    let h = hub(json!({"contents": [user("x")], "tools": decls,
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}},
        "generationConfig": {"maxOutputTokens": 10, "stopSequences": ["END"], "candidateCount": 1,
            "topK": 40, "seed": 3, "thinkingConfig": {"thinkingBudget": 5000},
            "responseMimeType": "application/json"},
        "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]}));
    let tools = h.tools.as_ref().unwrap();
    assert_eq!(tools.len(), 1, "allowedFunctionNames narrows the tools");
    assert_eq!(
        h.tool_choice,
        Some(oa::ToolChoice::Named(oa::NamedToolChoice::function("b")))
    );
    assert_eq!(
        tools[0].function.parameters.as_ref().unwrap()["additionalProperties"],
        false
    );
    assert_eq!(h.max_tokens, Some(10));
    assert_eq!(h.stop, Some(oa::Stop::Many(vec!["END".into()])));
    assert_eq!(h.n, None);
    assert_eq!(h.seed, Some(3));
    assert_eq!(h.reasoning_effort.as_deref(), Some("medium"));
    assert_eq!(h.response_format.as_ref().unwrap().kind, "json_object");
    assert!(h.extra.is_empty());

    let h = hub(json!({"contents": [user("x")], "tools": decls}));
    let schema = h.tools.as_ref().unwrap()[0]
        .function
        .parameters
        .clone()
        .unwrap();
    assert_eq!(
        schema,
        json!({"type": "object", "properties": {
            "x": {"type": ["string", "null"]},
            "y": {"type": "array", "items": {"type": "integer"}}}})
    );
    assert_eq!(
        h.tools.as_ref().unwrap()[2].function.parameters,
        Some(json!({"type": "object", "properties": {}}))
    );
    let h = hub(json!({"contents": [user("x")], "tools": decls,
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}));
    assert_eq!(
        h.tool_choice,
        Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::None))
    );
    let h = hub(json!({"contents": [user("x")],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}));
    assert_eq!(h.reasoning_effort.as_deref(), Some("none"));
}

fn chunk(delta: Value, finish: Option<&str>) -> oa::ChatCompletionChunk {
    serde_json::from_value(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
        "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
    )
    .unwrap()
}

#[test]
fn test_stream_holds_the_final_chunk_until_usage_and_assembles_calls() {
    let mut t = gi::HubToGeminiStream::new("client", "rid");
    let mut out = t.on_event(chunk(json!({"role": "assistant", "content": "Hi"}), None));
    assert_eq!(out.len(), 1);
    out.extend(t.on_event(chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "f", "arguments": "{\"a\""}}]}),
        None,
    )));
    out.extend(t.on_event(chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        None,
    )));
    let held = t.on_event(chunk(json!({}), Some("tool_calls")));
    assert!(held.is_empty(), "the finish waits for the usage");
    let usage: oa::ChatCompletionChunk = serde_json::from_value(json!({"id": "c",
        "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}))
    .unwrap();
    assert!(t.on_event(usage).is_empty());
    out.extend(t.finish());
    assert!(t.finish().is_empty());
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(
        v[1]["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"id": "call_1", "name": "f", "args": {"a": 1}})
    );
    assert_eq!(v[1]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        v[1]["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7})
    );
    assert_eq!(v[0]["modelVersion"], "client");
    assert_eq!(v[0]["responseId"], "rid");
}

#[test]
fn test_framings_errors_and_empty_streams() {
    let err = gi::error_response(429, "slow down");
    let mut array = gi::GeminiStreamFramer::new(false);
    assert_eq!(array.content_type(), "application/json; charset=UTF-8");
    let text = array.error(&err);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[0]["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(array.finish(), "", "finish after an error adds nothing");
    let mut empty = gi::GeminiStreamFramer::new(false);
    assert_eq!(empty.finish(), "[]");

    let mut s = gi::GeminiStreamFramer::new(true);
    assert_eq!(s.content_type(), "text/event-stream");
    let text = s.error(&err);
    let mut dec = sse::Decoder::new();
    let events = dec.push(text.as_bytes());
    assert_eq!(events.len(), 1);
    assert!(matches!(
        g::StreamPayload::parse(&events[0].data).unwrap(),
        g::StreamPayload::Error(_)
    ));
}

#[test]
fn test_count_tokens_model_list_and_error_shapes() {
    assert_eq!(
        serde_json::to_value(gi::count_tokens_response(31)).unwrap(),
        json!({"totalTokens": 31})
    );
    let list = gi::model_list(vec![gi::model_info("demo", Some(1000), Some(100))]);
    assert_eq!(
        serde_json::to_value(list).unwrap(),
        json!({"models": [{"name": "models/demo", "displayName": "demo",
            "inputTokenLimit": 1000, "outputTokenLimit": 100,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}]})
    );
    for (status, name) in [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (413, "INVALID_ARGUMENT"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (502, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ] {
        let v = serde_json::to_value(gi::error_response(status, "m")).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": status, "message": "m", "status": name}})
        );
    }
}

/// Gemini 3 rejects a history `functionCall` part without `thoughtSignature` (400 on the
/// second request of a tool turn). The signature Gemini issued survives Gemini ingress ->
/// hub -> Gemini upstream; a call from elsewhere gets Google's documented bypass value.
#[test]
fn test_function_call_thought_signature_reaches_the_gemini_upstream() {
    let body: g::GenerateContentRequest = serde_json::from_value(json!({
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                 "thoughtSignature": "sig-from-gemini"},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"t": 3}}},
                {"functionResponse": {"name": "get_time", "response": {"t": "noon"}}}
            ]}
        ]
    }))
    .unwrap();
    let hub = gi::gemini_to_hub_request(&body, "m", false).unwrap();
    let up =
        serde_json::to_value(tollbooth_core::translate::gemini::to_gemini_request(&hub).unwrap())
            .unwrap();
    let parts = &up["contents"][1]["parts"];
    assert_eq!(parts[0]["functionCall"]["name"], "get_weather");
    assert_eq!(parts[0]["thoughtSignature"], "sig-from-gemini");
    assert_eq!(parts[1]["functionCall"]["name"], "get_time");
    assert_eq!(
        parts[1]["thoughtSignature"],
        tollbooth_core::translate::gemini::SKIP_THOUGHT_SIGNATURE
    );
    // The hub's JSON (what an OpenAI upstream would get) never carries it.
    let hub_json = serde_json::to_string(&hub).unwrap();
    assert!(!hub_json.contains("sig-from-gemini"), "{hub_json}");
}
