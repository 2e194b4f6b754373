//! The `POST /v1/responses` request body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Extra, Item};

/// A Responses API request. Fields the gateway does not interpret (`prompt_cache_key`,
/// `client_metadata`, `service_tier`, ...) are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// A system (developer) message inserted before the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Extra output to include, e.g. `reasoning.encrypted_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// `auto` / `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResponsesRequest {
    /// True when the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// The input as items (a string input is one user message).
    pub fn input_items(&self) -> Vec<Item> {
        match &self.input {
            None => Vec::new(),
            Some(Input::Text(s)) => vec![Item::Message(super::MessageItem {
                kind: None,
                id: None,
                role: super::MessageRole::User,
                content: super::MessageContent::Text(s.clone()),
                status: None,
                extra: Extra::new(),
            })],
            Some(Input::Items(items)) => items.clone(),
        }
    }

    /// Replaces `previous_response_id` by the stored conversation it points at: `history`
    /// (the earlier input and output items, oldest first) goes before this request's
    /// input. For gateways that keep responses themselves.
    pub fn with_history(mut self, history: Vec<Item>) -> Self {
        let mut items = history;
        items.extend(self.input_items());
        self.input = Some(Input::Items(items));
        self.previous_response_id = None;
        self
    }
}

/// `input`: a string (one user message) or a list of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Item>),
}

/// A tool the model may use. Hosted tools (`web_search`, `file_search`,
/// `code_interpreter`, `namespace` groups, `tool_search`, ...) are kept in `Unknown`,
/// except the `namespace` group whose functions are read by [`Tool::namespace_functions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tool {
    Function(FunctionTool),
    Custom(CustomTool),
    #[serde(untagged)]
    Unknown(Value),
}

impl Tool {
    /// The tool's `type`.
    pub fn type_name(&self) -> &str {
        match self {
            Tool::Function(_) => "function",
            Tool::Custom(_) => "custom",
            Tool::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }

    /// For a `{"type":"namespace","name":N,"tools":[...]}` group: its name and the
    /// function tools inside it. `None` for any other tool.
    pub fn namespace_functions(&self) -> Option<(&str, Vec<FunctionTool>)> {
        let Tool::Unknown(v) = self else { return None };
        if v.get("type").and_then(Value::as_str) != Some("namespace") {
            return None;
        }
        let name = v.get("name").and_then(Value::as_str)?;
        let tools = v
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
                    .filter_map(|t| FunctionTool::deserialize(t).ok())
                    .collect()
            })
            .unwrap_or_default();
        Some((name, tools))
    }
}

/// A function tool. Unlike chat completions, `strict` defaults to **true** in the
/// Responses API when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A custom (freeform) tool: the model writes raw text as its input, optionally
/// constrained by a grammar (`format: {"type":"grammar","syntax":"lark"|"regex",...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `tool_choice`: a mode, one named function or custom tool, or something else
/// (`allowed_tools`, a hosted tool) kept as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
    Other(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

/// `{"type":"function"|"custom","name":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
}

/// `text`: the output format and verbosity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// `low` / `medium` / `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `text.format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
    #[serde(untagged)]
    Unknown(Value),
}

/// `reasoning`: effort (`none`/`minimal`/`low`/`medium`/`high`/`xhigh`) and the summary
/// wanted (`auto`/`concise`/`detailed`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasoningConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_request_round_trips_with_every_modelled_field() {
        let v = json!({
            "model": "gpt-5",
            "input": [{"role": "user", "content": "hi"}],
            "instructions": "be brief",
            "tools": [
                {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": false},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
                {"type": "web_search", "external_web_access": false},
                {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g", "parameters": {}}]}
            ],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": true,
            "max_output_tokens": 100,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
            "reasoning": {"effort": "medium", "summary": "auto"},
            "stream": true,
            "store": false,
            "previous_response_id": "resp_1",
            "metadata": {"k": "v"},
            "include": ["reasoning.encrypted_content"],
            "temperature": 0.5,
            "top_p": 0.9,
            "truncation": "auto",
            "user": "u",
            "prompt_cache_key": "abc",
            "client_metadata": {"x": 1}
        });
        let req: ResponsesRequest = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(req.tool_choice, Some(ToolChoice::Named(_))));
        let tools = req.tools.as_ref().unwrap();
        assert_eq!(tools[2].type_name(), "web_search");
        let (ns, fns) = tools[3].namespace_functions().unwrap();
        assert_eq!((ns, fns.len()), ("ns", 1));
        assert_eq!(serde_json::to_value(&req).unwrap(), v);
    }

    #[test]
    fn test_tool_choice_forms() {
        let c: ToolChoice = serde_json::from_value(json!("required")).unwrap();
        assert_eq!(c, ToolChoice::Mode(ToolChoiceMode::Required));
        let c: ToolChoice = serde_json::from_value(json!({"type": "custom", "name": "x"})).unwrap();
        assert!(matches!(c, ToolChoice::Named(n) if n.kind == "custom"));
        let c: ToolChoice = serde_json::from_value(
            json!({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f"}]}),
        )
        .unwrap();
        assert!(matches!(c, ToolChoice::Other(_)));
    }

    #[test]
    fn test_string_input_and_history() {
        let req: ResponsesRequest = serde_json::from_value(
            json!({"model": "m", "input": "hello", "previous_response_id": "resp_1"}),
        )
        .unwrap();
        let prior: Vec<Item> =
            serde_json::from_value(json!([{"role": "user", "content": "earlier"}])).unwrap();
        let req = req.with_history(prior);
        assert_eq!(req.previous_response_id, None);
        assert_eq!(
            serde_json::to_value(&req.input).unwrap(),
            json!([{"role": "user", "content": "earlier"}, {"role": "user", "content": "hello"}])
        );
    }
}
