//! The ledger audit of one member (`GET /internal/v1/members/{id}/audit`): the numbers
//! the invariant "the ledger equals the sum of its usage events" is checked with. Every
//! figure is computed by D1 from the rows themselves, nothing from caches.

use serde_json::{json, Value};
use worker::D1Database;

use super::{stmt, text};

/// Allowance rows with their usage-event sums and open reservations; the wallet with its
/// credits, usage-event sum and open reservations.
pub async fn audit(db: &D1Database, member_id: &str) -> worker::Result<Value> {
    let m = || text(member_id);
    let results = db
        .batch(vec![
            stmt(
                db,
                "SELECT a.period_start, a.period_end, a.unit, a.amount, a.used, a.reserved, \
                   (SELECT COALESCE(SUM(u.charged), 0) FROM usage_events u \
                      JOIN reservations r ON r.request_id = u.request_id \
                      WHERE u.member_id = a.member_id AND u.source = 'allowance' \
                        AND r.period_start = a.period_start) AS events_charged, \
                   (SELECT COALESCE(SUM(r.amount), 0) FROM reservations r \
                      WHERE r.member_id = a.member_id AND r.source = 'allowance' \
                        AND r.state = 'reserved' AND r.period_start = a.period_start) \
                     AS open_reserved \
                 FROM allowances a WHERE a.member_id = ?1 ORDER BY a.period_start",
                &[m()],
            )?,
            stmt(
                db,
                "SELECT \
                   (SELECT balance_micros FROM wallets WHERE member_id = ?1) AS balance_micros, \
                   (SELECT reserved_micros FROM wallets WHERE member_id = ?1) AS reserved_micros, \
                   (SELECT COALESCE(SUM(amount_micros), 0) FROM applied_credits \
                      WHERE member_id = ?1) AS credits_micros, \
                   (SELECT COALESCE(SUM(charged), 0) FROM usage_events \
                      WHERE member_id = ?1 AND source = 'wallet') AS events_charged, \
                   (SELECT COALESCE(SUM(amount), 0) FROM reservations \
                      WHERE member_id = ?1 AND source = 'wallet' AND state = 'reserved') \
                     AS open_reserved, \
                   (SELECT COUNT(*) FROM reservations \
                      WHERE member_id = ?1 AND state = 'reserved') AS open_reservations, \
                   (SELECT COUNT(*) FROM usage_events WHERE member_id = ?1) AS events, \
                   (SELECT COUNT(*) FROM reservations r WHERE r.member_id = ?1 \
                      AND r.state IN ('settled', 'expired') AND NOT EXISTS \
                      (SELECT 1 FROM usage_events u WHERE u.request_id = r.request_id)) \
                     AS closed_without_event",
                &[m()],
            )?,
        ])
        .await?;
    let allowances: Vec<Value> = match results.first() {
        Some(r) => r.results()?,
        None => Vec::new(),
    };
    let wallet: Value = match results.get(1) {
        Some(r) => r
            .results::<Value>()?
            .into_iter()
            .next()
            .unwrap_or(Value::Null),
        None => Value::Null,
    };
    Ok(json!({ "member_id": member_id, "allowances": allowances, "wallet": wallet }))
}
