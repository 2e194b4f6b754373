//! Gemini error bodies, and telling an error apart from a response inside a stream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Extra, GenerateContentResponse};

/// `{"error": {"code", "message", "status", "details"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of a Google API error; `code` is the HTTP status, `status` the gRPC code name
/// (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What one `data:` line of a `streamGenerateContent?alt=sse` stream carries.
// Parsed once per event and consumed at once, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StreamPayload {
    Response(GenerateContentResponse),
    /// The upstream failed mid-stream (or before the first event).
    Error(ErrorResponse),
}

impl StreamPayload {
    /// Parses one event's data. Recognises the error object and the one-element array
    /// form `[{"error": ...}]` that Gemini uses for errors of non-SSE streams.
    pub fn parse(data: &str) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_str(data)?;
        let value = match value {
            Value::Array(items) if items.len() == 1 => items.into_iter().next().unwrap_or_default(),
            other => other,
        };
        if value.get("error").is_some_and(Value::is_object) {
            return serde_json::from_value(value).map(Self::Error);
        }
        serde_json::from_value(value).map(Self::Response)
    }
}
