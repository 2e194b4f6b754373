//! Request handlers of the data plane and what they share: the request context (ids,
//! timing, the log line), error responses in the caller's shape, and body parsing that
//! names the offending field.

pub mod chat;
pub mod models;
pub mod simple;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tollbooth_core::catalogue::{model_allowed, Catalogue, Resolved};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::usage::Usage;
use worker::{Headers, Response};

use crate::util::clock_ms;

/// Which error and response shape the caller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenAi,
    Anthropic,
}

/// Per-request facts for headers, the log line and metering.
#[derive(Debug, Clone)]
pub struct ReqCtx {
    pub id: String,
    pub started: f64,
    /// Time spent waiting on upstreams (fetch, first event, whole body).
    pub upstream_ms: f64,
    pub method: String,
    pub path: String,
    pub key_public_id: Option<String>,
    pub model: Option<String>,
    pub deployment: Option<String>,
    pub status: u16,
    pub attempts: u32,
    pub ttft_ms: Option<f64>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
}

impl ReqCtx {
    pub fn new(id: String, method: String, path: String) -> Self {
        ReqCtx {
            id,
            started: clock_ms(),
            upstream_ms: 0.0,
            method,
            path,
            key_public_id: None,
            model: None,
            deployment: None,
            status: 0,
            attempts: 0,
            ttft_ms: None,
            usage: None,
            error: None,
        }
    }

    /// Gateway time so far that was not spent waiting on an upstream.
    pub fn overhead_ms(&self) -> f64 {
        (clock_ms() - self.started - self.upstream_ms).max(0.0)
    }

    /// Adds the headers every response carries.
    pub fn stamp(&self, headers: &Headers) {
        let _ = headers.set("x-request-id", &self.id);
        let _ = headers.set(
            "x-tollbooth-overhead-ms",
            &format!("{:.0}", self.overhead_ms()),
        );
        if let Some(d) = &self.deployment {
            let _ = headers.set("x-tollbooth-deployment", d);
        }
    }

    /// The one structured log line of this request. Never holds a secret: keys appear
    /// only as their public id, deployments as `<provider>/<model>`.
    pub fn log(&self) {
        let usage = self.usage.map(|u| {
            json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "total_tokens": u.total_tokens()})
        });
        let line = json!({
            "msg": "request",
            "request_id": self.id,
            "method": self.method,
            "path": self.path,
            "key": self.key_public_id,
            "model": self.model,
            "deployment": self.deployment,
            "status": self.status,
            "attempts": self.attempts,
            "latency_ms": (clock_ms() - self.started).round(),
            "overhead_ms": self.overhead_ms().round(),
            "ttft_ms": self.ttft_ms.map(f64::round),
            "tokens": usage,
            "error": self.error,
        });
        worker::console_log!("{}", line);
    }
}

/// An error response in the caller's shape.
pub fn error_response(err: &GatewayError, shape: Shape) -> Response {
    let body = match shape {
        Shape::OpenAi => err.openai_body(),
        Shape::Anthropic => err.anthropic_body(),
    };
    let text = body.to_string();
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    if let Some(secs) = err.retry_after_secs() {
        let _ = headers.set("retry-after", &secs.to_string());
    }
    match Response::ok(text) {
        Ok(r) => r.with_status(err.http_status()).with_headers(headers),
        Err(_) => Response::empty()
            .map(|r| r.with_status(500))
            .unwrap_or_else(|_| Response::from(worker::web_sys::Response::error())),
    }
}

/// A JSON response with status 200.
pub fn json_response(body: &str) -> Result<Response, GatewayError> {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    Response::ok(body.to_owned())
        .map(|r| r.with_headers(headers))
        .map_err(|_| GatewayError::internal("could not build the response"))
}

/// Parses a JSON body: 400 naming the field that is missing or has the wrong type.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<(T, Value), GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(GatewayError::invalid_request(
            "The request body must be a JSON object.",
        ));
    }
    let typed = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing top-level field shows up at path "." with the name in the message.
        let param = if path == "." || path.is_empty() {
            inner
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_default()
        } else {
            path
        };
        if param.is_empty() {
            GatewayError::invalid_request(format!("Invalid request body: {inner}"))
        } else {
            GatewayError::invalid_param(format!("Invalid `{param}`: {inner}"), param)
        }
    })?;
    Ok((typed, value))
}

/// Requires a non-empty string `model`.
pub fn require_model(value: &Value) -> Result<String, GatewayError> {
    match value.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => Ok(m.clone()),
        _ => Err(GatewayError::invalid_param(
            "You must provide a model parameter.",
            "model",
        )),
    }
}

/// Resolves and permits `model` for `key`: 404 `model_not_found`, 403 `model_not_allowed`.
pub fn resolve_allowed<'a>(
    catalogue: &'a Catalogue,
    key: &KeyRecord,
    model: &'a str,
) -> Result<Resolved<'a>, GatewayError> {
    let resolved = catalogue
        .resolve(model)
        .ok_or_else(|| GatewayError::model_not_found(model))?;
    if !key_may_use(catalogue, key, resolved.name) {
        return Err(GatewayError::permission_denied(
            format!("Your plan or key does not allow the model `{model}`."),
            "model_not_allowed",
        ));
    }
    Ok(resolved)
}

/// Whether the key's plan and the key itself allow the virtual model `name`.
pub fn key_may_use(catalogue: &Catalogue, key: &KeyRecord, name: &str) -> bool {
    let plan_ok = catalogue
        .plan(&key.plan_id)
        .is_some_and(|p| model_allowed(&p.allowed_models, name));
    let key_ok = key
        .allowed_models
        .as_ref()
        .is_none_or(|a| model_allowed(a, name));
    plan_ok && key_ok
}
