//! Payments over the in-memory store, a fake Stripe API and a fake edge ledger that
//! applies each credit id once, like the worker does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use lambda_http::{Body, Response};
use serde_json::{json, Value};
use tollbooth_core::auth::{JwtKey, JwtKeySet};
use tollbooth_core::billing::{AllowanceUnit, PlanPeriod};

use super::stripe::{self, BoxFuture, CheckoutRequest, CheckoutSession, StripeApi, StripeError};
use super::*;
use crate::app::{handle_ctx, Ctx, Policy};
use crate::config::Secret;
use crate::model::{self, Plan};
use crate::store::MemoryStore;
use crate::sync::{SyncCall, SyncError};

const NOW: u64 = 1_800_000_000;
const WHSEC: &[u8] = b"whsec_test_secret";
const EPAY_KEY: &[u8] = b"epay-merchant-key";

/// The worker's ledger in miniature: credits applied once per `credit_id`, allowances
/// once per `grant_id`; can be taken down.
#[derive(Default, Clone)]
struct Ledger {
    down: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<SyncCall>>>,
    applied: Arc<Mutex<BTreeMap<String, i64>>>,
    grants: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl Ledger {
    fn balance(&self, member: &str) -> i64 {
        let _ = member;
        self.applied.lock().unwrap().values().sum()
    }
    fn credit_sends(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path.contains("/credits"))
            .count()
    }
}

impl EdgeSync for Ledger {
    async fn send(&self, call: SyncCall) -> Result<Value, SyncError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SyncError::Unreachable("ledger down".into()));
        }
        self.calls.lock().unwrap().push(call.clone());
        let body = call.body.clone().unwrap_or(Value::Null);
        if call.path.contains("/credits") {
            let id = body["credit_id"].as_str().unwrap().to_owned();
            let amount = body["amount_micros"].as_i64().unwrap();
            self.applied.lock().unwrap().entry(id).or_insert(amount);
        } else if call.path.contains("/allowances") {
            let id = body["grant_id"].as_str().unwrap().to_owned();
            self.grants.lock().unwrap().entry(id).or_insert(body);
        }
        Ok(json!({"ok": true}))
    }
}

#[derive(Default)]
struct FakeStripe {
    requests: Mutex<Vec<CheckoutRequest>>,
}

impl StripeApi for FakeStripe {
    fn create_checkout_session<'a>(
        &'a self,
        req: &'a CheckoutRequest,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>> {
        Box::pin(async move {
            self.requests.lock().unwrap().push(req.clone());
            Ok(CheckoutSession {
                id: format!("cs_test_{}", req.order_id),
                url: format!("https://checkout.stripe.test/pay/{}", req.order_id),
            })
        })
    }
}

type St = AppState<MemoryStore, Ledger>;

fn state() -> (Arc<St>, Arc<FakeStripe>) {
    let fake = Arc::new(FakeStripe::default());
    let mut payments = Payments::defaults();
    payments.public_url = "https://gw.example.com".into();
    payments.stripe = Some(StripeSettings {
        api: fake.clone(),
        webhook_secret: Secret(WHSEC.to_vec()),
    });
    payments.epay = Some(EpaySettings {
        api_base: "https://pay.example.cn".into(),
        pid: "1001".into(),
        key: Secret(EPAY_KEY.to_vec()),
        currency: "CNY".into(),
    });
    payments.topup_rates.insert("CNY".into(), 1_400);
    let st = AppState {
        store: MemoryStore::default(),
        sync: Ledger::default(),
        jwt: JwtKeySet::new(JwtKey::new(
            "k1",
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )),
        master_key: [7u8; 32],
        policy: Policy::default(),
        payments,
    };
    (Arc::new(st), fake)
}

struct Resp {
    status: u16,
    body: Value,
    text: String,
}

fn finish(r: Response<Body>) -> Resp {
    let text = String::from_utf8_lossy(r.body().as_ref()).to_string();
    Resp {
        status: r.status().as_u16(),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

async fn req(
    st: &St,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    now: u64,
) -> Resp {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let ctx = Ctx {
        method: method.into(),
        path: p.into(),
        query: form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
        headers: h,
        body,
        now,
        source_ip: None,
    };
    finish(handle_ctx(st, ctx).await)
}

async fn json_call(st: &St, method: &str, path: &str, token: Option<&str>, body: Value) -> Resp {
    let headers: Vec<(&str, String)> = token
        .map(|t| vec![("authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    let b = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    req(st, method, path, &headers, b, NOW).await
}

async fn member(st: &St, email: &str) -> (String, String) {
    let r = json_call(
        st,
        "POST",
        "/api/auth/signup",
        None,
        json!({"email": email, "password": "member-password-9"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["token"].as_str().unwrap().to_owned(),
        r.body["member"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn admin(st: &St) -> String {
    crate::admin::bootstrap_admin(&st.store, "root@ops.example.com", "admin-password-1", NOW)
        .await
        .unwrap();
    let r = json_call(
        st,
        "POST",
        "/api/admin/login",
        None,
        json!({"email": "root@ops.example.com", "password": "admin-password-1"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["token"].as_str().unwrap().to_owned();
    // The bootstrap password must be changed before anything else.
    let r = json_call(
        st,
        "POST",
        "/api/admin/password",
        Some(&token),
        json!({"current_password": "admin-password-1", "new_password": "admin-password-2"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    token
}

async fn plan(st: &St) {
    let p = Plan {
        id: "pro".into(),
        name: "Pro".into(),
        price_micros: 9_990_000,
        currency: "USD".into(),
        period: PlanPeriod::Month,
        allowance_amount: 1_000_000,
        allowance_unit: AllowanceUnit::Tokens,
        allowed_models: vec!["*".into()],
        rpm: None,
        tpm: None,
        overage: false,
        visible: true,
        sort_order: 1,
        capture: false,
        priority: 0,
    };
    model::put(&st.store, p.item().unwrap()).await.unwrap();
}

async fn topup(st: &St, token: &str, cents: u64) -> String {
    let r = json_call(
        st,
        "POST",
        "/api/me/orders",
        Some(token),
        json!({"kind": "topup", "amount_minor": cents, "currency": "usd", "provider": "stripe"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["order"]["id"].as_str().unwrap().to_owned()
}

fn completed_event(order_id: &str, amount: u64, currency: &str) -> Vec<u8> {
    json!({"id": "evt_1", "type": "checkout.session.completed",
           "data": {"object": {"id": format!("cs_test_{order_id}"), "object": "checkout.session",
               "client_reference_id": order_id, "metadata": {"order_id": order_id},
               "amount_total": amount, "currency": currency, "payment_status": "paid",
               "payment_intent": format!("pi_{order_id}")}}})
    .to_string()
    .into_bytes()
}

async fn deliver(st: &St, body: &[u8], t: u64, now: u64) -> Resp {
    let sig = format!("t={t},v1={}", stripe::sign(WHSEC, t, body));
    req(
        st,
        "POST",
        "/webhooks/stripe",
        &[("stripe-signature", sig)],
        body.to_vec(),
        now,
    )
    .await
}

async fn order_state(st: &St, id: &str) -> Order {
    order::load_order(&st.store, id).await.unwrap().unwrap()
}

#[test]
fn test_stripe_signature_rules() {
    let body = br#"{"a":1}"#;
    let good = stripe::sign(WHSEC, NOW, body);
    let ok_header = format!("t={NOW},v1=deadbeef,v1={good}");
    assert_eq!(
        stripe::verify_signature(Some(&ok_header), body, WHSEC, NOW + 10),
        Ok(())
    );
    use stripe::SignatureError as E;
    assert_eq!(
        stripe::verify_signature(None, body, WHSEC, NOW),
        Err(E::Missing)
    );
    assert_eq!(
        stripe::verify_signature(Some("garbage"), body, WHSEC, NOW),
        Err(E::Malformed)
    );
    assert_eq!(
        stripe::verify_signature(Some(&format!("t={NOW}")), body, WHSEC, NOW),
        Err(E::Malformed)
    );
    assert_eq!(
        stripe::verify_signature(Some(&ok_header), body, WHSEC, NOW + 301),
        Err(E::Stale)
    );
    assert_eq!(
        stripe::verify_signature(Some(&ok_header), b"{\"a\":2}", WHSEC, NOW),
        Err(E::Mismatch)
    );
    assert_eq!(
        stripe::verify_signature(Some(&ok_header), body, b"other", NOW),
        Err(E::Mismatch)
    );
    // The signature covers the timestamp: moving t invalidates it.
    let moved = format!("t={},v1={good}", NOW + 1);
    assert_eq!(
        stripe::verify_signature(Some(&moved), body, WHSEC, NOW),
        Err(E::Mismatch)
    );
}

#[test]
fn test_currency_arithmetic_is_exact() {
    assert_eq!(order::micros_to_minor(9_990_000, "USD"), Some(999));
    assert_eq!(order::micros_to_minor(9_990_001, "USD"), None);
    assert_eq!(order::micros_to_minor(1_000_000, "JPY"), Some(1));
    assert_eq!(order::format_minor(1234, "CNY"), "12.34");
    assert_eq!(order::format_minor(5, "CNY"), "0.05");
    assert_eq!(order::format_minor(500, "JPY"), "500");
    assert_eq!(order::parse_decimal("12.34", "CNY"), Some(1234));
    assert_eq!(order::parse_decimal("12.3", "CNY"), Some(1230));
    assert_eq!(order::parse_decimal("12", "CNY"), Some(1200));
    assert_eq!(order::parse_decimal("12.345", "CNY"), None);
    assert_eq!(order::parse_decimal("-1.00", "CNY"), None);
    assert_eq!(order::parse_decimal("1e3", "CNY"), None);
    assert_eq!(order::parse_decimal("", "CNY"), None);
}

#[test]
fn test_config_from_lookup() {
    let env: HashMap<&str, &str> = HashMap::from([
        ("STRIPE_SECRET_KEY", "sk_test_x"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ("STRIPE_API_BASE", "http://127.0.0.1:9"),
        ("TOPUP_RATES", "usd:10000,CNY:1400"),
        ("PAYMENTS_PUBLIC_URL", "https://gw.example.com/"),
    ]);
    let p = Payments::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
    assert!(p.stripe.is_some());
    assert!(p.epay.is_none());
    assert_eq!(p.public_url, "https://gw.example.com");
    assert_eq!(p.topup_rates.get("CNY"), Some(&1400));
    assert!(!format!("{p:?}").contains("sk_test_x"));
    let bad = Payments::from_lookup(|k| (k == "TOPUP_RATES").then(|| "usd:abc".to_owned()));
    assert_eq!(bad.unwrap_err().name, "TOPUP_RATES");
}

#[tokio::test]
async fn test_topup_checkout_webhook_credits_once_sequentially() {
    let (st, fake) = state();
    let (tok, mid) = member(&st, "a@example.com").await;
    let oid = topup(&st, &tok, 1000).await;
    let sent = fake.requests.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].currency, "usd");
    assert_eq!(sent[0].amount_minor, 1000);
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Pending);
    let body = completed_event(&oid, 1000, "usd");
    for i in 0..10 {
        let r = deliver(&st, &body, NOW + i, NOW + i).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["replay"], json!(i > 0));
    }
    let o = order_state(&st, &oid).await;
    assert_eq!(o.state, OrderState::Fulfilled);
    assert_eq!(st.sync.balance(&mid), 10_000_000, "1000 cents = 10 dollars");
    assert_eq!(st.sync.credit_sends(), 1, "replays call the edge no more");
    let calls = st.sync.calls.lock().unwrap().clone();
    let credit = calls.iter().find(|c| c.path.contains("/credits")).unwrap();
    assert_eq!(credit.path, format!("/internal/v1/wallets/{mid}/credits"));
    assert_eq!(credit.body.as_ref().unwrap()["credit_id"], json!(oid));
    // The outbox is empty and the member sees the order.
    assert!(st
        .store
        .query(crate::store::Query::table("OUTBOX", ""))
        .await
        .unwrap()
        .is_empty());
    let r = json_call(&st, "GET", "/api/me/orders", Some(&tok), Value::Null).await;
    assert_eq!(r.body["data"][0]["state"], "fulfilled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_ten_concurrent_deliveries_credit_once() {
    let (st, _) = state();
    let (tok, mid) = member(&st, "b@example.com").await;
    let oid = topup(&st, &tok, 2500).await;
    let body = completed_event(&oid, 2500, "usd");
    let tasks = (0..10).map(|_| {
        let st = Arc::clone(&st);
        let body = body.clone();
        tokio::spawn(async move { deliver(&st, &body, NOW, NOW).await.status })
    });
    let statuses: Vec<u16> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Fulfilled);
    assert_eq!(st.sync.balance(&mid), 25_000_000);
    assert_eq!(st.sync.applied.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn test_bad_missing_stale_signatures_change_nothing() {
    let (st, _) = state();
    let (tok, _) = member(&st, "c@example.com").await;
    let oid = topup(&st, &tok, 1000).await;
    let body = completed_event(&oid, 1000, "usd");
    let before = st.store.dump();
    let edge_before = st.sync.calls.lock().unwrap().len();
    let wrong = stripe::sign(b"not-the-secret", NOW, &body);
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("stripe-signature", format!("t={NOW},v1={wrong}"))],
        vec![("stripe-signature", "t=abc,v1=00".to_owned())],
        vec![(
            "stripe-signature",
            format!(
                "t={},v1={}",
                NOW - 301,
                stripe::sign(WHSEC, NOW - 301, &body)
            ),
        )],
        vec![(
            "stripe-signature",
            format!(
                "t={},v1={}",
                NOW + 400,
                stripe::sign(WHSEC, NOW + 400, &body)
            ),
        )],
    ];
    for h in cases {
        let r = req(&st, "POST", "/webhooks/stripe", &h, body.clone(), NOW).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "bad_signature");
    }
    // A body changed after signing.
    let sig = format!("t={NOW},v1={}", stripe::sign(WHSEC, NOW, &body));
    let tampered = completed_event(&oid, 1, "usd");
    let r = req(
        &st,
        "POST",
        "/webhooks/stripe",
        &[("stripe-signature", sig)],
        tampered,
        NOW,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(st.store.dump(), before, "a refused webhook wrote something");
    assert_eq!(st.sync.calls.lock().unwrap().len(), edge_before);
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Pending);
}

#[tokio::test]
async fn test_amount_or_currency_mismatch_is_refused_and_flagged() {
    let (st, _) = state();
    let (tok, _) = member(&st, "d@example.com").await;
    let oid = topup(&st, &tok, 1000).await;
    let r = deliver(&st, &completed_event(&oid, 999, "usd"), NOW, NOW).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = deliver(&st, &completed_event(&oid, 1000, "eur"), NOW, NOW).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let o = order_state(&st, &oid).await;
    assert_eq!(o.state, OrderState::Pending);
    assert_eq!(o.flags.len(), 2, "{:?}", o.flags);
    assert_eq!(st.sync.credit_sends(), 0);
    // Flagged orders show up for admins.
    let at = admin(&st).await;
    let r = json_call(
        &st,
        "GET",
        "/api/admin/orders?state=flagged",
        Some(&at),
        Value::Null,
    )
    .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "{}", r.text);
}

#[tokio::test]
async fn test_edge_down_then_outbox_credits_exactly_once() {
    let (st, _) = state();
    let (tok, mid) = member(&st, "e@example.com").await;
    let oid = topup(&st, &tok, 500).await;
    st.sync.down.store(true, Ordering::SeqCst);
    let body = completed_event(&oid, 500, "usd");
    let r = deliver(&st, &body, NOW, NOW).await;
    assert_eq!(
        r.status, 200,
        "the payment is recorded even if the edge is down"
    );
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Paid);
    // Replays while down: still paid, nothing lost, nothing applied.
    assert_eq!(deliver(&st, &body, NOW + 100, NOW + 100).await.status, 200);
    assert_eq!(st.sync.balance(&mid), 0);
    let at = admin(&st).await;
    let r = json_call(&st, "GET", "/api/admin/outbox", Some(&at), Value::Null).await;
    assert_eq!(r.body["data"][0]["order_id"], json!(oid), "{}", r.text);
    st.sync.down.store(false, Ordering::SeqCst);
    let r = json_call(
        &st,
        "POST",
        "/api/admin/outbox/run?force=1",
        Some(&at),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["fulfilled"][0]["order_id"], json!(oid));
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Fulfilled);
    assert_eq!(st.sync.balance(&mid), 5_000_000);
    // Runs and replays after recovery apply nothing more.
    json_call(
        &st,
        "POST",
        "/api/admin/outbox/run?force=1",
        Some(&at),
        Value::Null,
    )
    .await;
    deliver(&st, &body, NOW + 200, NOW + 200).await;
    assert_eq!(st.sync.balance(&mid), 5_000_000);
    assert_eq!(st.sync.credit_sends(), 1);
}

#[tokio::test]
async fn test_outbox_runs_on_the_next_webhook_after_backoff() {
    let (st, _) = state();
    let (tok, mid) = member(&st, "f@example.com").await;
    let o1 = topup(&st, &tok, 300).await;
    let o2 = topup(&st, &tok, 400).await;
    st.sync.down.store(true, Ordering::SeqCst);
    deliver(&st, &completed_event(&o1, 300, "usd"), NOW, NOW).await;
    st.sync.down.store(false, Ordering::SeqCst);
    // The lease has passed: the next delivery (another order) also finishes o1.
    let later = NOW + fulfil::LEASE_SECS + 1;
    deliver(&st, &completed_event(&o2, 400, "usd"), later, later).await;
    assert_eq!(order_state(&st, &o1).await.state, OrderState::Fulfilled);
    assert_eq!(order_state(&st, &o2).await.state, OrderState::Fulfilled);
    assert_eq!(st.sync.balance(&mid), 7_000_000);
}

#[tokio::test]
async fn test_plan_order_grants_allowance_by_order_id() {
    let (st, _) = state();
    plan(&st).await;
    let (tok, mid) = member(&st, "g@example.com").await;
    let r = json_call(
        &st,
        "POST",
        "/api/me/orders",
        Some(&tok),
        json!({"kind": "plan", "plan_id": "pro", "provider": "stripe"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["order"]["amount_minor"], 999);
    let oid = r.body["order"]["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(
            deliver(&st, &completed_event(&oid, 999, "usd"), NOW, NOW)
                .await
                .status,
            200
        );
    }
    let grants = st.sync.grants.lock().unwrap().clone();
    assert_eq!(grants.len(), 1);
    let g = &grants[&oid];
    assert_eq!(g["plan_id"], "pro");
    assert_eq!(g["amount"], 1_000_000);
    assert_eq!(g["period_start"], NOW);
    let r = json_call(&st, "GET", "/api/me/subscription", Some(&tok), Value::Null).await;
    assert_eq!(r.body["subscription"]["plan_id"], "pro", "{}", r.text);
    assert_eq!(r.body["subscription"]["grant_id"], json!(oid));
    let _ = mid;
}

#[tokio::test]
async fn test_refund_debits_the_wallet_once() {
    let (st, _) = state();
    let (tok, mid) = member(&st, "h@example.com").await;
    let oid = topup(&st, &tok, 1000).await;
    deliver(&st, &completed_event(&oid, 1000, "usd"), NOW, NOW).await;
    let refund = |amount: u64| {
        json!({"id": "evt_r", "type": "charge.refunded", "data": {"object": {
            "id": "ch_1", "object": "charge", "payment_intent": format!("pi_{oid}"),
            "amount": 1000, "amount_refunded": amount, "currency": "usd", "metadata": {}}}})
        .to_string()
        .into_bytes()
    };
    // Partial, replayed, then full.
    for _ in 0..2 {
        let r = deliver(&st, &refund(400), NOW, NOW).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(st.sync.balance(&mid), 6_000_000);
    deliver(&st, &refund(1000), NOW, NOW).await;
    assert_eq!(st.sync.balance(&mid), 0);
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Refunded);
    deliver(&st, &refund(1000), NOW, NOW).await;
    assert_eq!(st.sync.balance(&mid), 0);
}

fn epay_params(cfg_key: &[u8], oid: &str, money: &str, status: &str) -> Vec<(String, String)> {
    let mut p = BTreeMap::new();
    for (k, v) in [
        ("pid", "1001"),
        ("trade_no", "2026112300001"),
        ("out_trade_no", oid),
        ("type", "alipay"),
        ("name", "Top-up"),
        ("money", money),
        ("trade_status", status),
    ] {
        p.insert(k.to_owned(), v.to_owned());
    }
    let sign = epay::sign(&p, cfg_key);
    let mut v: Vec<(String, String)> = p.into_iter().collect();
    v.push(("sign".into(), sign));
    v.push(("sign_type".into(), "MD5".into()));
    v
}

fn qs(p: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in p {
        s.append_pair(k, v);
    }
    s.finish()
}

#[test]
fn test_epay_sign_known_vector() {
    // md5("a=1&b=2&c=3KEY"), with empty values and sign/sign_type left out.
    let mut p = BTreeMap::new();
    for (k, v) in [
        ("c", "3"),
        ("a", "1"),
        ("b", "2"),
        ("d", ""),
        ("sign", "x"),
        ("sign_type", "MD5"),
    ] {
        p.insert(k.to_owned(), v.to_owned());
    }
    use md5::{Digest, Md5};
    let expected = hex::encode(Md5::digest(b"a=1&b=2&c=3KEY"));
    assert_eq!(epay::sign(&p, b"KEY"), expected);
}

#[tokio::test]
async fn test_epay_order_notify_and_return() {
    let (st, _) = state();
    let (tok, mid) = member(&st, "i@example.com").await;
    let r = json_call(
        &st,
        "POST",
        "/api/me/orders",
        Some(&tok),
        json!({"kind": "topup", "amount_minor": 1000, "currency": "CNY", "provider": "epay",
               "pay_type": "wxpay"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let oid = r.body["order"]["id"].as_str().unwrap().to_owned();
    let url = r.body["checkout_url"].as_str().unwrap();
    assert!(
        url.starts_with("https://pay.example.cn/submit.php?"),
        "{url}"
    );
    let q: HashMap<String, String> =
        form_urlencoded::parse(url.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["money"], "10.00");
    assert_eq!(q["type"], "wxpay");
    assert_eq!(
        q["notify_url"],
        "https://gw.example.com/webhooks/epay/notify"
    );
    assert!(epay::verify(&q, EPAY_KEY), "the submit URL is signed");

    // Bad signature, wrong money: refused, nothing credited.
    let mut bad = epay_params(EPAY_KEY, &oid, "10.00", "TRADE_SUCCESS");
    bad.iter_mut().find(|(k, _)| k == "money").unwrap().1 = "0.01".into();
    let r = req(
        &st,
        "GET",
        &format!("/webhooks/epay/notify?{}", qs(&bad)),
        &[],
        vec![],
        NOW,
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (400, "fail"));
    let wrong = epay_params(EPAY_KEY, &oid, "9.99", "TRADE_SUCCESS");
    let r = req(
        &st,
        "GET",
        &format!("/webhooks/epay/notify?{}", qs(&wrong)),
        &[],
        vec![],
        NOW,
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(!order_state(&st, &oid).await.flags.is_empty());
    assert_eq!(st.sync.balance(&mid), 0);

    // Not yet paid: acknowledged, nothing happens.
    let waiting = epay_params(EPAY_KEY, &oid, "10.00", "WAIT_BUYER_PAY");
    let r = req(
        &st,
        "GET",
        &format!("/webhooks/epay/notify?{}", qs(&waiting)),
        &[],
        vec![],
        NOW,
    )
    .await;
    assert_eq!(r.text, "success");
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Pending);

    // Paid, notified by POST twice and by GET, then the browser returns.
    let good = epay_params(EPAY_KEY, &oid, "10.00", "TRADE_SUCCESS");
    for _ in 0..2 {
        let r = req(
            &st,
            "POST",
            "/webhooks/epay/notify",
            &[],
            qs(&good).into_bytes(),
            NOW,
        )
        .await;
        assert_eq!((r.status, r.text.as_str()), (200, "success"));
    }
    let r = req(
        &st,
        "GET",
        &format!("/webhooks/epay/notify?{}", qs(&good)),
        &[],
        vec![],
        NOW,
    )
    .await;
    assert_eq!(r.text, "success");
    let r = req(
        &st,
        "GET",
        &format!("/webhooks/epay/return?{}", qs(&good)),
        &[],
        vec![],
        NOW,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("Payment received") && r.text.contains("fulfilled"),
        "{}",
        r.text
    );
    assert_eq!(
        st.sync.balance(&mid),
        1_400_000,
        "1000 fen at 1400 micros each"
    );
    assert_eq!(st.sync.credit_sends(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_redemption_code_once_under_concurrency() {
    let (st, _) = state();
    plan(&st).await;
    let at = admin(&st).await;
    let r = json_call(
        &st,
        "POST",
        "/api/admin/redemption-codes",
        Some(&at),
        json!({"count": 3, "wallet_micros": 2_000_000, "note": "launch"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let codes: Vec<String> = serde_json::from_value(r.body["codes"].clone()).unwrap();
    assert_eq!(codes.len(), 3);
    assert!(
        !st.store.dump().contains(&codes[0]),
        "codes are stored hashed"
    );
    let mut members = Vec::new();
    for i in 0..4 {
        members.push(member(&st, &format!("r{i}@example.com")).await);
    }
    let tasks = members.iter().map(|(tok, _)| {
        let st = Arc::clone(&st);
        let tok = tok.clone();
        // Codes are accepted in any case and without dashes.
        let code = codes[0].to_lowercase().replace('-', "");
        tokio::spawn(async move {
            json_call(
                &st,
                "POST",
                "/api/me/redeem",
                Some(&tok),
                json!({"code": code}),
            )
            .await
            .status
        })
    });
    let statuses: Vec<u16> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        3,
        "{statuses:?}"
    );
    let total: i64 = st.sync.applied.lock().unwrap().values().sum();
    assert_eq!(total, 2_000_000);
    // Unknown and expired codes.
    let (tok, _) = &members[0];
    let r = json_call(
        &st,
        "POST",
        "/api/me/redeem",
        Some(tok),
        json!({"code": "TB-NOPE"}),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = json_call(
        &st,
        "POST",
        "/api/admin/redemption-codes",
        Some(&at),
        json!({"count": 1, "plan_id": "pro", "expires_at": NOW + 10}),
    )
    .await;
    let plan_code = r.body["codes"][0].as_str().unwrap().to_owned();
    let late = req(
        &st,
        "POST",
        "/api/me/redeem",
        &[("authorization", format!("Bearer {tok}"))],
        json!({"code": plan_code}).to_string().into_bytes(),
        NOW + 11,
    )
    .await;
    assert_eq!(late.status, 410);
    let r = json_call(
        &st,
        "POST",
        "/api/me/redeem",
        Some(tok),
        json!({"code": plan_code}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["order"]["state"], "fulfilled");
    assert_eq!(st.sync.grants.lock().unwrap().len(), 1);
    let r = json_call(
        &st,
        "GET",
        "/api/admin/redemption-codes",
        Some(&at),
        Value::Null,
    )
    .await;
    let redeemed: Vec<u64> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["redeemed"].as_u64().unwrap())
        .collect();
    assert_eq!(redeemed, vec![1, 1]);
}

#[tokio::test]
async fn test_revenue_per_day_plan_and_state() {
    let (st, _) = state();
    plan(&st).await;
    let (tok, _) = member(&st, "j@example.com").await;
    let o1 = topup(&st, &tok, 1000).await;
    let _pending = topup(&st, &tok, 700).await;
    let r = json_call(
        &st,
        "POST",
        "/api/me/orders",
        Some(&tok),
        json!({"kind": "plan", "plan_id": "pro", "provider": "stripe"}),
    )
    .await;
    let o2 = r.body["order"]["id"].as_str().unwrap().to_owned();
    deliver(&st, &completed_event(&o1, 1000, "usd"), NOW, NOW).await;
    deliver(&st, &completed_event(&o2, 999, "usd"), NOW, NOW).await;
    let at = admin(&st).await;
    let r = json_call(
        &st,
        "GET",
        "/api/admin/analytics/revenue",
        Some(&at),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let day = &r.body["by_day"][0];
    assert_eq!(day["day"], analytics::day_of(NOW));
    assert_eq!(day["net_minor"], 1999);
    assert_eq!(day["orders"], 2);
    let plans: Vec<&str> = r.body["by_plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plan_id"].as_str().unwrap())
        .collect();
    assert_eq!(plans, vec!["pro", "topup"]);
    assert_eq!(r.body["orders_by_state"]["fulfilled"], 2);
    assert_eq!(r.body["orders_by_state"]["pending"], 1);
    // Members cannot read it.
    let r = json_call(
        &st,
        "GET",
        "/api/admin/analytics/revenue",
        Some(&tok),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(analytics::day_of(0), "1970-01-01");
    assert_eq!(analytics::day_of(1_709_164_800), "2024-02-29");
}

#[tokio::test]
async fn test_order_validation() {
    let (st, _) = state();
    plan(&st).await;
    let (tok, _) = member(&st, "k@example.com").await;
    let bad = [
        json!({"kind": "topup", "amount_minor": 1, "currency": "USD", "provider": "stripe"}),
        json!({"kind": "topup", "amount_minor": 1000, "currency": "GBP", "provider": "stripe"}),
        json!({"kind": "topup", "amount_minor": 1000, "currency": "USD", "provider": "epay"}),
        json!({"kind": "topup", "amount_minor": 1000, "currency": "USD", "provider": "code"}),
        json!({"kind": "plan", "plan_id": "nope", "provider": "stripe"}),
        json!({"kind": "plan", "provider": "stripe"}),
    ];
    for b in bad {
        let r = json_call(&st, "POST", "/api/me/orders", Some(&tok), b.clone()).await;
        assert!((400..500).contains(&r.status), "{b} -> {}", r.text);
    }
    let r = json_call(
        &st,
        "POST",
        "/api/me/orders",
        None,
        json!({"kind": "topup"}),
    )
    .await;
    assert_eq!(r.status, 401);
    // Another member cannot read the order.
    let oid = topup(&st, &tok, 1000).await;
    let (other, _) = member(&st, "l@example.com").await;
    let r = json_call(
        &st,
        "GET",
        &format!("/api/me/orders/{oid}"),
        Some(&other),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = json_call(
        &st,
        "GET",
        &format!("/api/me/orders/{oid}"),
        Some(&tok),
        Value::Null,
    )
    .await;
    assert_eq!(r.body["order"]["state"], "pending");
    // Past its lifetime it reads as expired, yet a late verified payment still counts.
    let later = NOW + 2 * 86_400;
    let r = req(
        &st,
        "GET",
        &format!("/api/me/orders/{oid}"),
        &[("authorization", format!("Bearer {tok}"))],
        vec![],
        later,
    )
    .await;
    assert_eq!(r.body["order"]["state"], "expired", "{}", r.text);
    let r = deliver(&st, &completed_event(&oid, 1000, "usd"), later, later).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Fulfilled);
}

async fn plan_order(st: &St, tok: &str) -> String {
    let r = json_call(
        st,
        "POST",
        "/api/me/orders",
        Some(tok),
        json!({"kind": "plan", "plan_id": "pro", "provider": "stripe"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["order"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn test_plan_order_fulfils_the_terms_snapshotted_at_creation() {
    let (st, _) = state();
    plan(&st).await;
    let (tok, _) = member(&st, "snap@example.com").await;
    let oid = plan_order(&st, &tok).await;
    let oid2 = plan_order(&st, &tok).await;
    // The admin edits the plan between the order and the payment...
    let mut edited: Plan = model::load(&st.store, &model::plan_pk("pro"), model::ONE, NOW)
        .await
        .unwrap()
        .unwrap();
    edited.allowance_amount = 5;
    model::put(&st.store, edited.item().unwrap()).await.unwrap();
    let r = deliver(&st, &completed_event(&oid, 999, "usd"), NOW, NOW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let grants = st.sync.grants.lock().unwrap().clone();
    assert_eq!(
        grants[&oid]["amount"], 1_000_000,
        "the terms that were paid for"
    );

    // ...or deletes it: the order still fulfils from its snapshot.
    st.store
        .delete(&model::plan_pk("pro"), model::ONE)
        .await
        .unwrap();
    let r = deliver(&st, &completed_event(&oid2, 999, "usd"), NOW + 1, NOW + 1).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(order_state(&st, &oid2).await.state, OrderState::Fulfilled);
    assert_eq!(st.sync.grants.lock().unwrap()[&oid2]["amount"], 1_000_000);
}

#[tokio::test]
async fn test_dispute_ends_the_plan_like_a_full_refund() {
    let (st, _) = state();
    plan(&st).await;
    let (tok, _) = member(&st, "dispute@example.com").await;
    let oid = plan_order(&st, &tok).await;
    deliver(&st, &completed_event(&oid, 999, "usd"), NOW, NOW).await;
    let r = json_call(&st, "GET", "/api/me/subscription", Some(&tok), Value::Null).await;
    assert_eq!(r.body["subscription"]["status"], "active", "{}", r.text);
    let dispute = json!({"id": "evt_d", "type": "charge.dispute.created", "data": {"object": {
        "id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": format!("pi_{oid}"),
        "amount": 999, "currency": "usd", "reason": "fraudulent"}}})
    .to_string()
    .into_bytes();
    let r = deliver(&st, &dispute, NOW + 60, NOW + 60).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["disputed"], true);
    assert_eq!(order_state(&st, &oid).await.state, OrderState::Refunded);
    let r = json_call(&st, "GET", "/api/me/subscription", Some(&tok), Value::Null).await;
    assert_eq!(r.body["subscription"]["status"], "expired", "{}", r.text);
    // A replayed dispute changes nothing more.
    let r = deliver(&st, &dispute, NOW + 61, NOW + 61).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
