//! OpenAI-compatible chat completions, embeddings, rerank (Jina/Cohere shape) and models.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{sse_data, Answer, ChatFacts, Content};
use crate::mock::behavior::{Behavior, UsageMode};
use crate::mock::body::Step;
use crate::mock::text;

/// `{"error":{"message","type","param","code"}}`
pub fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => ("permission_error", Value::Null),
        404 => ("invalid_request_error", json!("not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        _ if status < 500 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

/// Facts of a `/v1/chat/completions` request.
pub fn chat_facts(body: &Value) -> ChatFacts {
    let mut facts = ChatFacts::default();
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
    facts.include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    facts
}

fn chosen_tool(body: &Value) -> Option<String> {
    let choice = body
        .get("tool_choice")
        .or_else(|| body.get("function_call"));
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let tools = body
        .get("tools")
        .or_else(|| body.get("functions"))
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())?;
    let forced = choice.and_then(|c| {
        c.pointer("/function/name")
            .or_else(|| c.get("name"))
            .and_then(Value::as_str)
    });
    if let Some(name) = forced {
        return Some(name.to_string());
    }
    tools.iter().find_map(|t| {
        t.pointer("/function/name")
            .or_else(|| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

fn usage_json(a: &Answer) -> Value {
    let u = a.usage;
    let mut v = json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
    });
    if let (Some(cached), Some(obj)) = (u.cached, v.as_object_mut()) {
        obj.insert(
            "prompt_tokens_details".into(),
            json!({ "cached_tokens": cached, "audio_tokens": 0 }),
        );
    }
    v
}

fn finish_reason(a: &Answer) -> &'static str {
    match a.content {
        Content::Text(_) => "stop",
        Content::Tool { .. } => "tool_calls",
    }
}

/// Non-stream `chat.completion`.
pub fn chat_json(a: &Answer, model: &str, id: &str, created: u64) -> Value {
    let message = match &a.content {
        Content::Text(_) => json!({ "role": "assistant", "content": a.text(), "refusal": null }),
        Content::Tool { name, args, .. } => json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "tool_calls": [{
                "id": "call_mock_0",
                "type": "function",
                "function": { "name": name, "arguments": args },
            }],
        }),
    };
    let mut v = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(a),
        }],
    });
    if a.report_usage() {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("usage".into(), usage_json(a));
        }
    }
    v
}

/// Stream of `chat.completion.chunk`s ending with `data: [DONE]`.
pub fn chat_stream(
    a: &Answer,
    facts: &ChatFacts,
    model: &str,
    id: &str,
    created: u64,
) -> Vec<Step> {
    let usage_chunk = match a.usage_mode {
        UsageMode::Off => false,
        UsageMode::On => facts.include_usage,
        UsageMode::Force => true,
    };
    // With include_usage the real API puts `"usage": null` on every ordinary chunk.
    let null_usage = facts.include_usage;
    let chunk = |choices: Value| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        });
        if null_usage {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("usage".into(), Value::Null);
            }
        }
        v
    };
    let choice = |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
    let mut steps = Vec::new();
    match &a.content {
        Content::Text(pieces) => {
            steps.push(Step::Event(sse_data(&chunk(choice(
                json!({ "role": "assistant", "content": "", "refusal": null }),
                Value::Null,
            )))));
            for p in pieces {
                steps.push(Step::Content(sse_data(&chunk(choice(
                    json!({ "content": p }),
                    Value::Null,
                )))));
            }
        }
        Content::Tool {
            name, fragments, ..
        } => {
            steps.push(Step::Event(sse_data(&chunk(choice(
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": "call_mock_0",
                        "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }],
                }),
                Value::Null,
            )))));
            for f in fragments {
                steps.push(Step::Content(sse_data(&chunk(choice(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": f } }] }),
                    Value::Null,
                )))));
            }
        }
    }
    steps.push(Step::Event(sse_data(&chunk(choice(
        json!({}),
        json!(finish_reason(a)),
    )))));
    if usage_chunk {
        let mut v = chunk(json!([]));
        if let Some(obj) = v.as_object_mut() {
            obj.insert("usage".into(), usage_json(a));
        }
        steps.push(Step::Event(sse_data(&v)));
    }
    steps.push(Step::Event(Bytes::from_static(b"data: [DONE]\n\n")));
    steps
}

/// The invalid event `malformed=1` inserts.
pub fn malformed_event(id: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\"tr\n\n"
    ))
}

/// `/v1/embeddings`. Err is a 400 message.
pub fn embeddings(body: &Value, model: &str, b: &Behavior) -> Result<Value, String> {
    let inputs: Vec<(String, u64)> = match body.get("input") {
        Some(Value::String(s)) => vec![(s.clone(), text::words(s))],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_number) {
                vec![token_input(items)]
            } else {
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => Ok((s.clone(), text::words(s))),
                        Value::Array(toks) if toks.iter().all(Value::is_number) => {
                            Ok(token_input(toks))
                        }
                        _ => Err("'input' items must be strings or token arrays".to_string()),
                    })
                    .collect::<Result<_, _>>()?
            }
        }
        _ => return Err("'input' must be a non-empty string or array".into()),
    };
    let dim = b
        .dim
        .or_else(|| {
            body.get("dimensions")
                .and_then(Value::as_u64)
                .and_then(|d| usize::try_from(d).ok())
                .filter(|d| (1..=65_536).contains(d))
        })
        .unwrap_or(16);
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (t, _))| {
            let v = text::embedding(t, dim);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(text::base64(&bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let tokens = inputs.iter().map(|(_, n)| n).sum::<u64>().max(1);
    let mut v = json!({ "object": "list", "data": data, "model": model });
    if b.usage != UsageMode::Off {
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "usage".into(),
                json!({ "prompt_tokens": tokens, "total_tokens": tokens }),
            );
        }
    }
    Ok(v)
}

fn token_input(toks: &[Value]) -> (String, u64) {
    let t: Vec<String> = toks.iter().map(Value::to_string).collect();
    (t.join(" "), toks.len() as u64)
}

/// `/v1/rerank`. Err is a 400 message.
pub fn rerank(body: &Value, model: &str, id: &str, b: &Behavior) -> Result<Value, String> {
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .ok_or("'query' must be a string")?;
    let docs = body
        .get("documents")
        .and_then(Value::as_array)
        .ok_or("'documents' must be an array")?;
    let texts: Vec<String> = docs
        .iter()
        .map(|d| match d {
            Value::String(s) => s.clone(),
            other => other
                .get("text")
                .and_then(Value::as_str)
                .map_or_else(|| other.to_string(), str::to_string),
        })
        .collect();
    let return_documents = body.get("return_documents").and_then(Value::as_bool) == Some(true);
    let top_n = body
        .get("top_n")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(texts.len());
    let mut scored: Vec<(usize, f64)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (i, text::relevance(query, t)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(top_n);
    let results: Vec<Value> = scored
        .iter()
        .map(|(i, score)| {
            let mut r = Map::new();
            r.insert("index".into(), json!(i));
            r.insert("relevance_score".into(), json!(score));
            if return_documents {
                let doc = match docs.get(*i) {
                    Some(Value::String(s)) => json!({ "text": s }),
                    Some(other) => other.clone(),
                    None => Value::Null,
                };
                r.insert("document".into(), doc);
            }
            Value::Object(r)
        })
        .collect();
    let tokens = (text::words(query) + texts.iter().map(|t| text::words(t)).sum::<u64>()).max(1);
    let mut v = json!({
        "id": id,
        "model": model,
        "results": results,
        "meta": { "billed_units": { "search_units": 1 } },
    });
    if b.usage != UsageMode::Off {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("usage".into(), json!({ "total_tokens": tokens }));
        }
    }
    Ok(v)
}

/// `GET /v1/models`.
pub fn models(ids: &[String]) -> Value {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock" }))
        .collect();
    json!({ "object": "list", "data": data })
}
