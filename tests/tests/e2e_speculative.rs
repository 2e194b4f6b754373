//! Speculative admission in real workerd (`wrangler dev --local`, local D1 and KV, the
//! mock upstream): once the isolate expects a member to be admitted, the upstream call
//! starts while the reservation commits; a refusal (429, 402) cancels that call, leaks
//! nothing to the caller, and is recorded as a usage event charged 0; the catalogue's
//! kill switch makes admission strictly precede the upstream call again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tollbooth_core::auth::ApiKey;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_tests::harness::{EdgeWorker, WorkerOptions};
use tollbooth_tests::ledger_check;
use tollbooth_tests::mock::{spawn, MockConfig, MockHandle};
use tollbooth_tests::sync_client::SyncClient;

const SECRET: &str = "test-sync-secret-0123456789";
/// The slow model's time to first token: a refusal must come back before it (a refusal
/// that waited for the upstream would take at least this long; generous for loaded CI).
const TTFT_MS: u64 = 6000;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Gateway {
    worker: EdgeWorker,
    sync: SyncClient,
    mock: MockHandle,
    http: reqwest::Client,
}

fn catalogue(mock_base: &str, speculative: bool) -> Value {
    json!({
        "version": format!("spec-test-{speculative}"),
        "providers": [{"id": "mock", "kind": "openai", "base_url": format!("{mock_base}/v1"),
                       "credentials": [{"id": "c1", "secret": "sk-upstream-secret"}]}],
        "models": [
            {"name": "m-slow", "deployments": [{"provider": "mock",
              "model": format!("gpt-4o-mini@ttft={TTFT_MS}")}],
             "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000},
             "max_output_tokens": 1000},
            {"name": "m-200", "deployments": [{"provider": "mock",
              "model": "gpt-4o-mini@ttft=200"}],
             "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000},
             "max_output_tokens": 1000},
            {"name": "m-0", "deployments": [{"provider": "mock", "model": "gpt-4o-mini"}],
             "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000},
             "max_output_tokens": 1000},
        ],
        "plans": [{"id": "basic", "allowed_models": ["*"]}],
        "settings": {"speculative_admission": speculative},
    })
}

impl Gateway {
    /// A gateway whose admissions take 300 ms (a far D1 primary): a speculative
    /// request's upstream call has surely reached the mock before its refusal.
    async fn start(speculative: bool) -> Gateway {
        Gateway::start_with(
            speculative,
            &[
                ("CATALOGUE_TTL_MS", "0"),
                ("KEY_CACHE_TTL_MS", "0"),
                ("TEST_LEDGER_DELAY_MS", "300"),
            ],
        )
        .await
    }

    async fn start_with(speculative: bool, extra: &[(&str, &str)]) -> Gateway {
        let mock = spawn(MockConfig::default()).await.unwrap();
        let vars = [
            ("SYNC_SECRET", SECRET),
            ("TEST_CLOCK", "1"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
        ]
        .iter()
        .chain(extra.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let worker = EdgeWorker::start(WorkerOptions { vars }).await.unwrap();
        let sync = SyncClient::new(&worker.base_url, SECRET);
        let snapshot = serde_json::from_value(catalogue(&mock.base_url(), speculative)).unwrap();
        let r = sync.put_catalogue(&snapshot).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        Gateway {
            worker,
            sync,
            mock,
            http: reqwest::Client::new(),
        }
    }

    async fn key(&self, member: &str, rpm: Option<u32>) -> String {
        let mut seed = [7u8; 32];
        for (i, b) in format!("{member}/{rpm:?}").bytes().take(32).enumerate() {
            seed[i] = b;
        }
        let key = ApiKey::generate(&seed);
        let record = KeyRecord {
            public_id: key.public_id().to_string(),
            secret_hash: key.secret_hash(),
            member_id: member.into(),
            plan_id: "basic".into(),
            status: Default::default(),
            role: Default::default(),
            expires_at: None,
            allowed_models: None,
            rpm,
            tpm: None,
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

    /// A tokens allowance that does not renew and ends at `end`.
    async fn grant(&self, member: &str, amount: u64, end: u64) {
        let start = now_unix() - 60;
        let r = self
            .sync
            .put_allowance(
                member,
                &json!({"plan_id": "basic", "unit": "tokens", "amount": amount,
                        "period_start": start, "period_end": end,
                        "grant_id": format!("grant-{member}"), "period": "none"}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }

    async fn chat(&self, key: &str, stream: bool, clock: Option<u64>) -> reqwest::Response {
        self.chat_model("m-slow", key, stream, clock).await
    }

    async fn chat_model(
        &self,
        model: &str,
        key: &str,
        stream: bool,
        clock: Option<u64>,
    ) -> reqwest::Response {
        let body = json!({"model": model, "stream": stream, "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hello world"}]});
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

    async fn upstream_calls(&self) -> Vec<Value> {
        let r: Value = self
            .http
            .get(format!("{}/_mock/requests", self.mock.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["path"] == "/v1/chat/completions")
            .collect()
    }

    /// Waits until the mock says how call `seq` ended.
    async fn stream_end(&self, seq: &Value) -> Value {
        for _ in 0..100 {
            let calls = self.upstream_calls().await;
            if let Some(c) = calls.iter().find(|c| &c["seq"] == seq) {
                if !c["stream_end"].is_null() {
                    return c["stream_end"].clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Value::Null
    }

    async fn settled(&self, member: &str) {
        for _ in 0..200 {
            let r = self.sync.balance(member).await.unwrap();
            if r.body["open_reservations"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("reservations of {member} never settled");
    }

    async fn events(&self, member: &str) -> Vec<Value> {
        self.sync.member_usage_events(member).await
    }

    /// Waits for the usage event of `request_id`.
    async fn event(&self, member: &str, request_id: &str) -> Value {
        for _ in 0..100 {
            if let Some(e) = self
                .events(member)
                .await
                .into_iter()
                .find(|e| e["request_id"] == request_id)
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no usage event for {request_id}");
    }
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// A refusal leaks nothing: the caller's error shape, no stream, no upstream text.
async fn assert_refusal(r: reqwest::Response, status: u16, code: &str) {
    assert_eq!(r.status().as_u16(), status);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let text = r.text().await.unwrap();
    assert!(!text.contains("tok0") && !text.contains("data:"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_speculative_refusals_cancel_the_upstream_and_leak_nothing() {
    let gw = Gateway::start(true).await;

    // --- 429: a key with 2 requests per minute.
    let key = gw.key("m-spec", Some(2)).await;
    gw.grant("m-spec", 1_000_000, now_unix() + 86_400).await;
    // One ledger time for the whole section: every request falls in one rate window.
    let t = now_unix();

    // First sight of the member in this isolate: serial, the upstream as the caller asked.
    let r = gw.chat(&key, false, Some(t)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    let calls = gw.upstream_calls().await;
    assert_eq!(calls.len(), 1);
    assert_ne!(calls[0]["body"]["stream"], true, "{}", calls[0]["body"]);
    gw.settled("m-spec").await;

    // Now the isolate expects admission: the upstream is called in stream mode while the
    // reservation commits; the answer is the same, and billed the same.
    let r = gw.chat(&key, false, Some(t)).await;
    assert_eq!(r.status(), 200);
    let id2 = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(body["usage"]["total_tokens"], 5, "{body}");
    let calls = gw.upstream_calls().await;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["body"]["stream"], true, "{}", calls[1]["body"]);
    gw.settled("m-spec").await;
    let e = gw.event("m-spec", &id2).await;
    assert_eq!(
        (e["status"].as_str(), e["charged"].as_i64()),
        (Some("ok"), Some(5)),
        "{e}"
    );

    // The third request in the minute is refused while its upstream call already runs:
    // 429 long before the upstream's first byte, and the call is cancelled.
    let t0 = Instant::now();
    let r = gw.chat(&key, true, Some(t)).await;
    let elapsed = t0.elapsed();
    let id3 = request_id(&r);
    assert!(r.headers().contains_key("retry-after"));
    assert_refusal(r, 429, "rate_limit_exceeded").await;
    assert!(
        elapsed < Duration::from_millis(TTFT_MS),
        "the refusal waited for the upstream: {elapsed:?}"
    );
    let calls = gw.upstream_calls().await;
    assert_eq!(calls.len(), 3, "the refused request was speculated");
    assert_eq!(gw.stream_end(&calls[2]["seq"]).await, "cancelled");
    let e = gw.event("m-spec", &id3).await;
    assert_eq!(e["status"], "speculative_abort", "{e}");
    assert_eq!(e["charged"], 0, "{e}");

    // The key is now known to be refused: the next refusal does not call the upstream.
    let r = gw.chat(&key, true, Some(t)).await;
    assert_refusal(r, 429, "rate_limit_exceeded").await;
    assert_eq!(gw.upstream_calls().await.len(), 3);
    gw.settled("m-spec").await;
    ledger_check::assert_balanced(&gw.sync, "m-spec").await;

    // --- 402: the allowance ends (the ledger clock moves past it) while the isolate
    // still expects admission; there is no wallet.
    let key = gw.key("m-quota", None).await;
    let end = now_unix() + 600;
    gw.grant("m-quota", 1_000_000, end).await;
    let r = gw.chat(&key, false, None).await;
    assert_eq!(r.status(), 200);
    gw.settled("m-quota").await;
    let before = gw.upstream_calls().await.len();
    let t0 = Instant::now();
    let r = gw.chat(&key, false, Some(end + 60)).await;
    let elapsed = t0.elapsed();
    let id = request_id(&r);
    assert_refusal(r, 402, "insufficient_quota").await;
    assert!(elapsed < Duration::from_millis(TTFT_MS), "{elapsed:?}");
    let calls = gw.upstream_calls().await;
    assert_eq!(calls.len(), before + 1);
    assert_eq!(gw.stream_end(&calls[before]["seq"]).await, "cancelled");
    let e = gw.event("m-quota", &id).await;
    assert_eq!(
        (e["status"].as_str(), e["charged"].as_i64()),
        (Some("speculative_abort"), Some(0))
    );
    // Refused members are not speculated for: no upstream call at all.
    let r = gw.chat(&key, false, Some(end + 60)).await;
    assert_refusal(r, 402, "insufficient_quota").await;
    assert_eq!(gw.upstream_calls().await.len(), before + 1);
    ledger_check::assert_balanced(&gw.sync, "m-quota").await;
    let used: i64 = gw
        .events("m-quota")
        .await
        .iter()
        .map(|e| e["charged"].as_i64().unwrap())
        .sum();
    assert_eq!(used, 5, "only the admitted request is charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kill_switch_makes_admission_serial() {
    let gw = Gateway::start(false).await;
    let key = gw.key("m-serial", Some(1)).await;
    gw.grant("m-serial", 1_000_000, now_unix() + 86_400).await;
    let t = now_unix();
    // The admitted request makes the isolate expect admission; with the switch off the
    // refusals that follow must never reach the upstream.
    let r = gw.chat(&key, false, Some(t)).await;
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let r = gw.chat(&key, true, Some(t)).await;
        assert_refusal(r, 429, "rate_limit_exceeded").await;
    }
    let calls = gw.upstream_calls().await;
    assert_eq!(
        calls.len(),
        1,
        "only the admitted request called the upstream"
    );
    assert_ne!(calls[0]["body"]["stream"], true);
    gw.settled("m-serial").await;

    // A member with room: the upstream is called as the caller asked (no forced stream).
    let key = gw.key("m-serial-2", None).await;
    gw.grant("m-serial-2", 1_000_000, now_unix() + 86_400).await;
    for _ in 0..2 {
        let r = gw.chat(&key, false, None).await;
        assert_eq!(r.status(), 200);
    }
    let calls = gw.upstream_calls().await;
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c["body"]["stream"] != true));
    gw.settled("m-serial-2").await;
    ledger_check::assert_balanced(&gw.sync, "m-serial").await;
    ledger_check::assert_balanced(&gw.sync, "m-serial-2").await;
}

/// Speculative admission's effect on latency, side by side in one run: the same requests
/// to the mock directly, through a worker with speculation, one with the kill switch
/// (serial admission) and one with `METERING=off` (no ledger at all), interleaved, for an
/// upstream that answers at once and one with a 200 ms time to first byte; non-stream
/// total time and stream time to first byte. Not a pass/fail test:
/// `cargo test -p tollbooth-tests --test e2e_speculative bench_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_speculative_vs_serial() {
    // TB_SPEC_BENCH_LEDGER_MS emulates the D1 round trip to a far primary.
    let delay = std::env::var("TB_SPEC_BENCH_LEDGER_MS").unwrap_or_else(|_| "0".into());
    let caches = [
        ("CATALOGUE_TTL_MS", "60000"),
        ("KEY_CACHE_TTL_MS", "60000"),
        ("TEST_LEDGER_DELAY_MS", delay.as_str()),
    ];
    let spec = Gateway::start_with(true, &caches).await;
    let serial = Gateway::start_with(false, &caches).await;
    let off = Gateway::start_with(true, &[caches[0], caches[1], ("METERING", "off")]).await;
    println!("ledger delay (TEST_LEDGER_DELAY_MS): {delay} ms");
    let mut keys = Vec::new();
    for gw in [&spec, &serial, &off] {
        let key = gw.key("m-bench", None).await;
        gw.grant("m-bench", 1_000_000_000, now_unix() + 86_400)
            .await;
        keys.push(key);
    }
    let n: usize = std::env::var("TB_SPEC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let http = reqwest::Client::new();
    let direct = |model: &'static str, stream: bool| {
        let http = http.clone();
        let url = format!("{}/v1/chat/completions", spec.mock.base_url());
        async move {
            let upstream = if model == "m-200" {
                "gpt-4o-mini@ttft=200"
            } else {
                "gpt-4o-mini"
            };
            let t = Instant::now();
            let mut r = http
                .post(url)
                .bearer_auth("sk-direct")
                .json(
                    &json!({"model": upstream, "stream": stream, "max_tokens": 10,
                    "messages": [{"role": "user", "content": "hello world"}]}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            first_byte_or_all(&mut r, stream, t).await
        }
    };
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!("| upstream | request | target | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for model in ["m-0", "m-200"] {
        for stream in [false, true] {
            // Warm up: every isolate has seen the member (the hint) and the caches.
            for _ in 0..10 {
                for (gw, key) in [&spec, &serial, &off].iter().zip(&keys) {
                    let mut r = gw.chat_model(model, key, stream, None).await;
                    assert_eq!(r.status(), 200);
                    first_byte_or_all(&mut r, stream, Instant::now()).await;
                }
            }
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); 4];
            for _ in 0..n {
                times[0].push(direct(model, stream).await);
                for (i, (gw, key)) in [&spec, &serial, &off].iter().zip(&keys).enumerate() {
                    let t = Instant::now();
                    let mut r = gw.chat_model(model, key, stream, None).await;
                    assert_eq!(r.status(), 200);
                    times[i + 1].push(first_byte_or_all(&mut r, stream, t).await);
                }
            }
            let what = if stream { "stream TTFB" } else { "non-stream" };
            for (name, v) in [
                "direct (mock)",
                "speculative",
                "serial (kill switch)",
                "no ledger (METERING=off)",
            ]
            .iter()
            .zip(times.iter_mut())
            {
                println!(
                    "| {model} | {what} | {name} | {:.2} | {:.2} | {:.2} |",
                    pct(v, 0.5),
                    pct(v, 0.9),
                    pct(v, 0.99)
                );
            }
        }
    }
}

/// Milliseconds since `t` to the first body byte (stream) or to the whole body; the
/// rest of a stream is read and dropped.
async fn first_byte_or_all(r: &mut reqwest::Response, stream: bool, t: Instant) -> f64 {
    if stream {
        let first = r.chunk().await.unwrap();
        assert!(first.is_some());
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        while r.chunk().await.unwrap().is_some() {}
        ms
    } else {
        while r.chunk().await.unwrap().is_some() {}
        t.elapsed().as_secs_f64() * 1000.0
    }
}
