//! The sweep (Cron Trigger and `POST /internal/v1/sweep`): reservations past their
//! expiry are **charged their reserved amount** (never released for free: a request
//! whose isolate died may well have been served), with a usage event flagged
//! `estimated`, status `expired`; a late real settlement corrects the charge. Also the
//! retention pruning of the ledger's tables.

use serde::Deserialize;
use worker::D1Database;

use super::{claim_token, non_negative, num, stmt, text};

#[derive(Deserialize)]
struct OpenReservation {
    request_id: String,
}

/// Reservations swept per batch.
const PER_BATCH: usize = 20;

/// Charges up to `limit` reservations that expired before `now`, each in its own guarded
/// statements. Returns how many were charged.
pub async fn charge_expired(db: &D1Database, now: u64, limit: u64) -> worker::Result<u64> {
    let rows: Vec<OpenReservation> = stmt(
        db,
        "SELECT request_id FROM reservations WHERE state = 'reserved' AND expires_at <= ?1 \
         LIMIT ?2",
        &[num(now), num(limit)],
    )?
    .all()
    .await?
    .results()?;
    let mut charged = 0u64;
    for chunk in rows.chunks(PER_BATCH) {
        let mut batch = Vec::new();
        let mut guards = Vec::new();
        for r in chunk {
            let claim = claim_token();
            let rid = text(&r.request_id);
            let guarded =
                "EXISTS (SELECT 1 FROM reservations WHERE request_id = ?1 AND claim = ?2 \
                           AND state = 'expired')";
            let amount = "(SELECT amount FROM reservations WHERE request_id = ?1)";
            guards.push(batch.len());
            batch.push(stmt(
                db,
                "UPDATE reservations SET state = 'expired', claim = ?2, expiry_charged = amount, \
                   settled_at = ?3 \
                 WHERE request_id = ?1 AND state = 'reserved' AND expires_at <= ?3",
                &[rid.clone(), text(&claim), num(now)],
            )?);
            batch.push(stmt(
                db,
                &format!(
                    "UPDATE allowances SET reserved = MAX(0, reserved - {amount}), \
                       used = used + {amount}, updated_at = ?3 \
                     WHERE member_id = (SELECT member_id FROM reservations \
                                        WHERE request_id = ?1 AND source = 'allowance') \
                       AND period_start = (SELECT period_start FROM reservations \
                                           WHERE request_id = ?1) \
                       AND {guarded}"
                ),
                &[rid.clone(), text(&claim), num(now)],
            )?);
            batch.push(stmt(
                db,
                &format!(
                    "UPDATE wallets SET reserved_micros = MAX(0, reserved_micros - {amount}), \
                       balance_micros = balance_micros - {amount}, updated_at = ?3 \
                     WHERE member_id = (SELECT member_id FROM reservations \
                                        WHERE request_id = ?1 AND source = 'wallet') \
                       AND {guarded}"
                ),
                &[rid.clone(), text(&claim), num(now)],
            )?);
            batch.push(stmt(
                db,
                &format!(
                    "INSERT INTO usage_events (request_id, member_id, key_id, model, deployment, \
                       input_tokens, output_tokens, cached_tokens, output_chars, cost_micros, \
                       charged, charged_unit, source, status, estimated, latency_ms, ttft_ms, \
                       created_at) \
                     SELECT request_id, member_id, key_id, COALESCE(model, ''), NULL, est_input, \
                       est_output, 0, 0, \
                       CASE WHEN unit = 'money' THEN amount ELSE est_cost_micros END, \
                       amount, unit, source, 'expired', 1, 0, NULL, ?3 \
                     FROM reservations WHERE request_id = ?1 AND {guarded} \
                     ON CONFLICT (request_id) DO NOTHING"
                ),
                &[rid.clone(), text(&claim), num(now)],
            )?);
            batch.push(stmt(
                db,
                &format!(
                    "INSERT INTO rollups_hourly (member_id, model, hour, requests, errors, \
                       input_tokens, output_tokens, cached_tokens, cost_micros, latency_ms_sum, \
                       ttft_ms_sum, ttft_count, rev) \
                     SELECT member_id, COALESCE(model, ''), ?4, 1, 0, est_input, est_output, 0, \
                       CASE WHEN unit = 'money' THEN amount ELSE est_cost_micros END, 0, 0, 0, \
                       (SELECT COALESCE(MAX(rev), 0) + 1 FROM rollups_hourly) \
                     FROM reservations WHERE request_id = ?1 AND {guarded} \
                     ON CONFLICT (member_id, model, hour) DO UPDATE SET \
                       requests = requests + 1, \
                       input_tokens = input_tokens + excluded.input_tokens, \
                       output_tokens = output_tokens + excluded.output_tokens, \
                       cost_micros = cost_micros + excluded.cost_micros, rev = excluded.rev"
                ),
                &[rid, text(&claim), num(now), num(now - now % 3600)],
            )?);
        }
        let results = db.batch(batch).await?;
        for g in guards {
            if results.get(g).map(super::changes).unwrap_or(0) == 1 {
                charged += 1;
            }
        }
    }
    Ok(charged)
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Pruned {
    pub usage_events: u64,
    pub reservations: u64,
    pub idempotency: u64,
}

/// Deletes what is past retention: usage events and settled reservations older than
/// `retention_days`, idempotency records older than a day, rate windows older than an
/// hour and stale replay-protection records. Bounded per run (`limit` rows per table).
pub async fn prune(
    db: &D1Database,
    now: u64,
    retention_days: u64,
    limit: u64,
) -> worker::Result<Pruned> {
    let horizon = now.saturating_sub(retention_days.saturating_mul(86_400));
    let results = db
        .batch(vec![
            stmt(
                db,
                "DELETE FROM usage_events WHERE seq IN (SELECT seq FROM usage_events \
                 WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
                &[num(horizon), num(limit)],
            )?,
            stmt(
                db,
                "DELETE FROM reservations WHERE request_id IN (SELECT request_id FROM \
                 reservations WHERE state IN ('settled', 'expired') AND settled_at < ?1 \
                 LIMIT ?2)",
                &[num(horizon), num(limit)],
            )?,
            stmt(
                db,
                "DELETE FROM internal_idempotency WHERE idem_key IN (SELECT idem_key FROM \
                 internal_idempotency WHERE created_at < ?1 LIMIT ?2)",
                &[num(now.saturating_sub(86_400)), num(limit)],
            )?,
            stmt(
                db,
                "DELETE FROM rate_windows WHERE window_start < ?1",
                &[num(now.saturating_sub(3600))],
            )?,
            stmt(
                db,
                "DELETE FROM seen_signatures WHERE expires_at < ?1",
                &[num(now)],
            )?,
        ])
        .await?;
    let n = |i: usize| u64::try_from(results.get(i).map(super::changes).unwrap_or(0)).unwrap_or(0);
    Ok(Pruned {
        usage_events: n(0),
        reservations: n(1),
        idempotency: n(2),
    })
}

/// Open reservations of a member (for the balance view).
pub async fn open_count(db: &D1Database, member_id: &str) -> worker::Result<u64> {
    let row: Option<super::CountRow> = stmt(
        db,
        "SELECT COUNT(*) AS n FROM reservations WHERE member_id = ?1 AND state = 'reserved'",
        &[text(member_id)],
    )?
    .first(None)
    .await?;
    Ok(row.map_or(0, |r| non_negative(r.n)))
}
