//! Orders and their state machine, stored in the single table:
//!
//! | item | pk | sk | gsi1 | gsi2 |
//! |---|---|---|---|---|
//! | order | `ORDER#<id>` | `#` | `ORDERS` / `<created:010>#<id>` | `MEMBER#<id>#ORDERS` / `<created:010>#<id>` |
//! | version marker | `ORDER#<id>` | `V#<version:08>` | | |
//! | outbox entry | `OUTBOX` | `<order id>` | | |
//! | payment reference | `PAYREF#<provider ref>` | `#` | | |
//!
//! Every change is a compare-and-swap: the new order (version n+1) and the marker
//! `V#<n+1>` written `IfAbsent` in one transaction. Of two writers that read version n,
//! exactly one commits; the other re-reads and decides again.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollbooth_core::billing::AllowanceUnit;

use crate::error::{ApiError, ApiResult};
use crate::model::{from_item, to_item, ONE};
use crate::store::{Item, ItemStore, Put, StoreError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Pending,
    Paid,
    Fulfilled,
    Expired,
    Refunded,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Paid => "paid",
            OrderState::Fulfilled => "fulfilled",
            OrderState::Expired => "expired",
            OrderState::Refunded => "refunded",
        }
    }
    /// Whether money was received for the order.
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderState::Paid | OrderState::Fulfilled | OrderState::Refunded
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// One period of a plan.
    Plan,
    /// Money into the prepaid wallet.
    Topup,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PaymentProvider {
    Stripe,
    Epay,
    /// A redemption code: no money moves.
    Code,
}

/// The plan allowance an order grants, fixed when it is paid so every retry of the
/// fulfilment sends the same body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub plan_id: String,
    pub unit: AllowanceUnit,
    pub amount: u64,
    pub period_start: u64,
    pub period_end: u64,
}

/// A wallet debit that a refund causes, sent idempotently by `id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefundDebit {
    pub id: String,
    pub micros: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flag {
    pub at: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub member_id: String,
    pub kind: OrderKind,
    pub provider: PaymentProvider,
    /// Price in minor units of `currency` (cents; yen for zero-decimal currencies).
    pub amount_minor: u64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// Wallet micro-units credited on fulfilment (top-ups and wallet codes).
    #[serde(default)]
    pub credit_micros: u64,
    #[serde(default)]
    pub plan_id: Option<String>,
    #[serde(default)]
    pub description: String,
    pub state: OrderState,
    pub version: u64,
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(default)]
    pub paid_at: Option<u64>,
    #[serde(default)]
    pub fulfilled_at: Option<u64>,
    #[serde(default)]
    pub refunded_at: Option<u64>,
    /// The provider's id of the checkout (Stripe session id, EPay out_trade_no).
    #[serde(default)]
    pub provider_ref: Option<String>,
    /// The provider's id of the payment (Stripe payment intent, EPay trade_no).
    #[serde(default)]
    pub payment_ref: Option<String>,
    #[serde(default)]
    pub checkout_url: Option<String>,
    #[serde(default)]
    pub grant: Option<Grant>,
    #[serde(default)]
    pub refunded_minor: u64,
    #[serde(default)]
    pub refund_debits: Vec<RefundDebit>,
    #[serde(default)]
    pub flags: Vec<Flag>,
    /// The redemption code batch, for code orders.
    #[serde(default)]
    pub code_batch: Option<String>,
    /// The plan's terms when the order was created: fulfilment grants these, whatever
    /// the plan says (or whether it exists) when the payment arrives.
    #[serde(default)]
    pub plan_terms: Option<PlanTerms>,
}

/// What a plan order buys, fixed at order creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanTerms {
    pub plan_id: String,
    pub period: tollbooth_core::billing::PlanPeriod,
    pub unit: AllowanceUnit,
    pub amount: u64,
}

impl PlanTerms {
    pub fn of(plan: &crate::model::Plan) -> PlanTerms {
        PlanTerms {
            plan_id: plan.id.clone(),
            period: plan.period,
            unit: plan.allowance_unit,
            amount: plan.allowance_amount,
        }
    }

    /// The period these terms buy when paid at `now`.
    pub fn grant(&self, now: u64) -> Grant {
        let (period_start, period_end) = self.period.bounds(now, now);
        Grant {
            plan_id: self.plan_id.clone(),
            unit: self.unit,
            amount: self.amount,
            period_start,
            period_end,
        }
    }
}

pub fn order_pk(id: &str) -> String {
    format!("ORDER#{id}")
}
pub fn member_orders_pk(member_id: &str) -> String {
    format!("MEMBER#{member_id}#ORDERS")
}
pub const OUTBOX_PK: &str = "OUTBOX";
pub fn payref_pk(reference: &str) -> String {
    format!("PAYREF#{reference}")
}

impl Order {
    pub fn item(&self) -> ApiResult<Item> {
        let sk = format!("{:010}#{}", self.created_at, self.id);
        Ok(to_item(order_pk(&self.id), ONE, self)?
            .gsi1("ORDERS", sk.clone())
            .gsi2(member_orders_pk(&self.member_id), sk))
    }

    fn marker(&self) -> Item {
        Item::new(
            order_pk(&self.id),
            format!("V#{:08}", self.version),
            json!({"state": self.state}).to_string(),
        )
    }

    /// What members and admins see (no secrets live on orders).
    pub fn public(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A pending order past its expiry reads as expired.
    pub fn effective_state(&self, now: u64) -> OrderState {
        if self.state == OrderState::Pending && now >= self.expires_at {
            OrderState::Expired
        } else {
            self.state
        }
    }
}

/// Writes a new order (version 1); fails with `Conflict` if the id exists.
pub async fn create<S: ItemStore>(
    store: &S,
    order: &Order,
    extra: Vec<(Item, Put)>,
) -> ApiResult<()> {
    let mut items = vec![
        (order.item()?, Put::IfAbsent),
        (order.marker(), Put::IfAbsent),
    ];
    items.extend(extra);
    store.put_all(items).await?;
    Ok(())
}

/// Compare-and-swap: `next` must carry `version = current + 1`. `Ok(false)` when another
/// writer got there first (re-read and decide again).
pub async fn swap<S: ItemStore>(
    store: &S,
    next: &Order,
    extra: Vec<(Item, Put)>,
) -> ApiResult<bool> {
    let mut items = vec![(next.item()?, Put::Upsert), (next.marker(), Put::IfAbsent)];
    items.extend(extra);
    match store.put_all(items).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub async fn load_order<S: ItemStore>(store: &S, id: &str) -> ApiResult<Option<Order>> {
    match store.get(&order_pk(id), ONE).await? {
        Some(it) => Ok(Some(from_item(&it)?)),
        None => Ok(None),
    }
}

/// An outbox entry: the order still needs its edge side effects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxEntry {
    pub order_id: String,
    pub next_attempt_at: u64,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl OutboxEntry {
    pub fn item(&self) -> ApiResult<Item> {
        to_item(OUTBOX_PK.into(), self.order_id.clone(), self)
    }
}

// ---- currencies ------------------------------------------------------------------------

/// Upper-case ISO 4217 code, or `None` if it is not three ASCII letters.
pub fn normalize_currency(c: &str) -> Option<String> {
    let c = c.trim();
    (c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic())).then(|| c.to_ascii_uppercase())
}

/// Digits after the decimal point of a currency's minor unit (Stripe's list).
pub fn minor_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "JPY" | "KMF" | "KRW" | "MGA" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// A plan price in micro-units as minor units; `None` if it has sub-minor precision.
pub fn micros_to_minor(price_micros: u64, currency: &str) -> Option<u64> {
    let div = 10u64.pow(6u32.saturating_sub(minor_exponent(currency)));
    price_micros.is_multiple_of(div).then(|| price_micros / div)
}

/// `1234` CNY → `"12.34"`.
pub fn format_minor(amount: u64, currency: &str) -> String {
    let exp = minor_exponent(currency);
    if exp == 0 {
        return amount.to_string();
    }
    let div = 10u64.pow(exp);
    format!(
        "{}.{:0width$}",
        amount / div,
        amount % div,
        width = exp as usize
    )
}

/// `"12.34"` → `1234` for a two-decimal currency, exactly (no floats); `None` for more
/// decimals than the currency has, signs, or garbage.
pub fn parse_decimal(s: &str, currency: &str) -> Option<u64> {
    let exp = minor_exponent(currency) as usize;
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > exp
        || whole.len() > 15
    {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut frac_val: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..exp {
        frac_val = frac_val.checked_mul(10)?;
    }
    whole
        .checked_mul(10u64.pow(exp as u32))?
        .checked_add(frac_val)
}

pub fn not_configured(provider: &str) -> ApiError {
    ApiError::new(
        503,
        "api_error",
        "payments_not_configured",
        format!("{provider} payments are not configured"),
    )
}
