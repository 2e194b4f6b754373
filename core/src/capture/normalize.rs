//! One neutral view of a conversation, whatever protocol it was sent in: the hub's
//! OpenAI chat messages (every ingress is stored in hub form) and Anthropic Messages
//! bodies (raw pass-through traffic). Threading hashes it; ShareGPT is written from it.

use serde::Serialize;
use serde_json::{Map, Value};

/// One tool call of an assistant turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// The arguments as sent (JSON text; canonical when it parses).
    pub arguments: String,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Turn {
    System {
        text: String,
    },
    User {
        text: String,
    },
    Assistant {
        text: String,
        calls: Vec<Call>,
    },
    ToolResult {
        #[serde(skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        text: String,
    },
}

/// A tool definition: `{name, description, parameters}`.
pub type ToolDef = Value;

/// The canonical text of a JSON value: keys sorted, no spaces.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        m.get(k).map(canonical_json).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Arguments as canonical JSON text when they parse, else as sent.
pub fn canonical_arguments(args: &str) -> String {
    match serde_json::from_str::<Value>(args) {
        Ok(v) => canonical_json(&v),
        Err(_) => args.to_owned(),
    }
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// The text of OpenAI or Anthropic content: a string, or the text of its text parts
/// (other parts are named in brackets, e.g. `[image]`).
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("text");
                let piece = match kind {
                    "text" | "input_text" | "output_text" => {
                        str_of(p.get("text")).unwrap_or_default()
                    }
                    "image_url" | "image" | "input_image" => "[image]".to_owned(),
                    "input_audio" => "[audio]".to_owned(),
                    "file" | "document" => "[file]".to_owned(),
                    // tool_use / tool_result / thinking are handled by the caller.
                    _ => continue,
                };
                out.push_str(&piece);
            }
            out
        }
        Some(other) => other.to_string(),
    }
}

fn openai_calls(m: &Map<String, Value>) -> Vec<Call> {
    let mut calls = Vec::new();
    if let Some(Value::Array(tcs)) = m.get("tool_calls") {
        for tc in tcs {
            let f = tc.get("function");
            calls.push(Call {
                id: str_of(tc.get("id")),
                name: str_of(f.and_then(|f| f.get("name"))).unwrap_or_default(),
                arguments: canonical_arguments(
                    &str_of(f.and_then(|f| f.get("arguments"))).unwrap_or_default(),
                ),
            });
        }
    }
    if let Some(fc @ Value::Object(_)) = m.get("function_call") {
        calls.push(Call {
            id: None,
            name: str_of(fc.get("name")).unwrap_or_default(),
            arguments: canonical_arguments(&str_of(fc.get("arguments")).unwrap_or_default()),
        });
    }
    calls
}

/// Anthropic content blocks of one message → turns.
fn anthropic_blocks(role: &str, blocks: &[Value], out: &mut Vec<Turn>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "tool_use" | "server_tool_use" => calls.push(Call {
                id: str_of(b.get("id")),
                name: str_of(b.get("name")).unwrap_or_default(),
                arguments: b
                    .get("input")
                    .map(canonical_json)
                    .unwrap_or_else(|| "{}".into()),
            }),
            "tool_result" => {
                if role == "user" && !text.is_empty() {
                    out.push(Turn::User {
                        text: std::mem::take(&mut text),
                    });
                }
                out.push(Turn::ToolResult {
                    call_id: str_of(b.get("tool_use_id")),
                    name: None,
                    text: content_text(b.get("content")),
                });
            }
            "thinking" | "redacted_thinking" => {}
            _ => text.push_str(&content_text(Some(&Value::Array(vec![b.clone()])))),
        }
    }
    if role == "assistant" {
        if !text.is_empty() || !calls.is_empty() {
            out.push(Turn::Assistant { text, calls });
        }
    } else if !text.is_empty() {
        out.push(Turn::User { text });
    }
}

/// One message (OpenAI or Anthropic form) → its turns.
pub fn message_turns(msg: &Value, out: &mut Vec<Turn>) {
    let Some(m) = msg.as_object() else { return };
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    let content = m.get("content");
    // Anthropic block arrays carry tool_use / tool_result.
    if let Some(Value::Array(blocks)) = content {
        let anthropic = blocks.iter().any(|b| {
            matches!(
                b.get("type").and_then(Value::as_str),
                Some("tool_use" | "tool_result" | "server_tool_use")
            )
        });
        if anthropic {
            anthropic_blocks(role, blocks, out);
            return;
        }
    }
    match role {
        "system" | "developer" => out.push(Turn::System {
            text: content_text(content),
        }),
        "assistant" | "model" => out.push(Turn::Assistant {
            text: content_text(content),
            calls: openai_calls(m),
        }),
        "tool" => out.push(Turn::ToolResult {
            call_id: str_of(m.get("tool_call_id")),
            name: str_of(m.get("name")),
            text: content_text(content),
        }),
        "function" => out.push(Turn::ToolResult {
            call_id: None,
            name: str_of(m.get("name")),
            text: content_text(content),
        }),
        _ => out.push(Turn::User {
            text: content_text(content),
        }),
    }
}

/// A request body (hub/OpenAI or Anthropic) → its turns, system first.
pub fn request_turns(request: &Value) -> Vec<Turn> {
    let mut out = Vec::new();
    match request.get("system") {
        Some(Value::String(s)) if !s.is_empty() => out.push(Turn::System { text: s.clone() }),
        Some(v @ Value::Array(_)) => out.push(Turn::System {
            text: content_text(Some(v)),
        }),
        _ => {}
    }
    if let Some(Value::Array(msgs)) = request.get("messages") {
        for m in msgs {
            message_turns(m, &mut out);
        }
    }
    out
}

/// The answer's assistant turn: an OpenAI chat completion (`choices[0].message`) or an
/// Anthropic message (`content` blocks).
pub fn response_turns(response: &Value) -> Vec<Turn> {
    let mut out = Vec::new();
    if let Some(msg) = response
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
    {
        message_turns(msg, &mut out);
    } else if let Some(Value::Array(blocks)) = response.get("content") {
        anthropic_blocks("assistant", blocks, &mut out);
    }
    out
}

/// Why the answer stopped, normalized: `stop`, `tool_calls`, `length`, `content_filter`,
/// or `None` when the answer has none (a stream cut short).
pub fn finish_reason(response: &Value) -> Option<String> {
    if let Some(r) = response
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
    {
        return Some(r.to_owned());
    }
    response
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(|r| match r {
            "end_turn" | "stop_sequence" | "pause_turn" => "stop".to_owned(),
            "tool_use" => "tool_calls".to_owned(),
            "max_tokens" => "length".to_owned(),
            "refusal" => "content_filter".to_owned(),
            other => other.to_owned(),
        })
}

/// Tool definitions (OpenAI `tools`, legacy `functions`, Anthropic `tools`) as
/// `{name, description, parameters}`.
pub fn tool_defs(request: &Value) -> Vec<ToolDef> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<ToolDef>,
                name: Option<&Value>,
                desc: Option<&Value>,
                params: Option<&Value>| {
        let Some(name) = name.and_then(Value::as_str) else {
            return;
        };
        let mut m = Map::new();
        m.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = desc.filter(|d| !d.is_null()) {
            m.insert("description".into(), d.clone());
        }
        m.insert(
            "parameters".into(),
            params
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        );
        out.push(Value::Object(m));
    };
    if let Some(Value::Array(tools)) = request.get("tools") {
        for t in tools {
            if let Some(f) = t.get("function") {
                push(
                    &mut out,
                    f.get("name"),
                    f.get("description"),
                    f.get("parameters"),
                );
            } else {
                push(
                    &mut out,
                    t.get("name"),
                    t.get("description"),
                    t.get("input_schema"),
                );
            }
        }
    }
    if let Some(Value::Array(fns)) = request.get("functions") {
        for f in fns {
            push(
                &mut out,
                f.get("name"),
                f.get("description"),
                f.get("parameters"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_openai_and_anthropic_tool_calls_agree() {
        let oa = json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
              "function": {"name": "get", "arguments": "{\"b\": 1, \"a\": 2}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]});
        let an = json!({"system": "sys", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "get",
              "input": {"a": 2, "b": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
              "content": [{"type": "text", "text": "sunny"}]}]}]});
        assert_eq!(request_turns(&oa), request_turns(&an));
        let turns = request_turns(&oa);
        assert_eq!(turns.len(), 4);
        assert!(
            matches!(&turns[2], Turn::Assistant { calls, .. } if calls[0].arguments == r#"{"a":2,"b":1}"#)
        );
    }

    #[test]
    fn test_legacy_function_call_and_finish_reasons() {
        let r = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "function_call": {"name": "f", "arguments": "{}"}}, "finish_reason": "function_call"}]});
        let t = response_turns(&r);
        assert!(matches!(&t[0], Turn::Assistant { calls, .. } if calls[0].name == "f"));
        assert_eq!(finish_reason(&r).as_deref(), Some("function_call"));
        assert_eq!(
            finish_reason(&json!({"stop_reason": "max_tokens"})).as_deref(),
            Some("length")
        );
        assert_eq!(finish_reason(&json!({"choices": [{"message": {}}]})), None);
    }

    #[test]
    fn test_tool_defs_all_shapes() {
        let req = json!({
            "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
                      {"name": "b", "description": "B", "input_schema": {"type": "object"}}],
            "functions": [{"name": "c"}]});
        let defs = tool_defs(&req);
        let names: Vec<&str> = defs.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(defs[1]["parameters"], json!({"type": "object"}));
    }
}
