//! Payments end to end over HTTP: the real admin binary on DynamoDB Local (so the
//! conditional writes and transactions are DynamoDB's own), a mock of Stripe's API, and
//! a stand-in for the worker's internal API that verifies signatures and applies each
//! idempotency key once, like the worker. `test_full_path_*` runs the real worker.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tollbooth_core::auth::{
    parse_timestamp, verify_request, SignedRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use tollbooth_tests::harness::{AdminServer, DynamoLocal};
use tollbooth_tests::mock_stripe::{self, MockStripe};

const SYNC_SECRET: &str = "e2e-sync-secret-0123456789abcdef0123";
const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "ops-password-123";
const PW: &str = "member-password-9";
const STRIPE_KEY: &str = "sk_test_e2e_0123456789";
const WHSEC: &str = "whsec_e2e_0123456789";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The worker's internal API in miniature: signature checked, each idempotency key
/// applied once, wallet credits summed per member; `down` answers 503.
#[derive(Clone, Default)]
struct Ledger {
    down: Arc<AtomicBool>,
    applied: Arc<Mutex<HashMap<String, Value>>>,
    deliveries: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Ledger {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        url
    }

    async fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let signed = match (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)) {
            (Some(ts), Some(sig)) => parse_timestamp(&ts).ok().is_some_and(|ts| {
                verify_request(
                    SYNC_SECRET.as_bytes(),
                    &SignedRequest {
                        method: parts.method.as_str(),
                        host: &header("host").unwrap_or_default(),
                        path_and_query: &path,
                        timestamp: ts,
                        body: &body,
                    },
                    &sig,
                    now(),
                    300,
                )
                .is_ok()
            }),
            _ => false,
        };
        self.deliveries.lock().unwrap().push((path.clone(), signed));
        let (status, out) = if self.down.load(Ordering::SeqCst) {
            (503, json!({"error": {"message": "down"}}))
        } else if !signed {
            (401, json!({"error": {"message": "bad signature"}}))
        } else {
            let key = header("x-tollbooth-idempotency-key").unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.applied
                .lock()
                .unwrap()
                .entry(key)
                .or_insert(json!({"path": path, "body": v}));
            (200, json!({"ok": true}))
        };
        let mut resp = hyper::Response::new(Full::new(Bytes::from(out.to_string())));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        resp
    }

    /// Wallet micros applied for a member.
    fn wallet(&self, member: &str) -> i64 {
        self.applied
            .lock()
            .unwrap()
            .values()
            .filter(|v| v["path"] == json!(format!("/internal/v1/wallets/{member}/credits")))
            .map(|v| v["body"]["amount_micros"].as_i64().unwrap())
            .sum()
    }

    fn credit_ids(&self, member: &str) -> Vec<String> {
        self.applied
            .lock()
            .unwrap()
            .values()
            .filter(|v| v["path"] == json!(format!("/internal/v1/wallets/{member}/credits")))
            .map(|v| v["body"]["credit_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

struct Env {
    _dynamo: DynamoLocal,
    admin: AdminServer,
    stripe: MockStripe,
    ledger: Ledger,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Env {
        let dynamo = DynamoLocal::start().await.unwrap();
        let ledger = Ledger::default();
        let edge = ledger.start().await;
        let stripe = MockStripe::start(STRIPE_KEY).await.unwrap();
        let admin = AdminServer::start(
            &dynamo.endpoint,
            &[
                ("EDGE_ORIGIN", &edge),
                ("SYNC_SECRET", SYNC_SECRET),
                ("ADMIN_EMAIL", ADMIN_EMAIL),
                ("ADMIN_PASSWORD", ADMIN_PASSWORD),
                ("STRIPE_SECRET_KEY", STRIPE_KEY),
                ("STRIPE_WEBHOOK_SECRET", WHSEC),
                ("STRIPE_API_BASE", &stripe.base_url),
                ("PAYMENTS_PUBLIC_URL", "https://gw.example.com"),
            ],
        )
        .await
        .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Env {
            _dynamo: dynamo,
            admin,
            stripe,
            ledger,
            http,
        }
    }

    async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(
            method.parse().unwrap(),
            format!("{}{path}", self.admin.base_url),
        );
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn webhook(&self, body: &[u8], signature: Option<String>) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}/webhooks/stripe", self.admin.base_url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            r = r.header("Stripe-Signature", s);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin_token(&self) -> String {
        tollbooth_tests::admin_client::admin_login(
            &self.http,
            &self.admin.base_url,
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
        )
        .await
    }

    async fn member(&self, email: &str) -> (String, String) {
        let (s, b) = self
            .req(
                "POST",
                "/api/auth/signup",
                None,
                Some(json!({"email": email, "password": PW})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        (
            b["token"].as_str().unwrap().to_owned(),
            b["member"]["id"].as_str().unwrap().to_owned(),
        )
    }

    /// A Stripe top-up order; returns the order id and the session the mock created.
    async fn topup(&self, token: &str, cents: u64) -> (String, Value) {
        let (s, b) = self
            .req(
                "POST",
                "/api/me/orders",
                Some(token),
                Some(json!({"kind": "topup", "amount_minor": cents, "currency": "USD", "provider": "stripe"})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let oid = b["order"]["id"].as_str().unwrap().to_owned();
        let call = self
            .stripe
            .calls()
            .into_iter()
            .find(|c| c.form.get("client_reference_id") == Some(&oid))
            .unwrap();
        assert_eq!(b["checkout_url"], call.session["url"]);
        (oid, call.session)
    }

    async fn order(&self, token: &str, oid: &str) -> Value {
        let (s, b) = self
            .req("GET", &format!("/api/me/orders/{oid}"), Some(token), None)
            .await;
        assert_eq!(s, 200, "{b}");
        b["order"].clone()
    }
}

fn event_bytes(session: &Value) -> Vec<u8> {
    MockStripe::completed_event(session)
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_stripe_payments_on_dynamodb_local() {
    let env = Env::start().await;
    let admin = env.admin_token().await;
    let (tok, mid) = env.member("payer@example.com").await;

    // Checkout: the mock saw the secret key, one idempotency key per order, exact amount.
    let (oid, session) = env.topup(&tok, 1500).await;
    let call = env.stripe.calls().pop().unwrap();
    assert!(call.authorized);
    assert_eq!(
        call.idempotency_key.as_deref(),
        Some(format!("checkout-{oid}").as_str())
    );
    assert_eq!(call.form["line_items[0][price_data][unit_amount]"], "1500");
    assert_eq!(call.form["line_items[0][price_data][currency]"], "usd");
    assert_eq!(call.form["payment_intent_data[metadata][order_id]"], oid);
    assert_eq!(env.order(&tok, &oid).await["state"], "pending");

    // Missing, bad and stale signatures: 400, nothing changes.
    let body = event_bytes(&session);
    let t = now();
    for sig in [
        None,
        Some(mock_stripe::sign("whsec_wrong", t, &body)),
        Some(mock_stripe::sign(WHSEC, t - 600, &body)),
        Some("t=1,v1=zz".to_owned()),
    ] {
        let (s, b) = env.webhook(&body, sig).await;
        assert_eq!(s, 400, "{b}");
    }
    assert_eq!(env.order(&tok, &oid).await["state"], "pending");
    assert!(env
        .ledger
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .all(|(p, _)| !p.contains("/credits")));

    // The same event delivered 10 times concurrently, then 10 times in a row: one credit.
    let sig = mock_stripe::sign(WHSEC, now(), &body);
    let tasks = (0..10).map(|_| env.webhook(&body, Some(sig.clone())));
    for (s, b) in join_all(tasks).await {
        assert_eq!(s, 200, "{b}");
    }
    for _ in 0..10 {
        let (s, b) = env
            .webhook(&body, Some(mock_stripe::sign(WHSEC, now(), &body)))
            .await;
        assert_eq!((s, b["replay"].clone()), (200, json!(true)), "{b}");
    }
    assert_eq!(env.order(&tok, &oid).await["state"], "fulfilled");
    assert_eq!(env.ledger.credit_ids(&mid), vec![oid.clone()]);
    assert_eq!(env.ledger.wallet(&mid), 15_000_000);
    assert!(env
        .ledger
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .all(|(_, signed)| *signed));

    // Amount or currency mismatch: refused and flagged; nothing credited.
    let (oid2, session2) = env.topup(&tok, 2000).await;
    for (field, value) in [("amount_total", json!(1999)), ("currency", json!("eur"))] {
        let mut forged = session2.clone();
        forged[field] = value;
        let body = event_bytes(&forged);
        let (s, b) = env
            .webhook(&body, Some(mock_stripe::sign(WHSEC, now(), &body)))
            .await;
        assert_eq!(s, 422, "{b}");
    }
    let o2 = env.order(&tok, &oid2).await;
    assert_eq!(o2["state"], "pending");
    assert_eq!(o2["flags"].as_array().unwrap().len(), 2);
    let (_, flagged) = env
        .req("GET", "/api/admin/orders?state=flagged", Some(&admin), None)
        .await;
    assert_eq!(flagged["data"][0]["id"], json!(oid2), "{flagged}");
    assert_eq!(env.ledger.wallet(&mid), 15_000_000);

    // Edge unreachable during fulfilment: paid and kept in the outbox; after recovery the
    // outbox run credits it exactly once.
    let (oid3, session3) = env.topup(&tok, 700).await;
    env.ledger.down.store(true, Ordering::SeqCst);
    let body3 = event_bytes(&session3);
    for _ in 0..3 {
        let (s, b) = env
            .webhook(&body3, Some(mock_stripe::sign(WHSEC, now(), &body3)))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(env.order(&tok, &oid3).await["state"], "paid");
    let (_, outbox) = env
        .req("GET", "/api/admin/outbox", Some(&admin), None)
        .await;
    assert_eq!(outbox["data"][0]["order_id"], json!(oid3), "{outbox}");
    let (_, run) = env
        .req("POST", "/api/admin/outbox/run?force=1", Some(&admin), None)
        .await;
    assert_eq!(run["failed"][0]["order_id"], json!(oid3), "{run}");
    env.ledger.down.store(false, Ordering::SeqCst);
    let runs = (0..4).map(|_| env.req("POST", "/api/admin/outbox/run?force=1", Some(&admin), None));
    join_all(runs).await;
    assert_eq!(env.order(&tok, &oid3).await["state"], "fulfilled");
    assert_eq!(env.ledger.wallet(&mid), 15_000_000 + 7_000_000);
    let mut ids = env.ledger.credit_ids(&mid);
    ids.sort();
    let mut want = vec![oid.clone(), oid3.clone()];
    want.sort();
    assert_eq!(ids, want);
    let (_, outbox) = env
        .req("GET", "/api/admin/outbox", Some(&admin), None)
        .await;
    assert_eq!(outbox["data"], json!([]));

    // Redemption codes: two members race eight times on one code; one wins.
    let (s, batch) = env
        .req(
            "POST",
            "/api/admin/redemption-codes",
            Some(&admin),
            Some(json!({"count": 2, "wallet_micros": 3_000_000})),
        )
        .await;
    assert_eq!(s, 201, "{batch}");
    let code = batch["codes"][0].as_str().unwrap().to_owned();
    let (tok_b, mid_b) = env.member("racer@example.com").await;
    let tokens = [tok.clone(), tok_b.clone()];
    let tries = (0..8).map(|i| {
        let t = tokens[i % 2].clone();
        let code = code.clone();
        let env = &env;
        async move {
            env.req(
                "POST",
                "/api/me/redeem",
                Some(&t),
                Some(json!({"code": code})),
            )
            .await
            .0
        }
    });
    let statuses = join_all(tries).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        env.ledger.wallet(&mid) + env.ledger.wallet(&mid_b),
        22_000_000 + 3_000_000
    );

    // Revenue: two paid top-ups, net of nothing refunded; the flagged order is pending.
    let (s, rev) = env
        .req("GET", "/api/admin/analytics/revenue", Some(&admin), None)
        .await;
    assert_eq!(s, 200, "{rev}");
    assert_eq!(rev["by_plan"][0]["plan_id"], "topup");
    assert_eq!(rev["by_plan"][0]["net_minor"], 2200);
    assert_eq!(rev["orders_by_state"]["pending"], 1);
    assert_eq!(rev["flagged"], 1);
    // No secret reaches a response.
    let (_, orders) = env
        .req("GET", "/api/admin/orders", Some(&admin), None)
        .await;
    let dump = orders.to_string();
    assert!(!dump.contains(STRIPE_KEY) && !dump.contains(WHSEC));
}

/// A member's whole path through the real runtimes: admin server on DynamoDB Local,
/// the worker under `wrangler dev --local` (D1 ledger, KV keys), the mock upstream and
/// the mock Stripe API. Order a plan → pay → signed webhook → the allowance is at the
/// edge → the member's key gets a completion; a top-up lands in the wallet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_full_path_order_pay_webhook_edge_balance_api_call() {
    use tollbooth_tests::harness::{EdgeWorker, MockUpstream, WorkerOptions};
    use tollbooth_tests::sync_client::SyncClient;

    let dynamo = DynamoLocal::start().await.unwrap();
    let upstream = MockUpstream::start(&[]).await.unwrap();
    let vars = [
        ("SYNC_SECRET", SYNC_SECRET),
        ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
        ("CATALOGUE_TTL_MS", "0"),
        ("KEY_CACHE_TTL_MS", "0"),
    ];
    let worker = EdgeWorker::start(WorkerOptions {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .await
    .unwrap();
    let stripe = MockStripe::start(STRIPE_KEY).await.unwrap();
    let admin = AdminServer::start(
        &dynamo.endpoint,
        &[
            ("EDGE_ORIGIN", &worker.base_url),
            ("SYNC_SECRET", SYNC_SECRET),
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("STRIPE_SECRET_KEY", STRIPE_KEY),
            ("STRIPE_WEBHOOK_SECRET", WHSEC),
            ("STRIPE_API_BASE", &stripe.base_url),
            ("PAYMENTS_PUBLIC_URL", &worker.base_url),
        ],
    )
    .await
    .unwrap();
    let env = Env {
        _dynamo: dynamo,
        admin,
        stripe,
        ledger: Ledger::default(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };
    let edge = SyncClient::new(&worker.base_url, SYNC_SECRET);
    let admin = env.admin_token().await;

    // Operator: a provider on the mock upstream, one enabled model, a paid plan.
    let (s, b) = env
        .req("POST", "/api/admin/providers", Some(&admin), Some(json!({"id": "mock", "kind": "openai",
            "base_url": format!("{}/v1", upstream.base_url), "credentials": [{"secret": "sk-mock-upstream-0001"}]})))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .req("POST", "/api/admin/providers/mock/pull", Some(&admin), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, models) = env
        .req("GET", "/api/admin/models", Some(&admin), None)
        .await;
    let mut model = models["data"][0].clone();
    let name = model["name"].as_str().unwrap().to_owned();
    let obj = model.as_object_mut().unwrap();
    obj.remove("pulled_from");
    obj.remove("removed");
    obj.insert("enabled".into(), json!(true));
    // The edge refuses a zero price unless the model is marked free (issue 10).
    obj.insert(
        "price".into(),
        json!({"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000}),
    );
    let (s, b) = env
        .req(
            "PUT",
            &format!("/api/admin/models/{name}"),
            Some(&admin),
            Some(model),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env
        .req(
            "POST",
            "/api/admin/plans",
            Some(&admin),
            Some(json!({"id": "pro", "name": "Pro",
            "price_micros": 5_000_000, "currency": "USD", "period": "month",
            "allowance_amount": 100_000, "allowance_unit": "tokens"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .req("POST", "/api/admin/catalogue/publish", Some(&admin), None)
        .await;
    assert_eq!((s, b["edge"]["synced"].clone()), (200, json!(true)), "{b}");

    // Member: a key, then a plan order paid through (mock) Stripe.
    let (tok, mid) = env.member("fullpath@example.com").await;
    let (s, b) = env
        .req(
            "POST",
            "/api/me/keys",
            Some(&tok),
            Some(json!({"name": "cli"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let key = b["key"].as_str().unwrap().to_owned();
    let chat = |model: String, key: String| {
        let http = env.http.clone();
        let url = format!("{}/v1/chat/completions", worker.base_url);
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (before, text) = chat(name.clone(), key.clone()).await;
    assert!(
        (400..500).contains(&before),
        "unpaid member got {before}: {text}"
    );

    let (s, b) = env
        .req(
            "POST",
            "/api/me/orders",
            Some(&tok),
            Some(json!({"kind": "plan", "plan_id": "pro", "provider": "stripe"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["order"]["amount_minor"], 500);
    let oid = b["order"]["id"].as_str().unwrap().to_owned();
    let session = env.stripe.calls().pop().unwrap().session;
    let body = event_bytes(&session);
    for _ in 0..3 {
        let (s, b) = env
            .webhook(&body, Some(mock_stripe::sign(WHSEC, now(), &body)))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(env.order(&tok, &oid).await["state"], "fulfilled");

    // At the edge: the allowance of the paid period, granted once under the order id.
    let bal = edge.balance(&mid).await.unwrap();
    assert_eq!(bal.status, 200, "{}", bal.body);
    assert_eq!(bal.body["allowance"]["plan_id"], "pro", "{}", bal.body);
    assert_eq!(bal.body["allowance"]["amount"], 100_000);
    assert_eq!(bal.body["allowance"]["grant_id"], json!(oid));

    // The member's key now gets a completion.
    let (s, text) = chat(name.clone(), key.clone()).await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");

    // A top-up lands in the wallet exactly once.
    let (oid2, session2) = env.topup(&tok, 250).await;
    let body2 = event_bytes(&session2);
    let deliveries = (0..5).map(|i| {
        let sig = mock_stripe::sign(WHSEC, now() + i, &body2);
        let env = &env;
        let body2 = body2.clone();
        async move { env.webhook(&body2, Some(sig)).await.0 }
    });
    assert!(join_all(deliveries).await.iter().all(|s| *s == 200));
    assert_eq!(env.order(&tok, &oid2).await["state"], "fulfilled");
    let bal = edge.balance(&mid).await.unwrap();
    assert_eq!(
        bal.body["wallet"]["balance_micros"], 2_500_000,
        "{}",
        bal.body
    );
}

/// The order compare-and-swap on both adapters: of many writers that read one version,
/// exactly one commits; creating an existing order fails.
async fn swap_contract<S: tollbooth_admin::store::ItemStore + Clone + 'static>(store: S) {
    use tollbooth_admin::payments::order::{create, load_order, swap};
    use tollbooth_admin::payments::{Order, OrderKind, OrderState, PaymentProvider};
    let o = Order {
        id: "o-cas".into(),
        member_id: "m".into(),
        kind: OrderKind::Topup,
        provider: PaymentProvider::Stripe,
        amount_minor: 100,
        currency: "USD".into(),
        credit_micros: 1_000_000,
        plan_id: None,
        description: "t".into(),
        state: OrderState::Pending,
        version: 1,
        created_at: 1,
        expires_at: 2,
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
        plan_terms: None,
    };
    create(&store, &o, vec![]).await.unwrap();
    assert_eq!(create(&store, &o, vec![]).await.unwrap_err().status, 409);
    let writers = (0..8).map(|i| {
        let s = store.clone();
        let next = Order {
            state: OrderState::Paid,
            version: 2,
            paid_at: Some(i),
            ..o.clone()
        };
        tokio::spawn(async move { swap(&s, &next, vec![]).await.unwrap() })
    });
    let won = join_all(writers)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
    let now = load_order(&store, "o-cas").await.unwrap().unwrap();
    assert_eq!((now.state, now.version), (OrderState::Paid, 2));
    // A stale writer (read version 1) loses even after the winner moved on.
    let stale = Order {
        state: OrderState::Expired,
        version: 2,
        ..o.clone()
    };
    assert!(!swap(&store, &stale, vec![]).await.unwrap());
    let next = Order {
        state: OrderState::Fulfilled,
        version: 3,
        ..now
    };
    assert!(swap(&store, &next, vec![]).await.unwrap());
    assert_eq!(
        load_order(&store, "o-cas").await.unwrap().unwrap().state,
        OrderState::Fulfilled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_order_swap_contract_memory_and_dynamodb_local() {
    swap_contract(tollbooth_admin::store::MemoryStore::default()).await;
    let dynamo = DynamoLocal::start().await.unwrap();
    let store = tollbooth_admin::dynamo::DynamoStore::local(&dynamo.endpoint, "payments-cas");
    store.ensure_table().await.unwrap();
    swap_contract(store).await;
}
