//! The capture hook: after settlement, the pipeline offers every finished exchange here
//! (the hub request, the assembled hub response, usage, cost, status, latency, member,
//! key and app ids). A no-op until conversation capture fills it (docs/contracts.md);
//! the pipeline only assembles a response when the key or its plan asks for capture.

use tollbooth_core::protocol::openai as oa;
use tollbooth_core::usage::Usage;
use worker::Env;

/// One finished exchange.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "read by conversation capture, which fills `offer`"
)]
pub struct Exchange<'a> {
    pub request_id: &'a str,
    pub member_id: &'a str,
    pub key_id: &'a str,
    pub app_id: Option<&'a str>,
    pub request: &'a oa::ChatCompletionRequest,
    pub response: Option<&'a oa::ChatCompletionResponse>,
    pub usage: Option<Usage>,
    pub cost_micros: u64,
    /// The usage event's status (`ok`, `client_abort`, `upstream_error`, ...).
    pub status: &'static str,
    pub latency_ms: u64,
}

/// What the capture hook needs to be carried to settlement.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub request: oa::ChatCompletionRequest,
    pub app_id: Option<String>,
}

/// Offers a finished exchange to capture (no-op for now).
pub fn offer(_env: &Env, _exchange: &Exchange<'_>) {}
