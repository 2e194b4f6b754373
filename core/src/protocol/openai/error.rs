//! The OpenAI error body `{"error":{"message","type","code","param"}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// `code` and `param` are serialized as `null` when absent, as OpenAI does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    /// e.g. `invalid_request_error`, `authentication_error`, `rate_limit_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Usually a string; some upstreams send numbers, so kept as JSON.
    #[serde(default)]
    pub code: Option<Value>,
    #[serde(default)]
    pub param: Option<String>,
}

impl ErrorResponse {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorBody {
                message: message.into(),
                kind: kind.into(),
                code: None,
                param: None,
            },
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.error.code = Some(Value::String(code.into()));
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_error_body_shape() {
        let e = ErrorResponse::new("invalid_request_error", "bad model").with_param("model");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"error": {"message": "bad model", "type": "invalid_request_error",
                             "code": null, "param": "model"}})
        );
        let parsed: ErrorResponse =
            serde_json::from_value(json!({"error": {"message": "x", "type": "t", "code": 429}}))
                .unwrap();
        assert_eq!(parsed.error.code, Some(json!(429)));
    }
}
