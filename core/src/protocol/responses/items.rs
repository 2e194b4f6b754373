//! Items: the unit of both `input` (the conversation so far) and `output` (what the model
//! produced). The same shapes travel both ways, so one type serves both.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::Extra;

/// One input or output item. See the module docs of [`super`] for the rules on unknown
/// and malformed items.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `message` (or a typeless "easy" message with `role` and `content`).
    Message(MessageItem),
    FunctionCall(FunctionCallItem),
    FunctionCallOutput(FunctionCallOutputItem),
    /// A call to a `custom` (freeform) tool: `input` is raw text, not JSON.
    CustomToolCall(CustomToolCallItem),
    CustomToolCallOutput(FunctionCallOutputItem),
    Reasoning(ReasoningItem),
    /// Any other item type (hosted tool calls, `item_reference`, ...), or a known type
    /// that did not parse, as sent.
    Unknown(Value),
}

impl Item {
    /// The item's `type` as on the wire (`message` for typeless messages).
    pub fn type_name(&self) -> &str {
        match self {
            Item::Message(_) => "message",
            Item::FunctionCall(_) => "function_call",
            Item::FunctionCallOutput(_) => "function_call_output",
            Item::CustomToolCall(_) => "custom_tool_call",
            Item::CustomToolCallOutput(_) => "custom_tool_call_output",
            Item::Reasoning(_) => "reasoning",
            Item::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }

    /// The item's `id`, when it has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Item::Message(m) => m.id.as_deref(),
            Item::FunctionCall(c) => c.id.as_deref(),
            Item::FunctionCallOutput(o) | Item::CustomToolCallOutput(o) => o.id.as_deref(),
            Item::CustomToolCall(c) => c.id.as_deref(),
            Item::Reasoning(r) => r.id.as_deref(),
            Item::Unknown(v) => v.get("id").and_then(Value::as_str),
        }
    }

    fn from_value(v: Value) -> Item {
        fn parse<'a, T: Deserialize<'a>>(v: &'a Value) -> Option<T> {
            T::deserialize(v).ok()
        }
        let kind = v.get("type").and_then(Value::as_str);
        let parsed = match kind {
            Some("message") => parse(&v).map(Item::Message),
            None if v.get("role").is_some() => parse(&v).map(Item::Message),
            Some("function_call") => parse(&v).map(Item::FunctionCall),
            Some("function_call_output") => parse(&v).map(Item::FunctionCallOutput),
            Some("custom_tool_call") => parse(&v).map(Item::CustomToolCall),
            Some("custom_tool_call_output") => parse(&v).map(Item::CustomToolCallOutput),
            Some("reasoning") => parse(&v).map(Item::Reasoning),
            _ => None,
        };
        parsed.unwrap_or(Item::Unknown(v))
    }
}

/// Serialises the non-message variants with their `type` tag.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TaggedRef<'a> {
    FunctionCall(&'a FunctionCallItem),
    FunctionCallOutput(&'a FunctionCallOutputItem),
    CustomToolCall(&'a CustomToolCallItem),
    CustomToolCallOutput(&'a FunctionCallOutputItem),
    Reasoning(&'a ReasoningItem),
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Message(m) => m.serialize(serializer),
            Item::FunctionCall(c) => TaggedRef::FunctionCall(c).serialize(serializer),
            Item::FunctionCallOutput(o) => TaggedRef::FunctionCallOutput(o).serialize(serializer),
            Item::CustomToolCall(c) => TaggedRef::CustomToolCall(c).serialize(serializer),
            Item::CustomToolCallOutput(o) => {
                TaggedRef::CustomToolCallOutput(o).serialize(serializer)
            }
            Item::Reasoning(r) => TaggedRef::Reasoning(r).serialize(serializer),
            Item::Unknown(v) => v.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Item::from_value)
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
    System,
    Developer,
}

/// A message item. `kind` is `Some("message")` when the item carried its `type` (always
/// so for output), `None` for the typeless input form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageItem {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub role: MessageRole,
    pub content: MessageContent,
    /// `in_progress` / `completed` / `incomplete` (output messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl MessageItem {
    /// An output message (`type: message`, role assistant) with the given parts.
    pub fn output(id: impl Into<String>, status: &str, content: Vec<ContentPart>) -> Self {
        MessageItem {
            kind: Some("message".to_owned()),
            id: Some(id.into()),
            role: MessageRole::Assistant,
            content: MessageContent::Parts(content),
            status: Some(status.to_owned()),
            extra: Extra::new(),
        }
    }
}

/// Message content (and a tool output): a string, or parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// What a function or custom tool returned: text, or parts (text, images, files).
pub type ToolOutput = MessageContent;

impl MessageContent {
    /// The text of the content: the string, or the text of every text-bearing part
    /// (`input_text`, `output_text`) joined. Refusals and media are skipped.
    pub fn joined_text(&self) -> String {
        match self {
            MessageContent::Text(s) => s.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::InputText(t) => Some(t.text.as_str()),
                    ContentPart::OutputText(t) => Some(t.text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    InputText(TextPart),
    OutputText(OutputTextPart),
    InputImage(ImagePart),
    InputFile(FilePart),
    Refusal(RefusalPart),
    #[serde(untagged)]
    Unknown(Value),
}

impl ContentPart {
    /// An `input_text` part.
    pub fn input_text(text: impl Into<String>) -> Self {
        ContentPart::InputText(TextPart {
            text: text.into(),
            extra: Extra::new(),
        })
    }

    /// An `output_text` part without annotations.
    pub fn output_text(text: impl Into<String>) -> Self {
        ContentPart::OutputText(OutputTextPart {
            text: text.into(),
            annotations: Vec::new(),
            logprobs: None,
            extra: Extra::new(),
        })
    }

    /// A `refusal` part.
    pub fn refusal(text: impl Into<String>) -> Self {
        ContentPart::Refusal(RefusalPart {
            refusal: text.into(),
            extra: Extra::new(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextPart {
    pub text: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `output_text`: `annotations` is always sent (an empty list when there are none), as
/// the API does and the SDKs expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputTextPart {
    pub text: String,
    #[serde(default)]
    pub annotations: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `input_image`: by URL (`http(s)` or a `data:` URL) or by uploaded file id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// `low` / `high` / `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `input_file`: inline (`file_data`, a data URL), by file id, or by URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilePart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalPart {
    pub refusal: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A call the model makes to a function tool; `arguments` is JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub name: String,
    #[serde(default)]
    pub arguments: String,
    /// Set when the function belongs to a `namespace` tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The client's answer to a function or custom tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutputItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub output: ToolOutput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A call to a custom (freeform) tool: `input` is whatever text the model wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomToolCallItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub name: String,
    #[serde(default)]
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A reasoning item: summary parts, optional raw reasoning `content`, and the opaque
/// `encrypted_content` a stateless client sends back so the model keeps its reasoning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasoningItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub summary: Vec<SummaryText>,
    /// `[{"type":"reasoning_text","text":...}]` from models that expose raw reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ReasoningItem {
    /// The summary texts joined by blank lines, then any raw `reasoning_text` content.
    pub fn text(&self) -> String {
        let mut parts: Vec<&str> = self.summary.iter().map(|s| s.text.as_str()).collect();
        for c in self.content.iter().flatten() {
            if let Some(t) = c.get("text").and_then(Value::as_str) {
                parts.push(t);
            }
        }
        parts.retain(|p| !p.is_empty());
        parts.join("\n\n")
    }
}

/// `{"type":"summary_text","text":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryText {
    #[serde(rename = "type", default = "summary_text_type")]
    pub kind: String,
    pub text: String,
}

impl SummaryText {
    pub fn new(text: impl Into<String>) -> Self {
        SummaryText {
            kind: summary_text_type(),
            text: text.into(),
        }
    }
}

fn summary_text_type() -> String {
    "summary_text".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_items_round_trip_including_typeless_and_unknown() {
        let items = json!([
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "hello", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "ok"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}],
             "encrypted_content": "gAAAA"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
            {"type": "function_call", "name": "missing_call_id"}
        ]);
        let parsed: Vec<Item> = serde_json::from_value(items.clone()).unwrap();
        let kinds: Vec<&str> = parsed.iter().map(Item::type_name).collect();
        assert_eq!(
            kinds,
            [
                "message",
                "message",
                "message",
                "function_call",
                "function_call_output",
                "custom_tool_call",
                "custom_tool_call_output",
                "reasoning",
                "web_search_call",
                "function_call"
            ]
        );
        assert!(matches!(parsed[9], Item::Unknown(_)));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), items);
    }

    #[test]
    fn test_joined_text_and_reasoning_text() {
        let c: MessageContent = serde_json::from_value(json!([
            {"type": "input_text", "text": "a"},
            {"type": "input_image", "image_url": "https://x/y.png"},
            {"type": "output_text", "text": "b", "annotations": []}
        ]))
        .unwrap();
        assert_eq!(c.joined_text(), "ab");
        let r: ReasoningItem = serde_json::from_value(json!({
            "summary": [{"type": "summary_text", "text": "one"}, {"type": "summary_text", "text": "two"}],
            "content": [{"type": "reasoning_text", "text": "raw"}]
        }))
        .unwrap();
        assert_eq!(r.text(), "one\n\ntwo\n\nraw");
    }
}
