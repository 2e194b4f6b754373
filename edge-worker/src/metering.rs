//! The metering seam: rate limit → reserve → (call) → settle.
//!
//! The router calls these three hooks at fixed points of the pipeline; today they do
//! nothing (every request is allowed and nothing is recorded). The D1 ledger
//! (`D1Ledger`, rate-limit windows, reservations, usage events, rollups, captures) plugs
//! in here without touching the router:
//!
//! - [`check_rate_limit`] runs after auth and permissions, before any upstream work;
//!   return `GatewayError::rate_limited(..)` to refuse (429).
//! - [`reserve`] runs right after; it must be atomic and idempotent by
//!   `MeterRequest::request_id`; return `GatewayError::insufficient_quota(..)` (402) to
//!   refuse. What it returns is handed back to [`settle`].
//! - [`settle`] runs exactly once per reserved request, inside `ctx.wait_until`, after
//!   the last byte (or the failure): with the provider's usage when there is one, else
//!   `usage: None` (bill an estimate from `output_chars`, or nothing when nothing was
//!   produced). It also runs when the client disconnected mid-stream (the gateway keeps
//!   reading the upstream for usage, see `proxy::chat`).

// The ledger reads these fields; until it lands nothing does.
#![allow(dead_code)]

use tollbooth_core::error::GatewayError;
use tollbooth_core::usage::Usage;
use worker::Env;

/// What the metering hooks know about a request before it is routed.
#[derive(Debug, Clone)]
pub struct MeterRequest {
    pub request_id: String,
    pub key_public_id: String,
    pub member_id: String,
    pub plan_id: String,
    /// `/v1/chat/completions`, `/v1/messages`, `/v1/embeddings`, `/v1/rerank`.
    pub endpoint: &'static str,
    /// The virtual model name the request is billed under.
    pub model: String,
    /// Rough prompt size (characters of message text) for the reservation estimate.
    pub prompt_chars: u64,
    /// The client's output cap, if it named one.
    pub max_output_tokens: Option<u64>,
    pub stream: bool,
    /// Key/plan capture flags, for optional conversation capture.
    pub capture: bool,
}

/// Handed from [`reserve`] to [`settle`] (amounts, reservation id). Empty until the
/// ledger lands.
#[derive(Debug, Clone, Default)]
pub struct Reservation {
    pub reserved_units: u64,
}

/// How the request ended, for [`settle`].
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// HTTP status the client got (200 for a stream that was started).
    pub status: u16,
    /// `<provider>/<upstream model>` that answered, if any.
    pub deployment: Option<String>,
    /// Usage reported by the provider; `None` when it sent none.
    pub usage: Option<Usage>,
    /// Characters streamed to the client (text, reasoning, tool arguments), for an
    /// estimate when `usage` is `None`.
    pub output_chars: u64,
    /// The upstream failed after the response started.
    pub upstream_failed: bool,
    /// The client went away before the end of the stream.
    pub client_disconnected: bool,
}

/// Per key / per plan request and token limits. No-op for now.
pub async fn check_rate_limit(_env: &Env, _req: &MeterRequest) -> Result<(), GatewayError> {
    Ok(())
}

/// Reserves the request's estimated cost. No-op for now.
pub async fn reserve(_env: &Env, _req: &MeterRequest) -> Result<Reservation, GatewayError> {
    Ok(Reservation::default())
}

/// Settles a reservation with what was actually used. No-op for now.
pub async fn settle(_env: &Env, _req: &MeterRequest, _reservation: Reservation, _outcome: Outcome) {
}
