//! Anthropic Messages (`POST /v1/messages`).

use bytes::Bytes;
use serde_json::{json, Value};

use super::{sse_event, Answer, ChatFacts, Content};
use crate::mock::body::Step;
use crate::mock::text;

/// `{"type":"error","error":{"type","message"}}`
pub fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ if status < 500 => "invalid_request_error",
        _ => "api_error",
    };
    json!({ "type": "error", "error": { "type": kind, "message": message } })
}

/// Facts of a `/v1/messages` request.
pub fn chat_facts(body: &Value) -> ChatFacts {
    let mut facts = ChatFacts::default();
    if let Some(system) = body.get("system") {
        facts.words += text::words(&text::content_text(system));
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            if let Some(content) = m.get("content") {
                let t = text::content_text(content);
                facts.words += text::words(&t);
                if m.get("role").and_then(Value::as_str) == Some("user") {
                    facts.last_user = t;
                }
            }
        }
    }
    facts.tool = chosen_tool(body);
    facts.answered = super::has_tool_result(body.get("messages"));
    facts.stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    facts
}

fn chosen_tool(body: &Value) -> Option<String> {
    let choice = body.get("tool_choice");
    let choice_type = choice.and_then(|c| c.get("type")).and_then(Value::as_str);
    if choice_type == Some("none") {
        return None;
    }
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())?;
    if choice_type == Some("tool") {
        if let Some(name) = choice.and_then(|c| c.get("name")).and_then(Value::as_str) {
            return Some(name.to_string());
        }
    }
    tools
        .iter()
        .find_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
}

fn stop_reason(a: &Answer) -> &'static str {
    match a.content {
        Content::Text(_) => "end_turn",
        Content::Tool { .. } => "tool_use",
    }
}

fn usage_json(a: &Answer, output_tokens: u64) -> Value {
    let cached = a.usage.cached.unwrap_or(0);
    let written = a.usage.cache_write.unwrap_or(0);
    json!({
        "input_tokens": a.usage.prompt - cached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens,
    })
}

fn insert(v: &mut Value, key: &str, value: Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.insert(key.to_string(), value);
    }
}

/// Non-stream `message`.
pub fn chat_json(a: &Answer, model: &str, id: &str) -> Value {
    let content = match &a.content {
        Content::Text(_) => json!([{ "type": "text", "text": a.text() }]),
        Content::Tool { name, args, .. } => {
            let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            json!([{ "type": "tool_use", "id": "toolu_mock_0", "name": name, "input": input }])
        }
    };
    let mut v = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(a),
        "stop_sequence": null,
    });
    if a.report_usage() {
        insert(&mut v, "usage", usage_json(a, a.usage.completion));
    }
    v
}

/// Stream with the real event sequence.
pub fn chat_stream(a: &Answer, model: &str, id: &str) -> Vec<Step> {
    let mut message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
    });
    if a.report_usage() {
        insert(&mut message, "usage", usage_json(a, 1));
    }
    let mut steps = vec![Step::Event(sse_event(
        "message_start",
        &json!({ "type": "message_start", "message": message }),
    ))];
    let block = match &a.content {
        Content::Text(_) => json!({ "type": "text", "text": "" }),
        Content::Tool { name, .. } => {
            json!({ "type": "tool_use", "id": "toolu_mock_0", "name": name, "input": {} })
        }
    };
    steps.push(Step::Event(sse_event(
        "content_block_start",
        &json!({ "type": "content_block_start", "index": 0, "content_block": block }),
    )));
    steps.push(Step::Event(sse_event("ping", &json!({ "type": "ping" }))));
    let deltas: Vec<Value> = match &a.content {
        Content::Text(pieces) => pieces
            .iter()
            .map(|p| json!({ "type": "text_delta", "text": p }))
            .collect(),
        Content::Tool { fragments, .. } => fragments
            .iter()
            .map(|f| json!({ "type": "input_json_delta", "partial_json": f }))
            .collect(),
    };
    for delta in deltas {
        steps.push(Step::Content(sse_event(
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
        )));
    }
    steps.push(Step::Event(sse_event(
        "content_block_stop",
        &json!({ "type": "content_block_stop", "index": 0 }),
    )));
    let mut message_delta = json!({
        "type": "message_delta",
        "delta": { "stop_reason": stop_reason(a), "stop_sequence": null },
    });
    if a.report_usage() {
        insert(
            &mut message_delta,
            "usage",
            json!({ "output_tokens": a.usage.completion }),
        );
    }
    steps.push(Step::Event(sse_event("message_delta", &message_delta)));
    steps.push(Step::Event(sse_event(
        "message_stop",
        &json!({ "type": "message_stop" }),
    )));
    steps
}

/// The invalid event `malformed=1` inserts.
pub fn malformed_event() -> Bytes {
    Bytes::from_static(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_del\n\n",
    )
}
