//! A tiny stand-in for Stripe's API: `POST /v1/checkout/sessions` answers a session id
//! and a checkout URL (one session per `Idempotency-Key`, like Stripe), checks the
//! bearer secret key, and records every request. [`MockStripe::completed_event`] builds
//! the `checkout.session.completed` event Stripe would send once the member paid, and
//! [`sign`] signs it the way Stripe does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One recorded `POST /v1/checkout/sessions`.
#[derive(Debug, Clone)]
pub struct CheckoutCall {
    pub authorized: bool,
    pub idempotency_key: Option<String>,
    pub form: HashMap<String, String>,
    pub session: Value,
}

#[derive(Default)]
struct State {
    calls: Vec<CheckoutCall>,
    by_key: HashMap<String, Value>,
}

pub struct MockStripe {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockStripe {
    /// Serves on a free local port; requests must carry `Bearer {secret_key}`.
    pub async fn start(secret_key: &str) -> std::io::Result<MockStripe> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let st = Arc::clone(&state);
        let expected = format!("Bearer {secret_key}");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                let expected = expected.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let st = Arc::clone(&st);
                        let expected = expected.clone();
                        async move { Ok::<_, Infallible>(answer(req, &st, &expected).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(MockStripe {
            base_url,
            state,
            task,
        })
    }

    pub fn calls(&self) -> Vec<CheckoutCall> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    /// The event Stripe sends when the session was paid (the session as created, with
    /// `payment_status = paid` and a payment intent).
    pub fn completed_event(session: &Value) -> Value {
        let mut obj = session.clone();
        if let Some(o) = obj.as_object_mut() {
            o.insert("payment_status".into(), json!("paid"));
            o.insert("status".into(), json!("complete"));
            let sid = session.get("id").and_then(Value::as_str).unwrap_or("cs");
            o.insert("payment_intent".into(), json!(format!("pi_{sid}")));
        }
        json!({"id": format!("evt_{}", obj.get("id").and_then(Value::as_str).unwrap_or("")),
               "object": "event", "type": "checkout.session.completed",
               "data": {"object": obj}})
    }
}

/// `Stripe-Signature` header value for `body` signed at `t` with the endpoint secret.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn respond(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    st: &Mutex<State>,
    expected_auth: &str,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    if parts.method != http::Method::POST || parts.uri.path() != "/v1/checkout/sessions" {
        return respond(
            404,
            json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}),
        );
    }
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorized = header("authorization").as_deref() == Some(expected_auth);
    let idempotency_key = header("idempotency-key");
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let form: HashMap<String, String> = form_urlencoded::parse(&bytes).into_owned().collect();
    let Ok(mut s) = st.lock() else {
        return respond(500, json!({"error": {"message": "poisoned"}}));
    };
    if !authorized {
        s.calls.push(CheckoutCall {
            authorized,
            idempotency_key,
            form,
            session: Value::Null,
        });
        return respond(
            401,
            json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}),
        );
    }
    if let Some(prev) = idempotency_key
        .as_ref()
        .and_then(|k| s.by_key.get(k))
        .cloned()
    {
        return respond(200, prev);
    }
    let n = s.calls.len() + 1;
    let id = format!("cs_test_{n:04}");
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let amount: u64 = get("line_items[0][price_data][unit_amount]")
        .parse()
        .unwrap_or(0);
    let session = json!({
        "id": id, "object": "checkout.session", "mode": get("mode"),
        "url": format!("https://checkout.stripe.test/c/pay/{id}"),
        "amount_total": amount, "currency": get("line_items[0][price_data][currency]"),
        "client_reference_id": get("client_reference_id"),
        "metadata": {"order_id": get("metadata[order_id]")},
        "payment_status": "unpaid", "status": "open",
        "success_url": get("success_url"), "cancel_url": get("cancel_url"),
    });
    if let Some(k) = &idempotency_key {
        s.by_key.insert(k.clone(), session.clone());
    }
    s.calls.push(CheckoutCall {
        authorized,
        idempotency_key,
        form,
        session: session.clone(),
    });
    respond(200, session)
}
