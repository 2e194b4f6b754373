//! The Anthropic error body `{"type":"error","error":{"type","message"}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// `error`.
    #[serde(rename = "type", default = "error_type")]
    pub kind: String,
    pub error: ErrorBody,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn error_type() -> String {
    "error".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// e.g. `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `api_error`, `overloaded_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorResponse {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorResponse {
            kind: error_type(),
            error: ErrorBody {
                kind: kind.into(),
                message: message.into(),
            },
            extra: Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_error_body_shape_and_stream_event() {
        let e = ErrorResponse::new("overloaded_error", "Overloaded");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        let sse = crate::protocol::anthropic::StreamEvent::Error { error: e.error }
            .to_sse()
            .unwrap();
        assert_eq!(sse.event.as_deref(), Some("error"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&sse.data).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
    }
}
