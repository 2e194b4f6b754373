//! A conversation (its longest capture) → a ShareGPT record, the reasons it is not fit
//! for training, and the OpenAI fine-tuning line. The rules are in
//! docs/training-data.md; in short:
//!
//! - `conversations` is a list of `{from, value}` with `from` one of `system`, `human`,
//!   `gpt`, `function_call`, `observation`; `tools` is the tool definitions as a JSON
//!   string (`"[]"` when there are none).
//! - OpenAI `tool_calls`, legacy `function_call` and Anthropic `tool_use` all become a
//!   `function_call` turn whose value is `{"name","arguments"}` JSON (a list of them for
//!   parallel calls); `arguments` is the parsed JSON (repaired: empty → `{}`, a
//!   double-encoded string decoded). Text beside tool calls is dropped (ShareGPT has no
//!   place for it). Consecutive tool results become one `observation` (a JSON list of
//!   their texts when there are several).
//! - Valid when: after an optional system turn, `human`/`observation` and
//!   `gpt`/`function_call` alternate, starting with `human` and ending with `gpt`; a
//!   `function_call` is followed by an `observation` and an `observation` follows a
//!   `function_call`; no value is empty; every arguments text parses; every result names
//!   a call made before it (when ids are known); the answer was complete (status `ok`
//!   and a finish reason other than `length`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::normalize::{finish_reason, request_turns, response_turns, tool_defs, Turn};

/// One ShareGPT turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: String,
    pub value: String,
}

/// One ShareGPT record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareGpt {
    pub conversations: Vec<Message>,
    /// Tool definitions as a JSON string.
    pub tools: String,
}

/// What the conversion needs from a conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub turns: Vec<Turn>,
    pub tools: Vec<Value>,
    pub status: String,
    pub finish_reason: Option<String>,
}

impl Conversation {
    /// From a stored capture record (`request`, `response`, `status`, `truncated`).
    pub fn from_record(record: &Value) -> Conversation {
        let null = Value::Null;
        let request = record.get("request").unwrap_or(&null);
        let mut turns = request_turns(request);
        let response = record.get("response").filter(|r| !r.is_null());
        if let Some(r) = response {
            turns.extend(response_turns(r));
        }
        let mut status = record
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("ok")
            .to_owned();
        if record.get("truncated").and_then(Value::as_bool) == Some(true) {
            status = "truncated".into();
        }
        Conversation {
            turns,
            tools: tool_defs(request),
            status,
            finish_reason: response.and_then(finish_reason),
        }
    }
}

/// Why a record is not fit for training.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// `bad_alternation`, `empty_value`, `arguments_not_json`, `orphan_result`,
    /// `unanswered_call`, `incomplete`, `no_answer`.
    pub code: String,
    /// Index in `conversations`, when the reason is about one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<usize>,
    pub message: String,
}

fn reason(code: &str, turn: Option<usize>, message: impl Into<String>) -> Reason {
    Reason {
        code: code.into(),
        turn,
        message: message.into(),
    }
}

/// Repairs an arguments text: empty → `{}`, a JSON string holding JSON → that JSON.
/// `Err` keeps the text when it does not parse.
pub fn repair_arguments(args: &str) -> Result<Value, String> {
    let t = args.trim();
    if t.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(t) {
        Ok(Value::String(inner)) => match serde_json::from_str::<Value>(&inner) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
            _ => Ok(Value::String(inner)),
        },
        Ok(v) => Ok(v),
        Err(_) => Err(t.to_owned()),
    }
}

/// The ShareGPT record and the reasons it is invalid (empty = valid).
pub fn to_sharegpt(conv: &Conversation) -> (ShareGpt, Vec<Reason>) {
    let mut out: Vec<Message> = Vec::new();
    let mut reasons = Vec::new();
    let mut known_calls: Vec<String> = Vec::new();
    let mut pending: Vec<(Option<String>, String)> = Vec::new(); // tool results to flush
                                                                 // Index in `out` of each function_call whose results are still awaited.
    let flush = |pending: &mut Vec<(Option<String>, String)>, out: &mut Vec<Message>| {
        if pending.is_empty() {
            return;
        }
        let value = if pending.len() == 1 {
            pending.first().map(|(_, t)| t.clone()).unwrap_or_default()
        } else {
            Value::Array(
                pending
                    .iter()
                    .map(|(_, t)| Value::String(t.clone()))
                    .collect(),
            )
            .to_string()
        };
        out.push(Message {
            from: "observation".into(),
            value,
        });
        pending.clear();
    };
    let mut system: Vec<String> = Vec::new();
    for t in &conv.turns {
        if !matches!(t, Turn::ToolResult { .. }) {
            flush(&mut pending, &mut out);
        }
        match t {
            Turn::System { text } => system.push(text.clone()),
            Turn::User { text } => out.push(Message {
                from: "human".into(),
                value: text.clone(),
            }),
            Turn::Assistant { text, calls } if calls.is_empty() => out.push(Message {
                from: "gpt".into(),
                value: text.clone(),
            }),
            Turn::Assistant { calls, .. } => {
                let idx = out.len() + usize::from(!system.is_empty());
                let mut values = Vec::new();
                for c in calls {
                    let args = match repair_arguments(&c.arguments) {
                        Ok(v) => v,
                        Err(raw) => {
                            reasons.push(reason(
                                "arguments_not_json",
                                Some(idx),
                                format!("the arguments of `{}` do not parse as JSON", c.name),
                            ));
                            Value::String(raw)
                        }
                    };
                    if c.name.is_empty() {
                        reasons.push(reason("empty_value", Some(idx), "a tool call has no name"));
                    }
                    if let Some(id) = &c.id {
                        known_calls.push(id.clone());
                    }
                    values.push(json!({ "name": c.name, "arguments": args }));
                }
                let value = match values.as_slice() {
                    [one] => one.to_string(),
                    _ => Value::Array(values).to_string(),
                };
                out.push(Message {
                    from: "function_call".into(),
                    value,
                });
            }
            Turn::ToolResult { call_id, text, .. } => {
                if let Some(id) = call_id {
                    if !known_calls.contains(id) {
                        let idx = out.len() + usize::from(!system.is_empty());
                        reasons.push(reason(
                            "orphan_result",
                            Some(idx),
                            format!("the tool result for `{id}` answers no earlier call"),
                        ));
                    }
                }
                pending.push((call_id.clone(), text.clone()));
            }
        }
    }
    flush(&mut pending, &mut out);
    let system_text = system.join("\n\n");
    if !system.is_empty() {
        out.insert(
            0,
            Message {
                from: "system".into(),
                value: system_text,
            },
        );
    }
    check_shape(&out, &mut reasons);
    match (conv.status.as_str(), conv.finish_reason.as_deref()) {
        ("ok", Some(r)) if r != "length" => {}
        ("ok", Some(_)) => reasons.push(reason(
            "incomplete",
            None,
            "the answer stopped at the output limit",
        )),
        ("ok", None) => reasons.push(reason(
            "incomplete",
            None,
            "the answer has no finish reason (the stream was cut short)",
        )),
        (status, _) => reasons.push(reason(
            "incomplete",
            None,
            format!("the exchange did not complete (status {status})"),
        )),
    }
    let tools = Value::Array(conv.tools.clone()).to_string();
    (
        ShareGpt {
            conversations: out,
            tools,
        },
        reasons,
    )
}

fn check_shape(out: &[Message], reasons: &mut Vec<Reason>) {
    let start = usize::from(out.first().is_some_and(|m| m.from == "system"));
    let body = out.get(start..).unwrap_or(&[]);
    if body.is_empty() {
        reasons.push(reason("no_answer", None, "the conversation has no turns"));
        return;
    }
    for (i, m) in out.iter().enumerate() {
        if m.value.trim().is_empty() {
            reasons.push(reason(
                "empty_value",
                Some(i),
                format!("the `{}` turn is empty", m.from),
            ));
        }
    }
    let mut prev: Option<&str> = None;
    for (j, m) in body.iter().enumerate() {
        let i = j + start;
        let from = m.from.as_str();
        let ask_side = matches!(from, "human" | "observation");
        let want_ask = j % 2 == 0;
        if ask_side != want_ask || from == "system" {
            reasons.push(reason(
                "bad_alternation",
                Some(i),
                format!("`{from}` at turn {i} breaks the human/gpt alternation"),
            ));
            break;
        }
        if from == "observation" && prev != Some("function_call") {
            reasons.push(reason(
                "orphan_result",
                Some(i),
                "an observation does not follow a function_call",
            ));
        }
        if prev == Some("function_call") && from != "observation" {
            reasons.push(reason(
                "unanswered_call",
                Some(i - 1),
                "a function_call is not followed by its observation",
            ));
        }
        prev = Some(from);
    }
    match body.last().map(|m| m.from.as_str()) {
        Some("gpt") => {}
        Some("function_call") => reasons.push(reason(
            "unanswered_call",
            Some(out.len() - 1),
            "the conversation ends with a function_call",
        )),
        _ => reasons.push(reason(
            "no_answer",
            Some(out.len().saturating_sub(1)),
            "the conversation does not end with a gpt answer",
        )),
    }
}

/// The OpenAI fine-tuning line (`{"messages": [...], "tools"?: [...]}`) of a
/// conversation.
pub fn to_openai_messages(conv: &Conversation) -> Value {
    let mut msgs = Vec::new();
    let mut n = 0usize;
    for t in &conv.turns {
        match t {
            Turn::System { text } => msgs.push(json!({"role": "system", "content": text})),
            Turn::User { text } => msgs.push(json!({"role": "user", "content": text})),
            Turn::Assistant { text, calls } if calls.is_empty() => {
                msgs.push(json!({"role": "assistant", "content": text}));
            }
            Turn::Assistant { text, calls } => {
                let tcs: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        n += 1;
                        let args = repair_arguments(&c.arguments)
                            .map(|v| v.to_string())
                            .unwrap_or_else(|raw| raw);
                        json!({"id": c.id.clone().unwrap_or_else(|| format!("call_{n}")),
                               "type": "function",
                               "function": {"name": c.name, "arguments": args}})
                    })
                    .collect();
                let content = if text.is_empty() {
                    Value::Null
                } else {
                    json!(text)
                };
                msgs.push(json!({"role": "assistant", "content": content, "tool_calls": tcs}));
            }
            Turn::ToolResult { call_id, text, .. } => {
                let id = call_id.clone().unwrap_or_else(|| format!("call_{n}"));
                msgs.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
        }
    }
    let mut line = serde_json::Map::new();
    line.insert("messages".into(), Value::Array(msgs));
    if !conv.tools.is_empty() {
        line.insert(
            "tools".into(),
            conv.tools
                .iter()
                .map(|t| json!({"type": "function", "function": t}))
                .collect(),
        );
    }
    Value::Object(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(record: Value) -> Conversation {
        Conversation::from_record(&record)
    }

    #[test]
    fn test_repair_arguments() {
        assert_eq!(repair_arguments(""), Ok(json!({})));
        assert_eq!(repair_arguments(r#""{\"a\":1}""#), Ok(json!({"a": 1})));
        assert_eq!(repair_arguments(r#"{"a":1}"#), Ok(json!({"a": 1})));
        assert!(repair_arguments("{a:1").is_err());
    }

    #[test]
    fn test_plain_chat_is_valid() {
        let c = conv(json!({"status": "ok", "request": {"messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
            "response": {"choices": [{"message": {"role": "assistant", "content": "yo"},
            "finish_reason": "stop"}]}}));
        let (r, reasons) = to_sharegpt(&c);
        assert!(reasons.is_empty(), "{reasons:?}");
        let froms: Vec<&str> = r.conversations.iter().map(|m| m.from.as_str()).collect();
        assert_eq!(froms, ["system", "human", "gpt"]);
        assert_eq!(r.tools, "[]");
    }

    #[test]
    fn test_cut_short_and_orphan() {
        let c = conv(json!({"status": "client_abort", "request": {"messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "x", "content": "r"}]},
            "response": {"choices": [{"message": {"role": "assistant", "content": "yo"}}]}}));
        let (_, reasons) = to_sharegpt(&c);
        let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
        assert!(codes.contains(&"orphan_result"), "{codes:?}");
        assert!(codes.contains(&"incomplete"));
        assert!(codes.contains(&"bad_alternation"));
    }
}
