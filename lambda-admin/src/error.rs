//! API errors: one status and one OpenAI-shaped body each. Messages never carry a
//! password, token or secret.

use lambda_http::{Body, Response};
use serde_json::json;

use crate::crypto::CryptoError;
use crate::store::StoreError;
use crate::sync::SyncError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        msg: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: msg.into(),
            param: None,
        }
    }
    /// 400 naming the offending field.
    pub fn invalid(param: &str, msg: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_owned()),
            ..Self::new(400, "invalid_request_error", "invalid_value", msg)
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", "bad_request", msg)
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(401, "authentication_error", "unauthorized", msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "permission_error", "forbidden", msg)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(409, "invalid_request_error", "conflict", msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "api_error", "internal_error", msg)
    }

    pub fn into_response(self) -> Response<Body> {
        crate::app::json_response(
            self.status,
            &json!({"error": {"message": self.message, "type": self.kind,
                              "code": self.code, "param": self.param}}),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::conflict("the item already exists or changed"),
            StoreError::Unavailable(_) => ApiError::new(
                503,
                "api_error",
                "store_unavailable",
                "the store is unavailable",
            ),
            StoreError::Corrupt(m) => ApiError::internal(format!("stored data is corrupt: {m}")),
        }
    }
}

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        ApiError::new(502, "api_error", "edge_sync_failed", e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
