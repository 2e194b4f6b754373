//! `D1Ledger`: wallets, plan allowances, rate windows, reservations, usage events and
//! rollups in D1. The worker is its only writer.
//!
//! Invariants (docs/billing.md):
//! - Admission is **one D1 batch** ([`admit`]): the rate-limit upserts, opening a new
//!   period, the conditional reservation (`... WHERE amount - used - reserved >= ?`) and
//!   its insert, the undo of the rate counts when refused. No read-then-write race across
//!   isolates, no wallet row written per request.
//! - A member's first in-flight request reserves its realistic estimate; every request
//!   admitted while another of the member's reservations is open reserves its upper
//!   bound. Concurrent requests can therefore overdraw by at most one request's estimate
//!   error in total.
//! - Settlement ([`settle`]) is one batch guarded by the reservation's state transition
//!   `reserved|expired -> settled`: replaying it changes nothing.
//! - An expired reservation is **charged** its reserved amount by the sweep ([`sweep`])
//!   with a usage event; a late real settlement corrects it. A settlement that keeps
//!   failing is stored ([`pending`]) and finished by the cron.
//! - A batch's later statements act only if the guarding statement wrote this call's
//!   random `claim` token, so "did the guard fire" never needs a round trip.
//! - Money and quota are integers; JS numbers carry them exactly up to 2^53.

mod admit;
pub mod audit;
pub mod clock;
mod grants;
pub mod pending;
pub mod ratelimit;
pub mod records;
mod settle;
pub mod sweep;

pub use admit::{admit, fill_next_bounds, Admission, AdmitError, AdmitRequest, Source};
pub use grants::{apply_credit, apply_grant, balance, AllowanceGrant, CreditOutcome, WalletCredit};
pub use settle::{heartbeat, settle, Outcome, SettleResult};

use serde::Deserialize;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result, Env};

/// The D1 binding of the ledger.
pub const LEDGER_BINDING: &str = "LEDGER";

/// Largest integer a JS number holds exactly.
pub const MAX_SAFE: u64 = (1 << 53) - 1;

/// The ledger database.
pub fn db(env: &Env) -> worker::Result<D1Database> {
    env.d1(LEDGER_BINDING)
}

pub use crate::util::claim_token;

/// An integer bound parameter (clamped to JS's exact range).
pub fn num(v: u64) -> JsValue {
    JsValue::from_f64(v.min(MAX_SAFE) as f64)
}

/// A signed integer bound parameter.
pub fn inum(v: i64) -> JsValue {
    let max = MAX_SAFE as i64;
    JsValue::from_f64(v.clamp(-max, max) as f64)
}

/// A text bound parameter.
pub fn text(v: &str) -> JsValue {
    JsValue::from_str(v)
}

/// A nullable text parameter: D1 rejects `undefined`, so `None` binds SQL NULL.
pub fn opt_text(v: Option<&str>) -> JsValue {
    v.map_or(JsValue::NULL, JsValue::from_str)
}

/// A nullable integer parameter.
pub fn opt_num(v: Option<u64>) -> JsValue {
    v.map_or(JsValue::NULL, num)
}

/// `db.prepare(sql).bind(params)`.
pub fn stmt(db: &D1Database, sql: &str, params: &[JsValue]) -> worker::Result<D1PreparedStatement> {
    db.prepare(sql).bind(params)
}

/// The highest `?N` placeholder in `sql` (SQLite expects exactly that many bindings).
pub fn max_param(sql: &str) -> usize {
    let mut max = 0;
    let mut rest = sql;
    while let Some(i) = rest.find('?') {
        let after = rest.get(i + 1..).unwrap_or("");
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<usize>() {
            max = max.max(n);
        }
        rest = after;
    }
    max
}

/// A statement bound to the prefix of `params` that its placeholders use.
pub fn stmt_with(
    db: &D1Database,
    sql: &str,
    params: &[JsValue],
) -> worker::Result<D1PreparedStatement> {
    let n = max_param(sql).min(params.len());
    stmt(db, sql, params.get(..n).unwrap_or(params))
}

/// Rows changed by one statement of a batch.
pub fn changes(result: &D1Result) -> usize {
    result
        .meta()
        .ok()
        .flatten()
        .and_then(|m| m.changes)
        .unwrap_or(0)
}

/// D1 returns integers as JS numbers; read them as i64 and clamp to u64 where needed.
pub fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[derive(Debug, Clone, Deserialize)]
pub struct CountRow {
    pub n: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_max_param() {
        assert_eq!(max_param("SELECT ?1, ?12 WHERE x = ?3"), 12);
        assert_eq!(max_param("SELECT 1"), 0);
    }
}
