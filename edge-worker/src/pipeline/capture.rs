//! The capture hook: whether a request is captured is decided once at admission
//! ([`decide`]); after settlement the pipeline offers the finished exchange here (the hub
//! request, the assembled hub response, usage, cost, status, latency, member, key and
//! app ids) and [`offer`] writes it through [`crate::capture::store`]. `offer` runs in
//! the settlement's `ctx.wait_until`, after the response: it never delays or changes it,
//! and a failed write is counted, never raised.

use tollbooth_core::capture::{capture_enabled, CaptureSettings};
use tollbooth_core::catalogue::Catalogue;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::usage::Usage;
use worker::Env;

use crate::config::Config;

/// One finished exchange.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub request_id: &'a str,
    pub member_id: &'a str,
    pub key_id: &'a str,
    pub capture: &'a CaptureRequest,
    pub response: Option<&'a oa::ChatCompletionResponse>,
    pub usage: Option<Usage>,
    pub cost_micros: u64,
    /// The usage event's status (`ok`, `client_abort`, `upstream_error`, ...).
    pub status: &'static str,
    pub latency_ms: u64,
    /// `<provider>/<upstream model>` that answered.
    pub deployment: Option<&'a str>,
    /// Unix seconds when it finished (the request's ledger clock).
    pub finished_at: u64,
}

/// What the capture hook needs to be carried to settlement.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub request: oa::ChatCompletionRequest,
    pub app_id: Option<String>,
    /// The caller's endpoint (`/v1/chat/completions`, `/v1/messages`, ...).
    pub ingress: &'static str,
    /// The model the caller asked for.
    pub model: String,
    pub settings: CaptureSettings,
}

/// The capture decision for a request, taken once at admission: the key, its plan or
/// its app opted in.
pub fn decide(
    key: &KeyRecord,
    catalogue: &Catalogue,
    request: &oa::ChatCompletionRequest,
    ingress: &'static str,
    model: &str,
) -> Option<CaptureRequest> {
    let settings = &catalogue.settings().capture;
    let plan = catalogue.plan(&key.plan_id).is_some_and(|p| p.capture);
    capture_enabled(key.capture, plan, key.app_id.as_deref(), settings).then(|| CaptureRequest {
        request: request.clone(),
        app_id: key.app_id.clone(),
        ingress,
        model: model.to_owned(),
        settings: settings.clone(),
    })
}

/// A captured request whose settlement failed (it is finished later by the cron, without
/// its bodies): the capture is lost, and said so in the log.
pub fn dropped(request_id: &str) {
    crate::context::log_error(
        "capture dropped: the settlement is pending",
        serde_json::json!({ "request_id": request_id }),
    );
}

/// Writes a finished exchange (see the module docs).
pub async fn offer(env: &Env, config: &Config, exchange: &Exchange<'_>) {
    let c = exchange.capture;
    let usage = exchange.usage.unwrap_or_default();
    let input = crate::capture::store::Input {
        request_id: exchange.request_id,
        member_id: exchange.member_id,
        key_id: exchange.key_id,
        app_id: c.app_id.as_deref(),
        ingress: c.ingress,
        model: &c.model,
        served: exchange.deployment,
        status: exchange.status.to_owned(),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_micros: exchange.cost_micros,
        latency_ms: exchange.latency_ms,
        finished_at: exchange.finished_at,
        request: serde_json::to_value(&c.request).unwrap_or_default(),
        response: exchange.response.and_then(|r| serde_json::to_value(r).ok()),
        settings: &c.settings,
    };
    crate::capture::store::write(env, config, input).await;
}
