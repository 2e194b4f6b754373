//! Settlement: one batch per request, guarded by `reservations.state:
//! reserved|expired -> settled` with this call's claim token. It charges what
//! `tollbooth_core::billing::bill` decides, releases the reservation (unless the sweep
//! already charged it, in which case it corrects that charge), replaces the usage event
//! and updates the hourly rollup by the difference, and corrects the rate window's token
//! count. A replayed settlement finds the state already `settled`, so none of its
//! statements act.

use serde::{Deserialize, Serialize};
use tollbooth_core::billing::{bill, charge_in_unit, cost_micros, Observed};
use worker::D1Database;

use super::ratelimit;
use super::{claim_token, num, opt_num, opt_text, stmt, text, Admission, Source};

/// What the request path observed, for settlement (also stored as JSON in a pending
/// settlement).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub observed: Observed,
    /// `provider/upstream_model` that served the request.
    pub deployment: Option<String>,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    /// When the request ended (unix seconds, ledger clock).
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

/// Settles an admission exactly once.
pub async fn settle(
    db: &D1Database,
    adm: &Admission,
    outcome: &Outcome,
) -> worker::Result<SettleResult> {
    let b = bill(&adm.estimate, &outcome.observed);
    let cost = if b.charge {
        cost_micros(&adm.price, &b.usage)
    } else {
        0
    };
    let charged = if b.charge {
        charge_in_unit(adm.unit, &b.usage, b.output_chars, cost)
    } else {
        0
    };
    let ending = outcome.observed.ending;
    let claim = claim_token();
    let rid = adm.request_id.as_str();
    let now = outcome.now.max(adm.admitted_at);
    let guarded = "EXISTS (SELECT 1 FROM reservations WHERE request_id = ?1 AND claim = ?2)";
    let mut batch = Vec::with_capacity(8);

    batch.push(stmt(
        db,
        "UPDATE reservations SET state = 'settled', settled_from = state, charged = ?3, \
           claim = ?2, settled_at = ?4 \
         WHERE request_id = ?1 AND state IN ('reserved', 'expired')",
        &[text(rid), text(&claim), num(charged), num(now)],
    )?);
    // Release what is still reserved; replace the sweep's charge if it made one.
    let release = "(SELECT CASE WHEN settled_from = 'reserved' THEN amount ELSE 0 END \
                    FROM reservations WHERE request_id = ?1)";
    let earlier = "(SELECT CASE WHEN settled_from = 'expired' THEN COALESCE(expiry_charged, 0) \
                    ELSE 0 END FROM reservations WHERE request_id = ?1)";
    match adm.source {
        Source::Allowance => batch.push(stmt(
            db,
            &format!(
                "UPDATE allowances SET reserved = MAX(0, reserved - {release}), \
                   used = used + ?3 - {earlier}, updated_at = ?4 \
                 WHERE member_id = ?5 AND period_start = ?6 AND {guarded}"
            ),
            &[
                text(rid),
                text(&claim),
                num(charged),
                num(now),
                text(&adm.member_id),
                opt_num(adm.period_start),
            ],
        )?),
        Source::Wallet => batch.push(stmt(
            db,
            &format!(
                "UPDATE wallets SET reserved_micros = MAX(0, reserved_micros - {release}), \
                   balance_micros = balance_micros - ?3 + {earlier}, updated_at = ?4 \
                 WHERE member_id = ?5 AND {guarded}"
            ),
            &[
                text(rid),
                text(&claim),
                num(charged),
                num(now),
                text(&adm.member_id),
            ],
        )?),
    }
    let is_error = u64::from(ending.is_error());
    // The rollup moves by the difference to the usage event being replaced (the sweep's,
    // for an expired reservation), so a late settlement never counts a request twice.
    batch.push(stmt(
        db,
        &format!(
            "INSERT INTO rollups_hourly (member_id, model, hour, requests, errors, input_tokens, \
               output_tokens, cached_tokens, cost_micros, latency_ms_sum, ttft_ms_sum, \
               ttft_count, rev) \
             SELECT ?3, ?4, ?5, CASE WHEN old.request_id IS NULL THEN 1 ELSE 0 END, \
               ?6 - COALESCE(CASE WHEN old.status IN ('upstream_error', 'upstream_timeout') \
                 THEN 1 ELSE 0 END, 0), \
               ?7 - COALESCE(old.input_tokens, 0), ?8 - COALESCE(old.output_tokens, 0), \
               ?9 - COALESCE(old.cached_tokens, 0), ?10 - COALESCE(old.cost_micros, 0), \
               ?11, ?12, ?13, (SELECT COALESCE(MAX(rev), 0) + 1 FROM rollups_hourly) \
             FROM (SELECT 1) LEFT JOIN usage_events old ON old.request_id = ?1 \
             WHERE {guarded} \
             ON CONFLICT (member_id, model, hour) DO UPDATE SET \
               requests = requests + excluded.requests, errors = errors + excluded.errors, \
               input_tokens = input_tokens + excluded.input_tokens, \
               output_tokens = output_tokens + excluded.output_tokens, \
               cached_tokens = cached_tokens + excluded.cached_tokens, \
               cost_micros = cost_micros + excluded.cost_micros, \
               latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
               ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, \
               ttft_count = ttft_count + excluded.ttft_count, rev = excluded.rev"
        ),
        &[
            text(rid),
            text(&claim),
            text(&adm.member_id),
            text(&adm.model),
            num(now - now % 3600),
            num(is_error),
            num(b.usage.input_tokens),
            num(b.usage.output_tokens),
            num(b.usage.cached_input_tokens),
            num(cost),
            num(outcome.latency_ms),
            num(outcome.ttft_ms.unwrap_or(0)),
            num(u64::from(outcome.ttft_ms.is_some())),
        ],
    )?);
    // Replaced, not updated: the new row gets a new `seq`, so cursor readers of the
    // usage feed see the correction (they upsert by request id).
    batch.push(stmt(
        db,
        &format!("DELETE FROM usage_events WHERE request_id = ?1 AND {guarded}"),
        &[text(rid), text(&claim)],
    )?);
    batch.push(stmt(
        db,
        &format!(
            "INSERT INTO usage_events (request_id, member_id, key_id, model, deployment, \
               input_tokens, output_tokens, cached_tokens, output_chars, cost_micros, charged, \
               charged_unit, source, status, estimated, latency_ms, ttft_ms, created_at) \
             SELECT ?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
               ?18, ?19 \
             WHERE {guarded}"
        ),
        &[
            text(rid),
            text(&claim),
            text(&adm.member_id),
            text(&adm.key_id),
            text(&adm.model),
            opt_text(outcome.deployment.as_deref()),
            num(b.usage.input_tokens),
            num(b.usage.output_tokens),
            num(b.usage.cached_input_tokens),
            num(b.output_chars),
            num(cost),
            num(charged),
            text(adm.unit.as_str()),
            text(adm.source.as_str()),
            text(ending.as_str()),
            num(u64::from(b.estimated)),
            num(outcome.latency_ms),
            opt_num(outcome.ttft_ms),
            num(now),
        ],
    )?);
    let actual_tokens = if b.charge { b.usage.total_tokens() } else { 0 };
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
    if results.first().map(super::changes).unwrap_or(0) == 0 {
        return Ok(SettleResult::AlreadySettled);
    }
    Ok(SettleResult::Settled {
        charged,
        cost_micros: cost,
        estimated: b.estimated,
    })
}

/// Keeps a reservation alive while its request is still running (a long stream):
/// moves its expiry to `expires_at`. Does nothing once it is settled or expired.
pub async fn heartbeat(db: &D1Database, request_id: &str, expires_at: u64) -> worker::Result<()> {
    stmt(
        db,
        "UPDATE reservations SET expires_at = MAX(expires_at, ?2) \
         WHERE request_id = ?1 AND state = 'reserved'",
        &[text(request_id), num(expires_at)],
    )?
    .run()
    .await?;
    Ok(())
}
