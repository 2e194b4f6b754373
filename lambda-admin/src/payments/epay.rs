//! The EPay-style gateway (the common front for Alipay and WeChat Pay): a signed submit
//! URL for the browser, the asynchronous notify (answered with plain `success`), and the
//! browser return page.
//!
//! Signature: MD5 (lower-case hex) of the non-empty parameters except `sign` and
//! `sign_type`, sorted by name, joined `k=v&k=v` without URL encoding, followed directly by
//! the merchant key.

use std::collections::{BTreeMap, HashMap};

use lambda_http::{Body, Response};
use md5::{Digest, Md5};
use tollbooth_core::auth::constant_time_eq;

use crate::app::{esc, raw_response, AppState, Ctx};
use crate::store::ItemStore;
use crate::sync::EdgeSync;

use super::fulfil::{accept_payment, run_outbox, Payment};
use super::order::{format_minor, load_order, parse_decimal, Order, PaymentProvider};
use super::EpaySettings;

/// The MD5 signature of a parameter set.
pub fn sign(params: &BTreeMap<String, String>, key: &[u8]) -> String {
    let joined = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && k.as_str() != "sign" && k.as_str() != "sign_type")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut h = Md5::new();
    h.update(joined.as_bytes());
    h.update(key);
    hex::encode(h.finalize())
}

/// Whether `params` carry a valid `sign` (constant-time compare).
pub fn verify(params: &HashMap<String, String>, key: &[u8]) -> bool {
    let Some(given) = params.get("sign") else {
        return false;
    };
    if params
        .get("sign_type")
        .is_some_and(|t| !t.eq_ignore_ascii_case("MD5"))
    {
        return false;
    }
    let sorted: BTreeMap<String, String> =
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let expected = sign(&sorted, key);
    constant_time_eq(given.to_ascii_lowercase().as_bytes(), expected.as_bytes())
}

/// The browser's URL to pay `order` through the gateway (`type` = alipay, wxpay, ...).
pub fn submit_url(cfg: &EpaySettings, public_url: &str, order: &Order, pay_type: &str) -> String {
    let mut p = BTreeMap::new();
    p.insert("pid".to_owned(), cfg.pid.clone());
    p.insert("type".to_owned(), pay_type.to_owned());
    p.insert("out_trade_no".to_owned(), order.id.clone());
    p.insert(
        "notify_url".to_owned(),
        format!("{public_url}/webhooks/epay/notify"),
    );
    p.insert(
        "return_url".to_owned(),
        format!("{public_url}/webhooks/epay/return"),
    );
    p.insert("name".to_owned(), order.description.clone());
    p.insert(
        "money".to_owned(),
        format_minor(order.amount_minor, &order.currency),
    );
    let signature = sign(&p, &cfg.key.0);
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &p {
        q.append_pair(k, v);
    }
    q.append_pair("sign", &signature)
        .append_pair("sign_type", "MD5");
    format!("{}/submit.php?{}", cfg.api_base, q.finish())
}

/// Parameters from the query (GET) or the form body (POST).
fn params(ctx: &Ctx) -> HashMap<String, String> {
    let mut p = ctx.query.clone();
    if ctx.method == "POST" {
        p.extend(ctx.form());
    }
    p
}

enum Outcome {
    Accepted(Box<Order>),
    /// Signed correctly, but not a successful trade (yet).
    NotPaid,
    Refused(u16, String),
}

async fn process<S: ItemStore, E: EdgeSync>(st: &AppState<S, E>, ctx: &Ctx) -> Outcome {
    let Some(cfg) = &st.payments.epay else {
        return Outcome::Refused(503, "EPay is not configured".into());
    };
    let p = params(ctx);
    if !verify(&p, &cfg.key.0) {
        return Outcome::Refused(400, "bad signature".into());
    }
    if p.get("pid") != Some(&cfg.pid) {
        return Outcome::Refused(400, "unknown merchant".into());
    }
    if p.get("trade_status").map(String::as_str) != Some("TRADE_SUCCESS") {
        return Outcome::NotPaid;
    }
    let Some(order_id) = p.get("out_trade_no") else {
        return Outcome::Refused(400, "out_trade_no is missing".into());
    };
    let Some(amount) = p.get("money").and_then(|m| parse_decimal(m, &cfg.currency)) else {
        return Outcome::Refused(400, "money is malformed".into());
    };
    let pay = Payment {
        provider: PaymentProvider::Epay,
        amount_minor: amount,
        currency: cfg.currency.clone(),
        provider_ref: Some(order_id.clone()),
        payment_ref: p.get("trade_no").filter(|t| !t.is_empty()).cloned(),
    };
    let result = accept_payment(st, order_id, &pay, ctx.now).await;
    let _ = run_outbox(st, ctx.now, false, 20).await;
    match result {
        Ok(acc) => Outcome::Accepted(Box::new(acc.order().clone())),
        Err(e) => Outcome::Refused(e.status, e.message),
    }
}

/// `GET|POST /webhooks/epay/notify`: the gateway retries until it reads `success`.
pub async fn notify_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> Response<Body> {
    match process(st, ctx).await {
        Outcome::Accepted(_) | Outcome::NotPaid => {
            raw_response(200, "text/plain; charset=utf-8", "success".into())
        }
        Outcome::Refused(status, _) => {
            raw_response(status.max(400), "text/plain; charset=utf-8", "fail".into())
        }
    }
}

/// `GET /webhooks/epay/return`: the member's browser lands here after paying. The same
/// signed parameters arrive, so a verified success is accepted too (idempotently).
pub async fn return_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> Response<Body> {
    let (status, title, detail) = match process(st, ctx).await {
        Outcome::Accepted(o) => (
            200,
            "Payment received",
            format!(
                "Order {} ({} {}) is {}.",
                o.id,
                format_minor(o.amount_minor, &o.currency),
                o.currency,
                o.state.as_str()
            ),
        ),
        Outcome::NotPaid => {
            let state = match params(ctx).get("out_trade_no") {
                Some(id) => load_order(&st.store, id)
                    .await
                    .ok()
                    .flatten()
                    .map(|o| o.effective_state(ctx.now).as_str())
                    .unwrap_or("unknown"),
                None => "unknown",
            };
            (
                200,
                "Payment not completed",
                format!("The order is {state}."),
            )
        }
        Outcome::Refused(s, msg) => (s.max(400), "Payment not verified", msg),
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{d}</p><p><a href=\"/\">Back</a></p></body></html>",
        t = esc(title),
        d = esc(&detail)
    );
    raw_response(status, "text/html; charset=utf-8", html)
}
