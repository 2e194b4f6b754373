//! The one upstream attempt loop, for chat, embeddings and rerank: candidate order
//! (`tollbooth_core::routing::candidate_order`: weighted deployments and credentials,
//! open breakers and unhealthy credentials last), at most `settings.max_attempts`
//! attempts, breaker bookkeeping, and the failure rule of
//! `tollbooth_core::routing::after_failure` (connect errors, 429, 5xx, 401/403 try the
//! next candidate; a timeout after the request was sent stops and is billed).
//!
//! What differs per endpoint is an [`Attempt`]: how to build the upstream request for a
//! candidate and how to accept a 2xx answer (read the whole body, or peek the first
//! stream event). The loop never touches the ledger: admission and attempts are separate
//! steps (the seam for speculative admission).

use tollbooth_core::catalogue::{Credential, Resolved, Settings, Target};
use tollbooth_core::error::GatewayError;
use tollbooth_core::provider::{self, UpstreamRequest};
use tollbooth_core::routing::{after_failure, candidate_order, AfterFailure, AttemptFailure};
use worker::Response;

use crate::breakers;
use crate::config::Config;
use crate::context::ReqCtx;
use crate::upstream::{self, Abort};
use crate::util::{clock_ms, now_ms, random_u64};

/// What accepting a 2xx answer decided.
pub enum Verdict<T> {
    Accept(T),
    /// The answer was unusable: count it against the credential and try the next one.
    Retry(AttemptFailure, GatewayError),
    /// The answer was unusable and the loop stops (e.g. the first event never came).
    Stop(AttemptFailure, GatewayError),
}

/// One endpoint's part of the loop.
pub(crate) trait Attempt {
    type Output;
    /// The upstream request for one candidate. `InvalidRequest` means the caller's
    /// request cannot be expressed for this upstream (the loop stops); other errors try
    /// the next candidate.
    fn build(
        &mut self,
        target: &Target<'_>,
        cred: &Credential,
    ) -> Result<UpstreamRequest, GatewayError>;

    /// Told of every upstream call as it starts (speculative admission keeps a handle
    /// to cancel it).
    fn track(&self, _abort: &Abort) {}

    /// Accepts a 2xx answer.
    async fn accept(
        &mut self,
        rc: &mut ReqCtx,
        resp: Response,
        controller: Abort,
        target: &Target<'_>,
        timeout_ms: u64,
    ) -> Verdict<Self::Output>;
}

/// Why the loop gave up.
#[derive(Debug)]
pub struct AttemptError {
    pub error: GatewayError,
    /// The last attempt timed out after the request was sent: it is billed.
    pub timed_out: bool,
}

/// An upstream error message as the caller may see it: redacted, and without the
/// provider's model name (members never learn upstream model names).
fn caller_message(text: &str, target: &Target<'_>, client_model: &str) -> String {
    let msg = provider::error_message(text);
    if target.upstream_model.is_empty() {
        return msg;
    }
    msg.replace(target.upstream_model, client_model)
}

/// Runs the attempts of one request (see the module docs).
pub(crate) async fn run<A: Attempt>(
    rc: &mut ReqCtx,
    resolved: &Resolved<'_>,
    settings: &Settings,
    config: &Config,
    client_model: &str,
    attempt: &mut A,
) -> Result<A::Output, AttemptError> {
    let now = now_ms();
    let deployments: Vec<(u32, Vec<(u32, bool)>)> = resolved
        .targets
        .iter()
        .map(|t| {
            let creds = t
                .provider
                .credentials
                .iter()
                .map(|c| {
                    let key = breakers::breaker_key(&t.provider.id, &c.id);
                    (c.weight, breakers::allows(&key, now, &config.breaker))
                })
                .collect();
            (t.weight, creds)
        })
        .collect();
    let order = candidate_order(&deployments, random_u64);
    let max_attempts = usize::try_from(settings.max_attempts.max(1)).unwrap_or(1);
    let mut last = AttemptError {
        error: GatewayError::Overloaded {
            message: "No upstream is available for this model right now.".into(),
            retry_after_secs: None,
        },
        timed_out: false,
    };
    for (ti, ci, _) in order.into_iter().take(max_attempts) {
        let Some(target) = resolved.targets.get(ti) else {
            continue;
        };
        let Some(cred) = target.provider.credentials.get(ci) else {
            continue;
        };
        let bkey = breakers::breaker_key(&target.provider.id, &cred.id);
        // An open breaker is tried anyway when it is all that is left (better a likely
        // failure than a certain 503); this only counts the probe.
        breakers::note_attempt(&bkey, now_ms(), &config.breaker);
        let request = match attempt.build(target, cred) {
            Ok(r) => r,
            Err(e @ GatewayError::InvalidRequest { .. }) => {
                return Err(AttemptError {
                    error: e,
                    timed_out: false,
                })
            }
            Err(e) => {
                last.error = e;
                continue;
            }
        };
        rc.attempts += 1;
        rc.deployment = Some(format!("{}/{}", target.provider.id, target.upstream_model));
        let timeout_ms = target.provider.timeout_ms.max(1);
        let t0 = clock_ms();
        let track = |a: &Abort| attempt.track(a);
        let sent = upstream::send(&request, timeout_ms, Some(&track)).await;
        let failed = |f: AttemptFailure| breakers::on_failure(&bkey, f, now_ms(), &config.breaker);
        let (failure, error) = match sent {
            Err(f) => {
                rc.upstream_ms += clock_ms() - t0;
                failed(f);
                let error = match f {
                    AttemptFailure::Timeout => GatewayError::UpstreamTimeout {
                        message: "The upstream did not answer in time.".into(),
                    },
                    _ => GatewayError::from_upstream_status(
                        502,
                        "The upstream could not be reached.",
                    ),
                };
                (f, error)
            }
            Ok((mut resp, controller)) => {
                let status = resp.status_code();
                if !(200..300).contains(&status) {
                    let text = upstream::read_text(&mut resp, timeout_ms)
                        .await
                        .unwrap_or_default();
                    rc.upstream_ms += clock_ms() - t0;
                    let f = AttemptFailure::Status(status);
                    failed(f);
                    (
                        f,
                        GatewayError::from_upstream_status(
                            status,
                            caller_message(&text, target, client_model),
                        ),
                    )
                } else {
                    let verdict = attempt
                        .accept(rc, resp, controller, target, timeout_ms)
                        .await;
                    rc.upstream_ms += clock_ms() - t0;
                    match verdict {
                        Verdict::Accept(out) => {
                            breakers::on_success(&bkey);
                            return Ok(out);
                        }
                        Verdict::Retry(f, e) => {
                            failed(f);
                            last.error = e;
                            continue;
                        }
                        Verdict::Stop(f, e) => {
                            failed(f);
                            return Err(AttemptError {
                                timed_out: f == AttemptFailure::Timeout,
                                error: e,
                            });
                        }
                    }
                }
            }
        };
        last = AttemptError {
            timed_out: failure == AttemptFailure::Timeout,
            error,
        };
        if after_failure(failure) == AfterFailure::Stop {
            return Err(last);
        }
    }
    Err(last)
}
