//! Stripe: Checkout Sessions through the HTTP API (behind [`StripeApi`], so tests use a
//! local mock of the API), and the webhook with `Stripe-Signature` verification.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use lambda_http::{Body, Response};
use serde_json::{json, Value};
use tollbooth_core::auth::{constant_time_eq, hmac_sha256};

use crate::app::{ok, AppState, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::model::{from_item, ONE};
use crate::store::ItemStore;
use crate::sync::EdgeSync;

use super::fulfil::{accept_payment, record_refund, run_outbox, Accepted, Payment};
use super::order::{not_configured, payref_pk, PaymentProvider};

/// Signatures older or newer than this are refused (Stripe's default tolerance).
pub const TOLERANCE_SECS: u64 = 300;
pub const SIGNATURE_HEADER: &str = "stripe-signature";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a Checkout Session is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    pub order_id: String,
    pub amount_minor: u64,
    /// Lower case, as Stripe wants it.
    pub currency: String,
    pub name: String,
    pub success_url: String,
    pub cancel_url: String,
    pub expires_at: u64,
    pub customer_email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StripeError {
    #[error("stripe unreachable: {0}")]
    Unreachable(String),
    #[error("stripe refused the request: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
}

/// The part of Stripe's API the gateway uses.
pub trait StripeApi: Send + Sync {
    fn create_checkout_session<'a>(
        &'a self,
        req: &'a CheckoutRequest,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>>;
}

/// Stripe over HTTPS (`STRIPE_API_BASE` points it elsewhere in tests).
pub struct HttpStripe {
    base: String,
    secret_key: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStripe")
            .field("base", &self.base)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

impl HttpStripe {
    pub fn new(base: String, secret_key: String) -> HttpStripe {
        HttpStripe {
            base: base.trim_end_matches('/').to_owned(),
            secret_key,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// The form body of `POST /v1/checkout/sessions`.
pub fn checkout_form(req: &CheckoutRequest) -> String {
    let amount = req.amount_minor.to_string();
    let expires = req.expires_at.to_string();
    let mut f = form_urlencoded::Serializer::new(String::new());
    f.append_pair("mode", "payment")
        .append_pair("client_reference_id", &req.order_id)
        .append_pair("success_url", &req.success_url)
        .append_pair("cancel_url", &req.cancel_url)
        .append_pair("expires_at", &expires)
        .append_pair("line_items[0][quantity]", "1")
        .append_pair("line_items[0][price_data][currency]", &req.currency)
        .append_pair("line_items[0][price_data][unit_amount]", &amount)
        .append_pair("line_items[0][price_data][product_data][name]", &req.name)
        .append_pair("metadata[order_id]", &req.order_id)
        .append_pair("payment_intent_data[metadata][order_id]", &req.order_id);
    if let Some(e) = &req.customer_email {
        f.append_pair("customer_email", e);
    }
    f.finish()
}

impl StripeApi for HttpStripe {
    fn create_checkout_session<'a>(
        &'a self,
        req: &'a CheckoutRequest,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>> {
        Box::pin(async move {
            let resp = self
                .client
                .post(format!("{}/v1/checkout/sessions", self.base))
                .bearer_auth(&self.secret_key)
                // One session per order, even if this call is retried.
                .header("Idempotency-Key", format!("checkout-{}", req.order_id))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(checkout_form(req))
                .send()
                .await
                .map_err(|e| StripeError::Unreachable(e.without_url().to_string()))?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !(200..300).contains(&status) {
                let message = body
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .chars()
                    .take(200)
                    .collect();
                return Err(StripeError::Refused { status, message });
            }
            match (
                body.get("id").and_then(Value::as_str),
                body.get("url").and_then(Value::as_str),
            ) {
                (Some(id), Some(url)) => Ok(CheckoutSession {
                    id: id.to_owned(),
                    url: url.to_owned(),
                }),
                _ => Err(StripeError::Refused {
                    status,
                    message: "no session id or url in the answer".into(),
                }),
            }
        })
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("signature timestamp outside the tolerance")]
    Stale,
    #[error("no matching v1 signature")]
    Mismatch,
}

/// `v1` signature of a payload at `t` (what Stripe computes; tests sign with it).
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    hex::encode(hmac_sha256(secret, &msg))
}

/// Verifies `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` over the raw body:
/// one `v1` must match (constant time), and `t` must be within the tolerance of `now`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t: Option<u64> = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" if t.is_none() => t = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => v1.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = sign(secret, t, body);
    if v1
        .iter()
        .any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `POST /webhooks/stripe`.
pub async fn webhook_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let Some(stripe) = &st.payments.stripe else {
        return Err(not_configured("Stripe"));
    };
    let header = ctx
        .headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    verify_signature(header, &ctx.body, &stripe.webhook_secret.0, ctx.now)
        .map_err(|e| ApiError::new(400, "authentication_error", "bad_signature", e.to_string()))?;
    let event: Value = serde_json::from_slice(&ctx.body)
        .map_err(|_| ApiError::bad_request("the event is not JSON"))?;
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    let obj = event
        .pointer("/data/object")
        .cloned()
        .unwrap_or(Value::Null);
    let result = match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            session_paid(st, &obj, ctx.now).await
        }
        "charge.refunded" => charge_refunded(st, &obj, ctx.now).await,
        // A dispute (chargeback) takes the money back like a full refund.
        "charge.dispute.created" | "charge.dispute.funds_withdrawn" => {
            charge_disputed(st, &obj, ctx.now).await
        }
        _ => Ok(json!({"received": true, "ignored": kind})),
    };
    // Every delivery also finishes earlier fulfilments that are due.
    let _ = run_outbox(st, ctx.now, false, 20).await;
    ok(result?)
}

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

async fn session_paid<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    obj: &Value,
    now: u64,
) -> ApiResult<Value> {
    if str_at(obj, "/payment_status") != Some("paid") {
        // Delayed methods complete unpaid and send async_payment_succeeded later.
        return Ok(json!({"received": true, "ignored": "not paid yet"}));
    }
    let order_id = str_at(obj, "/metadata/order_id")
        .or_else(|| str_at(obj, "/client_reference_id"))
        .ok_or_else(|| ApiError::bad_request("the session names no order"))?;
    let pay = Payment {
        provider: PaymentProvider::Stripe,
        amount_minor: obj
            .get("amount_total")
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiError::bad_request("amount_total is missing"))?,
        currency: str_at(obj, "/currency").unwrap_or("").to_ascii_uppercase(),
        provider_ref: str_at(obj, "/id").map(str::to_owned),
        payment_ref: str_at(obj, "/payment_intent").map(str::to_owned),
    };
    let acc = accept_payment(st, order_id, &pay, now).await?;
    Ok(json!({"received": true, "order_id": acc.order().id,
              "state": acc.order().state, "replay": matches!(acc, Accepted::Already(_))}))
}

/// A dispute is handled as a refund of the whole order: the wallet credit is debited
/// and a plan bought by the order ends.
async fn charge_disputed<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    obj: &Value,
    now: u64,
) -> ApiResult<Value> {
    let order_id = order_of_charge(st, obj).await?;
    let order = super::order::load_order(&st.store, &order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let o = record_refund(st, &order_id, order.amount_minor, &order.currency, now).await?;
    Ok(
        json!({"received": true, "order_id": o.id, "state": o.state, "disputed": true,
              "refunded_minor": o.refunded_minor}),
    )
}

/// The order a charge (or dispute) object belongs to: its metadata, or the payment
/// intent recorded when the order was paid.
async fn order_of_charge<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    obj: &Value,
) -> ApiResult<String> {
    Ok(match str_at(obj, "/metadata/order_id") {
        Some(id) => id.to_owned(),
        None => {
            let pi = str_at(obj, "/payment_intent")
                .ok_or_else(|| ApiError::bad_request("the charge names no order"))?;
            let it = st
                .store
                .get(&payref_pk(pi), ONE)
                .await?
                .ok_or_else(|| ApiError::not_found("order for this payment"))?;
            let v: Value = from_item(&it)?;
            v.get("order_id")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::internal("payment reference is corrupt"))?
                .to_owned()
        }
    })
}

async fn charge_refunded<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    obj: &Value,
    now: u64,
) -> ApiResult<Value> {
    let order_id = order_of_charge(st, obj).await?;
    let refunded = obj
        .get("amount_refunded")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::bad_request("amount_refunded is missing"))?;
    let currency = str_at(obj, "/currency").unwrap_or("");
    let o = record_refund(st, &order_id, refunded, currency, now).await?;
    Ok(json!({"received": true, "order_id": o.id, "state": o.state,
              "refunded_minor": o.refunded_minor}))
}
