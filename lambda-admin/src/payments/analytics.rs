//! Revenue for the dashboards: per day and per plan (net of refunds, per currency), and
//! orders by state. Computed from the order index over a bounded window; redemption
//! codes move no money and count only in the state totals.

use std::collections::BTreeMap;

use lambda_http::{Body, Response};
use serde_json::{json, Value};

use crate::app::{ok, AppState, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::model::{from_item, index1};
use crate::store::ItemStore;

use super::order::{Order, OrderKind, PaymentProvider};

const MAX_WINDOW_SECS: u64 = 400 * 86_400;

/// `YYYY-MM-DD` (UTC) of a unix time.
pub fn day_of(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[derive(Default)]
struct Sum {
    gross_minor: u64,
    refunded_minor: u64,
    orders: u64,
}

impl Sum {
    fn add(&mut self, o: &Order) {
        self.gross_minor = self.gross_minor.saturating_add(o.amount_minor);
        self.refunded_minor = self.refunded_minor.saturating_add(o.refunded_minor);
        self.orders = self.orders.saturating_add(1);
    }
    fn json(&self) -> Value {
        json!({"gross_minor": self.gross_minor, "refunded_minor": self.refunded_minor,
               "net_minor": self.gross_minor.saturating_sub(self.refunded_minor),
               "orders": self.orders})
    }
}

/// The pure part: aggregates `orders` whose payment (or, for states, creation) falls
/// in `[since, until)`.
pub fn revenue(orders: &[Order], since: u64, until: u64, now: u64) -> Value {
    let mut by_day: BTreeMap<(String, String), Sum> = BTreeMap::new();
    let mut by_plan: BTreeMap<(String, String), Sum> = BTreeMap::new();
    let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut flagged = 0u64;
    for o in orders {
        if (since..until).contains(&o.created_at) {
            let e = by_state.entry(o.effective_state(now).as_str()).or_default();
            *e = e.saturating_add(1);
            if !o.flags.is_empty() {
                flagged = flagged.saturating_add(1);
            }
        }
        let Some(paid_at) = o.paid_at else { continue };
        if o.provider == PaymentProvider::Code || !(since..until).contains(&paid_at) {
            continue;
        }
        by_day
            .entry((day_of(paid_at), o.currency.clone()))
            .or_default()
            .add(o);
        let plan = match (o.kind, &o.plan_id) {
            (OrderKind::Plan, Some(p)) => p.clone(),
            _ => "topup".to_owned(),
        };
        by_plan
            .entry((plan, o.currency.clone()))
            .or_default()
            .add(o);
    }
    let rows = |m: &BTreeMap<(String, String), Sum>, key: &str| -> Vec<Value> {
        m.iter()
            .map(|((k, cur), s)| {
                let mut v = s.json();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert(key.to_owned(), json!(k));
                    obj.insert("currency".into(), json!(cur));
                }
                v
            })
            .collect()
    };
    json!({"since": since, "until": until,
           "by_day": rows(&by_day, "day"), "by_plan": rows(&by_plan, "plan_id"),
           "orders_by_state": by_state, "flagged": flagged})
}

/// `GET /api/admin/analytics/revenue?since=<unix>&until=<unix>` (default: 30 days).
pub async fn revenue_handler<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let num = |k: &str| -> ApiResult<Option<u64>> {
        match ctx.query.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid(k, format!("{k} must be unix seconds"))),
        }
    };
    let until = num("until")?.unwrap_or(ctx.now.saturating_add(1));
    let since = num("since")?.unwrap_or(until.saturating_sub(30 * 86_400));
    if since >= until || until - since > MAX_WINDOW_SECS {
        return Err(ApiError::invalid(
            "since",
            "since must be before until, at most 400 days apart",
        ));
    }
    // Orders are listed newest first; one paid after `since` was created at most an
    // order lifetime earlier, so a week of margin covers it.
    let floor = since.saturating_sub(7 * 86_400);
    let items = st
        .store
        .query(index1("ORDERS").desc().limit(20_000))
        .await?;
    let mut orders = Vec::new();
    for it in &items {
        let o: Order = from_item(it)?;
        if o.created_at < floor {
            break;
        }
        orders.push(o);
    }
    ok(revenue(&orders, since, until, ctx.now))
}
