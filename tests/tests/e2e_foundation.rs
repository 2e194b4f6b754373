//! End-to-end checks of the foundation: each real component starts on a free
//! loopback port, answers, and stops by process group.

use std::time::Duration;

use serde_json::{json, Value};
use tollbooth_tests::harness::{AdminServer, DynamoLocal, EdgeWorker, MockUpstream, WorkerOptions};

async fn get_json(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test]
async fn test_worker_health_in_workerd_with_local_d1_and_kv() {
    let worker = EdgeWorker::start(WorkerOptions::default()).await.unwrap();

    let (status, body) = get_json(&format!("{}/health", worker.base_url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    // Written by migrations/0001_init.sql: proves the D1 migrations ran and D1 is bound.
    assert_eq!(body["d1"]["schema_version"], "1");
    assert_eq!(body["kv"]["catalogue_version"], Value::Null);

    // A value written to local KV with wrangler is what the running worker reads, but
    // /health checks the bindings at most every 10 s per isolate (it must stay cheap):
    // a change shows only once the isolate's last check is 10 s old.
    let put = |value: &str| {
        worker
            .wrangler_local(&[
                "kv",
                "key",
                "put",
                "--binding",
                "CONFIG",
                "catalogue:current",
                value,
            ])
            .unwrap();
    };
    let health_until = |value: &'static str| {
        let url = format!("{}/health", worker.base_url);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (_, body) = get_json(&url).await;
                if body["kv"]["catalogue_version"] == value {
                    return std::time::Instant::now();
                }
                assert!(std::time::Instant::now() < deadline, "{body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    put("v41");
    // Seen at most 100 ms after the isolate re-checked: its cache is fresh.
    let refreshed = health_until("v41").await;
    put("v42");
    let (_, body) = get_json(&format!("{}/health", worker.base_url)).await;
    assert!(
        refreshed.elapsed() < Duration::from_secs(9),
        "the KV write took too long to observe the cache: {:?}",
        refreshed.elapsed()
    );
    assert_eq!(body["kv"]["catalogue_version"], "v41", "cached: {body}");
    let seen = health_until("v42").await;
    let after = seen - refreshed;
    assert!(
        after >= Duration::from_secs(9) && after < Duration::from_secs(13),
        "the new value showed {after:?} after the last check"
    );

    let (status, body) = get_json(&format!("{}/no/such/route", worker.base_url)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn test_admin_health_against_dynamodb_local() {
    let mut dynamo = DynamoLocal::start().await.unwrap();
    let admin = AdminServer::start(&dynamo.endpoint, &[]).await.unwrap();

    let (status, body) = get_json(&format!("{}/health", admin.base_url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["table_status"], "ACTIVE");

    // With the database gone the admin side says so instead of pretending.
    dynamo.proc.stop();
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/health", admin.base_url))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
}

#[tokio::test]
async fn test_mock_upstream_binary_announces_and_serves() {
    let mock = MockUpstream::start(&[]).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", mock.base_url))
        .bearer_auth("sk-test")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
}
