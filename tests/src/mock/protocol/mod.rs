//! The four provider protocols. Each module turns a parsed request into a protocol-neutral
//! [`ChatFacts`], and renders a planned [`Answer`] as a JSON body or a list of stream steps.

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod responses;

use serde_json::Value;

use super::behavior::{Behavior, UsageMode};
use super::text;

/// Fixed arguments of every mock tool call.
pub const TOOL_ARGS: &str = r#"{"location":"Paris"}"#;

/// One dispatch point for what differs per protocol outside the chat rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Protocol {
    /// The protocol's error body for `status`.
    pub fn error_body(self, status: u16, message: &str) -> Value {
        match self {
            Protocol::OpenAi => openai::error_body(status, message),
            Protocol::Anthropic => anthropic::error_body(status, message),
            Protocol::Gemini => gemini::error_body(status, message),
        }
    }
}

/// What the mock needs to know about a chat request, whatever its protocol.
#[derive(Debug, Clone, Default)]
pub struct ChatFacts {
    /// Words in all message text (before the minimum of 1).
    pub words: u64,
    /// Text of the last user message.
    pub last_user: String,
    /// Tool to call when `tools=1` (None: no tools, or tool choice none).
    pub tool: Option<String>,
    /// `"stream": true` (OpenAI, Anthropic, Responses).
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// The conversation already holds a tool result (for `tools=once`).
    pub answered: bool,
}

/// The content of an answer.
#[derive(Debug, Clone)]
pub enum Content {
    /// Text, one entry per content chunk.
    Text(Vec<String>),
    /// A tool call; `fragments` concatenate to `args`.
    Tool {
        name: String,
        args: String,
        fragments: Vec<String>,
    },
}

/// Token counts of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    /// Cached prompt tokens, when the `cached` directive is set (already capped at `prompt`).
    pub cached: Option<u64>,
    /// Cache-write prompt tokens (Anthropic), with `cache_write` (capped at what is left
    /// of `prompt` after `cached`).
    pub cache_write: Option<u64>,
}

/// A planned answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub content: Content,
    /// Always computed; `report_usage` says whether it is sent.
    pub usage: Usage,
    pub usage_mode: UsageMode,
}

impl Answer {
    /// The full text (empty for a tool call).
    pub fn text(&self) -> String {
        match &self.content {
            Content::Text(pieces) => pieces.concat(),
            Content::Tool { .. } => String::new(),
        }
    }

    /// Whether usage is reported at all.
    pub fn report_usage(&self) -> bool {
        self.usage_mode != UsageMode::Off
    }
}

/// Whether any item of `list` (messages, contents, input items or their content blocks)
/// is a tool result: OpenAI `role: tool`, Anthropic `tool_result`, Gemini
/// `functionResponse`, Responses `function_call_output`/`custom_tool_call_output`.
pub fn has_tool_result(list: Option<&Value>) -> bool {
    let Some(Value::Array(items)) = list else {
        return false;
    };
    items.iter().any(|item| {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        item.get("role").and_then(Value::as_str) == Some("tool")
            || matches!(
                kind,
                "tool_result" | "function_call_output" | "custom_tool_call_output"
            )
            || item.get("functionResponse").is_some()
            || has_tool_result(item.get("content"))
            || has_tool_result(item.get("parts"))
    })
}

/// Plans the answer to a chat request.
pub fn plan(facts: &ChatFacts, b: &Behavior) -> Answer {
    let call = b.tools && !(b.tools_once && facts.answered);
    let content = match (&facts.tool, call) {
        (Some(name), true) => Content::Tool {
            name: name.clone(),
            args: TOOL_ARGS.to_string(),
            fragments: text::split_even(TOOL_ARGS, b.chunks.max(1)),
        },
        _ => Content::Text(text::reply_pieces(
            b.chunks,
            b.echo.then_some(facts.last_user.as_str()),
        )),
    };
    let completion = match &content {
        Content::Text(p) => p.len() as u64,
        Content::Tool { fragments, .. } => fragments.len() as u64,
    };
    let prompt = facts.words.max(1);
    Answer {
        content,
        usage: Usage {
            prompt,
            completion,
            cached: b.cached.map(|c| c.min(prompt)),
            cache_write: b
                .cache_write
                .map(|w| w.min(prompt - b.cached.map_or(0, |c| c.min(prompt)))),
        },
        usage_mode: b.usage,
    }
}

/// Serializes a JSON value (never fails for `Value`).
pub fn to_bytes(v: &Value) -> bytes::Bytes {
    bytes::Bytes::from(v.to_string())
}

/// `data: {json}\n\n`
pub fn sse_data(v: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {v}\n\n"))
}

/// `event: NAME\ndata: {json}\n\n`
pub fn sse_event(name: &str, v: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// A non-stream body that is not valid JSON (`malformed=1`).
pub fn malformed_json(v: &Value) -> bytes::Bytes {
    let s = v.to_string();
    let cut = s.len() / 2;
    let mut end = cut;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    bytes::Bytes::from(s.get(..end).unwrap_or("{").to_string())
}
