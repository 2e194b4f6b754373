//! End-to-end tests of the edge ledger in real workerd (`wrangler dev --local`, local D1
//! and KV): the signed internal API, atomic admission under concurrency, exactly-once
//! settlement and credits, partial/failed request billing, allowance units and periods,
//! rate limits and the member endpoints.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tollbooth_tests::harness::{EdgeWorker, WorkerOptions};
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
    let (worker, sync) = start_worker(&[]).await;
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
        name: Some("laptop".into()),
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
    let health: Value = http
        .get(format!("{}/health", worker.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["kv"]["catalogue_version"], "v7");
    tokio::time::sleep(Duration::from_millis(1)).await;
}
