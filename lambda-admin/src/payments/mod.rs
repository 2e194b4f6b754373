//! Payments: orders, Stripe Checkout and its webhook, EPay-style signed callbacks,
//! redemption codes, fulfilment through the edge's internal API, and revenue analytics.
//!
//! Invariants (docs/payments.md):
//! - a webhook's signature is verified on the raw body before anything is read or written;
//! - an order moves pending → paid at most once: every order change is a compare-and-swap
//!   (the order plus a `V#<version>` marker written `IfAbsent` in one transaction);
//! - the paid transition writes an outbox item in the same transaction, so a paid order
//!   is never lost: the edge credit/allowance is retried until it is applied, and it is
//!   applied at most once because the edge deduplicates by `credit_id`/`grant_id` =
//!   order id;
//! - money is integers: order amounts in minor units of their currency, ledger credits
//!   in micro-units.

pub mod analytics;
pub mod codes;
pub mod epay;
pub mod fulfil;
pub mod handlers;
pub mod order;
pub mod stripe;

use std::collections::BTreeMap;
use std::sync::Arc;

use lambda_http::{Body, Response};

use crate::app::{AppState, Ctx};
use crate::config::Secret;
use crate::error::ApiResult;
use crate::store::ItemStore;
use crate::sync::EdgeSync;

pub use order::{Order, OrderKind, OrderState, PaymentProvider};
pub use stripe::{HttpStripe, StripeApi};

/// Stripe settings: the API client and the webhook signing secret.
#[derive(Clone)]
pub struct StripeSettings {
    pub api: Arc<dyn StripeApi>,
    pub webhook_secret: Secret,
}

/// EPay-style merchant settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpaySettings {
    /// Base URL of the gateway; the browser is sent to `{base}/submit.php?...`.
    pub api_base: String,
    pub pid: String,
    pub key: Secret,
    /// The one currency the gateway charges in (`CNY` for Alipay/WeChat Pay).
    pub currency: String,
}

/// Everything payments need besides the store and the edge sync.
#[derive(Clone)]
pub struct Payments {
    pub stripe: Option<StripeSettings>,
    pub epay: Option<EpaySettings>,
    /// Public base URL of the gateway (`PAYMENTS_PUBLIC_URL`): success/cancel pages and
    /// the EPay notify/return URLs are built from it.
    pub public_url: String,
    /// Wallet micro-units credited per minor unit paid, by currency (`TOPUP_RATES`,
    /// default `USD:10000`, i.e. one cent buys 10,000 micro-dollars).
    pub topup_rates: BTreeMap<String, u64>,
    /// Smallest and largest top-up, in minor units.
    pub topup_min_minor: u64,
    pub topup_max_minor: u64,
    /// How long a pending order can be paid (`ORDER_TTL_SECS`, default one day).
    pub order_ttl_secs: u64,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("stripe", &self.stripe.is_some())
            .field("epay", &self.epay.as_ref().map(|e| &e.pid))
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// A configuration error in the payments variables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name} is invalid: {reason}")]
pub struct PaymentsConfigError {
    pub name: &'static str,
    pub reason: String,
}

impl Default for Payments {
    fn default() -> Self {
        Payments::defaults()
    }
}

impl Payments {
    pub fn defaults() -> Payments {
        Payments {
            stripe: None,
            epay: None,
            public_url: "http://127.0.0.1:8787".into(),
            topup_rates: BTreeMap::from([("USD".to_owned(), 10_000)]),
            topup_min_minor: 100,
            topup_max_minor: 100_000_000,
            order_ttl_secs: 86_400,
        }
    }

    pub fn from_env() -> Result<Payments, PaymentsConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, `STRIPE_API_BASE`, `EPAY_API_BASE`,
    /// `EPAY_PID`, `EPAY_KEY`, `EPAY_CURRENCY`, `PAYMENTS_PUBLIC_URL`, `TOPUP_RATES`,
    /// `TOPUP_MIN_MINOR`, `TOPUP_MAX_MINOR`, `ORDER_TTL_SECS`. A provider without its
    /// secrets is disabled (its endpoints answer 503).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Payments, PaymentsConfigError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut p = Payments::defaults();
        if let Some(u) = get("PAYMENTS_PUBLIC_URL") {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(PaymentsConfigError {
                    name: "PAYMENTS_PUBLIC_URL",
                    reason: "must be an http(s) URL".into(),
                });
            }
            p.public_url = u.trim_end_matches('/').to_owned();
        }
        if let (Some(key), Some(whsec)) = (get("STRIPE_SECRET_KEY"), get("STRIPE_WEBHOOK_SECRET")) {
            let base = get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
            p.stripe = Some(StripeSettings {
                api: Arc::new(HttpStripe::new(base, key)),
                webhook_secret: Secret(whsec.into_bytes()),
            });
        }
        if let (Some(base), Some(pid), Some(key)) =
            (get("EPAY_API_BASE"), get("EPAY_PID"), get("EPAY_KEY"))
        {
            p.epay = Some(EpaySettings {
                api_base: base.trim_end_matches('/').to_owned(),
                pid,
                key: Secret(key.into_bytes()),
                currency: get("EPAY_CURRENCY")
                    .unwrap_or_else(|| "CNY".into())
                    .to_ascii_uppercase(),
            });
        }
        if let Some(rates) = get("TOPUP_RATES") {
            p.topup_rates = parse_rates(&rates).ok_or_else(|| PaymentsConfigError {
                name: "TOPUP_RATES",
                reason: "use CUR:micros_per_minor_unit[,CUR:n...], e.g. USD:10000".into(),
            })?;
        }
        let num = |name: &'static str, default: u64| -> Result<u64, PaymentsConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| PaymentsConfigError {
                    name,
                    reason: "must be a non-negative integer".into(),
                }),
            }
        };
        p.topup_min_minor = num("TOPUP_MIN_MINOR", p.topup_min_minor)?.max(1);
        p.topup_max_minor = num("TOPUP_MAX_MINOR", p.topup_max_minor)?;
        p.order_ttl_secs = num("ORDER_TTL_SECS", p.order_ttl_secs)?.max(60);
        Ok(p)
    }
}

fn parse_rates(s: &str) -> Option<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for part in s.split(',') {
        let (cur, n) = part.trim().split_once(':')?;
        let cur = order::normalize_currency(cur)?;
        let n: u64 = n.trim().parse().ok().filter(|n| *n > 0)?;
        out.insert(cur, n);
    }
    (!out.is_empty()).then_some(out)
}

/// The payments routes; `None` when the path is not one of them.
pub async fn route<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    segs: &[&str],
) -> Option<ApiResult<Response<Body>>> {
    let m = ctx.method.as_str();
    Some(match (m, segs) {
        ("POST", ["webhooks", "stripe"]) => stripe::webhook_handler(st, ctx).await,
        ("GET" | "POST", ["webhooks", "epay", "notify"]) => Ok(epay::notify_handler(st, ctx).await),
        ("GET", ["webhooks", "epay", "return"]) => Ok(epay::return_handler(st, ctx).await),
        ("POST", ["api", "me", "orders"]) => handlers::create_order_handler(st, ctx).await,
        ("GET", ["api", "me", "orders"]) => handlers::my_orders_handler(st, ctx).await,
        ("GET", ["api", "me", "orders", id]) => handlers::my_order_handler(st, ctx, id).await,
        ("POST", ["api", "me", "redeem"]) => codes::redeem_handler(st, ctx).await,
        (_, ["api", "admin", rest @ ..]) => return handlers::admin_route(st, ctx, rest).await,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
