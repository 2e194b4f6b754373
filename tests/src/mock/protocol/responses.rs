//! OpenAI Responses (`POST /v1/responses`): JSON and the typed SSE stream.

use bytes::Bytes;
use serde_json::{json, Value};

use super::{Answer, ChatFacts, Content};
use crate::mock::body::Step;
use crate::mock::text;

/// Item ids of an answer: `msg_mock_N`, `fc_mock_N` / `ctc_mock_N`; the call id is
/// always `call_mock_0`.
const CALL_ID: &str = "call_mock_0";

/// Text of an `input` (a string, or items whose content and outputs carry text).
fn input_text(item: &Value) -> String {
    if let Some(content) = item.get("content") {
        return text::content_text(content);
    }
    match item.get("output") {
        Some(output) => text::content_text(output),
        None => String::new(),
    }
}

/// Facts of a `/v1/responses` request: words of `instructions` and of every input item
/// (message content, call outputs), the last user message, the tool to call.
pub fn chat_facts(body: &Value) -> ChatFacts {
    let mut facts = ChatFacts::default();
    if let Some(Value::String(s)) = body.get("instructions") {
        facts.words += text::words(s);
    }
    match body.get("input") {
        Some(Value::String(s)) => {
            facts.words += text::words(s);
            facts.last_user = s.clone();
        }
        Some(Value::Array(items)) => {
            for item in items {
                let t = input_text(item);
                facts.words += text::words(&t);
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    facts.last_user = t;
                }
            }
        }
        _ => {}
    }
    facts.tool = chosen_tool(body);
    facts.answered = super::has_tool_result(body.get("input"));
    facts.stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    facts
}

/// Client tools (function and custom), by name.
fn client_tools(body: &Value) -> Vec<(&str, &str)> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let kind = t.get("type").and_then(Value::as_str)?;
            let name = t.get("name").and_then(Value::as_str)?;
            matches!(kind, "function" | "custom").then_some((kind, name))
        })
        .collect()
}

fn chosen_tool(body: &Value) -> Option<String> {
    let choice = body.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let tools = client_tools(body);
    let forced = choice
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .filter(|n| tools.iter().any(|(_, t)| t == n));
    forced
        .or_else(|| tools.first().map(|(_, n)| *n))
        .map(str::to_string)
}

/// Whether the tool named `name` is a custom (freeform) tool.
fn is_custom(body: &Value, name: &str) -> bool {
    client_tools(body)
        .iter()
        .any(|(kind, n)| *n == name && *kind == "custom")
}

fn usage_json(a: &Answer) -> Value {
    let u = a.usage;
    json!({
        "input_tokens": u.prompt,
        "input_tokens_details": { "cached_tokens": u.cached.unwrap_or(0) },
        "output_tokens": u.completion,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": u.prompt + u.completion,
    })
}

fn response(id: &str, model: &str, created: u64, status: &str, output: Value) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "store": false,
        "metadata": {},
    })
}

/// The final output item of an answer.
fn output_item(a: &Answer, body: &Value, seq: u64) -> Value {
    match &a.content {
        Content::Text(_) => json!({
            "type": "message",
            "id": format!("msg_mock_{seq}"),
            "status": "completed",
            "role": "assistant",
            "content": [{ "type": "output_text", "text": a.text(), "annotations": [] }],
        }),
        Content::Tool { name, args, .. } if is_custom(body, name) => json!({
            "type": "custom_tool_call",
            "id": format!("ctc_mock_{seq}"),
            "call_id": CALL_ID,
            "name": name,
            "input": args,
        }),
        Content::Tool { name, args, .. } => json!({
            "type": "function_call",
            "id": format!("fc_mock_{seq}"),
            "call_id": CALL_ID,
            "name": name,
            "arguments": args,
            "status": "completed",
        }),
    }
}

fn with_usage(mut v: Value, a: &Answer) -> Value {
    if let Some(obj) = v.as_object_mut() {
        let usage = if a.report_usage() {
            usage_json(a)
        } else {
            Value::Null
        };
        obj.insert("usage".into(), usage);
    }
    v
}

/// Non-stream response object.
pub fn chat_json(a: &Answer, body: &Value, model: &str, id: &str, seq: u64, created: u64) -> Value {
    let output = json!([output_item(a, body, seq)]);
    with_usage(response(id, model, created, "completed", output), a)
}

/// `event: TYPE\ndata: {..., "sequence_number": n}\n\n`, numbering as it goes.
struct Events {
    seq: u64,
}

impl Events {
    fn next(&mut self, kind: &str, mut v: Value) -> Bytes {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("type".into(), json!(kind));
            obj.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
    }
}

/// The typed event stream: `response.created`, `response.in_progress`, the item's
/// `output_item.added`, (messages) `content_part.added`, one delta per content chunk,
/// the `.done` events, `output_item.done`, `response.completed` with the usage.
pub fn chat_stream(
    a: &Answer,
    body: &Value,
    model: &str,
    id: &str,
    seq: u64,
    created: u64,
) -> Vec<Step> {
    let mut ev = Events { seq: 0 };
    let in_progress = response(id, model, created, "in_progress", json!([]));
    let mut steps = vec![
        Step::Event(ev.next("response.created", json!({ "response": in_progress }))),
        Step::Event(ev.next("response.in_progress", json!({ "response": in_progress }))),
    ];
    let done = output_item(a, body, seq);
    let item_id = done["id"].as_str().unwrap_or_default().to_string();
    match &a.content {
        Content::Text(pieces) => {
            let added = json!({ "type": "message", "id": item_id, "status": "in_progress",
                                "role": "assistant", "content": [] });
            steps.push(Step::Event(ev.next(
                "response.output_item.added",
                json!({ "output_index": 0, "item": added }),
            )));
            steps.push(Step::Event(ev.next(
                "response.content_part.added",
                json!({ "item_id": item_id, "output_index": 0, "content_index": 0,
                        "part": { "type": "output_text", "text": "", "annotations": [] } }),
            )));
            for p in pieces {
                steps.push(Step::Content(ev.next(
                    "response.output_text.delta",
                    json!({ "item_id": item_id, "output_index": 0, "content_index": 0,
                            "delta": p, "logprobs": [] }),
                )));
            }
            let text = a.text();
            steps.push(Step::Event(ev.next(
                "response.output_text.done",
                json!({ "item_id": item_id, "output_index": 0, "content_index": 0,
                        "text": text, "logprobs": [] }),
            )));
            steps.push(Step::Event(ev.next(
                "response.content_part.done",
                json!({ "item_id": item_id, "output_index": 0, "content_index": 0,
                        "part": { "type": "output_text", "text": text, "annotations": [] } }),
            )));
        }
        Content::Tool {
            name,
            args,
            fragments,
        } => {
            let custom = is_custom(body, name);
            let added = if custom {
                json!({ "type": "custom_tool_call", "id": item_id, "call_id": CALL_ID,
                        "name": name, "input": "" })
            } else {
                json!({ "type": "function_call", "id": item_id, "call_id": CALL_ID,
                        "name": name, "arguments": "", "status": "in_progress" })
            };
            steps.push(Step::Event(ev.next(
                "response.output_item.added",
                json!({ "output_index": 0, "item": added }),
            )));
            let (delta_kind, done_kind, done_field) = if custom {
                (
                    "response.custom_tool_call_input.delta",
                    "response.custom_tool_call_input.done",
                    "input",
                )
            } else {
                (
                    "response.function_call_arguments.delta",
                    "response.function_call_arguments.done",
                    "arguments",
                )
            };
            for f in fragments {
                steps.push(Step::Content(ev.next(
                    delta_kind,
                    json!({ "item_id": item_id, "output_index": 0, "delta": f }),
                )));
            }
            steps.push(Step::Event(ev.next(
                done_kind,
                json!({ "item_id": item_id, "output_index": 0, done_field: args }),
            )));
        }
    }
    steps.push(Step::Event(ev.next(
        "response.output_item.done",
        json!({ "output_index": 0, "item": done }),
    )));
    let completed = with_usage(response(id, model, created, "completed", json!([done])), a);
    steps.push(Step::Event(
        ev.next("response.completed", json!({ "response": completed })),
    ));
    steps
}

/// The invalid event `malformed=1` inserts.
pub fn malformed_event() -> Bytes {
    Bytes::from_static(
        b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"tr\n\n",
    )
}
