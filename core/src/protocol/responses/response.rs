//! The response object (`object: "response"`): the non-stream answer, and the snapshot
//! carried by the lifecycle stream events.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Extra, Item, ReasoningConfig, TextConfig, Tool};
use crate::usage::Usage;

/// The `object` of a response.
pub const RESPONSE_OBJECT: &str = "response";

/// A response. `error` and `incomplete_details` are always serialised (as `null` when
/// absent), as the API does; the request parameters it echoes are whatever the producer
/// fills in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    #[serde(default = "response_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResponseStatus>,
    #[serde(default)]
    pub error: Option<ResponseError>,
    #[serde(default)]
    pub incomplete_details: Option<IncompleteDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub output: Vec<Item>,
    #[serde(default = "default_true")]
    pub parallel_tool_calls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    #[serde(default = "auto_tool_choice")]
    pub tool_choice: Value,
    #[serde(default)]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn response_object() -> String {
    RESPONSE_OBJECT.to_owned()
}

fn default_true() -> bool {
    true
}

fn auto_tool_choice() -> Value {
    Value::String("auto".to_owned())
}

impl Response {
    /// An empty response with the given status; fill in output, usage and the echoes.
    pub fn new(
        id: impl Into<String>,
        created_at: u64,
        model: impl Into<String>,
        status: ResponseStatus,
    ) -> Self {
        Response {
            id: id.into(),
            object: response_object(),
            created_at,
            status: Some(status),
            error: None,
            incomplete_details: None,
            instructions: None,
            max_output_tokens: None,
            model: model.into(),
            output: Vec::new(),
            parallel_tool_calls: true,
            previous_response_id: None,
            reasoning: None,
            store: None,
            temperature: None,
            text: None,
            tool_choice: auto_tool_choice(),
            tools: Vec::new(),
            top_p: None,
            truncation: None,
            usage: None,
            user: None,
            metadata: Map::new(),
            extra: Extra::new(),
        }
    }

    /// All `output_text` of all output messages, concatenated (the SDKs' `output_text`).
    pub fn output_text(&self) -> String {
        self.output
            .iter()
            .filter_map(|item| match item {
                Item::Message(m) => Some(m.content.joined_text()),
                _ => None,
            })
            .collect()
    }
}

/// `status` of a response.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    Completed,
    Failed,
    InProgress,
    Cancelled,
    Queued,
    Incomplete,
    #[serde(untagged)]
    Other(String),
}

/// Why a response failed: `code` (`server_error`, `rate_limit_exceeded`,
/// `invalid_prompt`, ...) and a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResponseError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ResponseError {
            code: code.into(),
            message: message.into(),
            extra: Extra::new(),
        }
    }
}

/// Why a response is incomplete: `max_output_tokens` or `content_filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    #[serde(default)]
    pub reason: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl IncompleteDetails {
    pub fn new(reason: impl Into<String>) -> Self {
        IncompleteDetails {
            reason: reason.into(),
            extra: Extra::new(),
        }
    }
}

/// Token usage. `input_tokens` includes `cached_tokens`; `output_tokens` includes
/// `reasoning_tokens` (the same convention as chat completions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: InputTokensDetails,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub output_tokens_details: OutputTokensDetails,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    /// Prompt-cache writes (newer API versions report them).
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl From<&ResponseUsage> for Usage {
    fn from(u: &ResponseUsage) -> Self {
        Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.input_tokens_details.cached_tokens,
            cache_creation_input_tokens: u.input_tokens_details.cache_write_tokens,
            reasoning_tokens: u.output_tokens_details.reasoning_tokens,
        }
    }
}

impl From<&Usage> for ResponseUsage {
    fn from(u: &Usage) -> Self {
        ResponseUsage {
            input_tokens: u.input_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: u.cached_input_tokens,
                cache_write_tokens: u.cache_creation_input_tokens,
                extra: Extra::new(),
            },
            output_tokens: u.output_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: u.reasoning_tokens,
                extra: Extra::new(),
            },
            total_tokens: u.total_tokens(),
            extra: Extra::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_response_parses_api_shape_and_keeps_unknown_items() {
        let v = json!({
            "id": "resp_1", "object": "response", "created_at": 1741476542,
            "status": "completed", "error": null, "incomplete_details": null,
            "model": "gpt-4.1", "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hi", "annotations": []}]},
                {"type": "web_search_call", "id": "ws_1", "status": "completed"}
            ],
            "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 4},
                      "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 10},
                      "total_tokens": 123},
            "metadata": {},
            "service_tier": "default"
        });
        let r: Response = serde_json::from_value(v).unwrap();
        assert_eq!(r.status, Some(ResponseStatus::Completed));
        assert_eq!(r.output_text(), "Hi");
        assert!(matches!(r.output[2], Item::Unknown(_)));
        let usage = Usage::from(r.usage.as_ref().unwrap());
        assert_eq!(
            usage,
            Usage {
                input_tokens: 36,
                output_tokens: 87,
                cached_input_tokens: 4,
                cache_creation_input_tokens: 0,
                reasoning_tokens: 10
            }
        );
        assert_eq!(r.extra["service_tier"], "default");
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["error"], Value::Null);
        assert_eq!(back["incomplete_details"], Value::Null);
    }

    #[test]
    fn test_unknown_status_is_kept() {
        let s: ResponseStatus = serde_json::from_value(json!("paused")).unwrap();
        assert_eq!(s, ResponseStatus::Other("paused".into()));
        assert_eq!(serde_json::to_value(&s).unwrap(), json!("paused"));
    }
}
