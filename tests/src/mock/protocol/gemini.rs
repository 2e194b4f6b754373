//! Gemini `generateContent` / `streamGenerateContent`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::{Answer, ChatFacts, Content};
use crate::mock::body::Step;
use crate::mock::text;

/// `{"error":{"code","message","status"}}`
pub fn error_body(status: u16, message: &str) -> Value {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if status < 500 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    };
    json!({ "error": { "code": status, "message": message, "status": name } })
}

/// Camel case or snake case field.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn parts_text(content: &Value) -> String {
    content
        .get("parts")
        .map(text::content_text)
        .unwrap_or_default()
}

/// Facts of a `generateContent` request.
pub fn chat_facts(body: &Value) -> ChatFacts {
    let mut facts = ChatFacts::default();
    if let Some(system) = field(body, "systemInstruction", "system_instruction") {
        facts.words += text::words(&parts_text(system));
    }
    if let Some(contents) = body.get("contents").and_then(Value::as_array) {
        for c in contents {
            let t = parts_text(c);
            facts.words += text::words(&t);
            let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
            if role == "user" {
                facts.last_user = t;
            }
        }
    }
    facts.tool = chosen_tool(body);
    facts.answered = super::has_tool_result(body.get("contents"));
    facts
}

fn chosen_tool(body: &Value) -> Option<String> {
    let config = field(body, "toolConfig", "tool_config")
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"));
    if config.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("NONE") {
        return None;
    }
    let first = body
        .get("tools")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|t| field(t, "functionDeclarations", "function_declarations"))
        .filter_map(Value::as_array)
        .flatten()
        .find_map(|d| d.get("name").and_then(Value::as_str))?;
    let allowed = config
        .and_then(|c| field(c, "allowedFunctionNames", "allowed_function_names"))
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str);
    Some(allowed.unwrap_or(first).to_string())
}

fn usage_json(a: &Answer) -> Value {
    let mut u = a.usage;
    // A function call is sent whole, in one chunk.
    if let Content::Tool { .. } = a.content {
        u.completion = 1;
    }
    let mut v = json!({
        "promptTokenCount": u.prompt,
        "candidatesTokenCount": u.completion,
        "totalTokenCount": u.prompt + u.completion,
    });
    if let (Some(cached), Some(obj)) = (u.cached, v.as_object_mut()) {
        obj.insert("cachedContentTokenCount".into(), json!(cached));
    }
    v
}

fn response(parts: Value, last: Option<&Answer>, model: &str, id: &str) -> Value {
    let mut candidate = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
    if last.is_some() {
        if let Some(obj) = candidate.as_object_mut() {
            obj.insert("finishReason".into(), json!("STOP"));
        }
    }
    let mut v = json!({ "candidates": [candidate] });
    if let Some(obj) = v.as_object_mut() {
        if let Some(a) = last.filter(|a| a.report_usage()) {
            obj.insert("usageMetadata".into(), usage_json(a));
        }
        obj.insert("modelVersion".into(), json!(model));
        obj.insert("responseId".into(), json!(id));
    }
    v
}

/// The `thoughtSignature` the mock puts on the function calls it makes, as Gemini 3 does.
pub const MOCK_THOUGHT_SIGNATURE: &str = "mock-thought-signature";

fn function_call_part(name: &str, args: &str) -> Value {
    let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
    json!({ "functionCall": { "name": name, "args": args },
            "thoughtSignature": MOCK_THOUGHT_SIGNATURE })
}

/// Gemini 3's refusal of a history model turn whose first `functionCall` part carries no
/// `thoughtSignature` (any value passes, as Google's documented bypass value does).
pub fn missing_thought_signature(body: &Value) -> Option<String> {
    let contents = body.get("contents").and_then(Value::as_array)?;
    for (i, c) in contents.iter().enumerate() {
        if c.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let parts = c.get("parts").and_then(Value::as_array);
        let first_call = parts
            .into_iter()
            .flatten()
            .find(|p| field(p, "functionCall", "function_call").is_some());
        if let Some(part) = first_call {
            let signed = field(part, "thoughtSignature", "thought_signature")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !signed {
                return Some(format!(
                    "Function call is missing a thought_signature in functionCall parts. \
                     This is required for tools to work correctly (contents[{i}])."
                ));
            }
        }
    }
    None
}

/// Non-stream `GenerateContentResponse`.
pub fn chat_json(a: &Answer, model: &str, id: &str) -> Value {
    let parts = match &a.content {
        Content::Text(_) => json!([{ "text": a.text() }]),
        Content::Tool { name, args, .. } => json!([function_call_part(name, args)]),
    };
    response(parts, Some(a), model, id)
}

/// Stream: one response per content chunk, the last with `finishReason` and `usageMetadata`.
/// `sse`: `data: ..\r\n\r\n` lines (`alt=sse`), else one streamed JSON array.
pub fn chat_stream(a: &Answer, model: &str, id: &str, sse: bool) -> Vec<Step> {
    let parts: Vec<Value> = match &a.content {
        Content::Text(pieces) => pieces.iter().map(|p| json!([{ "text": p }])).collect(),
        Content::Tool { name, args, .. } => vec![json!([function_call_part(name, args)])],
    };
    let n = parts.len();
    let frame = |i: usize, v: &Value| {
        if sse {
            Bytes::from(format!("data: {v}\r\n\r\n"))
        } else if i == 0 {
            Bytes::from(format!("[{v}"))
        } else {
            Bytes::from(format!(",\r\n{v}"))
        }
    };
    let mut steps: Vec<Step> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let last = (i + 1 == n).then_some(a);
            Step::Content(frame(i, &response(p, last, model, id)))
        })
        .collect();
    if n == 0 {
        steps.push(Step::Event(frame(
            0,
            &response(json!([{ "text": "" }]), Some(a), model, id),
        )));
    }
    if !sse {
        steps.push(Step::Event(Bytes::from_static(b"]")));
    }
    steps
}

/// The invalid event `malformed=1` inserts.
pub fn malformed_event(sse: bool) -> Bytes {
    if sse {
        Bytes::from_static(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"te\r\n\r\n")
    } else {
        Bytes::from_static(b",\r\n{\"candidates\":[{\"content\":")
    }
}
