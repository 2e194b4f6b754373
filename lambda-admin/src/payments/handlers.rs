//! Member and admin endpoints of payments.

use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::{created, ok, session_claims, AppState, Claims, Ctx};
use crate::crypto::new_id;
use crate::error::{ApiError, ApiResult};
use crate::members::current_member;
use crate::model::{admin_pk, from_item, index1, load, plan_pk, Admin, Plan, ONE};
use crate::store::{Index, ItemStore, Query};
use crate::sync::EdgeSync;

use super::fulfil::{fulfil, run_outbox};
use super::order::*;
use super::stripe::CheckoutRequest;
use super::{analytics, codes, epay};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    /// `plan` or `topup`.
    kind: OrderKind,
    #[serde(default)]
    plan_id: Option<String>,
    /// Top-ups: the amount in minor units of `currency`.
    #[serde(default)]
    amount_minor: Option<u64>,
    #[serde(default)]
    currency: Option<String>,
    /// `stripe` or `epay`.
    provider: PaymentProvider,
    /// EPay channel: `alipay` (default), `wxpay`, ...
    #[serde(default)]
    pay_type: Option<String>,
}

/// `POST /api/me/orders`: creates a pending order and its checkout; answers the URL the
/// member's browser opens to pay.
pub async fn create_order_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let b: OrderBody = ctx.json()?;
    let pay = &st.payments;
    let (amount_minor, currency, credit_micros, plan_id, description, plan_terms) = match b.kind {
        OrderKind::Plan => {
            let pid = b
                .plan_id
                .ok_or_else(|| ApiError::invalid("plan_id", "plan_id is required"))?;
            let plan: Plan = load(&st.store, &plan_pk(&pid), ONE, ctx.now)
                .await?
                .filter(|p: &Plan| p.visible)
                .ok_or_else(|| ApiError {
                    param: Some("plan_id".into()),
                    ..ApiError::not_found("plan")
                })?;
            if plan.price_micros == 0 {
                return Err(ApiError::invalid(
                    "plan_id",
                    "this plan is free: subscribe without an order",
                ));
            }
            let currency = normalize_currency(&plan.currency)
                .ok_or_else(|| ApiError::internal("the plan's currency is invalid"))?;
            let minor = micros_to_minor(plan.price_micros, &currency).ok_or_else(|| {
                ApiError::invalid("plan_id", "the plan's price is finer than the currency")
            })?;
            (
                minor,
                currency,
                0,
                Some(plan.id.clone()),
                format!("Plan {}", plan.name),
                Some(super::order::PlanTerms::of(&plan)),
            )
        }
        OrderKind::Topup => {
            let amount = b
                .amount_minor
                .ok_or_else(|| ApiError::invalid("amount_minor", "amount_minor is required"))?;
            let currency = b
                .currency
                .as_deref()
                .and_then(normalize_currency)
                .ok_or_else(|| ApiError::invalid("currency", "a 3-letter currency is required"))?;
            let rate = *pay.topup_rates.get(&currency).ok_or_else(|| {
                ApiError::invalid("currency", "top-ups are not offered in this currency")
            })?;
            if amount < pay.topup_min_minor || amount > pay.topup_max_minor {
                return Err(ApiError::invalid(
                    "amount_minor",
                    format!(
                        "amount_minor must be {}-{}",
                        pay.topup_min_minor, pay.topup_max_minor
                    ),
                ));
            }
            let credit = amount
                .checked_mul(rate)
                .filter(|c| i64::try_from(*c).is_ok())
                .ok_or_else(|| ApiError::invalid("amount_minor", "amount_minor is too large"))?;
            let desc = format!("Top-up {} {currency}", format_minor(amount, &currency));
            (amount, currency, credit, None, desc, None)
        }
    };
    let id = new_id()?;
    let mut order = Order {
        id: id.clone(),
        member_id: m.id.clone(),
        kind: b.kind,
        provider: b.provider,
        amount_minor,
        currency: currency.clone(),
        credit_micros,
        plan_id,
        description,
        state: OrderState::Pending,
        version: 1,
        created_at: ctx.now,
        expires_at: ctx.now.saturating_add(pay.order_ttl_secs),
        paid_at: None,
        fulfilled_at: None,
        refunded_at: None,
        provider_ref: None,
        payment_ref: None,
        checkout_url: None,
        grant: None,
        refunded_minor: 0,
        refund_debits: vec![],
        flags: vec![],
        code_batch: None,
        plan_terms,
    };
    match b.provider {
        PaymentProvider::Stripe => {
            let stripe = pay
                .stripe
                .as_ref()
                .ok_or_else(|| not_configured("Stripe"))?;
            // Stripe wants expires_at between 30 minutes and 24 hours ahead.
            let ttl = pay.order_ttl_secs.clamp(1800, 86_400);
            let session = stripe
                .api
                .create_checkout_session(&CheckoutRequest {
                    order_id: id.clone(),
                    amount_minor,
                    currency: currency.to_ascii_lowercase(),
                    name: order.description.clone(),
                    success_url: format!("{}/?order={id}&paid=1", pay.public_url),
                    cancel_url: format!("{}/?order={id}&cancelled=1", pay.public_url),
                    expires_at: ctx.now.saturating_add(ttl),
                    customer_email: Some(m.email.clone()),
                })
                .await
                .map_err(|e| ApiError::new(502, "api_error", "checkout_failed", e.to_string()))?;
            order.provider_ref = Some(session.id);
            order.checkout_url = Some(session.url);
        }
        PaymentProvider::Epay => {
            let cfg = pay.epay.as_ref().ok_or_else(|| not_configured("EPay"))?;
            if currency != cfg.currency {
                return Err(ApiError::invalid(
                    "currency",
                    format!("EPay charges in {} only", cfg.currency),
                ));
            }
            let pay_type = b.pay_type.as_deref().unwrap_or("alipay");
            if pay_type.is_empty()
                || pay_type.len() > 20
                || !pay_type.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(ApiError::invalid("pay_type", "pay_type is invalid"));
            }
            order.provider_ref = Some(id.clone());
            order.checkout_url = Some(epay::submit_url(cfg, &pay.public_url, &order, pay_type));
        }
        PaymentProvider::Code => {
            return Err(ApiError::invalid(
                "provider",
                "redeem codes at /api/me/redeem",
            ))
        }
    }
    create(&st.store, &order, vec![]).await?;
    created(json!({"order": order.public(), "checkout_url": order.checkout_url}))
}

fn with_effective_state(o: &Order, now: u64) -> Value {
    let mut v = o.public();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("state".into(), json!(o.effective_state(now)));
    }
    v
}

/// `GET /api/me/orders`.
pub async fn my_orders_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let items = st
        .store
        .query(
            Query::index(Index::Gsi2, member_orders_pk(&m.id), "")
                .desc()
                .limit(100),
        )
        .await?;
    let orders = items
        .iter()
        .map(from_item::<Order>)
        .collect::<ApiResult<Vec<_>>>()?;
    ok(json!({"data": orders.iter().map(|o| with_effective_state(o, ctx.now)).collect::<Vec<_>>()}))
}

/// `GET /api/me/orders/{id}`.
pub async fn my_order_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    id: &str,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let o = load_order(&st.store, id)
        .await?
        .filter(|o| o.member_id == m.id)
        .ok_or_else(|| ApiError::not_found("order"))?;
    ok(json!({"order": with_effective_state(&o, ctx.now)}))
}

/// An admin session; `mutating` calls need the `admin` role.
async fn require_admin<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    mutating: bool,
) -> ApiResult<Claims> {
    let claims = session_claims(st, ctx, "admin").await?;
    let current: Admin = load(&st.store, &admin_pk(&claims.sub), ONE, ctx.now)
        .await?
        .ok_or_else(|| ApiError::unauthorized("admin account no longer exists"))?;
    current.authorize(mutating)?;
    Ok(Claims {
        role: Some(current.role),
        ..claims
    })
}

/// The payments part of `/api/admin/...`; `None` for the other admin routes.
pub async fn admin_route<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    segs: &[&str],
) -> Option<ApiResult<Response<Body>>> {
    let m = ctx.method.as_str();
    let ours = matches!(
        segs,
        ["orders", ..] | ["outbox", ..] | ["redemption-codes", ..] | ["analytics", "revenue"]
    );
    if !ours {
        return None;
    }
    let mutating = !matches!(m, "GET" | "HEAD");
    let admin = match require_admin(st, ctx, mutating).await {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    Some(match (m, segs) {
        ("GET", ["orders"]) => list_orders(st, ctx).await,
        ("GET", ["orders", id]) => match load_order(&st.store, id).await {
            Ok(Some(o)) => ok(json!({"order": with_effective_state(&o, ctx.now)})),
            Ok(None) => Err(ApiError::not_found("order")),
            Err(e) => Err(e),
        },
        ("POST", ["orders", id, "fulfil"]) => match fulfil(st, id, ctx.now).await {
            Ok(o) => ok(json!({"order": o.public()})),
            Err(e) => Err(e),
        },
        ("GET", ["outbox"]) => list_outbox(st).await,
        ("POST", ["outbox", "run"]) => {
            let force = ctx
                .query
                .get("force")
                .is_some_and(|v| v == "1" || v == "true");
            run_outbox(st, ctx.now, force, 100).await.and_then(ok)
        }
        ("GET", ["redemption-codes"]) => codes::list_batches(st, ctx).await,
        ("POST", ["redemption-codes"]) => codes::create_batch(st, ctx, &admin).await,
        ("GET", ["analytics", "revenue"]) => analytics::revenue_handler(st, ctx).await,
        _ => Err(ApiError::not_found("route")),
    })
}

async fn list_orders<S: ItemStore, E>(st: &AppState<S, E>, ctx: &Ctx) -> ApiResult<Response<Body>> {
    let limit = ctx
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let state = ctx.query.get("state").cloned();
    let member = ctx.query.get("member_id").cloned();
    let q = match &member {
        Some(mid) => Query::index(Index::Gsi2, member_orders_pk(mid), ""),
        None => index1("ORDERS"),
    };
    let items = st.store.query(q.desc().limit(5000)).await?;
    let mut out = Vec::new();
    for it in &items {
        let o: Order = from_item(it)?;
        let eff = o.effective_state(ctx.now);
        let wanted = match state.as_deref() {
            None => true,
            Some("flagged") => !o.flags.is_empty(),
            Some(s) => s == eff.as_str(),
        };
        if !wanted {
            continue;
        }
        out.push(with_effective_state(&o, ctx.now));
        if out.len() >= limit {
            break;
        }
    }
    ok(json!({"data": out}))
}

async fn list_outbox<S: ItemStore, E>(st: &AppState<S, E>) -> ApiResult<Response<Body>> {
    let items = st.store.query(Query::table(OUTBOX_PK, "")).await?;
    let entries = items
        .iter()
        .map(from_item::<OutboxEntry>)
        .collect::<ApiResult<Vec<_>>>()?;
    ok(json!({"data": entries}))
}
