//! Member-facing endpoints, authenticated with the member's API key:
//! `GET /v1/user-profile`, `GET /api/usage` (served from rollups, never a scan of usage
//! events beyond the period totals) and `GET /api/v1/key` (OpenRouter's shape).

use serde::Deserialize;
use serde_json::{json, Value};
use tollbooth_core::billing::{civil_from_days, MICROS_PER_UNIT};
use worker::Response;

use super::authed;
use crate::auth::{member_record, MemberRecord};
use crate::context::EdgeError;
use crate::ledger::{self, num, stmt, text};
use crate::middleware::{internal, json_value, Call};

/// A JSON field, Null when absent.
fn f<'a>(v: &'a Value, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    v.get(key).unwrap_or(&NULL)
}

/// RFC 3339 UTC for unix seconds.
pub fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX).min(253_402_300_799);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        (t % 3600) / 60,
        t % 60
    )
}

/// Whole currency units with six decimals, as a JSON number (display only; the ledger
/// itself is integer micro-units and every response also carries `*_micros`).
fn currency(micros: i64) -> Value {
    let s = format!(
        "{}{}.{:06}",
        if micros < 0 { "-" } else { "" },
        micros.unsigned_abs() / MICROS_PER_UNIT,
        micros.unsigned_abs() % MICROS_PER_UNIT
    );
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

/// `GET /v1/user-profile`: `{"email","username","user_plan","expire_at"}`.
pub async fn user_profile_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        env,
        config,
        ..
    } = call;
    let key = authed(rc, req, env, config).await?;
    let member = member_record(env, &key.member_id)
        .await
        .map_err(internal("key store unavailable"))?
        .unwrap_or_else(|| MemberRecord {
            member_id: key.member_id.clone(),
            status: "active".into(),
            ..MemberRecord::default()
        });
    let expires = member.plan_expires_at.or(key.expires_at);
    json_value(
        200,
        &json!({
            "email": member.email,
            "username": member.username,
            "user_plan": key.plan_id,
            "expire_at": expires.map(rfc3339),
            "member_id": key.member_id,
            "status": member.status,
        }),
    )
}

#[derive(Deserialize)]
struct SeriesRow {
    bucket: i64,
    requests: i64,
    errors: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
}

fn series_json(rows: &[SeriesRow]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            json!({
                "start": rfc3339(ledger::non_negative(r.bucket)),
                "start_unix": r.bucket,
                "requests": r.requests,
                "errors": r.errors,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cost_micros": r.cost_micros,
            })
        })
        .collect()
}

/// `GET /api/usage`: period totals, remaining allowance, wallet, and per-day (30 days) and
/// per-hour (48 hours) series from the hourly rollups.
pub async fn usage_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        env,
        config,
        ..
    } = call;
    let key = authed(rc, req, env, config).await?;
    let now = rc.now_s;
    let unavailable = internal("ledger unavailable");
    let db = ledger::db(env).map_err(&unavailable)?;
    let balance = ledger::balance(&db, &key.member_id, now)
        .await
        .map_err(&unavailable)?;
    let series = |bucket: &str, since: u64| {
        stmt(
            &db,
            &format!(
                "SELECT ({bucket}) AS bucket, SUM(requests) AS requests, SUM(errors) AS errors, \
                   SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, \
                   SUM(cost_micros) AS cost_micros \
                 FROM rollups_hourly WHERE member_id = ?1 AND hour >= ?2 \
                 GROUP BY bucket ORDER BY bucket"
            ),
            &[text(&key.member_id), num(since)],
        )
    };
    let read = |s: worker::Result<worker::D1PreparedStatement>| async {
        s?.all().await?.results::<SeriesRow>()
    };
    let daily = read(series(
        "hour - hour % 86400",
        now.saturating_sub(30 * 86_400),
    ))
    .await
    .map_err(&unavailable)?;
    let hourly = read(series("hour", now.saturating_sub(48 * 3600)))
        .await
        .map_err(&unavailable)?;
    json_value(
        200,
        &json!({
            "member_id": key.member_id,
            "user_plan": key.plan_id,
            "period": f(&balance, "usage").clone(),
            "allowance": f(&balance, "allowance").clone(),
            "wallet": f(&balance, "wallet").clone(),
            "daily": series_json(&daily),
            "hourly": series_json(&hourly),
        }),
    )
}

/// `GET /api/v1/key`: OpenRouter's key info shape. Money figures are in currency units
/// (`usage`, `limit`, `limit_remaining`) with exact integer `*_micros` beside them; a
/// non-money allowance is reported in its own unit.
pub async fn key_info_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        env,
        config,
        ..
    } = call;
    let key = authed(rc, req, env, config).await?;
    let unavailable = internal("ledger unavailable");
    let db = ledger::db(env).map_err(&unavailable)?;
    let balance = ledger::balance(&db, &key.member_id, rc.now_s)
        .await
        .map_err(&unavailable)?;
    let allowance = f(&balance, "allowance");
    let wallet = f(&balance, "wallet");
    let usage_micros = f(f(&balance, "usage"), "cost_micros").as_i64().unwrap_or(0);
    let (limit, remaining, reset) = if allowance.is_null() {
        let avail = f(wallet, "available_micros").as_i64();
        (
            Value::Null,
            avail.map_or(Value::Null, currency),
            Value::Null,
        )
    } else {
        let unit = f(allowance, "unit").as_str().unwrap_or("tokens");
        let amount = f(allowance, "amount").as_i64().unwrap_or(0);
        let rem = f(allowance, "remaining").as_i64().unwrap_or(0);
        let (l, r) = if unit == "money" {
            (currency(amount), currency(rem))
        } else {
            (json!(amount), json!(rem))
        };
        let reset = f(allowance, "period_end")
            .as_i64()
            .map(|e| json!(rfc3339(ledger::non_negative(e))))
            .unwrap_or(Value::Null);
        (l, r, reset)
    };
    let unit_name = f(allowance, "unit").as_str().unwrap_or("money").to_string();
    json_value(
        200,
        &json!({
            "data": {
                "label": key.name.clone().unwrap_or_else(|| format!("sk-{}-...", key.public_id)),
                "usage": currency(usage_micros),
                "usage_micros": usage_micros,
                "limit": limit,
                "limit_remaining": remaining,
                "limit_unit": unit_name,
                "limit_reset": reset,
                "is_free_tier": allowance.is_null() && wallet.is_null(),
                "is_provisioning_key": false,
                "expires_at": key.expires_at.map(rfc3339),
                "rate_limit": {
                    "requests": key.rpm,
                    "tokens": key.tpm,
                    "interval": "1m",
                },
                "wallet_balance_micros": f(wallet, "balance_micros").clone(),
            }
        }),
    )
}
