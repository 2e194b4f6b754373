//! Metering on the request path: the estimate, admission, and the [`Settlement`] guard.
//!
//! - [`estimates`]: the realistic estimate (the whole body, output cap × `n`) and its
//!   upper bound (one token per body byte, media constants, the same output).
//! - [`admit`]: one D1 batch (rate limits and the reservation); 429 with its headers,
//!   402 naming what ran out, 500 without internal detail when D1 fails.
//! - [`Settlement`]: settles **exactly once on every exit path**. The handler calls
//!   [`Settlement::finish`] (in `ctx.wait_until`) or [`Settlement::finish_now`] (when it
//!   already runs there, as a stream's pump does); dropping it unfinished settles
//!   "failed before any output" (charges nothing). A settlement that fails is retried,
//!   then stored as a durable pending record the cron finishes; a reservation that is
//!   never settled at all is charged by the sweep when it expires. After settlement the
//!   exchange is offered to the capture hook.

use std::cell::Cell;
use std::rc::Rc;

use tollbooth_core::billing::{BodyEstimate, Ending, Observed, Price, ReservationEstimate};
use tollbooth_core::catalogue::PlanLimits;
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::protocol::openai as oa;
use worker::{Context, Delay, Env};

use super::capture::{self, CaptureRequest, Exchange};
use crate::config::Config;
use crate::context::{log_error, EdgeError};
use crate::ledger::{self, Admission, AdmitError, AdmitRequest, Outcome, SettleResult};
use crate::util::now_ms;

/// Settlement attempts in the request's own `wait_until` before it is stored as pending.
const SETTLE_ATTEMPTS: u32 = 3;

/// The realistic estimate and the upper bound of a request: prompt from the body
/// estimate, output = the cap that is sent upstream × the choices asked for.
pub fn estimates(
    prompt: &BodyEstimate,
    output_cap: u64,
    choices: u64,
) -> (ReservationEstimate, ReservationEstimate) {
    let output = output_cap.saturating_mul(choices.max(1));
    (
        ReservationEstimate {
            input_tokens: prompt.tokens,
            output_tokens: output,
        },
        ReservationEstimate {
            input_tokens: prompt.worst.max(prompt.tokens),
            output_tokens: output,
        },
    )
}

/// What admission needs to know about a request.
pub struct Meter<'a> {
    pub request_id: &'a str,
    pub key: &'a KeyRecord,
    pub plan: Option<&'a PlanLimits>,
    pub model: &'a str,
    pub price: Price,
    pub estimate: ReservationEstimate,
    pub worst: ReservationEstimate,
    /// The ledger clock at the request's entry.
    pub now_s: u64,
}

/// Rate limits and the reservation, in one D1 batch.
pub async fn admit(
    env: &Env,
    ctx: &Context,
    config: &Rc<Config>,
    m: &Meter<'_>,
) -> Result<Settlement, EdgeError> {
    if config.hooks.metering_off {
        return Ok(Settlement { open: None });
    }
    let db = ledger::db(env).map_err(|_| GatewayError::internal("The ledger is unavailable."))?;
    let req = AdmitRequest {
        request_id: m.request_id,
        key: m.key,
        plan: m.plan,
        model: m.model,
        price: m.price,
        estimate: m.estimate,
        worst: m.worst,
        now: m.now_s,
        ttl_secs: config.reservation_ttl_secs,
    };
    if config.hooks.ledger_delay_ms > 0 {
        Delay::from(std::time::Duration::from_millis(
            config.hooks.ledger_delay_ms,
        ))
        .await;
    }
    match ledger::admit(&db, &req).await {
        Ok((admission, fill)) => {
            if let Some(period_start) = fill {
                let member = admission.member_id.clone();
                ctx.wait_until(async move {
                    let _ = ledger::fill_next_bounds(&db, &member, period_start).await;
                });
            }
            Ok(Settlement {
                open: Some(Box::new(Open {
                    env: env.clone(),
                    ctx: clone_ctx(ctx),
                    config: config.clone(),
                    admission,
                    started_ms: now_ms(),
                    entry_now: m.now_s,
                    capture: None,
                })),
            })
        }
        Err(AdmitError::RateLimited(r)) => Err(EdgeError::with_headers(r.error(), r.headers())),
        Err(AdmitError::Quota(e)) => Err(e.into()),
        Err(AdmitError::Internal(msg)) => {
            log_error(
                "ledger admission failed",
                serde_json::json!({ "request_id": m.request_id, "error": msg }),
            );
            Err(
                GatewayError::internal("The ledger is unavailable; the request was not run.")
                    .into(),
            )
        }
    }
}

/// How a request ended, for its settlement.
#[derive(Debug, Clone)]
pub struct Finish {
    pub observed: Observed,
    /// `<provider>/<upstream model>` that answered.
    pub deployment: Option<String>,
    pub ttft_ms: Option<u64>,
    /// The assembled answer, when capture wants it.
    pub response: Option<Box<oa::ChatCompletionResponse>>,
}

impl Finish {
    /// Nothing was produced (an error before any output): charges nothing.
    pub fn failed_before_output() -> Self {
        Finish {
            observed: Observed {
                ending: Ending::FailedBeforeOutput,
                usage: None,
                output_chars: 0,
                output_tokens_est: 0,
            },
            deployment: None,
            ttft_ms: None,
            response: None,
        }
    }

    /// An attempt timed out after it was sent: charges the reservation.
    pub fn timed_out(deployment: Option<String>) -> Self {
        Finish {
            observed: Observed {
                ending: Ending::TimedOut,
                ..Finish::failed_before_output().observed
            },
            deployment,
            ..Finish::failed_before_output()
        }
    }
}

struct Open {
    env: Env,
    ctx: Context,
    config: Rc<Config>,
    admission: Admission,
    started_ms: u64,
    entry_now: u64,
    capture: Option<CaptureRequest>,
}

/// The guard of one admitted request (see the module docs).
pub struct Settlement {
    open: Option<Box<Open>>,
}

impl Settlement {
    /// The request is captured: settlement offers it to the capture hook.
    pub fn set_capture(&mut self, capture: Option<CaptureRequest>) {
        if let Some(o) = self.open.as_mut() {
            o.capture = capture;
        }
    }

    /// The admission (none when metering is off).
    pub fn admission(&self) -> Option<&Admission> {
        self.open.as_ref().map(|o| &o.admission)
    }

    /// Whether the handler should assemble the answer for capture.
    pub fn wants_response(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.capture.is_some())
    }

    /// Settles in `ctx.wait_until` (the response does not wait for it).
    pub fn finish(mut self, fin: Finish) {
        if let Some(open) = self.open.take() {
            let ctx = clone_ctx(&open.ctx);
            ctx.wait_until(settle_open(*open, fin));
        }
    }

    /// Settles now (for code already running in `wait_until`).
    pub async fn finish_now(mut self, fin: Finish) {
        if let Some(open) = self.open.take() {
            settle_open(*open, fin).await;
        }
    }

    /// Keeps the reservation alive (a long stream): moves its expiry one TTL ahead.
    pub async fn heartbeat(&self) {
        let Some(o) = self.open.as_ref() else { return };
        let now = ledger_now(o);
        if let Ok(db) = ledger::db(&o.env) {
            let until = now.saturating_add(o.config.reservation_ttl_secs);
            if let Err(e) = ledger::heartbeat(&db, &o.admission.request_id, until).await {
                log_error(
                    "reservation heartbeat failed",
                    serde_json::json!({"request_id": o.admission.request_id, "error": e.to_string()}),
                );
            }
        }
    }

    /// Seconds between heartbeats (a third of the reservation's lifetime).
    pub fn heartbeat_every_ms(&self) -> Option<u64> {
        self.open
            .as_ref()
            .map(|o| o.config.reservation_ttl_secs.saturating_mul(1000) / 3)
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            let ctx = clone_ctx(&open.ctx);
            ctx.wait_until(settle_open(*open, Finish::failed_before_output()));
        }
    }
}

/// Another handle on the same execution context (settlement outlives the handler's
/// borrow of it).
fn clone_ctx(ctx: &Context) -> Context {
    use worker::wasm_bindgen::JsCast;
    let js: &worker::wasm_bindgen::JsValue = ctx.as_ref().as_ref();
    Context::new(js.clone().unchecked_into())
}

fn ledger_now(o: &Open) -> u64 {
    o.entry_now
        .saturating_add(now_ms().saturating_sub(o.started_ms) / 1000)
}

thread_local! {
    /// Settlement failures injected so far (the `TEST_FAIL_SETTLE` hook).
    static INJECTED: Cell<u64> = const { Cell::new(0) };
}

fn inject_failure(config: &Config) -> bool {
    let n = config.hooks.fail_settle;
    n > 0
        && INJECTED.with(|c| {
            let done = c.get();
            if done < n {
                c.set(done + 1);
                true
            } else {
                false
            }
        })
}

async fn settle_open(open: Open, fin: Finish) {
    let now = ledger_now(&open);
    let outcome = Outcome {
        observed: fin.observed,
        deployment: fin.deployment,
        latency_ms: now_ms().saturating_sub(open.started_ms),
        ttft_ms: fin.ttft_ms,
        now,
    };
    let adm = &open.admission;
    let db = ledger::db(&open.env).ok();
    let mut result: Result<SettleResult, String> = Err("ledger unavailable".into());
    for attempt in 0..SETTLE_ATTEMPTS {
        if attempt > 0 {
            Delay::from(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
        }
        let Some(db) = db.as_ref() else { break };
        if inject_failure(&open.config) {
            result = Err("injected settlement failure (TEST_FAIL_SETTLE)".into());
            continue;
        }
        match ledger::settle(db, adm, &outcome).await {
            Ok(r) => {
                result = Ok(r);
                break;
            }
            Err(e) => result = Err(e.to_string()),
        }
    }
    if let (Ok(_), Some(db), true) = (&result, db.as_ref(), open.config.hooks.replay_settle) {
        // Tests only: settle again, as a retried `wait_until` would; it must change nothing.
        let again = ledger::settle(db, adm, &outcome).await;
        if !matches!(again, Ok(SettleResult::AlreadySettled)) {
            log_error(
                "replayed settlement was not a no-op",
                serde_json::json!({ "request_id": adm.request_id }),
            );
        }
    }
    match result {
        Ok(SettleResult::Settled { cost_micros, .. }) => {
            if let Some(c) = &open.capture {
                capture::offer(
                    &open.env,
                    &open.config,
                    &Exchange {
                        request_id: &adm.request_id,
                        member_id: &adm.member_id,
                        key_id: &adm.key_id,
                        capture: c,
                        response: fin.response.as_deref(),
                        usage: outcome.observed.usage,
                        cost_micros,
                        status: outcome.observed.ending.as_str(),
                        latency_ms: outcome.latency_ms,
                        deployment: outcome.deployment.as_deref(),
                        finished_at: now,
                    },
                )
                .await;
            }
        }
        Ok(SettleResult::AlreadySettled) => {}
        Err(error) => {
            log_error(
                "ledger settlement failed; stored as pending",
                serde_json::json!({ "request_id": adm.request_id, "error": error }),
            );
            if open.capture.is_some() {
                capture::dropped(&adm.request_id);
            }
            let pending = ledger::pending::Pending {
                admission: open.admission.clone(),
                outcome,
            };
            if !ledger::pending::store(&open.env, db.as_ref(), &pending, now).await {
                log_error(
                    "pending settlement could not be stored; the sweep charges the reservation",
                    serde_json::json!({ "request_id": adm.request_id }),
                );
            }
        }
    }
}
