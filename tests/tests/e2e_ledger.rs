//! End-to-end tests of the edge ledger in real workerd (`wrangler dev --local`, local D1
//! and KV): the signed internal API, atomic admission under concurrency, exactly-once
//! settlement and credits, partial/failed request billing, allowance units and periods,
//! rate limits and the member endpoints.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tollbooth_tests::harness::{EdgeWorker, WorkerOptions};
use tollbooth_tests::ledger_check;
use tollbooth_tests::sync_client::SyncClient;

const SECRET: &str = "test-sync-secret-0123456789";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn start_worker(extra: &[(&str, &str)]) -> (EdgeWorker, SyncClient) {
    let mut vars = vec![
        ("SYNC_SECRET".to_string(), SECRET.to_string()),
        ("TEST_CLOCK".to_string(), "1".to_string()),
    ];
    for (k, v) in extra {
        vars.push((k.to_string(), v.to_string()));
    }
    let worker = EdgeWorker::start(WorkerOptions { vars }).await.unwrap();
    let sync = SyncClient::new(&worker.base_url, SECRET);
    (worker, sync)
}

#[tokio::test]
async fn test_internal_api_refuses_bad_stale_and_replayed_signatures_and_changes_nothing() {
    let (worker, sync) = start_worker(&[]).await;
    let path = "/internal/v1/wallets/m-sig/credits";
    let body = json!({"credit_id": "c-sig-1", "amount_micros": 1_000_000, "reason": "t"});

    // Bad signature (signed with another secret).
    let other = SyncClient::new(&worker.base_url, "wrong-secret");
    let r = other
        .send(&other.call("POST", path, Some(&body), None))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"]["type"], "authentication_error");

    // Tampered body after signing.
    let mut call = sync.call("POST", path, Some(&body), None);
    call.body = json!({"credit_id": "c-sig-1", "amount_micros": 9_000_000})
        .to_string()
        .into_bytes();
    assert_eq!(sync.send(&call).await.unwrap().status, 401);

    // Signed for another host (another environment sharing the secret): refused.
    let mut call = sync.call("POST", path, Some(&body), None);
    call.host = "staging.example.com".into();
    call.signature = Some(sync.sign(&call));
    assert_eq!(sync.send(&call).await.unwrap().status, 401);

    // Missing signature; malformed signature.
    let mut call = sync.call("POST", path, Some(&body), None);
    call.signature = None;
    assert_eq!(sync.send(&call).await.unwrap().status, 401);
    call.signature = Some("zz".into());
    assert_eq!(sync.send(&call).await.unwrap().status, 401);

    // Stale and future timestamps, correctly signed.
    for ts in [now_unix() - 301 - 5, now_unix() + 301 + 5] {
        let mut call = sync.call("POST", path, Some(&body), None);
        call.timestamp = ts;
        call.signature = Some(sync.sign(&call));
        let r = sync.send(&call).await.unwrap();
        assert_eq!(r.status, 401, "{}", r.body);
    }

    // Nothing was credited by any of these: the member is still unknown.
    assert_eq!(sync.balance("m-sig").await.unwrap().status, 404);

    // A good call works once; the identical signed request replayed is refused.
    let call = sync.call("POST", path, Some(&body), Some("idem-sig-1"));
    let r = sync.send(&call).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["applied"], true);
    let r = sync.send(&call).await.unwrap();
    assert_eq!(r.status, 401, "replay must be refused: {}", r.body);
    let b = sync.balance("m-sig").await.unwrap();
    assert_eq!(b.body["wallet"]["balance_micros"], 1_000_000, "{}", b.body);

    // Mutating calls need an idempotency key.
    let mut call = sync.call("POST", path, Some(&body), None);
    call.idempotency_key = None;
    assert_eq!(sync.send(&call).await.unwrap().status, 400);

    // Without SYNC_SECRET the internal API is off (503).
    let (bare, _) = (
        EdgeWorker::start(WorkerOptions::default()).await.unwrap(),
        (),
    );
    let sync2 = SyncClient::new(&bare.base_url, SECRET);
    assert_eq!(sync2.balance("m-sig").await.unwrap().status, 503);
}

#[tokio::test]
async fn test_replayed_credit_is_a_no_op_and_grants_apply_once() {
    let (worker, sync) = start_worker(&[]).await;

    let r = sync
        .credit_wallet("m-cred", "order-1", 2_500_000, "top-up")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["balance_micros"], 2_500_000);
    // The same call retried (same idempotency key): the stored result, nothing applied.
    let r = sync
        .credit_wallet("m-cred", "order-1", 2_500_000, "top-up")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.idempotent_replay);
    // The same credit id under a fresh idempotency key: not applied again.
    let call = sync.call(
        "POST",
        "/internal/v1/wallets/m-cred/credits",
        Some(&json!({"credit_id": "order-1", "amount_micros": 2_500_000})),
        Some("another-key"),
    );
    let r = sync.send(&call).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["applied"], false);
    assert_eq!(r.body["balance_micros"], 2_500_000);
    // An idempotency key replays only the body it was first used with (regression:
    // issue 10, L8): another body under the same key is refused, not answered with the
    // stored result of the first.
    let call = sync.call(
        "POST",
        "/internal/v1/wallets/m-cred/credits",
        Some(&json!({"credit_id": "order-other", "amount_micros": 7})),
        Some("another-key"),
    );
    let r = sync.send(&call).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "idempotency_key_reused");

    // Concurrent deliveries of one credit id apply once.
    let mut handles = Vec::new();
    for i in 0..10 {
        let sync = SyncClient::new(&worker.base_url, SECRET);
        handles.push(tokio::spawn(async move {
            let call = sync.call(
                "POST",
                "/internal/v1/wallets/m-cred/credits",
                Some(&json!({"credit_id": "order-2", "amount_micros": 1_000_000,
                    "reason": format!("delivery {i}")})),
                Some(&format!("k-{i}")),
            );
            sync.send(&call).await.unwrap()
        }));
    }
    let mut applied = 0;
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["applied"] == true {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    let b = sync.balance("m-cred").await.unwrap();
    assert_eq!(b.body["wallet"]["balance_micros"], 3_500_000);

    // Admin debit (negative credit).
    let r = sync
        .credit_wallet("m-cred", "debit-1", -500_000, "refund")
        .await
        .unwrap();
    assert_eq!(r.body["balance_micros"], 3_000_000);

    // Allowance grant: once per grant id; validation names the field.
    let now = now_unix();
    let grant = json!({"plan_id": "basic", "unit": "tokens", "amount": 1000,
        "period_start": now - 10, "period_end": now + 3600, "grant_id": "g-1"});
    let r = sync.put_allowance("m-cred", &grant).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["applied"], true);
    let call = sync.call(
        "PUT",
        "/internal/v1/allowances/m-cred",
        Some(&grant),
        Some("grant-again"),
    );
    let r = sync.send(&call).await.unwrap();
    assert_eq!(r.body["applied"], false);
    let bad = json!({"plan_id": "basic", "unit": "bananas", "amount": 1,
        "period_start": now, "period_end": now + 1, "grant_id": "g-bad"});
    let r = sync.put_allowance("m-cred", &bad).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "unit");

    let b = sync.balance("m-cred").await.unwrap();
    assert_eq!(b.status, 200);
    assert_eq!(b.body["allowance"]["amount"], 1000);
    assert_eq!(b.body["allowance"]["remaining"], 1000);
    assert_eq!(sync.balance("nobody").await.unwrap().status, 404);

    // Usage feed is empty, with a cursor.
    let r = sync.read_feed("usage", "", 10).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["events"], json!([]));
    assert_eq!(r.body["next"], "0");
}

#[tokio::test]
async fn test_keys_members_and_catalogue_through_internal_api() {
    // Key and member caches off: revocation and suspension show at once.
    let (worker, sync) = start_worker(&[("KEY_CACHE_TTL_MS", "0")]).await;
    let key = tollbooth_core::auth::ApiKey::generate(&[9u8; 32]);
    let record = tollbooth_core::keyrecord::KeyRecord {
        public_id: key.public_id().to_string(),
        secret_hash: key.secret_hash(),
        member_id: "m-key".into(),
        plan_id: "basic".into(),
        status: Default::default(),
        role: Default::default(),
        expires_at: Some(1_893_456_000), // 2030-01-01
        allowed_models: None,
        rpm: Some(5),
        tpm: None,
        capture: false,
        app_id: None,
        byok: false,
        name: Some("laptop".into()),
        version: 0,
    };
    let r = sync.put_key(&record).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = sync
        .put_member(
            "m-key",
            &json!({"email": "user@example.com", "username": "User Name"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    let http = reqwest::Client::new();
    let profile: Value = http
        .get(format!("{}/v1/user-profile", worker.base_url))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(profile["email"], "user@example.com");
    assert_eq!(profile["username"], "User Name");
    assert_eq!(profile["user_plan"], "basic");
    assert_eq!(profile["expire_at"], "2030-01-01T00:00:00Z");

    let info: Value = http
        .get(format!("{}/api/v1/key", worker.base_url))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["data"]["label"], "laptop");
    assert_eq!(info["data"]["rate_limit"]["requests"], 5);

    // Suspension is honoured; revocation removes the key.
    sync.set_member_status("m-key", "suspended").await.unwrap();
    let r = http
        .get(format!("{}/v1/user-profile", worker.base_url))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    sync.set_member_status("m-key", "active").await.unwrap();
    let r = sync.revoke_key(key.public_id()).await.unwrap();
    assert_eq!(r.status, 200);
    let r = http
        .get(format!("{}/v1/user-profile", worker.base_url))
        .bearer_auth(key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // An invalid catalogue is refused; a valid one becomes current.
    let bad = json!({"version": "v1", "providers": [], "models": [
        {"name": "x", "deployments": [{"provider": "nope", "model": "x"}]}]});
    let call = sync.call("PUT", "/internal/v1/catalogue", Some(&bad), None);
    let r = sync.send(&call).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let good: tollbooth_core::catalogue::CatalogueSnapshot = serde_json::from_value(json!({
        "version": "v7",
        "providers": [{"id": "mock", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
            "credentials": [{"id": "c1", "secret": "sk-upstream"}]}],
        "models": [{"name": "m", "deployments": [{"provider": "mock", "model": "m"}]}],
    }))
    .unwrap();
    let r = sync.put_catalogue(&good).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // /health re-checks the bindings at most every 10 s per isolate.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health: Value = http
            .get(format!("{}/health", worker.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["kv"]["catalogue_version"] == "v7" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issue 10, invariant 6 (edge half): key and member records carry a version; a lower
/// version never overwrites a higher one; revocation is a tombstone no later PUT undoes.
#[tokio::test]
async fn test_versioned_records_and_revocation_tombstone() {
    let (worker, sync) = start_worker(&[("KEY_CACHE_TTL_MS", "0")]).await;
    let http = reqwest::Client::new();
    let key = tollbooth_core::auth::ApiKey::generate(&[11u8; 32]);
    let record = |plan: &str, version: u64| tollbooth_core::keyrecord::KeyRecord {
        public_id: key.public_id().to_string(),
        secret_hash: key.secret_hash(),
        member_id: "m-ver".into(),
        plan_id: plan.into(),
        status: Default::default(),
        role: Default::default(),
        expires_at: None,
        allowed_models: None,
        rpm: None,
        tpm: None,
        capture: false,
        app_id: None,
        byok: false,
        name: None,
        version,
    };
    let profile_plan = || async {
        let r = http
            .get(format!("{}/v1/user-profile", worker.base_url))
            .bearer_auth(key.expose())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body)
    };
    let r = sync.put_key(&record("gold", 2)).await.unwrap();
    assert_eq!(r.body["applied"], true, "{}", r.body);
    // A delayed older push: ignored, acknowledged.
    let r = sync.put_key(&record("free", 1)).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["applied"], false, "{}", r.body);
    assert_eq!(r.body["stale"], true);
    assert_eq!(profile_plan().await.1["user_plan"], "gold");
    // Equal or higher versions apply.
    let r = sync.put_key(&record("silver", 3)).await.unwrap();
    assert_eq!(r.body["applied"], true);
    assert_eq!(profile_plan().await.1["user_plan"], "silver");
    // Revocation is a tombstone: no later PUT, whatever its version, brings it back.
    let r = sync.revoke_key(key.public_id()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(profile_plan().await.0, 401);
    let r = sync.put_key(&record("gold", 99)).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["applied"], false, "{}", r.body);
    assert_eq!(r.body["revoked"], true);
    assert_eq!(profile_plan().await.0, 401);
    let r = sync.revoke_key(key.public_id()).await.unwrap();
    assert_eq!(r.status, 200, "revoking twice is fine: {}", r.body);

    // Members: a suspension at version 5 is not undone by an older profile push, nor by
    // a newer one that carries no status (member-initiated changes never do).
    let key2 = tollbooth_core::auth::ApiKey::generate(&[12u8; 32]);
    let mut rec2 = record("gold", 1);
    rec2.public_id = key2.public_id().to_string();
    rec2.secret_hash = key2.secret_hash();
    sync.put_key(&rec2).await.unwrap();
    let r = sync
        .put_member("m-ver", &json!({"status": "suspended", "version": 5}))
        .await
        .unwrap();
    assert_eq!(r.body["applied"], true, "{}", r.body);
    let r = sync
        .put_member(
            "m-ver",
            &json!({"status": "active", "email": "x@example.com", "version": 4}),
        )
        .await
        .unwrap();
    assert_eq!(r.body["applied"], false, "{}", r.body);
    let r = sync
        .put_member("m-ver", &json!({"email": "new@example.com", "version": 6}))
        .await
        .unwrap();
    assert_eq!(r.body["applied"], true, "{}", r.body);
    assert_eq!(r.body["status"], "suspended");
    let resp = http
        .get(format!("{}/v1/user-profile", worker.base_url))
        .bearer_auth(key2.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

// ---------------------------------------------------------------------------------------
// Through the real request path (/v1/chat/completions).
// ---------------------------------------------------------------------------------------

use tollbooth_core::auth::ApiKey;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_tests::mock::{spawn, MockConfig, MockHandle};

/// Price of every test model: 1 micro per input token, 2 per output token.
const INPUT_PER_MTOK: u64 = 1_000_000;
const OUTPUT_PER_MTOK: u64 = 2_000_000;

/// The body `Gateway::chat` sends.
fn chat_body(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model,
        "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 10});
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

/// The reservation of a request body as docs/billing.md defines it: (realistic estimate,
/// upper bound) in tokens, with `output` the output cap sent upstream.
fn reservation(body: &Value, output: u64) -> (u64, u64) {
    let text = body.to_string();
    let est = tollbooth_core::billing::estimate_body(body, text.len() as u64);
    (est.tokens + output, est.worst.max(est.tokens) + output)
}

struct Gateway {
    worker: EdgeWorker,
    sync: SyncClient,
    _mock: MockHandle,
    http: reqwest::Client,
}

fn catalogue(mock_base: &str) -> Value {
    let model = |name: &str, upstream: &str| {
        json!({"name": name, "deployments": [{"provider": "mock", "model": upstream}],
               "price": {"input_per_mtok": INPUT_PER_MTOK, "output_per_mtok": OUTPUT_PER_MTOK},
               "max_output_tokens": 1000})
    };
    json!({
        "version": "ledger-test-1",
        "providers": [{"id": "mock", "kind": "openai", "base_url": format!("{mock_base}/v1"),
                       "credentials": [{"id": "c1", "secret": "sk-upstream-secret"}]}],
        "models": [
            model("m", "gpt-4o-mini"),
            model("m-slow", "gpt-4o-mini@ttft=3000"),
            model("m-long", "gpt-4o-mini@chunks=40,delay=50"),
            model("m-fail", "gpt-4o-mini@status=500"),
            model("m-nousage", "gpt-4o-mini@usage=0"),
            {"name": "m-emb", "kind": "embedding",
             "deployments": [{"provider": "mock", "model": "text-embedding-3-small"}],
             "price": {"input_per_mtok": INPUT_PER_MTOK}},
        ],
        "plans": [
            {"id": "basic", "allowed_models": ["*"]},
            {"id": "overage", "allowed_models": ["*"], "overage": true},
            {"id": "limited", "allowed_models": ["*"], "rpm": 100},
        ],
    })
}

impl Gateway {
    async fn start(extra: &[(&str, &str)]) -> Gateway {
        let mock = spawn(MockConfig::default()).await.unwrap();
        let mut vars: Vec<(&str, &str)> = [
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
            ("CATALOGUE_TTL_MS", "0"),
            ("KEY_CACHE_TTL_MS", "0"),
            ("BREAKER_FAILURE_THRESHOLD", "100000"),
        ]
        .into_iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .collect();
        vars.extend_from_slice(extra);
        let (worker, sync) = start_worker(&vars).await;
        let snapshot = serde_json::from_value(catalogue(&mock.base_url())).unwrap();
        let r = sync.put_catalogue(&snapshot).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        Gateway {
            worker,
            sync,
            _mock: mock,
            http: reqwest::Client::new(),
        }
    }

    /// A new key for `member` on `plan`; returns the full key.
    async fn key(&self, member: &str, plan: &str, rpm: Option<u32>) -> String {
        self.key_with(member, plan, rpm, None).await
    }

    async fn key_with(
        &self,
        member: &str,
        plan: &str,
        rpm: Option<u32>,
        tpm: Option<u64>,
    ) -> String {
        let mut seed = [0u8; 32];
        for (i, b) in format!("{member}/{plan}/{rpm:?}/{tpm:?}-seed-bytes-for-key-gen")
            .bytes()
            .take(32)
            .enumerate()
        {
            seed[i] = b;
        }
        let key = ApiKey::generate(&seed);
        let record = KeyRecord {
            public_id: key.public_id().to_string(),
            secret_hash: key.secret_hash(),
            member_id: member.into(),
            plan_id: plan.into(),
            status: Default::default(),
            role: Default::default(),
            expires_at: None,
            allowed_models: None,
            rpm,
            tpm,
            capture: false,
            app_id: None,
            byok: false,
            name: None,
            version: 0,
        };
        let r = self.sync.put_key(&record).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        key.expose()
    }

    async fn grant(&self, member: &str, unit: &str, amount: u64, period: Option<(&str, u64)>) {
        let now = now_unix();
        let (period, start, end) = match period {
            Some((p, start)) => (p, start, start + 86_400),
            None => ("none", now - 60, now + 86_400),
        };
        let r = self
            .sync
            .put_allowance(
                member,
                &json!({"plan_id": "basic", "unit": unit, "amount": amount,
                        "period_start": start, "period_end": end,
                        "grant_id": format!("grant-{member}-{unit}-{start}"), "period": period}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }

    async fn chat(
        &self,
        key: &str,
        model: &str,
        extra: Value,
        clock: Option<u64>,
    ) -> reqwest::Response {
        let body = chat_body(model, extra);
        let mut rb = self
            .http
            .post(format!("{}/v1/chat/completions", self.worker.base_url))
            .bearer_auth(key)
            .json(&body);
        if let Some(t) = clock {
            rb = rb.header("x-tollbooth-test-now", t.to_string());
        }
        rb.send().await.unwrap()
    }

    async fn balance(&self, member: &str) -> Value {
        let r = self.sync.balance(member).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Waits until the member has no open reservation (settlement runs in wait_until).
    async fn settled(&self, member: &str) -> Value {
        for _ in 0..200 {
            let b = self.balance(member).await;
            if b["open_reservations"] == 0 {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("reservations of {member} never settled");
    }

    /// All usage events of a member.
    async fn events(&self, member: &str) -> Vec<Value> {
        self.sync.member_usage_events(member).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_concurrent_requests_never_overspend_and_replayed_settle_is_a_no_op() {
    let gw = Gateway::start(&[("TEST_REPLAY_SETTLE", "1")]).await;
    let key = gw.key("m-conc", "basic", None).await;
    // A member's only in-flight request reserves its estimate, every request admitted
    // while another is open reserves its upper bound: this allowance fits exactly one
    // estimate and three upper bounds. The slow upstream keeps every admitted request
    // open while the others try.
    let (est, worst) = reservation(&chat_body("m-slow", json!({})), 10);
    assert!(worst > est);
    gw.grant("m-conc", "tokens", est + 3 * worst, None).await;

    let mut handles = Vec::new();
    for _ in 0..50 {
        let http = gw.http.clone();
        let url = format!("{}/v1/chat/completions", gw.worker.base_url);
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&chat_body("m-slow", json!({})))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }));
    }
    let mut admitted = 0;
    for h in handles {
        let (status, body) = h.await.unwrap();
        match status {
            200 => admitted += 1,
            402 => assert_eq!(body["error"]["code"], "insufficient_quota", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    eprintln!("admitted {admitted} of 50 (estimate {est}, upper bound {worst})");
    assert!(admitted <= 4, "admitted {admitted} > 4");
    assert!(admitted >= 1);

    let b = gw.settled("m-conc").await;
    ledger_check::assert_balanced(&gw.sync, "m-conc").await;
    // A request refused while its upstream call was speculatively running leaves a
    // usage event too, charged 0 (docs/billing.md); the others are the admitted ones.
    let (aborted, events): (Vec<Value>, Vec<Value>) = gw
        .events("m-conc")
        .await
        .into_iter()
        .partition(|e| e["status"] == "speculative_abort");
    assert!(aborted.iter().all(|e| e["charged"] == 0), "{aborted:?}");
    assert_eq!(
        events.len(),
        admitted,
        "one usage event per admitted request"
    );
    let charged: i64 = events.iter().map(|e| e["charged"].as_i64().unwrap()).sum();
    // P = 2 words, C = 3 chunks: 5 tokens each, charged once although settled twice.
    assert!(events
        .iter()
        .all(|e| e["charged"] == 5 && e["estimated"] == 0));
    assert_eq!(b["allowance"]["used"], charged, "{b}");
    assert_eq!(b["allowance"]["reserved"], 0, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_partial_failed_and_estimated_requests_and_allowance_units() {
    let gw = Gateway::start(&[]).await;

    // Each unit charges its own measure of one request: P = 2, C = 3, "tok0 tok1 tok2 ".
    let cases = [
        ("tokens", 5),
        ("characters", 15),
        ("requests", 1),
        ("money", 2 + 3 * 2),
    ];
    for (unit, expected) in cases {
        let member = format!("m-unit-{unit}");
        let key = gw.key(&member, "basic", None).await;
        gw.grant(&member, unit, 1_000, None).await;
        let r = gw.chat(&key, "m", json!({}), None).await;
        assert_eq!(r.status(), 200, "{unit}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
        let b = gw.settled(&member).await;
        assert_eq!(b["allowance"]["used"], expected, "{unit}: {b}");
        assert_eq!(b["allowance"]["reserved"], 0);
        let ev = gw.events(&member).await;
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["charged"], expected);
        assert_eq!(ev[0]["charged_unit"], unit);
        assert_eq!(ev[0]["cost_micros"], 8);
    }

    // No allowance: the wallet pays in money; an empty wallet refuses with 402.
    let key = gw.key("m-wallet", "basic", None).await;
    let r = gw.chat(&key, "m", json!({}), None).await;
    assert_eq!(r.status(), 402);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("wallet"));
    gw.sync
        .credit_wallet("m-wallet", "w-1", 1_000, "top-up")
        .await
        .unwrap();
    assert_eq!(gw.chat(&key, "m", json!({}), None).await.status(), 200);
    let b = gw.settled("m-wallet").await;
    assert_eq!(b["wallet"]["balance_micros"], 1_000 - 8);
    assert_eq!(b["wallet"]["reserved_micros"], 0);

    // Upstream 500 before any output: nothing billed, the reservation released.
    let key = gw.key("m-fail", "basic", None).await;
    gw.grant("m-fail", "tokens", 1_000, None).await;
    let r = gw.chat(&key, "m-fail", json!({}), None).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let b = gw.settled("m-fail").await;
    assert_eq!(b["allowance"]["used"], 0, "{b}");
    assert_eq!(b["allowance"]["reserved"], 0);
    let ev = gw.events("m-fail").await;
    assert!(ev
        .iter()
        .all(|e| e["charged"] == 0 && e["status"] == "upstream_error"));

    // A stream without usage is billed by estimate and flagged: input = the prompt
    // estimate of the body, output = the estimate of what was streamed: "tok0 " etc.,
    // 5 ASCII characters = 2 tokens each.
    let (est_total, _) = reservation(&chat_body("m-nousage", json!({"stream": true})), 10);
    let est_input = est_total - 10;
    let key = gw.key("m-est", "basic", None).await;
    gw.grant("m-est", "tokens", 1_000, None).await;
    let r = gw
        .chat(&key, "m-nousage", json!({"stream": true}), None)
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("tok2"));
    let b = gw.settled("m-est").await;
    let ev = gw.events("m-est").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["estimated"], 1, "{}", ev[0]);
    assert_eq!(ev[0]["output_tokens"], 6);
    assert_eq!(ev[0]["input_tokens"], est_input);
    assert_eq!(b["allowance"]["used"], est_input + 6);
    ledger_check::assert_balanced(&gw.sync, "m-est").await;

    // Client disconnect mid-stream: the gateway keeps reading the upstream and bills
    // what it produced (40 chunks, the provider's own usage), not what was delivered.
    let key = gw.key("m-abort", "basic", None).await;
    gw.grant("m-abort", "tokens", 10_000, None).await;
    let mut r = gw
        .chat(
            &key,
            "m-long",
            json!({"stream": true, "max_tokens": 100, "stream_options": {"include_usage": true}}),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap();
    assert!(first.is_some());
    drop(r); // the client goes away after the first chunk
    let b = gw.settled("m-abort").await;
    let ev = gw.events("m-abort").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["status"], "client_abort", "{}", ev[0]);
    assert_eq!(ev[0]["output_tokens"], 40, "{}", ev[0]);
    assert_eq!(ev[0]["estimated"], 0);
    assert_eq!(b["allowance"]["used"], 2 + 40);
    for m in [
        "m-unit-tokens",
        "m-unit-money",
        "m-wallet",
        "m-fail",
        "m-abort",
    ] {
        ledger_check::assert_balanced(&gw.sync, m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rate_limit_boundary_period_reset_and_member_endpoints() {
    let gw = Gateway::start(&[]).await;

    // Rate limit: 3 per minute for this key, at a fixed test clock.
    let key = gw.key("m-rl", "basic", Some(3)).await;
    gw.grant("m-rl", "requests", 1_000, None).await;
    let t0 = (now_unix() / 60) * 60 + 5;
    for i in 0..3 {
        let r = gw.chat(&key, "m", json!({}), Some(t0 + i)).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    let r = gw.chat(&key, "m", json!({}), Some(t0 + 3)).await;
    assert_eq!(r.status(), 429);
    let h = r.headers();
    assert_eq!(h["retry-after"], (60 - 8).to_string().as_str());
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-reset"], (60 - 8).to_string().as_str());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // The refused request charged nothing.
    let b = gw.settled("m-rl").await;
    assert_eq!(b["allowance"]["used"], 3);
    // The next window admits again.
    let r = gw.chat(&key, "m", json!({}), Some(t0 + 60)).await;
    assert_eq!(r.status(), 200);

    // Tokens per minute: counted with the estimate at admission and corrected to the
    // actual usage (5) at settlement, so with TPM = 10 + estimate three requests fit
    // (5 + 5 + estimate), the fourth (15 + estimate) does not.
    let (est, _) = reservation(&chat_body("m", json!({})), 10);
    let tpm = 10 + est;
    let key = gw.key_with("m-tpm", "basic", None, Some(tpm)).await;
    gw.grant("m-tpm", "requests", 1_000, None).await;
    let t1 = t0 + 120;
    for i in 0..3 {
        let r = gw.chat(&key, "m", json!({}), Some(t1 + i)).await;
        assert_eq!(r.status(), 200, "request {i}");
        gw.settled("m-tpm").await;
    }
    let r = gw.chat(&key, "m", json!({}), Some(t1 + 3)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["x-ratelimit-limit-tokens"],
        tpm.to_string().as_str()
    );
    assert_eq!(
        r.headers()["x-ratelimit-remaining-tokens"],
        (tpm - 15).to_string().as_str()
    );
    ledger_check::assert_balanced(&gw.sync, "m-tpm").await;

    // Period reset: 2 requests per day, renewing daily.
    let key = gw.key("m-period", "basic", None).await;
    let start = now_unix() - 100;
    gw.grant("m-period", "requests", 2, Some(("day", start)))
        .await;
    for _ in 0..2 {
        assert_eq!(gw.chat(&key, "m", json!({}), None).await.status(), 200);
    }
    gw.settled("m-period").await;
    let r = gw.chat(&key, "m", json!({}), None).await;
    assert_eq!(r.status(), 402);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("plan allowance"));
    // The next period is opened by the admission batch itself (its bounds were
    // computed when the grant was applied).
    let next_day = start + 86_400 + 10;
    assert_eq!(
        gw.chat(&key, "m", json!({}), Some(next_day)).await.status(),
        200
    );
    gw.settled("m-period").await;
    let audit = ledger_check::assert_balanced(&gw.sync, "m-period").await;
    assert_eq!(
        audit.raw["allowances"].as_array().unwrap().len(),
        2,
        "{}",
        audit.raw
    );

    // Member endpoints.
    let r = gw
        .http
        .get(format!("{}/api/usage", gw.worker.base_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let usage: Value = r.json().await.unwrap();
    assert_eq!(usage["allowance"]["unit"], "requests");
    let hourly_requests: i64 = usage["hourly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["requests"].as_i64().unwrap())
        .sum();
    assert!(hourly_requests >= 2, "{usage}");
    assert!(!usage["daily"].as_array().unwrap().is_empty());

    let r = gw
        .http
        .get(format!("{}/api/v1/key", gw.worker.base_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["data"]["limit"], 2, "{info}");
    assert_eq!(info["data"]["limit_unit"], "requests");

    // Rollups are readable by cursor.
    let r = gw.sync.read_feed("rollups", "", 100).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.body["events"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_messages_and_embeddings_are_metered_and_expired_reservations_are_charged() {
    let gw = Gateway::start(&[]).await;

    // Anthropic ingress bills like chat; embeddings bill their input tokens only.
    let key = gw.key("m-proto", "basic", None).await;
    gw.grant("m-proto", "tokens", 1_000, None).await;
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.worker.base_url))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hello world"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b = gw.settled("m-proto").await;
    assert_eq!(b["allowance"]["used"], 5, "{b}");
    let r = gw
        .http
        .post(format!("{}/v1/embeddings", gw.worker.base_url))
        .bearer_auth(&key)
        .json(&json!({"model": "m-emb", "input": "hello big world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b = gw.settled("m-proto").await;
    assert_eq!(b["allowance"]["used"], 5 + 3, "{b}");

    // Overage: when the plan allows it, the wallet pays once the allowance is used up;
    // without overage the member is refused although the wallet has money.
    for (plan, member) in [("overage", "m-over"), ("basic", "m-noover")] {
        let key = gw.key(member, plan, None).await;
        gw.grant(member, "requests", 1, None).await;
        gw.sync
            .credit_wallet(member, &format!("c-{member}"), 1_000, "top-up")
            .await
            .unwrap();
        assert_eq!(gw.chat(&key, "m", json!({}), None).await.status(), 200);
        gw.settled(member).await;
        let r = gw.chat(&key, "m", json!({}), None).await;
        let b = gw.settled(member).await;
        assert_eq!(b["allowance"]["used"], 1, "{b}");
        if plan == "overage" {
            assert_eq!(r.status(), 200);
            assert_eq!(b["wallet"]["balance_micros"], 1_000 - 8, "{b}");
        } else {
            assert_eq!(r.status(), 402);
            let body: Value = r.json().await.unwrap();
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("plan allowance (requests)"));
            assert_eq!(b["wallet"]["balance_micros"], 1_000, "{b}");
        }
    }

    // A reservation past its expiry (admitted with the clock an hour back) is *charged*
    // its reserved amount by the sweep while its request is still running, never
    // released for free (regression: issue 10, H1); a fresh one is left alone. The late
    // real settlement corrects the charge to the provider's usage.
    let key = gw.key("m-sweep", "basic", None).await;
    let now = now_unix();
    gw.grant("m-sweep", "tokens", 1_000, Some(("none", now - 7_200)))
        .await;
    let (est, worst) = reservation(&chat_body("m-slow", json!({})), 10);
    let old = {
        let gw_url = format!("{}/v1/chat/completions", gw.worker.base_url);
        let http = gw.http.clone();
        let key = key.clone();
        tokio::spawn(async move {
            http.post(gw_url)
                .bearer_auth(key)
                .header("x-tollbooth-test-now", (now - 3_600).to_string())
                .json(&chat_body("m-slow", json!({})))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = {
        let gw_url = format!("{}/v1/chat/completions", gw.worker.base_url);
        let http = gw.http.clone();
        let key = key.clone();
        tokio::spawn(async move {
            http.post(gw_url)
                .bearer_auth(key)
                .json(&chat_body("m-slow", json!({})))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let b = gw.balance("m-sweep").await;
    assert_eq!(
        b["allowance"]["reserved"],
        est + worst,
        "both in flight, the second at its upper bound: {b}"
    );
    let r = gw.sync.sweep().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["charged"], 1);
    let b = gw.balance("m-sweep").await;
    assert_eq!(b["allowance"]["reserved"], worst, "only the stale one: {b}");
    assert_eq!(b["allowance"]["used"], est, "charged its reservation: {b}");
    let ev = gw.events("m-sweep").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["status"], "expired");
    assert_eq!(ev[0]["estimated"], 1);
    ledger_check::assert_balanced(&gw.sync, "m-sweep").await;
    assert_eq!(old.await.unwrap(), 200);
    assert_eq!(fresh.await.unwrap(), 200);
    // Corrected: both charged the provider's usage, once each (the late settlement of
    // the expired one runs in `wait_until`: wait for it).
    let mut b = gw.settled("m-sweep").await;
    for _ in 0..100 {
        if b["allowance"]["used"] == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        b = gw.settled("m-sweep").await;
    }
    assert_eq!(b["allowance"]["reserved"], 0, "{b}");
    assert_eq!(b["allowance"]["used"], 10, "both charged once: {b}");
    let ev = gw.events("m-sweep").await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(
        ev.iter().all(|e| e["status"] == "ok" && e["charged"] == 5),
        "{ev:?}"
    );
    ledger_check::assert_balanced(&gw.sync, "m-sweep").await;
}

/// Metering's cost on the request path, side by side in one run: the same non-stream
/// chat request against a worker with metering on (wallet reservation + settlement in
/// `wait_until`) and one with `METERING=off`, interleaved. Not a pass/fail test:
/// `cargo test -p tollbooth-tests --test e2e_ledger bench_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_metering_on_vs_off() {
    // Production cache settings: key records and the catalogue come from isolate memory.
    let caches = [("CATALOGUE_TTL_MS", "60000"), ("KEY_CACHE_TTL_MS", "60000")];
    let on = Gateway::start(&caches).await;
    let off = Gateway::start(&[caches[0], caches[1], ("METERING", "off")]).await;
    let key_on = on.key("m-bench", "basic", None).await;
    let key_off = off.key("m-bench", "basic", None).await;
    on.sync
        .credit_wallet("m-bench", "bench-credit", 1_000_000_000, "bench")
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(on.chat(&key_on, "m", json!({}), None).await.status(), 200);
        assert_eq!(off.chat(&key_off, "m", json!({}), None).await.status(), 200);
    }
    let n = 300;
    let (mut t_on, mut t_off) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = std::time::Instant::now();
        assert_eq!(on.chat(&key_on, "m", json!({}), None).await.status(), 200);
        t_on.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = std::time::Instant::now();
        assert_eq!(off.chat(&key_off, "m", json!({}), None).await.status(), 200);
        t_off.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!("| metering | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (name, v) in [("on", &mut t_on), ("off", &mut t_off)] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99)
        );
    }
    let b = on.settled("m-bench").await;
    assert_eq!(b["usage"]["requests"], 320);
}
