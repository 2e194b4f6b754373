//! Settlement (run in `ctx.wait_until`) and the sweep of stale reservations.
//!
//! One batch per settlement, guarded by `reservations.state: reserved|expired -> settled`
//! with this call's claim token: charge the actual usage, release the reservation (unless
//! the sweep already released it), write the usage event and the hourly rollup, and
//! correct the rate window's token count. A replayed settlement finds the state already
//! `settled`, so none of its statements act.

use tollbooth_core::billing::{charge_in_unit, cost_micros, CHARS_PER_TOKEN_ESTIMATE};
use tollbooth_core::usage::Usage;
use worker::D1Database;

use super::{changes, claim_token, inum, num, opt_num, opt_text, stmt, text, Admission, Source};
use crate::ratelimit;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// Completed normally.
    Ok,
    /// The client went away; the upstream may have been read to the end (bounded).
    ClientAbort,
    /// The upstream failed (before or after some output).
    UpstreamError,
    /// The gateway failed.
    Error,
}

impl OutcomeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Ok => "ok",
            OutcomeStatus::ClientAbort => "client_abort",
            OutcomeStatus::UpstreamError => "upstream_error",
            OutcomeStatus::Error => "error",
        }
    }
}

/// What the request path observed.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The upstream's reported usage, when it reported one (always preferred).
    pub usage: Option<Usage>,
    /// Characters of generated output the upstream produced (text and tool-call
    /// arguments), counted as Unicode scalar values.
    pub output_chars: u64,
    pub status: Option<OutcomeStatus>,
    /// `provider/upstream_model` that served the request.
    pub deployment: Option<String>,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    /// When the request ended (unix seconds).
    pub now: u64,
}

/// What a settle call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleResult {
    Settled {
        charged: u64,
        cost_micros: u64,
        estimated: bool,
    },
    /// The reservation was already settled (a replay): nothing changed.
    AlreadySettled,
}

/// What to bill: the provider's usage; else, if anything was produced (or the request
/// succeeded), an estimate (prompt estimate + delivered characters / 4) flagged
/// `estimated`; else nothing.
pub fn billed_usage(adm: &Admission, outcome: &Outcome) -> (Usage, bool, bool) {
    let status = outcome.status.unwrap_or(OutcomeStatus::Ok);
    match outcome.usage {
        Some(u) => (u, false, true),
        None if outcome.output_chars > 0 || status == OutcomeStatus::Ok => (
            Usage {
                input_tokens: adm.estimate.input_tokens,
                output_tokens: outcome.output_chars.div_ceil(CHARS_PER_TOKEN_ESTIMATE),
                ..Usage::default()
            },
            true,
            true,
        ),
        None => (Usage::default(), false, false),
    }
}

/// Settles an admission exactly once.
pub async fn settle(
    db: &D1Database,
    adm: &Admission,
    outcome: &Outcome,
) -> worker::Result<SettleResult> {
    let (usage, estimated, billable) = billed_usage(adm, outcome);
    let cost = if billable {
        cost_micros(&adm.price, &usage)
    } else {
        0
    };
    let charged = if billable {
        charge_in_unit(adm.unit, &usage, outcome.output_chars, cost)
    } else {
        0
    };
    let status = outcome.status.unwrap_or(OutcomeStatus::Ok);
    let claim = claim_token();
    let rid = adm.request_id.as_str();
    let now = outcome.now.max(adm.admitted_at);
    let mut batch = Vec::with_capacity(6);

    batch.push(stmt(
        db,
        "UPDATE reservations SET state = 'settled', settled_from = state, charged = ?2, \
           claim = ?3, settled_at = ?4 \
         WHERE request_id = ?1 AND state IN ('reserved', 'expired')",
        &[text(rid), num(charged), text(&claim), num(now)],
    )?);
    // Release what the sweep has not already released; charge the actual amount.
    let release = "CASE WHEN (SELECT settled_from FROM reservations WHERE request_id = ?1) \
                   = 'reserved' THEN ?3 ELSE 0 END";
    match adm.source {
        Source::Allowance => batch.push(stmt(
            db,
            &format!(
                "UPDATE allowances SET reserved = MAX(0, reserved - {release}), \
                   used = used + ?4, updated_at = ?5 \
                 WHERE member_id = ?2 AND period_start = ?6 \
                   AND EXISTS (SELECT 1 FROM reservations WHERE request_id = ?1 AND claim = ?7)"
            ),
            &[
                text(rid),
                text(&adm.member_id),
                num(adm.amount),
                num(charged),
                num(now),
                opt_num(adm.period_start),
                text(&claim),
            ],
        )?),
        Source::Wallet => batch.push(stmt(
            db,
            &format!(
                "UPDATE wallets SET reserved_micros = MAX(0, reserved_micros - {release}), \
                   balance_micros = balance_micros - ?4, updated_at = ?5 \
                 WHERE member_id = ?2 \
                   AND EXISTS (SELECT 1 FROM reservations WHERE request_id = ?1 AND claim = ?6)"
            ),
            &[
                text(rid),
                text(&adm.member_id),
                num(adm.amount),
                num(charged),
                num(now),
                text(&claim),
            ],
        )?),
    }
    batch.push(stmt(
        db,
        "INSERT INTO usage_events (request_id, member_id, key_id, model, deployment, \
           input_tokens, output_tokens, cached_tokens, output_chars, cost_micros, charged, \
           charged_unit, source, status, estimated, latency_ms, ttft_ms, created_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18 \
         WHERE EXISTS (SELECT 1 FROM reservations WHERE request_id = ?1 AND claim = ?19) \
         ON CONFLICT (request_id) DO NOTHING",
        &[
            text(rid),
            text(&adm.member_id),
            text(&adm.key_id),
            text(&adm.model),
            opt_text(outcome.deployment.as_deref()),
            num(usage.input_tokens),
            num(usage.output_tokens),
            num(usage.cached_input_tokens),
            num(outcome.output_chars),
            num(cost),
            num(charged),
            text(adm.unit.as_str()),
            text(adm.source.as_str()),
            text(status.as_str()),
            num(u64::from(estimated)),
            num(outcome.latency_ms),
            opt_num(outcome.ttft_ms),
            num(now),
            text(&claim),
        ],
    )?);
    let is_error = u64::from(!matches!(
        status,
        OutcomeStatus::Ok | OutcomeStatus::ClientAbort
    ));
    batch.push(stmt(
        db,
        "INSERT INTO rollups_hourly (member_id, model, hour, requests, errors, input_tokens, \
           output_tokens, cached_tokens, cost_micros, latency_ms_sum, ttft_ms_sum, ttft_count, rev) \
         SELECT ?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
           (SELECT COALESCE(MAX(rev), 0) + 1 FROM rollups_hourly) \
         WHERE EXISTS (SELECT 1 FROM reservations WHERE request_id = ?12 AND claim = ?13) \
         ON CONFLICT (member_id, model, hour) DO UPDATE SET \
           requests = requests + 1, errors = errors + excluded.errors, \
           input_tokens = input_tokens + excluded.input_tokens, \
           output_tokens = output_tokens + excluded.output_tokens, \
           cached_tokens = cached_tokens + excluded.cached_tokens, \
           cost_micros = cost_micros + excluded.cost_micros, \
           latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
           ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, \
           ttft_count = ttft_count + excluded.ttft_count, rev = excluded.rev",
        &[
            text(&adm.member_id),
            text(&adm.model),
            num(now - now % 3600),
            num(is_error),
            num(usage.input_tokens),
            num(usage.output_tokens),
            num(usage.cached_input_tokens),
            num(cost),
            num(outcome.latency_ms),
            num(outcome.ttft_ms.unwrap_or(0)),
            num(u64::from(outcome.ttft_ms.is_some())),
            text(rid),
            text(&claim),
        ],
    )?);
    let actual_tokens = if billable { usage.total_tokens() } else { 0 };
    let delta = i64::try_from(actual_tokens)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(adm.rate.tokens).unwrap_or(i64::MAX));
    if delta != 0 {
        for scope in &adm.rate.scopes {
            batch.push(stmt(
                db,
                ratelimit::correction_sql(),
                &ratelimit::correction_params(scope, adm.rate.window_start, delta, rid, &claim),
            )?);
        }
    }
    let results = db.batch(batch).await?;
    if results.first().map(changes).unwrap_or(0) == 0 {
        return Ok(SettleResult::AlreadySettled);
    }
    Ok(SettleResult::Settled {
        charged,
        cost_micros: cost,
        estimated,
    })
}

#[derive(serde::Deserialize)]
struct OpenReservation {
    request_id: String,
    member_id: String,
    source: String,
    period_start: Option<i64>,
    amount: i64,
}

/// Releases reservations past their expiry (a crash between admission and settlement):
/// of one member (on a refused admission) or of everyone (the scheduled sweep). Also
/// drops old rate windows and stale signature records. Returns how many were released.
///
/// A late settlement of an expired reservation still charges (without releasing twice).
pub async fn sweep_expired(
    db: &D1Database,
    member_id: Option<&str>,
    now: u64,
    limit: u64,
) -> worker::Result<u64> {
    let rows: Vec<OpenReservation> = match member_id {
        Some(m) => stmt(
            db,
            "SELECT request_id, member_id, source, period_start, amount FROM reservations \
                 WHERE member_id = ?1 AND state = 'reserved' AND expires_at <= ?2 LIMIT ?3",
            &[text(m), num(now), num(limit)],
        )?
        .all()
        .await?
        .results()?,
        None => stmt(
            db,
            "SELECT request_id, member_id, source, period_start, amount FROM reservations \
                 WHERE state = 'reserved' AND expires_at <= ?1 LIMIT ?2",
            &[num(now), num(limit)],
        )?
        .all()
        .await?
        .results()?,
    };
    let mut released = 0;
    for r in rows {
        let claim = claim_token();
        let guard = stmt(
            db,
            "UPDATE reservations SET state = 'expired', claim = ?2 \
             WHERE request_id = ?1 AND state = 'reserved'",
            &[text(&r.request_id), text(&claim)],
        )?;
        let amount = super::non_negative(r.amount);
        let release = if r.source == "wallet" {
            stmt(
                db,
                "UPDATE wallets SET reserved_micros = MAX(0, reserved_micros - ?2) \
                 WHERE member_id = ?1 \
                   AND EXISTS (SELECT 1 FROM reservations WHERE request_id = ?3 AND claim = ?4)",
                &[
                    text(&r.member_id),
                    num(amount),
                    text(&r.request_id),
                    text(&claim),
                ],
            )?
        } else {
            stmt(
                db,
                "UPDATE allowances SET reserved = MAX(0, reserved - ?2) \
                 WHERE member_id = ?1 AND period_start = ?5 \
                   AND EXISTS (SELECT 1 FROM reservations WHERE request_id = ?3 AND claim = ?4)",
                &[
                    text(&r.member_id),
                    num(amount),
                    text(&r.request_id),
                    text(&claim),
                    inum(r.period_start.unwrap_or(-1)),
                ],
            )?
        };
        let results = db.batch(vec![guard, release]).await?;
        if results.first().map(changes).unwrap_or(0) == 1 {
            released += 1;
        }
    }
    if member_id.is_none() {
        let horizon = now.saturating_sub(3600);
        db.batch(vec![
            stmt(
                db,
                "DELETE FROM rate_windows WHERE window_start < ?1",
                &[num(horizon)],
            )?,
            stmt(
                db,
                "DELETE FROM seen_signatures WHERE expires_at < ?1",
                &[num(now)],
            )?,
        ])
        .await?;
    }
    Ok(released)
}
