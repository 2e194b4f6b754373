//! The per-request context ([`ReqCtx`]: ids, timing, the one log line) and the error a
//! handler returns ([`EdgeError`]: a [`GatewayError`] plus the headers its response
//! carries, e.g. a rate-limit refusal's `Retry-After` and `x-ratelimit-*`).

use serde::Serialize;
use tollbooth_core::error::GatewayError;
use tollbooth_core::usage::Usage;
use worker::Headers;

use crate::util::clock_ms;

/// When the request's log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// By the middleware, when the handler returns.
    Now,
    /// By whoever finishes the request later (a stream's pump): the middleware skips it.
    Deferred,
}

/// A handler's failure: the error, rendered in the caller's shape, and extra headers.
#[derive(Debug, Clone)]
pub struct EdgeError {
    pub error: GatewayError,
    pub headers: Vec<(String, String)>,
}

impl EdgeError {
    pub fn with_headers(error: GatewayError, headers: Vec<(String, String)>) -> Self {
        EdgeError { error, headers }
    }
}

impl From<GatewayError> for EdgeError {
    fn from(error: GatewayError) -> Self {
        EdgeError {
            error,
            headers: Vec::new(),
        }
    }
}

/// Per-request facts for headers, the log line and metering.
#[derive(Debug, Clone)]
pub struct ReqCtx {
    pub id: String,
    pub started: f64,
    /// The ledger clock (unix seconds) when the request arrived.
    pub now_s: u64,
    /// Time spent waiting on upstreams (fetch, first event, whole body).
    pub upstream_ms: f64,
    pub method: String,
    pub path: String,
    pub key_public_id: Option<String>,
    /// The caller is an operator: may see which deployment answered.
    pub operator: bool,
    pub model: Option<String>,
    /// `<provider>/<upstream model>`: logged, shown only to operators.
    pub deployment: Option<String>,
    pub status: u16,
    pub attempts: u32,
    pub ttft_ms: Option<f64>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
    /// The client went away before the end of a stream.
    pub client_disconnected: bool,
    /// For streams: the overhead when the headers went out.
    pub overhead_at_commit: Option<f64>,
    pub log: LogMode,
}

#[derive(Serialize)]
struct TokensLine {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

/// The log line, borrowed from the context (no `Value` tree).
#[derive(Serialize)]
struct Line<'a> {
    msg: &'static str,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    key: Option<&'a str>,
    model: Option<&'a str>,
    deployment: Option<&'a str>,
    status: u16,
    attempts: u32,
    latency_ms: f64,
    overhead_ms: f64,
    ttft_ms: Option<f64>,
    tokens: Option<TokensLine>,
    error: Option<&'a str>,
    client_disconnected: bool,
}

impl ReqCtx {
    pub fn new(id: String, method: String, path: String, now_s: u64) -> Self {
        ReqCtx {
            id,
            started: clock_ms(),
            now_s,
            upstream_ms: 0.0,
            method,
            path,
            key_public_id: None,
            operator: false,
            model: None,
            deployment: None,
            status: 0,
            attempts: 0,
            ttft_ms: None,
            usage: None,
            error: None,
            client_disconnected: false,
            overhead_at_commit: None,
            log: LogMode::Now,
        }
    }

    /// Gateway time so far that was not spent waiting on an upstream.
    pub fn overhead_ms(&self) -> f64 {
        (clock_ms() - self.started - self.upstream_ms).max(0.0)
    }

    /// Adds the headers every response carries. `x-tollbooth-deployment` (which
    /// provider and upstream model answered) only for operator keys: members never
    /// learn provider ids or upstream model names.
    pub fn stamp(&self, headers: &Headers) {
        let _ = headers.set("x-request-id", &self.id);
        let _ = headers.set(
            "x-tollbooth-overhead-ms",
            &format!("{:.0}", self.overhead_ms()),
        );
        if self.operator {
            if let Some(d) = &self.deployment {
                let _ = headers.set("x-tollbooth-deployment", d);
            }
        }
    }

    /// Records an error for the log line.
    pub fn fail(&mut self, err: &GatewayError) {
        self.status = err.http_status();
        self.error = Some(err.safe_message());
    }

    /// The one structured log line of this request. Never holds a secret: keys appear
    /// only as their public id, deployments as `<provider>/<model>`.
    pub fn write_log(&self) {
        let line = Line {
            msg: "request",
            request_id: &self.id,
            method: &self.method,
            path: &self.path,
            key: self.key_public_id.as_deref(),
            model: self.model.as_deref(),
            deployment: self.deployment.as_deref(),
            status: self.status,
            attempts: self.attempts,
            latency_ms: (clock_ms() - self.started).round(),
            overhead_ms: self
                .overhead_at_commit
                .unwrap_or_else(|| self.overhead_ms())
                .round(),
            ttft_ms: self.ttft_ms.map(f64::round),
            tokens: self.usage.map(|u| TokensLine {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                total_tokens: u.total_tokens(),
            }),
            error: self.error.as_deref(),
            client_disconnected: self.client_disconnected,
        };
        if let Ok(s) = serde_json::to_string(&line) {
            worker::console_log!("{s}");
        }
    }
}

/// A structured log line for events outside a request (cron, settlement failures).
pub fn log_event(msg: &str, fields: serde_json::Value) {
    let mut v = serde_json::json!({ "msg": msg });
    if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    worker::console_log!("{v}");
}

/// Like [`log_event`], on the error stream.
pub fn log_error(msg: &str, fields: serde_json::Value) {
    let mut v = serde_json::json!({ "msg": msg });
    if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    worker::console_error!("{v}");
}
