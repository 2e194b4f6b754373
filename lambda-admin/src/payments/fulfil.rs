//! From a verified payment to the member's balance or allowance at the edge, exactly once.
//!
//! 1. [`accept_payment`]: pending (or lazily expired) → paid, by compare-and-swap, in the
//!    same transaction as an outbox entry. Replays and concurrent deliveries lose the
//!    swap and change nothing.
//! 2. [`fulfil`]: sends the edge calls, idempotent by order id (`credit_id` / `grant_id`),
//!    then paid → fulfilled and the outbox entry is removed. A failure leaves the entry
//!    for [`run_outbox`] (every webhook, and `POST /api/admin/outbox/run`).

use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::model::{load, member_pk, plan_pk, to_item, Plan, Subscription, ONE, SUBSCRIPTION};
use crate::store::{ItemStore, Put, Query};
use crate::sync::{calls, EdgeSync, SyncCall};

use super::order::*;

/// How long the request that paid an order has to fulfil it before the outbox retries.
pub const LEASE_SECS: u64 = 60;
const MAX_BACKOFF_SECS: u64 = 300;
const SWAP_TRIES: usize = 8;

/// What the provider says was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub provider: PaymentProvider,
    pub amount_minor: u64,
    pub currency: String,
    /// Checkout id as the provider reports it (must match the order's when recorded).
    pub provider_ref: Option<String>,
    /// Payment id (Stripe payment intent, EPay trade_no).
    pub payment_ref: Option<String>,
}

/// What happened to a payment notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// This call moved the order to paid (and tried to fulfil it).
    Paid(Order),
    /// Already paid before: nothing changed.
    Already(Order),
}

impl Accepted {
    pub fn order(&self) -> &Order {
        match self {
            Accepted::Paid(o) | Accepted::Already(o) => o,
        }
    }
}

/// The plan period an order buys, fixed at payment time.
pub async fn grant_for<S: ItemStore>(store: &S, plan_id: &str, now: u64) -> ApiResult<Grant> {
    let plan: Plan = load(store, &plan_pk(plan_id), ONE, now)
        .await?
        .ok_or_else(|| ApiError::not_found("plan"))?;
    let (period_start, period_end) = plan.period.bounds(now, now);
    Ok(Grant {
        plan_id: plan.id,
        unit: plan.allowance_unit,
        amount: plan.allowance_amount,
        period_start,
        period_end,
    })
}

/// Marks the order paid if it is still pending, then fulfils it. Amount, currency or
/// checkout mismatches are refused (`422`) and flag the order.
pub async fn accept_payment<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    order_id: &str,
    pay: &Payment,
    now: u64,
) -> ApiResult<Accepted> {
    for _ in 0..SWAP_TRIES {
        let order = load_order(&st.store, order_id)
            .await?
            .ok_or_else(|| ApiError::not_found("order"))?;
        if order.state.is_paid() {
            return Ok(Accepted::Already(order));
        }
        if let Some(reason) = mismatch(&order, pay) {
            flag(st, order, &reason, now).await?;
            return Err(ApiError::new(
                422,
                "invalid_request_error",
                "payment_mismatch",
                format!("payment refused: {reason}; the order is flagged for review"),
            ));
        }
        // The terms snapshotted at order creation; orders from before snapshots read
        // the plan (a deleted plan then flags the order instead of failing forever).
        let grant = match (&order.kind, &order.plan_terms, &order.plan_id) {
            (OrderKind::Plan, Some(t), _) => Some(t.grant(now)),
            (OrderKind::Plan, None, Some(p)) => match grant_for(&st.store, p, now).await {
                Ok(g) => Some(g),
                Err(e) if e.status == 404 => {
                    let reason = "the plan of this order no longer exists";
                    flag(st, order.clone(), reason, now).await?;
                    return Err(ApiError::new(
                        422,
                        "invalid_request_error",
                        "plan_missing",
                        "the order's plan no longer exists; flagged for review",
                    ));
                }
                Err(e) => return Err(e),
            },
            _ => None,
        };
        let next = Order {
            state: OrderState::Paid,
            version: order.version.saturating_add(1),
            paid_at: Some(now),
            payment_ref: pay.payment_ref.clone().or(order.payment_ref.clone()),
            grant,
            ..order.clone()
        };
        let mut extra = vec![(
            OutboxEntry {
                order_id: next.id.clone(),
                next_attempt_at: now.saturating_add(LEASE_SECS),
                attempts: 0,
                last_error: None,
            }
            .item()?,
            Put::Upsert,
        )];
        if let Some(r) = &next.payment_ref {
            extra.push((
                to_item(payref_pk(r), ONE, &json!({"order_id": next.id}))?,
                Put::Upsert,
            ));
        }
        if swap(&st.store, &next, extra).await? {
            // The payment is recorded; an edge failure now only delays the credit.
            let done = fulfil(st, &next.id, now).await.ok().unwrap_or(next);
            return Ok(Accepted::Paid(done));
        }
    }
    Err(ApiError::conflict("the order is changing; retry"))
}

fn mismatch(order: &Order, pay: &Payment) -> Option<String> {
    if order.provider != pay.provider {
        return Some(format!(
            "paid through {:?}, ordered through {:?}",
            pay.provider, order.provider
        ));
    }
    if !pay.currency.eq_ignore_ascii_case(&order.currency) {
        return Some(format!(
            "currency {} does not match the order's {}",
            pay.currency.to_ascii_uppercase(),
            order.currency
        ));
    }
    if pay.amount_minor != order.amount_minor {
        return Some(format!(
            "amount {} does not match the order's {}",
            pay.amount_minor, order.amount_minor
        ));
    }
    match (&order.provider_ref, &pay.provider_ref) {
        (Some(a), Some(b)) if a != b => Some("checkout reference does not match".into()),
        _ => None,
    }
}

/// Records a flag on the order (once per reason); the state does not change.
pub async fn flag<S: ItemStore, E>(
    st: &AppState<S, E>,
    mut order: Order,
    reason: &str,
    now: u64,
) -> ApiResult<()> {
    for _ in 0..SWAP_TRIES {
        if order.flags.iter().any(|f| f.reason == reason) {
            return Ok(());
        }
        let mut next = order.clone();
        next.version = next.version.saturating_add(1);
        next.flags.push(Flag {
            at: now,
            reason: reason.to_owned(),
        });
        if swap(&st.store, &next, vec![]).await? {
            return Ok(());
        }
        order = load_order(&st.store, &order.id)
            .await?
            .ok_or_else(|| ApiError::not_found("order"))?;
    }
    Err(ApiError::conflict("the order is changing; retry"))
}

/// The edge calls an order's fulfilment makes; all idempotent by the order id.
fn credit_calls(order: &Order) -> Vec<SyncCall> {
    let mut out = Vec::new();
    if order.credit_micros > 0 {
        out.push(calls::credit(
            &order.member_id,
            &order.id,
            i64::try_from(order.credit_micros).unwrap_or(i64::MAX),
            &format!("order {}", order.id),
        ));
    }
    if let Some(g) = &order.grant {
        out.push(calls::allowance(
            &order.member_id,
            json!({"plan_id": g.plan_id, "unit": g.unit, "amount": g.amount,
                   "period_start": g.period_start, "period_end": g.period_end,
                   "grant_id": order.id}),
            &order.id,
        ));
    }
    out
}

fn refund_calls(order: &Order) -> Vec<SyncCall> {
    order
        .refund_debits
        .iter()
        .map(|d| {
            calls::credit(
                &order.member_id,
                &d.id,
                -i64::try_from(d.micros).unwrap_or(i64::MAX),
                &format!("refund of order {}", order.id),
            )
        })
        .collect()
}

async fn send_all<E: EdgeSync>(sync: &E, calls: Vec<SyncCall>) -> ApiResult<()> {
    for c in calls {
        sync.send(c).await?;
    }
    Ok(())
}

/// Applies a paid order at the edge and marks it fulfilled; for refunded orders, sends
/// the refund debits. Safe to run any number of times, concurrently.
pub async fn fulfil<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    order_id: &str,
    now: u64,
) -> ApiResult<Order> {
    for _ in 0..SWAP_TRIES {
        let Some(order) = load_order(&st.store, order_id).await? else {
            st.store.delete(OUTBOX_PK, order_id).await?;
            return Err(ApiError::not_found("order"));
        };
        match order.state {
            OrderState::Pending | OrderState::Expired => {
                st.store.delete(OUTBOX_PK, order_id).await?;
                return Ok(order);
            }
            OrderState::Fulfilled | OrderState::Refunded => {
                if !order.refund_debits.is_empty() {
                    // The credit first (a no-op if it was applied), so a refund that
                    // overtook the fulfilment nets out instead of going negative.
                    let mut c = credit_calls(&order);
                    c.retain(|c| c.path.contains("/credits"));
                    c.extend(refund_calls(&order));
                    send_all(&st.sync, c).await?;
                }
                st.store.delete(OUTBOX_PK, order_id).await?;
                return Ok(order);
            }
            OrderState::Paid => {}
        }
        let mut c = credit_calls(&order);
        c.extend(refund_calls(&order));
        send_all(&st.sync, c).await?;
        if let Some(g) = &order.grant {
            activate_subscription(st, &order, g, now).await?;
        }
        let next = Order {
            state: OrderState::Fulfilled,
            version: order.version.saturating_add(1),
            fulfilled_at: Some(now),
            ..order.clone()
        };
        if swap(&st.store, &next, vec![]).await? {
            st.store.delete(OUTBOX_PK, order_id).await?;
            return Ok(next);
        }
    }
    Err(ApiError::conflict("the order is changing; retry"))
}

/// The member's subscription follows the paid grant; keys are re-pushed with the plan
/// (a versioned change of the member, through the edge outbox).
async fn activate_subscription<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    order: &Order,
    g: &Grant,
    now: u64,
) -> ApiResult<()> {
    let sub = Subscription {
        member_id: order.member_id.clone(),
        plan_id: g.plan_id.clone(),
        started_at: g.period_start,
        period_start: g.period_start,
        period_end: g.period_end,
        expires_at: (g.period_end != u64::MAX).then_some(g.period_end),
        status: "active".into(),
        grant_id: order.id.clone(),
        period: order.plan_terms.as_ref().map(|t| t.period),
        price_micros: None,
    };
    let pk = member_pk(&order.member_id);
    let hist = to_item(
        pk,
        format!("SUBHIST#{:010}#{}", g.period_start, g.plan_id),
        &sub,
    )?;
    let current = sub.item()?;
    crate::members::repush_keys(
        st,
        &order.member_id,
        |_| {
            Ok(vec![
                (current.clone(), Put::Upsert),
                (hist.clone(), Put::Upsert),
            ])
        },
        Some(sub.clone()),
        now,
    )
    .await?;
    Ok(())
}

/// A plan order refunded in full (or disputed): if the member's subscription is still
/// the one this order bought, it ends now and the keys are downgraded at the edge.
async fn end_refunded_subscription<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    order: &Order,
    now: u64,
) -> ApiResult<()> {
    let sub: Option<Subscription> =
        load(&st.store, &member_pk(&order.member_id), SUBSCRIPTION, now).await?;
    if let Some(s) = sub.filter(|s| s.grant_id == order.id && s.status == "active") {
        crate::jobs::expire_subscription(st, s, now).await?;
    }
    Ok(())
}

/// Retries every due outbox entry (all of them with `force`). Returns a summary.
pub async fn run_outbox<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    now: u64,
    force: bool,
    limit: usize,
) -> ApiResult<Value> {
    let entries = st
        .store
        .query(Query::table(OUTBOX_PK, "").limit(1000))
        .await?;
    let (mut done, mut failed, mut waiting) = (Vec::new(), Vec::new(), 0usize);
    for it in entries {
        let Ok(entry) = crate::model::from_item::<OutboxEntry>(&it) else {
            continue;
        };
        if !force && entry.next_attempt_at > now {
            waiting += 1;
            continue;
        }
        if done.len() + failed.len() >= limit {
            waiting += 1;
            continue;
        }
        match fulfil(st, &entry.order_id, now).await {
            Ok(o) => done.push(json!({"order_id": o.id, "state": o.state})),
            Err(e) => {
                let attempts = entry.attempts.saturating_add(1);
                let backoff = 2u64.saturating_pow(attempts.min(16)).min(MAX_BACKOFF_SECS);
                let next = OutboxEntry {
                    attempts,
                    next_attempt_at: now.saturating_add(backoff),
                    last_error: Some(e.message.clone()),
                    ..entry
                };
                // Only if the entry is still there: a concurrent run may have finished it.
                if st.store.get(OUTBOX_PK, &next.order_id).await?.is_some() {
                    st.store.put(next.item()?, Put::Upsert).await?;
                }
                failed.push(json!({"order_id": next.order_id, "error": e.message,
                                   "attempts": attempts}));
            }
        }
    }
    Ok(json!({"fulfilled": done, "failed": failed, "waiting": waiting}))
}

/// A refund reported by the provider: `refunded_minor` is the cumulative amount.
pub async fn record_refund<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    order_id: &str,
    refunded_minor: u64,
    currency: &str,
    now: u64,
) -> ApiResult<Order> {
    for _ in 0..SWAP_TRIES {
        let order = load_order(&st.store, order_id)
            .await?
            .ok_or_else(|| ApiError::not_found("order"))?;
        if !order.state.is_paid() {
            return Err(ApiError::conflict("the order was never paid"));
        }
        if !currency.eq_ignore_ascii_case(&order.currency) || refunded_minor > order.amount_minor {
            flag(st, order, "refund does not match the order", now).await?;
            return Err(ApiError::new(
                422,
                "invalid_request_error",
                "refund_mismatch",
                "refund does not match the order; flagged for review",
            ));
        }
        if refunded_minor <= order.refunded_minor {
            // Replayed or out of order: make sure the recorded debits reached the edge.
            return fulfil(st, order_id, now).await.or(Ok(order));
        }
        let mut next = order.clone();
        next.version = next.version.saturating_add(1);
        next.refunded_minor = refunded_minor;
        if order.credit_micros > 0 && order.amount_minor > 0 {
            let share = |minor: u64| -> u64 {
                let v = u128::from(order.credit_micros) * u128::from(minor)
                    / u128::from(order.amount_minor);
                u64::try_from(v).unwrap_or(u64::MAX)
            };
            let delta = share(refunded_minor).saturating_sub(share(order.refunded_minor));
            if delta > 0 {
                next.refund_debits.push(RefundDebit {
                    id: format!("{}-refund-{refunded_minor}", order.id),
                    micros: delta,
                });
            }
        }
        let ends_plan = refunded_minor >= order.amount_minor && order.grant.is_some();
        if refunded_minor >= order.amount_minor {
            next.state = OrderState::Refunded;
            next.refunded_at = Some(now);
        }
        let outbox = OutboxEntry {
            order_id: order.id.clone(),
            next_attempt_at: now.saturating_add(LEASE_SECS),
            attempts: 0,
            last_error: None,
        };
        if swap(&st.store, &next, vec![(outbox.item()?, Put::Upsert)]).await? {
            if ends_plan {
                // The paid plan ends with the refund: downgraded at the edge now.
                end_refunded_subscription(st, &next, now).await?;
            }
            return Ok(fulfil(st, order_id, now).await.unwrap_or(next));
        }
    }
    Err(ApiError::conflict("the order is changing; retry"))
}
