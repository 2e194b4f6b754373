//! Admission: rate limits and an atomic reservation against the plan allowance or the
//! wallet, in **one D1 batch** (one round trip, one transaction).
//!
//! The batch, in order:
//! 1. one rate-window upsert per scope, marked with this batch's claim when it counted;
//! 2. the next period of a renewing allowance, when the current one ended and `now`
//!    falls in the precomputed next period (`next_start`/`next_end`);
//! 3. the allowance: a conditional `UPDATE ... WHERE amount - used - reserved >= amt`
//!    (only when every rate scope counted), and the reservation insert claimed by it;
//! 4. else the wallet (when the plan allows overage or the member has no current or
//!    renewable allowance): the same with `balance - reserved >= amt`; a request that
//!    costs nothing (a free model) is admitted without a wallet row;
//! 5. the rate counts given back when no reservation was made;
//! 6. what the caller needs to explain a refusal.
//!
//! `amt` is the request's realistic estimate when the member has no other open
//! reservation, else its upper bound (see the module docs of [`crate::ledger`]). Only
//! an allowance whose renewal skipped whole periods takes a second round trip (the
//! period bounds are computed in Rust, then the batch runs again).

use serde::{Deserialize, Serialize};
use tollbooth_core::billing::{AllowanceUnit, PlanPeriod, Price, ReservationEstimate};
use tollbooth_core::catalogue::PlanLimits;
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use worker::wasm_bindgen::JsValue;
use worker::D1Database;

use super::ratelimit::{self, RateLimitRefusal, RateTicket, ScopeLimit};
use super::{claim_token, non_negative, num, stmt, stmt_with, text};

/// What a request asks to be admitted for.
#[derive(Debug, Clone)]
pub struct AdmitRequest<'a> {
    /// Unique per request; keys the reservation, the settlement and the usage event.
    pub request_id: &'a str,
    pub key: &'a KeyRecord,
    /// The key's plan from the catalogue (rate limits, overage); `None` if unknown.
    pub plan: Option<&'a PlanLimits>,
    /// The virtual model name the request is billed under.
    pub model: &'a str,
    pub price: Price,
    /// The realistic estimate (reserved by a member's only in-flight request).
    pub estimate: ReservationEstimate,
    /// The upper bound (reserved while other requests of the member are in flight).
    pub worst: ReservationEstimate,
    pub now: u64,
    /// How long the reservation lives without a settlement or a heartbeat.
    pub ttl_secs: u64,
}

/// Where a reservation was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Allowance,
    Wallet,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Allowance => "allowance",
            Source::Wallet => "wallet",
        }
    }
}

/// An admitted request: everything settlement needs (also stored as JSON in a pending
/// settlement; it holds no secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Admission {
    pub request_id: String,
    pub member_id: String,
    pub key_id: String,
    pub model: String,
    pub price: Price,
    /// The realistic estimate (the basis of estimated bills).
    pub estimate: ReservationEstimate,
    pub source: Source,
    /// The unit charged: the allowance's unit, or money for the wallet.
    pub unit: AllowanceUnit,
    /// The allowance row (its period start) when `source` is the allowance.
    pub period_start: Option<u64>,
    /// Reserved, in `unit`.
    pub amount: u64,
    pub rate: RateTicket,
    pub admitted_at: u64,
    /// What was left of the source (in `unit`) once this reservation was taken: the
    /// isolate's hint for speculative admission. Not stored with a pending settlement.
    #[serde(skip)]
    pub headroom: Option<u64>,
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum AdmitError {
    /// 402 `insufficient_quota`, naming what ran out.
    Quota(GatewayError),
    /// 429 with `Retry-After` / `x-ratelimit-*`.
    RateLimited(RateLimitRefusal),
    /// D1 failed: 500 (the request is not run unmetered).
    Internal(String),
}

impl From<worker::Error> for AdmitError {
    fn from(e: worker::Error) -> Self {
        AdmitError::Internal(e.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AllowanceRow {
    pub period_start: i64,
    pub period_end: i64,
    pub plan_id: String,
    pub unit: String,
    pub amount: i64,
    pub used: i64,
    pub reserved: i64,
    pub period: String,
    pub grant_id: String,
}

pub(crate) fn parse_unit(s: &str) -> Option<AllowanceUnit> {
    AllowanceUnit::ALL.into_iter().find(|u| u.as_str() == s)
}

pub(crate) fn parse_period(s: &str) -> Option<PlanPeriod> {
    match s {
        "day" => Some(PlanPeriod::Day),
        "week" => Some(PlanPeriod::Week),
        "month" => Some(PlanPeriod::Month),
        "year" => Some(PlanPeriod::Year),
        "none" => Some(PlanPeriod::None),
        _ => None,
    }
}

/// The bounds of the period after the one starting at `start` and ending at `end`
/// (`None` for allowances that do not renew).
pub(crate) fn next_bounds(period: &str, start: u64, end: u64) -> Option<(u64, u64)> {
    parse_period(period)
        .filter(|p| *p != PlanPeriod::None)
        .map(|p| p.bounds(start, end))
}

/// The member's allowance for the period containing `now` (read only: opening a new
/// period is the admission batch's job, or [`open_period`]'s).
pub(crate) async fn current_allowance(
    db: &D1Database,
    member_id: &str,
    now: u64,
) -> worker::Result<Option<AllowanceRow>> {
    stmt(
        db,
        "SELECT period_start, period_end, plan_id, unit, amount, used, reserved, period, grant_id \
         FROM allowances WHERE member_id = ?1 AND period_start <= ?2 AND period_end > ?2 \
         ORDER BY period_start DESC LIMIT 1",
        &[text(member_id), num(now)],
    )?
    .first(None)
    .await
}

/// Opens the period of a renewing allowance that contains `now`, whatever number of
/// periods passed since the last one (the slow path of admission). Returns whether the
/// member has a renewing allowance at all.
pub(crate) async fn open_period(
    db: &D1Database,
    member_id: &str,
    now: u64,
) -> worker::Result<bool> {
    let latest: Option<AllowanceRow> = stmt(
        db,
        "SELECT period_start, period_end, plan_id, unit, amount, used, reserved, period, grant_id \
         FROM allowances WHERE member_id = ?1 AND period_start <= ?2 \
         ORDER BY period_start DESC LIMIT 1",
        &[text(member_id), num(now)],
    )?
    .first(None)
    .await?;
    let Some(last) = latest else { return Ok(false) };
    if non_negative(last.period_end) > now {
        return Ok(true);
    }
    let Some(period) = parse_period(&last.period).filter(|p| *p != PlanPeriod::None) else {
        return Ok(false);
    };
    let (start, end) = period.bounds(non_negative(last.period_start), now);
    let (next_start, next_end) = period.bounds(start, end);
    // INSERT OR IGNORE: concurrent isolates opening the same period create one row.
    stmt(
        db,
        "INSERT OR IGNORE INTO allowances \
         (member_id, period_start, period_end, plan_id, unit, amount, used, reserved, period, \
          grant_id, updated_at, next_start, next_end) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, ?9, ?10, ?11)",
        &[
            text(member_id),
            num(start),
            num(end),
            text(&last.plan_id),
            text(&last.unit),
            num(non_negative(last.amount)),
            text(&last.period),
            text(&format!("{}@{start}", last.grant_id)),
            num(now),
            num(next_start),
            num(next_end),
        ],
    )?
    .run()
    .await?;
    Ok(true)
}

/// Fills `next_start`/`next_end` of an allowance row that lacks them (a period the
/// admission batch opened, or a row written before they existed).
pub async fn fill_next_bounds(
    db: &D1Database,
    member_id: &str,
    period_start: u64,
) -> worker::Result<()> {
    #[derive(Deserialize)]
    struct Row {
        period_end: i64,
        period: String,
    }
    let row: Option<Row> = stmt(
        db,
        "SELECT period_end, period FROM allowances WHERE member_id = ?1 AND period_start = ?2",
        &[text(member_id), num(period_start)],
    )?
    .first(None)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let Some((ns, ne)) = next_bounds(&row.period, period_start, non_negative(row.period_end))
    else {
        return Ok(());
    };
    stmt(
        db,
        "UPDATE allowances SET next_start = ?3, next_end = ?4 \
         WHERE member_id = ?1 AND period_start = ?2 AND next_start IS NULL",
        &[text(member_id), num(period_start), num(ns), num(ne)],
    )?
    .run()
    .await?;
    Ok(())
}

/// The result of one admission batch.
#[derive(Deserialize)]
struct Diagnosis {
    source: Option<String>,
    amount: Option<i64>,
    unit: Option<String>,
    period_start: Option<i64>,
    allowance_unit: Option<String>,
    needs_next: Option<i64>,
    renewal_gap: i64,
    allowance_left: Option<i64>,
    wallet_left: Option<i64>,
}

#[derive(Deserialize)]
struct WindowRow {
    scope: String,
    requests: i64,
    tokens: i64,
    mine: i64,
}

/// The admission batch's result.
enum BatchOutcome {
    Admitted(Admission, Option<u64>),
    RateLimited(RateLimitRefusal),
    /// A renewing allowance skipped whole periods: open the current one and retry.
    RenewalGap,
    Refused(Option<String>),
}

/// Rate limits and the reservation. On success the caller must eventually settle the
/// admission (an isolate that dies before is covered by the sweep, which charges it).
/// The second value is an allowance period whose next bounds should be filled off the
/// request path (see [`fill_next_bounds`]).
pub async fn admit(
    db: &D1Database,
    req: &AdmitRequest<'_>,
) -> Result<(Admission, Option<u64>), AdmitError> {
    let scopes = ratelimit::scopes_for(req.key, req.plan);
    if scopes.iter().any(|s| s.rpm == Some(0)) {
        return Err(AdmitError::RateLimited(RateLimitRefusal {
            dimension: "requests",
            limit: 0,
            remaining: 0,
            reset_secs: ratelimit::reset_secs(req.now),
        }));
    }
    for round in 0..2 {
        match batch(db, req, &scopes).await? {
            BatchOutcome::Admitted(adm, fill) => return Ok((adm, fill)),
            BatchOutcome::RateLimited(r) => return Err(AdmitError::RateLimited(r)),
            BatchOutcome::RenewalGap if round == 0 => {
                if !open_period(db, &req.key.member_id, req.now).await? {
                    return Err(AdmitError::Quota(exhausted(req, None)));
                }
            }
            BatchOutcome::RenewalGap => return Err(AdmitError::Quota(exhausted(req, None))),
            BatchOutcome::Refused(unit) => return Err(AdmitError::Quota(exhausted(req, unit))),
        }
    }
    Err(AdmitError::Quota(exhausted(req, None)))
}

fn exhausted(req: &AdmitRequest<'_>, allowance_unit: Option<String>) -> GatewayError {
    match allowance_unit {
        Some(u) if req.plan.is_some_and(|p| p.overage) => {
            GatewayError::insufficient_quota(format!("plan allowance ({u}) and wallet balance"))
        }
        Some(u) => GatewayError::insufficient_quota(format!("plan allowance ({u})")),
        None => GatewayError::insufficient_quota("wallet balance"),
    }
}

const BUSY: &str =
    "EXISTS (SELECT 1 FROM reservations WHERE member_id = ?1 AND state = 'reserved')";
const CURRENT: &str = "period_start = (SELECT MAX(period_start) FROM allowances \
                       WHERE member_id = ?1 AND period_start <= ?2) AND period_end > ?2";
const RATE_OK: &str =
    "(SELECT COUNT(*) FROM rate_windows WHERE window_start = ?18 AND claim = ?17) = ?20";

async fn batch(
    db: &D1Database,
    req: &AdmitRequest<'_>,
    scopes: &[ScopeLimit],
) -> Result<BatchOutcome, AdmitError> {
    let est = |u| req.estimate.in_unit(u, &req.price);
    let worst = |u| req.worst.in_unit(u, &req.price).max(est(u));
    let member = req.key.member_id.as_str();
    let overage = req.plan.is_some_and(|p| p.overage);
    let window = ratelimit::window_start(req.now);
    let rate_tokens = req.estimate.usage().total_tokens();
    let claim_rate = claim_token();
    let scope = |i: usize| scopes.get(i);
    let limit = |v: Option<u64>| num(v.unwrap_or(ratelimit::UNLIMITED));
    let params: Vec<JsValue> = vec![
        text(member),                                    // ?1
        num(req.now),                                    // ?2
        text(req.request_id),                            // ?3
        text(&req.key.public_id),                        // ?4
        num(req.now.saturating_add(req.ttl_secs)),       // ?5
        num(est(AllowanceUnit::Tokens)),                 // ?6
        num(est(AllowanceUnit::Characters)),             // ?7
        num(est(AllowanceUnit::Requests)),               // ?8
        num(est(AllowanceUnit::Money)),                  // ?9
        num(worst(AllowanceUnit::Tokens)),               // ?10
        num(worst(AllowanceUnit::Characters)),           // ?11
        num(worst(AllowanceUnit::Requests)),             // ?12
        num(worst(AllowanceUnit::Money)),                // ?13
        text(&claim_token()),                            // ?14 allowance claim
        text(&claim_token()),                            // ?15 wallet claim
        num(u64::from(overage)),                         // ?16
        text(&claim_rate),                               // ?17
        num(window),                                     // ?18
        num(rate_tokens),                                // ?19
        num(u64::try_from(scopes.len()).unwrap_or(0)),   // ?20
        text(req.model),                                 // ?21
        num(req.estimate.input_tokens),                  // ?22
        num(req.estimate.output_tokens),                 // ?23
        num(req.estimate.cost_micros(&req.price)),       // ?24
        text(scope(0).map_or("", |s| s.scope.as_str())), // ?25
        limit(scope(0).and_then(|s| s.rpm)),             // ?26
        limit(scope(0).and_then(|s| s.tpm)),             // ?27
        text(scope(1).map_or("", |s| s.scope.as_str())), // ?28
        limit(scope(1).and_then(|s| s.rpm)),             // ?29
        limit(scope(1).and_then(|s| s.tpm)),             // ?30
    ];
    let amt_unit = format!(
        "(CASE WHEN {BUSY} THEN (CASE unit WHEN 'tokens' THEN ?10 WHEN 'characters' THEN ?11 \
           WHEN 'requests' THEN ?12 ELSE ?13 END) \
         ELSE (CASE unit WHEN 'tokens' THEN ?6 WHEN 'characters' THEN ?7 \
           WHEN 'requests' THEN ?8 ELSE ?9 END) END)"
    );
    let money = format!("(CASE WHEN {BUSY} THEN ?13 ELSE ?9 END)");
    let wallet_eligible = format!(
        "((?16 = 1 AND EXISTS (SELECT 1 FROM allowances WHERE member_id = ?1 AND {CURRENT})) \
          OR NOT EXISTS (SELECT 1 FROM allowances WHERE member_id = ?1 AND period_start <= ?2 \
                         AND (period_end > ?2 OR period != 'none')))"
    );
    let columns = "request_id, member_id, key_id, source, period_start, unit, amount, created_at, \
                   expires_at, state, model, est_input, est_output, est_cost_micros";
    let mut sql: Vec<String> = Vec::new();
    for (i, _) in scopes.iter().enumerate().take(2) {
        let (s, r, t) = if i == 0 { (25, 26, 27) } else { (28, 29, 30) };
        sql.push(format!(
            "INSERT INTO rate_windows (scope, window_start, requests, tokens, claim) \
             VALUES (?{s}, ?18, 1, ?19, ?17) \
             ON CONFLICT (scope, window_start) DO UPDATE SET requests = requests + 1, \
               tokens = tokens + excluded.tokens, claim = excluded.claim \
             WHERE requests + 1 <= ?{r} AND (requests = 0 OR tokens + excluded.tokens <= ?{t})"
        ));
    }
    sql.push(
        "INSERT OR IGNORE INTO allowances (member_id, period_start, period_end, plan_id, unit, \
           amount, used, reserved, period, grant_id, updated_at) \
         SELECT member_id, next_start, next_end, plan_id, unit, amount, 0, 0, period, \
           grant_id || '@' || next_start, ?2 \
         FROM allowances WHERE member_id = ?1 \
           AND period_start = (SELECT MAX(period_start) FROM allowances \
                               WHERE member_id = ?1 AND period_start <= ?2) \
           AND period_end <= ?2 AND period != 'none' AND next_start IS NOT NULL \
           AND next_start <= ?2 AND next_end > ?2"
            .into(),
    );
    sql.push(format!(
        "UPDATE allowances SET reserved = reserved + {amt_unit}, claim = ?14, updated_at = ?2 \
         WHERE member_id = ?1 AND {CURRENT} AND amount - used - reserved >= {amt_unit} \
           AND {RATE_OK}"
    ));
    sql.push(format!(
        "INSERT INTO reservations ({columns}) \
         SELECT ?3, ?1, ?4, 'allowance', period_start, unit, {amt_unit}, ?2, ?5, 'reserved', \
           ?21, ?22, ?23, ?24 \
         FROM allowances WHERE member_id = ?1 AND claim = ?14 AND {CURRENT}"
    ));
    sql.push(format!(
        "UPDATE wallets SET reserved_micros = reserved_micros + {money}, claim = ?15, \
           updated_at = ?2 \
         WHERE member_id = ?1 AND balance_micros - reserved_micros >= {money} \
           AND NOT EXISTS (SELECT 1 FROM reservations WHERE request_id = ?3) \
           AND {RATE_OK} AND {wallet_eligible}"
    ));
    sql.push(format!(
        "INSERT INTO reservations ({columns}) \
         SELECT ?3, ?1, ?4, 'wallet', NULL, 'money', {money}, ?2, ?5, 'reserved', \
           ?21, ?22, ?23, ?24 \
         FROM wallets WHERE member_id = ?1 AND claim = ?15"
    ));
    // A request that costs nothing (a free model) needs no wallet row.
    sql.push(format!(
        "INSERT INTO reservations ({columns}) \
         SELECT ?3, ?1, ?4, 'wallet', NULL, 'money', 0, ?2, ?5, 'reserved', ?21, ?22, ?23, ?24 \
         WHERE ?9 = 0 AND ?13 = 0 \
           AND NOT EXISTS (SELECT 1 FROM reservations WHERE request_id = ?3) \
           AND {RATE_OK} AND {wallet_eligible}"
    ));
    if !scopes.is_empty() {
        sql.push(
            "UPDATE rate_windows SET requests = MAX(0, requests - 1), \
               tokens = MAX(0, tokens - ?19) \
             WHERE window_start = ?18 AND claim = ?17 \
               AND NOT EXISTS (SELECT 1 FROM reservations WHERE request_id = ?3)"
                .into(),
        );
    }
    let diag_at = sql.len();
    sql.push(format!(
        "SELECT \
           (SELECT source FROM reservations WHERE request_id = ?3) AS source, \
           (SELECT amount FROM reservations WHERE request_id = ?3) AS amount, \
           (SELECT unit FROM reservations WHERE request_id = ?3) AS unit, \
           (SELECT period_start FROM reservations WHERE request_id = ?3) AS period_start, \
           (SELECT unit FROM allowances WHERE member_id = ?1 AND {CURRENT}) AS allowance_unit, \
           (SELECT period_start FROM allowances WHERE member_id = ?1 AND {CURRENT} \
              AND period != 'none' AND next_start IS NULL) AS needs_next, \
           (SELECT COUNT(*) FROM allowances WHERE member_id = ?1 \
              AND period_start = (SELECT MAX(period_start) FROM allowances \
                                  WHERE member_id = ?1 AND period_start <= ?2) \
              AND period_end <= ?2 AND period != 'none') AS renewal_gap, \
           (SELECT amount - used - reserved FROM allowances WHERE member_id = ?1 \
              AND {CURRENT}) AS allowance_left, \
           (SELECT balance_micros - reserved_micros FROM wallets WHERE member_id = ?1) \
              AS wallet_left"
    ));
    let windows_at = sql.len();
    if !scopes.is_empty() {
        sql.push(
            "SELECT scope, requests, tokens, (claim IS NOT NULL AND claim = ?17) AS mine \
             FROM rate_windows WHERE window_start = ?18 AND scope IN (?25, ?28)"
                .into(),
        );
    }
    let statements = sql
        .iter()
        .map(|s| stmt_with(db, s, &params))
        .collect::<worker::Result<Vec<_>>>()?;
    let results = db.batch(statements).await?;
    let diag: Option<Diagnosis> = match results.get(diag_at) {
        Some(r) => r.results::<Diagnosis>()?.into_iter().next(),
        None => None,
    };
    let Some(diag) = diag else {
        return Err(AdmitError::Internal(
            "admission batch returned no result".into(),
        ));
    };
    if let (Some(source), Some(amount), Some(unit)) = (&diag.source, diag.amount, &diag.unit) {
        let source = if source == "wallet" {
            Source::Wallet
        } else {
            Source::Allowance
        };
        let unit = parse_unit(unit).unwrap_or(AllowanceUnit::Money);
        let headroom = match source {
            Source::Allowance => diag.allowance_left.map(non_negative),
            Source::Wallet => diag.wallet_left.map(non_negative),
        };
        return Ok(BatchOutcome::Admitted(
            Admission {
                request_id: req.request_id.to_string(),
                member_id: member.to_string(),
                key_id: req.key.public_id.clone(),
                model: req.model.to_string(),
                price: req.price,
                estimate: req.estimate,
                source,
                unit,
                period_start: diag.period_start.map(non_negative),
                amount: non_negative(amount),
                rate: RateTicket {
                    window_start: window,
                    scopes: scopes.iter().map(|s| s.scope.clone()).collect(),
                    tokens: rate_tokens,
                },
                admitted_at: req.now,
                headroom,
            },
            diag.needs_next.map(non_negative),
        ));
    }
    if !scopes.is_empty() {
        let rows: Vec<WindowRow> = match results.get(windows_at) {
            Some(r) => r.results()?,
            None => Vec::new(),
        };
        let refused = scopes
            .iter()
            .find(|s| !rows.iter().any(|r| r.scope == s.scope && r.mine == 1));
        if let Some(s) = refused {
            let (requests, tokens) = rows
                .iter()
                .find(|r| r.scope == s.scope)
                .map_or((0, 0), |r| {
                    (non_negative(r.requests), non_negative(r.tokens))
                });
            return Ok(BatchOutcome::RateLimited(RateLimitRefusal::for_scope(
                s,
                requests,
                tokens,
                ratelimit::reset_secs(req.now),
            )));
        }
    }
    if diag.renewal_gap > 0 && diag.allowance_unit.is_none() {
        return Ok(BatchOutcome::RenewalGap);
    }
    Ok(BatchOutcome::Refused(diag.allowance_unit))
}
