//! What the control plane changes: wallet credits (once per `credit_id`), plan allowance
//! grants (once per `grant_id`), and the balance it reads back.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::D1Database;

use super::admit::{current_allowance, next_bounds, open_period, parse_period, parse_unit};
use super::{changes, claim_token, inum, non_negative, num, opt_num, opt_text, stmt, text};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletCredit {
    pub credit_id: String,
    /// Negative: an admin debit.
    pub amount_micros: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CreditOutcome {
    pub applied: bool,
    pub balance_micros: i64,
}

#[derive(Deserialize)]
struct WalletRow {
    balance_micros: i64,
    reserved_micros: i64,
}

/// Adds `credit.amount_micros` to the wallet exactly once per `credit_id`: the claim row in
/// `applied_credits` and the wallet update are one batch, and the update only acts when
/// the claim row is this call's.
pub async fn apply_credit(
    db: &D1Database,
    member_id: &str,
    credit: &WalletCredit,
    now: u64,
) -> worker::Result<CreditOutcome> {
    let claim = claim_token();
    let results = db
        .batch(vec![
            stmt(
                db,
                "INSERT OR IGNORE INTO wallets (member_id, balance_micros, reserved_micros, \
                 updated_at) VALUES (?1, 0, 0, ?2)",
                &[text(member_id), num(now)],
            )?,
            stmt(
                db,
                "INSERT OR IGNORE INTO applied_credits (credit_id, member_id, amount_micros, \
                 reason, claim, applied_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[
                    text(&credit.credit_id),
                    text(member_id),
                    inum(credit.amount_micros),
                    opt_text(credit.reason.as_deref()),
                    text(&claim),
                    num(now),
                ],
            )?,
            stmt(
                db,
                "UPDATE wallets SET balance_micros = balance_micros + ?2, updated_at = ?3 \
                 WHERE member_id = ?1 AND EXISTS (SELECT 1 FROM applied_credits \
                   WHERE credit_id = ?4 AND claim = ?5 AND member_id = ?1)",
                &[
                    text(member_id),
                    inum(credit.amount_micros),
                    num(now),
                    text(&credit.credit_id),
                    text(&claim),
                ],
            )?,
        ])
        .await?;
    let applied = results.get(2).map(changes).unwrap_or(0) == 1;
    let wallet = wallet(db, member_id).await?;
    Ok(CreditOutcome {
        applied,
        balance_micros: wallet.map_or(0, |w| w.balance_micros),
    })
}

async fn wallet(db: &D1Database, member_id: &str) -> worker::Result<Option<WalletRow>> {
    stmt(
        db,
        "SELECT balance_micros, reserved_micros FROM wallets WHERE member_id = ?1",
        &[text(member_id)],
    )?
    .first(None)
    .await
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowanceGrant {
    pub plan_id: String,
    pub unit: String,
    pub amount: u64,
    pub period_start: u64,
    pub period_end: u64,
    pub grant_id: String,
    /// Auto-renew rule when the period ends: `day|week|month|year|none` (default none:
    /// the control plane renews with a new grant).
    #[serde(default)]
    pub period: Option<String>,
}

impl AllowanceGrant {
    /// `Err(field)` names the invalid field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if parse_unit(&self.unit).is_none() {
            return Err((
                "unit",
                "unit must be tokens, characters, requests or money".into(),
            ));
        }
        if self.period_end <= self.period_start {
            return Err(("period_end", "period_end must be after period_start".into()));
        }
        if self.grant_id.is_empty() {
            return Err(("grant_id", "grant_id must not be empty".into()));
        }
        if let Some(p) = &self.period {
            if parse_period(p).is_none() {
                return Err((
                    "period",
                    "period must be day, week, month, year or none".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Sets or renews the allowance for a period, once per `grant_id`. A new grant for the
/// period already open replaces its amount, unit and plan and keeps what was used and
/// reserved (an upgrade mid-period).
pub async fn apply_grant(
    db: &D1Database,
    member_id: &str,
    grant: &AllowanceGrant,
    now: u64,
) -> worker::Result<bool> {
    let claim = claim_token();
    let period = grant.period.as_deref().unwrap_or("none");
    let next = next_bounds(period, grant.period_start, grant.period_end);
    let results = db
        .batch(vec![
            stmt(
                db,
                "INSERT OR IGNORE INTO applied_grants (grant_id, member_id, claim, applied_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                &[
                    text(&grant.grant_id),
                    text(member_id),
                    text(&claim),
                    num(now),
                ],
            )?,
            stmt(
                db,
                "INSERT INTO allowances (member_id, period_start, period_end, plan_id, unit, \
                   amount, used, reserved, period, grant_id, updated_at, next_start, next_end) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, ?9, ?11, ?12 \
                 WHERE EXISTS (SELECT 1 FROM applied_grants WHERE grant_id = ?8 AND claim = ?10) \
                 ON CONFLICT (member_id, period_start) DO UPDATE SET \
                   period_end = excluded.period_end, plan_id = excluded.plan_id, \
                   unit = excluded.unit, amount = excluded.amount, period = excluded.period, \
                   grant_id = excluded.grant_id, updated_at = excluded.updated_at, \
                   next_start = excluded.next_start, next_end = excluded.next_end",
                &[
                    text(member_id),
                    num(grant.period_start),
                    num(grant.period_end),
                    text(&grant.plan_id),
                    text(&grant.unit),
                    num(grant.amount),
                    text(period),
                    text(&grant.grant_id),
                    num(now),
                    text(&claim),
                    opt_num(next.map(|n| n.0)),
                    opt_num(next.map(|n| n.1)),
                ],
            )?,
        ])
        .await?;
    Ok(results.get(1).map(changes).unwrap_or(0) == 1)
}

#[derive(Deserialize)]
struct Totals {
    requests: Option<i64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost_micros: Option<i64>,
}

/// Wallet, allowance and usage for the current period (the allowance's period, else the
/// last 30 days).
pub async fn balance(db: &D1Database, member_id: &str, now: u64) -> worker::Result<Value> {
    let wallet = wallet(db, member_id).await?;
    // Reading the balance opens a renewing allowance's current period, as admission would.
    open_period(db, member_id, now).await?;
    let allowance = current_allowance(db, member_id, now).await?;
    let (from, to) = allowance.as_ref().map_or(
        (now.saturating_sub(30 * 86_400), now.saturating_add(1)),
        |a| (non_negative(a.period_start), non_negative(a.period_end)),
    );
    let totals: Option<Totals> = stmt(
        db,
        "SELECT COUNT(*) AS requests, SUM(input_tokens) AS input_tokens, \
           SUM(output_tokens) AS output_tokens, SUM(cost_micros) AS cost_micros \
         FROM usage_events WHERE member_id = ?1 AND created_at >= ?2 AND created_at < ?3",
        &[text(member_id), num(from), num(to)],
    )?
    .first(None)
    .await?;
    let totals = totals.unwrap_or(Totals {
        requests: None,
        input_tokens: None,
        output_tokens: None,
        cost_micros: None,
    });
    let open: Option<super::CountRow> = stmt(
        db,
        "SELECT COUNT(*) AS n FROM reservations WHERE member_id = ?1 AND state = 'reserved'",
        &[text(member_id)],
    )?
    .first(None)
    .await?;
    Ok(json!({
        "member_id": member_id,
        "wallet": wallet.as_ref().map(|w| json!({
            "balance_micros": w.balance_micros,
            "reserved_micros": w.reserved_micros,
            "available_micros": w.balance_micros - w.reserved_micros,
        })),
        "allowance": allowance.as_ref().map(|a| json!({
            "plan_id": a.plan_id,
            "unit": a.unit,
            "amount": a.amount,
            "used": a.used,
            "reserved": a.reserved,
            "remaining": (a.amount - a.used - a.reserved).max(0),
            "period_start": a.period_start,
            "period_end": a.period_end,
            "period": a.period,
            "grant_id": a.grant_id,
        })),
        "usage": {
            "from": from,
            "to": to,
            "requests": totals.requests.unwrap_or(0),
            "input_tokens": totals.input_tokens.unwrap_or(0),
            "output_tokens": totals.output_tokens.unwrap_or(0),
            "cost_micros": totals.cost_micros.unwrap_or(0),
        },
        "open_reservations": open.map_or(0, |o| o.n),
    }))
}
