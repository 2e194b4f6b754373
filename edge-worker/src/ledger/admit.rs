//! Admission: rate limits, then an atomic reservation against the plan allowance or the
//! wallet.
//!
//! Order: the member's active allowance (opening the next period first if the last one
//! ended and renews), then the wallet when the plan allows overage or the member has no
//! allowance. Each attempt is one batch: a conditional UPDATE that only applies while
//! `amount - used - reserved >= estimate` (or `balance - reserved >= estimate`), and an
//! INSERT of the reservation that only happens if that UPDATE wrote this call's claim.
//! When both refuse, stale reservations of the member are released and it is tried once
//! more.

use serde::Deserialize;
use tollbooth_core::billing::{AllowanceUnit, PlanPeriod, Price, ReservationEstimate};
use tollbooth_core::catalogue::PlanLimits;
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use worker::{D1Database, Response};

use super::{changes, claim_token, num, opt_num, settle, stmt, text, RESERVATION_TTL_SECS};
use crate::ratelimit::{self, RateCheckError, RateLimitRefusal, RateTicket};

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
    pub estimate: ReservationEstimate,
    pub now: u64,
}

/// Where a reservation was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// An admitted request: everything settlement needs. Pass it to [`super::settle`] in
/// `ctx.wait_until` once the request is over, whatever happened.
#[derive(Debug, Clone)]
pub struct Admission {
    pub request_id: String,
    pub member_id: String,
    pub key_id: String,
    pub model: String,
    pub price: Price,
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

impl AdmitError {
    pub fn gateway_error(&self) -> GatewayError {
        match self {
            AdmitError::Quota(e) => e.clone(),
            AdmitError::RateLimited(r) => r.error(),
            AdmitError::Internal(m) => GatewayError::internal(format!("ledger unavailable: {m}")),
        }
    }

    /// The error as a response: OpenAI shape, or Anthropic's for `/v1/messages`.
    pub fn response(&self, anthropic: bool) -> worker::Result<Response> {
        let err = self.gateway_error();
        let body = if anthropic {
            err.anthropic_body()
        } else {
            err.openai_body()
        };
        let mut resp = Response::from_json(&body)?.with_status(err.http_status());
        if let AdmitError::RateLimited(r) = self {
            r.apply_headers(resp.headers_mut())?;
        }
        Ok(resp)
    }
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

/// The member's allowance for the period containing `now`, opening the next period of a
/// renewing allowance whose period has ended.
pub(crate) async fn active_allowance(
    db: &D1Database,
    member_id: &str,
    now: u64,
) -> worker::Result<Option<AllowanceRow>> {
    // One query: the most recently started period. Either it is current, or it has
    // ended and is the one a renewing allowance continues from.
    let latest: Option<AllowanceRow> = stmt(
        db,
        "SELECT period_start, period_end, plan_id, unit, amount, used, reserved, period, grant_id \
         FROM allowances WHERE member_id = ?1 AND period_start <= ?2 \
         ORDER BY period_start DESC LIMIT 1",
        &[text(member_id), num(now)],
    )?
    .first(None)
    .await?;
    let Some(last) = latest else { return Ok(None) };
    if super::non_negative(last.period_end) > now {
        return Ok(Some(last));
    }
    let Some(period) = parse_period(&last.period).filter(|p| *p != PlanPeriod::None) else {
        return Ok(None);
    };
    let anchor = super::non_negative(last.period_start);
    let (start, end) = period.bounds(anchor, now);
    // INSERT OR IGNORE: concurrent isolates opening the same period create one row.
    stmt(
        db,
        "INSERT OR IGNORE INTO allowances \
         (member_id, period_start, period_end, plan_id, unit, amount, used, reserved, period, \
          grant_id, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, ?9)",
        &[
            text(member_id),
            num(start),
            num(end),
            text(&last.plan_id),
            text(&last.unit),
            num(super::non_negative(last.amount)),
            text(&last.period),
            text(&format!("{}@{start}", last.grant_id)),
            num(now),
        ],
    )?
    .run()
    .await?;
    Ok(Some(AllowanceRow {
        period_start: i64::try_from(start).unwrap_or(i64::MAX),
        period_end: i64::try_from(end).unwrap_or(i64::MAX),
        used: 0,
        reserved: 0,
        ..last
    }))
}

/// Rate limits, then the reservation. On success the caller must eventually
/// [`settle`](super::settle) the admission (a crash is covered by the sweep).
pub async fn admit(db: &D1Database, req: &AdmitRequest<'_>) -> Result<Admission, AdmitError> {
    let scopes = ratelimit::scopes_for(req.key, req.plan);
    let est_tokens = req.estimate.usage().total_tokens();
    let rate = match ratelimit::check_and_count(db, &scopes, est_tokens, req.now).await {
        Ok(t) => t,
        Err(RateCheckError::Refused(r)) => return Err(AdmitError::RateLimited(r)),
        Err(RateCheckError::Db(e)) => return Err(e.into()),
    };
    match reserve(db, req, &rate).await {
        Ok(Some(adm)) => return Ok(adm),
        Ok(None) => {}
        Err(e) => {
            uncount(db, &rate).await;
            return Err(e);
        }
    }
    // Refused: stale reservations of this member may be holding the room.
    let released = settle::sweep_expired(db, Some(&req.key.member_id), req.now, 20)
        .await
        .unwrap_or(0);
    let second = if released > 0 {
        reserve(db, req, &rate).await
    } else {
        Ok(None)
    };
    match second {
        Ok(Some(adm)) => Ok(adm),
        Ok(None) => {
            uncount(db, &rate).await;
            Err(AdmitError::Quota(exhausted_error(db, req).await))
        }
        Err(e) => {
            uncount(db, &rate).await;
            Err(e)
        }
    }
}

/// A refused request does not count against the token rate (it still counts as a request
/// attempt only if it was admitted; refusals are undone).
async fn uncount(db: &D1Database, rate: &RateTicket) {
    if rate.scopes.is_empty() {
        return;
    }
    let sql = "UPDATE rate_windows SET requests = MAX(0, requests - 1), \
               tokens = MAX(0, tokens - ?3) WHERE scope = ?1 AND window_start = ?2";
    let batch: Vec<_> = rate
        .scopes
        .iter()
        .filter_map(|s| {
            stmt(
                db,
                sql,
                &[text(s), num(rate.window_start), num(rate.tokens)],
            )
            .ok()
        })
        .collect();
    let _ = db.batch(batch).await;
}

async fn exhausted_error(db: &D1Database, req: &AdmitRequest<'_>) -> GatewayError {
    let allowance = active_allowance(db, &req.key.member_id, req.now)
        .await
        .ok()
        .flatten();
    match allowance {
        Some(a) if req.plan.is_some_and(|p| p.overage) => GatewayError::insufficient_quota(
            format!("plan allowance ({}) and wallet balance", a.unit),
        ),
        Some(a) => GatewayError::insufficient_quota(format!("plan allowance ({})", a.unit)),
        None => GatewayError::insufficient_quota("wallet balance"),
    }
}

/// One reservation attempt: allowance first, then the wallet if allowed.
async fn reserve(
    db: &D1Database,
    req: &AdmitRequest<'_>,
    rate: &RateTicket,
) -> Result<Option<Admission>, AdmitError> {
    let member = req.key.member_id.as_str();
    let allowance = active_allowance(db, member, req.now).await?;
    let overage = req.plan.is_some_and(|p| p.overage);
    if let Some(a) = &allowance {
        if let Some(unit) = parse_unit(&a.unit) {
            let amount = req.estimate.in_unit(unit, &req.price);
            let ps = super::non_negative(a.period_start);
            if try_allowance(db, req, ps, amount).await? {
                return Ok(Some(admission(
                    req,
                    Source::Allowance,
                    unit,
                    Some(ps),
                    amount,
                    rate,
                )));
            }
        }
        if !overage {
            return Ok(None);
        }
    }
    let amount = req.estimate.in_unit(AllowanceUnit::Money, &req.price);
    if try_wallet(db, req, amount).await? {
        return Ok(Some(admission(
            req,
            Source::Wallet,
            AllowanceUnit::Money,
            None,
            amount,
            rate,
        )));
    }
    Ok(None)
}

fn admission(
    req: &AdmitRequest<'_>,
    source: Source,
    unit: AllowanceUnit,
    period_start: Option<u64>,
    amount: u64,
    rate: &RateTicket,
) -> Admission {
    Admission {
        request_id: req.request_id.to_string(),
        member_id: req.key.member_id.clone(),
        key_id: req.key.public_id.clone(),
        model: req.model.to_string(),
        price: req.price,
        estimate: req.estimate,
        source,
        unit,
        period_start,
        amount,
        rate: rate.clone(),
        admitted_at: req.now,
    }
}

async fn try_allowance(
    db: &D1Database,
    req: &AdmitRequest<'_>,
    period_start: u64,
    amount: u64,
) -> worker::Result<bool> {
    let claim = claim_token();
    let member = req.key.member_id.as_str();
    let guard = stmt(
        db,
        "UPDATE allowances SET reserved = reserved + ?3, claim = ?4, updated_at = ?5 \
         WHERE member_id = ?1 AND period_start = ?2 AND period_end > ?5 \
           AND amount - used - reserved >= ?3",
        &[
            text(member),
            num(period_start),
            num(amount),
            text(&claim),
            num(req.now),
        ],
    )?;
    let insert = stmt(
        db,
        "INSERT INTO reservations (request_id, member_id, key_id, source, period_start, unit, \
           amount, created_at, expires_at, state) \
         SELECT ?1, ?2, ?3, 'allowance', period_start, unit, ?4, ?5, ?6, 'reserved' \
         FROM allowances WHERE member_id = ?2 AND period_start = ?7 AND claim = ?8",
        &[
            text(req.request_id),
            text(member),
            text(&req.key.public_id),
            num(amount),
            num(req.now),
            num(req.now.saturating_add(RESERVATION_TTL_SECS)),
            num(period_start),
            text(&claim),
        ],
    )?;
    let results = db.batch(vec![guard, insert]).await?;
    Ok(results.first().map(changes).unwrap_or(0) == 1
        && results.get(1).map(changes).unwrap_or(0) == 1)
}

async fn try_wallet(db: &D1Database, req: &AdmitRequest<'_>, amount: u64) -> worker::Result<bool> {
    let claim = claim_token();
    let member = req.key.member_id.as_str();
    let ensure = stmt(
        db,
        "INSERT OR IGNORE INTO wallets (member_id, balance_micros, reserved_micros, updated_at) \
         VALUES (?1, 0, 0, ?2)",
        &[text(member), num(req.now)],
    )?;
    let guard = stmt(
        db,
        "UPDATE wallets SET reserved_micros = reserved_micros + ?2, claim = ?3, updated_at = ?4 \
         WHERE member_id = ?1 AND balance_micros - reserved_micros >= ?2",
        &[text(member), num(amount), text(&claim), num(req.now)],
    )?;
    let insert = stmt(
        db,
        "INSERT INTO reservations (request_id, member_id, key_id, source, period_start, unit, \
           amount, created_at, expires_at, state) \
         SELECT ?1, ?2, ?3, 'wallet', ?7, 'money', ?4, ?5, ?6, 'reserved' \
         FROM wallets WHERE member_id = ?2 AND claim = ?8",
        &[
            text(req.request_id),
            text(member),
            text(&req.key.public_id),
            num(amount),
            num(req.now),
            num(req.now.saturating_add(RESERVATION_TTL_SECS)),
            opt_num(None),
            text(&claim),
        ],
    )?;
    let results = db.batch(vec![ensure, guard, insert]).await?;
    Ok(results.get(1).map(changes).unwrap_or(0) == 1
        && results.get(2).map(changes).unwrap_or(0) == 1)
}
