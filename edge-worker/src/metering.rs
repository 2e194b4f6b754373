//! The metering seam: rate limit → reserve → (call) → settle.
//!
//! The router calls these three hooks at fixed points of the pipeline; the D1 ledger
//! ([`crate::ledger`], [`crate::ratelimit`]) implements them:
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
//!
//! Rate limits are counted inside [`reserve`] (one admission: rate windows, then the
//! reservation; a refused reservation gives its rate count back), so
//! [`check_rate_limit`] has nothing left to do. The key record and the catalogue come
//! from the isolate caches the router already filled.

use tollbooth_core::billing::{
    OutputLimits, ReservationEstimate, PER_MESSAGE_OVERHEAD_TOKENS, PER_REQUEST_OVERHEAD_TOKENS,
};
use tollbooth_core::error::GatewayError;
use tollbooth_core::usage::Usage;
use worker::Env;

use crate::auth::KvKeyStore;
use crate::config::Config;
use crate::ledger::{self, Admission, AdmitError, AdmitRequest, OutcomeStatus};
use crate::{catalogue, ratelimit, util};

/// What the metering hooks know about a request before it is routed.
// `member_id`, `plan_id`, `stream` and `capture` are for conversation capture (not the
// ledger's: the ledger reads the key record itself).
#[allow(dead_code)]
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

/// Handed from [`reserve`] to [`settle`]: the ledger admission (`None` only if the
/// ledger is not consulted).
#[derive(Debug, Clone, Default)]
pub struct Reservation {
    /// Reserved, in the admission's unit (for logs).
    #[allow(dead_code)]
    pub reserved_units: u64,
    pub admission: Option<Admission>,
    /// When the request was admitted (ms), for the latency in the usage event.
    pub admitted_ms: u64,
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
    /// Time to first token (ms from the request's start), when known; recorded in the
    /// usage event and the hourly rollup.
    pub ttft_ms: Option<u64>,
}

/// Rate limits are counted by [`reserve`] (see the module docs).
pub async fn check_rate_limit(_env: &Env, _req: &MeterRequest) -> Result<(), GatewayError> {
    Ok(())
}

/// The reservation estimate: prompt characters / 4 plus chat overheads, and the output
/// the request can produce (its `max_tokens` capped at the model maximum, or the
/// catalogue default). Embeddings and rerank produce no output tokens.
fn estimate(req: &MeterRequest, limits: &OutputLimits) -> ReservationEstimate {
    let prompt = req
        .prompt_chars
        .div_ceil(tollbooth_core::billing::CHARS_PER_TOKEN_ESTIMATE)
        .saturating_add(PER_REQUEST_OVERHEAD_TOKENS + PER_MESSAGE_OVERHEAD_TOKENS);
    let chat = matches!(req.endpoint, "/v1/chat/completions" | "/v1/messages");
    if chat {
        ReservationEstimate::new(prompt, req.max_output_tokens, limits)
    } else {
        ReservationEstimate {
            input_tokens: prompt,
            output_tokens: 0,
        }
    }
}

/// `METERING = "off"` (benchmarks only: measuring what metering costs on the request
/// path) skips rate limits, reservation and settlement.
fn metering_off(env: &Env) -> bool {
    env.var("METERING").is_ok_and(|v| v.to_string() == "off")
}

/// Rate limits, then an atomic reservation (402 `insufficient_quota` / 429).
pub async fn reserve(env: &Env, req: &MeterRequest) -> Result<Reservation, GatewayError> {
    if metering_off(env) {
        return Ok(Reservation::default());
    }
    let config = Config::get(env).map_err(GatewayError::internal)?;
    let key = KvKeyStore::new(env, config.key_cache_ttl_ms)
        .get(&req.key_public_id)
        .await?
        .ok_or_else(GatewayError::invalid_api_key)?;
    let catalogue = catalogue::load(env, config.catalogue_ttl_ms).await?;
    let model = catalogue.model(&req.model);
    let settings = catalogue.settings();
    let limits = OutputLimits {
        max_output_tokens: model.map(|m| m.max_output_tokens),
        default_output_tokens: settings.default_max_tokens,
    };
    let db = ledger::db(env).map_err(|_| GatewayError::internal("ledger unavailable"))?;
    let admit = AdmitRequest {
        request_id: &req.request_id,
        key: &key,
        plan: catalogue.plan(&key.plan_id),
        model: &req.model,
        price: model.map(|m| m.price).unwrap_or_default(),
        estimate: estimate(req, &limits),
        now: ledger::clock::now(),
    };
    match ledger::admit(&db, &admit).await {
        Ok(adm) => Ok(Reservation {
            reserved_units: adm.amount,
            admission: Some(adm),
            admitted_ms: util::now_ms(),
        }),
        Err(AdmitError::RateLimited(r)) => {
            let err = r.error();
            ratelimit::remember_refusal(&req.request_id, r);
            Err(err)
        }
        Err(e) => {
            if let AdmitError::Internal(m) = &e {
                worker::console_error!(
                    "{}",
                    serde_json::json!({"msg": "ledger admission failed", "request_id": req.request_id, "error": m})
                );
            }
            Err(e.gateway_error())
        }
    }
}

/// Settles a reservation with what was actually used (exactly once; see
/// [`ledger::settle`]). A response the client got as an error (status >= 400) bills
/// nothing: the upstream failed before any output reached the client.
pub async fn settle(env: &Env, req: &MeterRequest, reservation: Reservation, outcome: Outcome) {
    let Some(adm) = reservation.admission else {
        return;
    };
    let status = if outcome.client_disconnected {
        OutcomeStatus::ClientAbort
    } else if outcome.upstream_failed || outcome.status >= 400 {
        OutcomeStatus::UpstreamError
    } else {
        OutcomeStatus::Ok
    };
    let failed_before_output = outcome.status >= 400;
    let ledger_outcome = ledger::Outcome {
        usage: if failed_before_output {
            None
        } else {
            outcome.usage
        },
        output_chars: if failed_before_output {
            0
        } else {
            outcome.output_chars
        },
        status: Some(status),
        deployment: outcome.deployment,
        latency_ms: util::now_ms().saturating_sub(reservation.admitted_ms),
        ttft_ms: outcome.ttft_ms,
        now: ledger::clock::now(),
    };
    let result = match ledger::db(env) {
        Ok(db) => {
            let first = ledger::settle(&db, &adm, &ledger_outcome).await;
            // Tests only: settle twice, as a retried `wait_until` would; the second must
            // change nothing.
            if env
                .var("TEST_REPLAY_SETTLE")
                .is_ok_and(|v| v.to_string() == "1")
            {
                let again = ledger::settle(&db, &adm, &ledger_outcome).await;
                if !matches!(again, Ok(ledger::SettleResult::AlreadySettled)) {
                    worker::console_error!(
                        "{}",
                        serde_json::json!({"msg": "replayed settlement was not a no-op", "request_id": req.request_id})
                    );
                }
            }
            first
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        // The reservation expires and the sweep releases it; the usage is lost only if
        // this keeps failing, and the log says so.
        worker::console_error!(
            "{}",
            serde_json::json!({"msg": "ledger settlement failed", "request_id": req.request_id, "error": e.to_string()})
        );
    }
}
