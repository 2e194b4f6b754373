//! `D1Ledger`: wallets, plan allowances, reservations, usage events and rollups in D1.
//!
//! Invariants (docs/billing.md):
//! - Admission is one conditional UPDATE (`... WHERE amount - used - reserved >= ?`)
//!   batched with the reservation insert: no read-then-write race across isolates.
//! - Settlement is one D1 batch guarded by the reservation's state transition
//!   `reserved|expired -> settled`: replaying it changes nothing.
//! - A batch's later statements act only if the guarding statement wrote this call's
//!   random `claim` token, so "did the guard fire" never needs a round trip.
//! - Money and quota are integers; JS numbers carry them exactly up to 2^53.

mod admit;
pub mod clock;
mod grants;
mod settle;

pub use admit::{admit, Admission, AdmitError, AdmitRequest, Source};
pub use grants::{apply_credit, apply_grant, balance, AllowanceGrant, CreditOutcome, WalletCredit};
pub use settle::{settle, sweep_expired, Outcome, OutcomeStatus, SettleResult};

use serde::Deserialize;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result, Env, Request};

/// The D1 binding of the ledger.
pub const LEDGER_BINDING: &str = "LEDGER";

/// How long a reservation may stay open before the sweep releases it.
pub const RESERVATION_TTL_SECS: u64 = 15 * 60;

/// Largest integer a JS number holds exactly.
const MAX_SAFE: u64 = (1 << 53) - 1;

/// The periodic sweep, for the scheduled (cron) handler: releases up to `limit` expired
/// reservations of every member and drops old rate windows and replay records. Returns
/// how many reservations were released.
pub async fn scheduled_sweep(env: &Env, limit: u64) -> worker::Result<u64> {
    sweep_expired(&db(env)?, None, clock::now(), limit).await
}

/// The ledger database.
pub fn db(env: &Env) -> worker::Result<D1Database> {
    env.d1(LEDGER_BINDING)
}

/// Unix seconds now (see [`clock`]: a test override under `TEST_CLOCK = "1"`).
pub fn now_secs(_env: &Env, _req: Option<&Request>) -> u64 {
    clock::now()
}

/// A random token for `claim` columns (uniqueness, not secrecy).
pub fn claim_token() -> String {
    let a = worker::js_sys::Math::random();
    let b = worker::js_sys::Math::random();
    // Scaled to 2^52 and 2^40: integral, non-negative, exact in u64.
    format!(
        "{:013x}{:010x}{:x}",
        (a * 4_503_599_627_370_496.0) as u64,
        (b * 1_099_511_627_776.0) as u64,
        worker::Date::now().as_millis()
    )
}

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
