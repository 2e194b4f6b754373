//! Adversarial: getting served and leaving before the bill (issue 10, invariant 3). A
//! client that disconnects mid-stream, a worker killed mid-stream, a stream longer than
//! a reservation lives, a settlement that fails, an upstream that times out after the
//! request was sent, embeddings and rerank that fail upstream. After every request the
//! member's ledger equals the sum of its usage events.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tollbooth_core::keyrecord::KeyRole;
use tollbooth_tests::gateway::{now_unix, Gateway};
use tollbooth_tests::ledger_check::assert_balanced;

fn catalogue(mock: &str) -> Value {
    let price = json!({"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000});
    let model = |name: &str, provider: &str, upstream: &str| {
        json!({"name": name, "deployments": [{"provider": provider, "model": upstream}],
               "price": price, "max_output_tokens": 1000})
    };
    json!({
        "version": "disconnect-1",
        "providers": [
            {"id": "oa", "kind": "openai", "base_url": format!("{mock}/v1"),
             "credentials": [{"id": "oa-1", "secret": "sk-upstream-disconnect"}]},
            {"id": "quiet", "kind": "openai", "base_url": format!("{mock}/v1"), "timeout_ms": 4000,
             "credentials": [{"id": "q-1", "secret": "sk-upstream-quiet"}]},
            {"id": "slowpoke", "kind": "openai", "base_url": format!("{mock}/v1"), "timeout_ms": 1000,
             "credentials": [{"id": "sp-1", "secret": "sk-upstream-sp"}, {"id": "sp-2", "secret": "sk-upstream-sp"}]},
        ],
        "models": [
            model("m", "oa", "gpt-up"),
            model("long", "oa", "gpt-up@chunks=400,delay=50"),
            model("medium", "oa", "gpt-up@chunks=60,delay=200"),
            model("late", "slowpoke", "gpt-up@ttft=3000"),
            model("silent", "quiet", "gpt-up@hang_after=2"),
            {"name": "emb", "kind": "embedding", "deployments": [{"provider": "oa", "model": "text-emb"}],
             "price": {"input_per_mtok": 1_000_000}},
            {"name": "emb-400", "kind": "embedding", "deployments": [{"provider": "oa", "model": "text-emb@status=400"}],
             "price": {"input_per_mtok": 1_000_000}},
            {"name": "rr-500", "kind": "rerank", "deployments": [{"provider": "oa", "model": "rerank@status=500"}],
             "price": {"per_request": 100}},
        ],
        "plans": [{"id": "all", "allowed_models": ["*"]}],
    })
}

fn stream_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 1000, "stream": true,
           "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "hello world"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_disconnect_drain_is_bounded_then_billed_from_what_was_counted() {
    let gw = Gateway::start(&[("DRAIN_TIMEOUT_MS", "1500")], catalogue).await;
    let key = gw.key("m-leave", "all", KeyRole::Member).await;
    gw.grant("m-leave", "tokens", 1_000_000).await;
    // The upstream would stream for 20 s.
    let r = gw
        .post("/v1/chat/completions", &key, &stream_body("long"))
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    for _ in 0..3 {
        assert!(body.next().await.is_some());
    }
    drop(body);
    let t0 = Instant::now();
    let a = gw.settled("m-leave").await;
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "the drain was not bounded: {:?}",
        t0.elapsed()
    );
    assert_eq!(a.events, 1);
    let ev = gw.events("m-leave").await;
    let e = &ev[0];
    assert_eq!(e["status"], "client_abort", "{e}");
    // No usage came (the stream was cut before its end): billed from what was counted.
    assert_eq!(e["estimated"], 1, "{e}");
    assert!(e["output_tokens"].as_i64().unwrap() > 0, "{e}");
    assert!(e["charged"].as_i64().unwrap() > 0, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_worker_killed_mid_stream_is_charged_its_reservation() {
    let mut gw = Gateway::start(&[("RESERVATION_TTL_SECS", "60")], catalogue).await;
    let key = gw.key("m-crash", "all", KeyRole::Member).await;
    gw.credit("m-crash", 10_000_000).await;
    let r = gw
        .post("/v1/chat/completions", &key, &stream_body("long"))
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    assert!(body.next().await.is_some());
    let reserved = gw.balance("m-crash").await["wallet"]["reserved_micros"]
        .as_i64()
        .unwrap();
    assert!(reserved > 0);
    // The isolate dies with the request: nothing settles it.
    gw.worker.crash_and_restart().await.unwrap();
    drop(body);
    assert_eq!(gw.events("m-crash").await.len(), 0);
    // Not yet expired: the sweep leaves it alone.
    let r = gw.sync.sweep().await.unwrap();
    assert_eq!(r.body["charged"], 0, "{}", r.body);
    // Past its expiry the sweep charges the whole reservation (never releases it free).
    let r = gw.sync.sweep_at(now_unix() + 120).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["charged"], 1, "{}", r.body);
    let a = assert_balanced(&gw.sync, "m-crash").await;
    assert_eq!(a.open_reservations, 0);
    let ev = gw.events("m-crash").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["status"], "expired");
    assert_eq!(ev[0]["charged"], reserved);
    let b = gw.balance("m-crash").await;
    assert_eq!(b["wallet"]["balance_micros"], 10_000_000 - reserved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_long_stream_keeps_its_reservation_alive() {
    // Reservations live 6 s; the stream takes 12 s.
    let gw = Gateway::start(&[("RESERVATION_TTL_SECS", "6")], catalogue).await;
    let key = gw.key("m-long", "all", KeyRole::Member).await;
    gw.grant("m-long", "tokens", 1_000_000).await;
    let http = gw.http.clone();
    let url = format!("{}/v1/chat/completions", gw.worker.base_url);
    let k = key.clone();
    let reader = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(k)
            .json(&stream_body("medium"))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    });
    tokio::time::sleep(Duration::from_secs(9)).await;
    let r = gw.sync.sweep().await.unwrap();
    assert_eq!(
        r.body["charged"], 0,
        "a stream still running was swept: {}",
        r.body
    );
    let text = reader.await.unwrap();
    assert!(text.contains("[DONE]"));
    gw.settled("m-long").await;
    let ev = gw.events("m-long").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["status"], "ok");
    assert_eq!(ev[0]["estimated"], 0, "{}", ev[0]);
    assert_eq!(ev[0]["output_tokens"], 60);

    // Heartbeats (every 2 s here) do not hide an upstream that went silent: after its
    // 4 s of idleness the stream ends with an error and bills what was produced.
    let t0 = Instant::now();
    let r = gw
        .post("/v1/chat/completions", &key, &stream_body("silent"))
        .await;
    let text = r.text().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"));
    gw.settled("m-long").await;
    let ev = gw.events("m-long").await;
    let silent = ev.iter().find(|e| e["status"] == "upstream_error").unwrap();
    assert_eq!(silent["estimated"], 1);
    assert!(silent["output_tokens"].as_i64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_failed_settlement_is_stored_and_finished_by_the_cron() {
    // The first three settlement attempts of the isolate fail (all of the request's).
    let gw = Gateway::start(&[("TEST_FAIL_SETTLE", "3")], catalogue).await;
    let key = gw.key("m-pending", "all", KeyRole::Member).await;
    gw.grant("m-pending", "tokens", 1_000_000).await;
    let (s, b) = gw
        .post_json(
            "/v1/chat/completions",
            &key,
            &json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hello world"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = gw.sync.pending().await.unwrap();
        if p.body["pending_settlements"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never stored as pending: {}",
            p.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = assert_balanced(&gw.sync, "m-pending").await;
    assert_eq!(a.open_reservations, 1, "still reserved until settled");
    // The cron (here: the same jobs on demand) finishes it with the real usage.
    let r = gw.sync.sweep().await.unwrap();
    assert_eq!(r.body["pending_finished"], 1, "{}", r.body);
    let a = gw.settled("m-pending").await;
    assert_eq!(a.events, 1);
    let ev = gw.events("m-pending").await;
    assert_eq!(ev[0]["estimated"], 0);
    assert_eq!(ev[0]["charged"], 5);
    assert_eq!(
        gw.sync.pending().await.unwrap().body["pending_settlements"],
        0
    );
    // Finishing it again changes nothing.
    gw.sync.sweep().await.unwrap();
    assert_eq!(gw.events("m-pending").await.len(), 1);
    assert_balanced(&gw.sync, "m-pending").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_timeout_after_send_is_billed_and_not_retried() {
    let gw = Gateway::start(&[], catalogue).await;
    let key = gw.key("m-late", "all", KeyRole::Member).await;
    gw.credit("m-late", 10_000_000).await;
    let body = json!({"model": "late", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello world"}]});
    let (s, b) = gw.post_json("/v1/chat/completions", &key, &body).await;
    assert_eq!(s, 504, "{b}");
    // Two credentials could have served it: the second was not tried for free.
    let late: Vec<Value> = gw
        .upstream_requests()
        .await
        .into_iter()
        .filter(|r| r["model"] == "gpt-up@ttft=3000")
        .collect();
    assert_eq!(late.len(), 1);
    gw.settled("m-late").await;
    let ev = gw.events("m-late").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["status"], "upstream_timeout");
    assert_eq!(ev[0]["estimated"], 1);
    // The whole reservation: the prompt estimate and the output cap.
    assert!(ev[0]["output_tokens"] == 100, "{}", ev[0]);
    assert!(ev[0]["charged"].as_i64().unwrap() > 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_embeddings_and_rerank_settle_on_every_exit_path() {
    let gw = Gateway::start(&[], catalogue).await;
    let key = gw.key("m-emb", "all", KeyRole::Member).await;
    gw.credit("m-emb", 10_000_000).await;
    // The provider refuses it (400) or fails (500): released at once, charged nothing.
    let (s, b) = gw
        .post_json(
            "/v1/embeddings",
            &key,
            &json!({"model": "emb-400", "input": "hello"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = gw
        .post_json(
            "/v1/rerank",
            &key,
            &json!({"model": "rr-500", "query": "q", "documents": ["a", "b"]}),
        )
        .await;
    assert_eq!(s, 502, "{b}");
    // Refused before admission: nothing reserved.
    let (s, _) = gw
        .post_json("/v1/embeddings", &key, &json!({"model": "emb"}))
        .await;
    assert_eq!(s, 400);
    let t0 = Instant::now();
    let a = gw.settled("m-emb").await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "held until the sweep?"
    );
    assert_eq!(a.events, 2);
    let ev = gw.events("m-emb").await;
    assert!(
        ev.iter()
            .all(|e| e["charged"] == 0 && e["status"] == "upstream_error"),
        "{ev:?}"
    );
    // A successful one is billed its input tokens.
    let (s, _) = gw
        .post_json(
            "/v1/embeddings",
            &key,
            &json!({"model": "emb", "input": "hello big world"}),
        )
        .await;
    assert_eq!(s, 200);
    gw.settled("m-emb").await;
    let b = gw.balance("m-emb").await;
    assert_eq!(b["wallet"]["balance_micros"], 10_000_000 - 3);
}
