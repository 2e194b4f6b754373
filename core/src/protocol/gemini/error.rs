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

impl ErrorResponse {
    /// The error body Google APIs send for an HTTP `status`: `code` is the status and
    /// `status` its canonical gRPC name (`INVALID_ARGUMENT`, `UNAUTHENTICATED`, ...).
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorBody {
                code: Some(status),
                message: message.into(),
                status: Some(status_name(status).to_owned()),
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// The canonical gRPC status name Google uses for an HTTP status.
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 | 429 => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        413 => "INVALID_ARGUMENT",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s < 500 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
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
