//! Adversarial: costing the operator without a key (issue 10, invariants 10 and 12).
//! Huge bodies to the internal and the model APIs before any authentication, internal
//! error text for unauthenticated callers, a control plane that never answers the front
//! door, guessable request ids, tables that grow forever.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use serde_json::{json, Value};
use tollbooth_core::keyrecord::KeyRole;
use tollbooth_tests::gateway::{now_unix, Gateway};
use tollbooth_tests::harness::{EdgeWorker, WorkerOptions};
use tollbooth_tests::ledger_check::assert_balanced;

fn catalogue(mock: &str) -> Value {
    json!({
        "version": "oversized-1",
        "providers": [{"id": "oa", "kind": "openai", "base_url": format!("{mock}/v1"),
                       "credentials": [{"id": "oa-1", "secret": "sk-upstream-oversized"}]}],
        "models": [{"name": "m", "deployments": [{"provider": "oa", "model": "gpt-up"}],
                    "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000}},
                   {"name": "long", "deployments": [{"provider": "oa",
                                                     "model": "gpt-up@chunks=400,delay=50"}],
                    "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000}}],
        "plans": [{"id": "all", "allowed_models": ["*"]}],
    })
}

/// Sends a request head and `body` on a raw connection and returns the status and the
/// rest of the answer, which must arrive within 10 s. A dropped connection or no answer
/// fails (the worker may stop reading the body early: write errors are ignored, the
/// answer is read concurrently). `wrangler dev` forwards a request only once its body
/// has arrived, so the body is sent complete.
async fn early_answer(base: &str, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = sock.split();
    let request = format!("{head}host: {addr}\r\nconnection: close\r\n\r\n");
    let write = async {
        // The worker may stop reading (and close) before all of it is written.
        let _ = wr.write_all(request.as_bytes()).await;
        let _ = wr.write_all(body).await;
        let _ = wr.flush().await;
        // Hold the connection open until the answer is read.
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&got).contains("}") {
                break;
            }
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            got = read => got,
            () = write => unreachable!(),
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no answer within 10 s: {head}"));
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text)
}

/// A chunked body of `mb` MiB (no `Content-Length`).
fn chunked(mb: usize) -> reqwest::Body {
    let chunk = Bytes::from(vec![b'x'; 1024 * 1024]);
    reqwest::Body::wrap_stream(stream::iter(
        (0..mb).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_internal_and_model_apis_bound_input_before_auth() {
    let gw = Gateway::start(&[("MAX_BODY_BYTES", "1000000")], catalogue).await;
    let base = gw.worker.base_url.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Internal API, junk signature headers, 20 MiB: refused with 413 before the
    // signature is even checked, and without buffering the body.
    let t0 = Instant::now();
    let r = http
        .post(format!("{base}/internal/v1/keys/x"))
        .header("x-tollbooth-timestamp", "1")
        .header("x-tollbooth-signature", "00")
        .body(chunked(20))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        // The worker may close the connection while the client is still sending.
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(20));
    // The same with a declared length: refused from the header alone.
    let (status, text) = early_answer(
        &base,
        &format!(
            "POST /internal/v1/keys/x HTTP/1.1\r\nx-tollbooth-timestamp: 1\r\n\
             x-tollbooth-signature: 00\r\ncontent-length: {}\r\n",
            20 * 1024 * 1024
        ),
        &vec![b'x'; 20 * 1024 * 1024],
    )
    .await;
    assert_eq!(status, 413, "{text}");
    // Model API without a key: 401 before the body is read; with a key: 413 in the
    // caller's shape once the limit is passed.
    let chunk = |n: usize| {
        let mut c = format!("{n:x}\r\n").into_bytes();
        c.extend(std::iter::repeat_n(b'x', n));
        c.extend_from_slice(b"\r\n");
        c
    };
    let head = |path: &str, key: &str| {
        format!("POST {path} HTTP/1.1\r\n{key}transfer-encoding: chunked\r\n")
    };
    let last = b"0\r\n\r\n";
    let five_mib: Vec<u8> = (0..80)
        .flat_map(|_| chunk(64 * 1024))
        .chain(last.iter().copied())
        .collect();
    let (status, text) = early_answer(&base, &head("/v1/chat/completions", ""), &five_mib).await;
    assert_eq!(status, 401, "{text}");
    let key = gw.key("m-big", "all", KeyRole::Member).await;
    let (status, text) = early_answer(
        &base,
        &head("/v1/messages", &format!("x-api-key: {key}\r\n")),
        &five_mib,
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains(r#""type":"error""#),
        "Anthropic shape: {text}"
    );
    // The worker still serves, and the internal API still works.
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    gw.credit("m-big", 1_000).await;
    assert_balanced(&gw.sync, "m-big").await;
}

#[tokio::test]
async fn test_unauthenticated_callers_never_see_internal_error_text() {
    // The worker's own log lines reach the log file.
    std::env::set_var("TB_WORKER_LOG_LEVEL", "log");
    for (var, value) in [("TEST_CLOCK", "1"), ("SYNC_SECRET", "short")] {
        let worker = EdgeWorker::start_unchecked(WorkerOptions {
            vars: vec![
                ("ENVIRONMENT".into(), "production".into()),
                (var.into(), value.into()),
            ],
        })
        .await
        .unwrap();
        for path in ["/health", "/v1/models", "/internal/v1/usage"] {
            let r = reqwest::get(format!("{}{path}", worker.base_url))
                .await
                .unwrap();
            assert_eq!(r.status(), 500, "{path}");
            let text = r.text().await.unwrap();
            assert!(!text.contains(var), "{path}: {text}");
            assert!(!text.contains(value) || value == "1", "{path}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["type"], "server_error");
        }
        // The operator finds the reason in the log.
        let log = std::fs::read_to_string(&worker.proc.log).unwrap_or_default();
        assert!(log.contains(var), "the log names the variable");
    }
    // A healthy worker's /health says nothing internal either.
    let worker = EdgeWorker::start(WorkerOptions::default()).await.unwrap();
    let v: Value = reqwest::get(format!("{}/health", worker.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["d1"].get("error").is_none() && v["kv"].get("error").is_none(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_front_door_times_out_with_504_while_the_data_plane_serves() {
    // A control plane that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let origin = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(
        &[("ADMIN_ORIGIN", &origin), ("ADMIN_TIMEOUT_MS", "2000")],
        catalogue,
    )
    .await;
    let key = gw.key("m-door", "all", KeyRole::Member).await;
    let http = gw.http.clone();
    let url = format!("{}/api/plans", gw.worker.base_url);
    let t0 = Instant::now();
    let door = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    // Meanwhile the data plane answers.
    let r = gw
        .http
        .get(format!("{}/v1/models", gw.worker.base_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = door.await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "upstream_timeout", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_request_ids_are_random_and_tables_are_pruned() {
    let mut gw = Gateway::start(&[("USAGE_RETENTION_DAYS", "1")], catalogue).await;
    let key = gw.key("m-ids", "all", KeyRole::Member).await;
    gw.credit("m-ids", 1_000_000).await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let r = gw
            .post(
                "/v1/chat/completions",
                &key,
                &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let hex = id.strip_prefix("req_").unwrap();
        // 8 hex digits of time + 24 of randomness (96 bits).
        assert_eq!(hex.len(), 32, "{id}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        ids.insert(hex[8..].to_owned());
    }
    assert_eq!(ids.len(), 20);
    gw.settled("m-ids").await;
    assert_eq!(gw.events("m-ids").await.len(), 20);
    // One more request whose isolate dies mid-stream: its reservation expires and is
    // charged by the sweep, then must be pruned past retention like a settled one.
    let r = gw
        .post(
            "/v1/chat/completions",
            &key,
            &json!({"model": "long", "max_tokens": 1000, "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    assert!(futures_util::StreamExt::next(&mut body).await.is_some());
    gw.worker.crash_and_restart().await.unwrap();
    drop(body);
    let now = now_unix();
    // Three days on, with one day of retention: usage events, settled reservations and
    // idempotency records are pruned by the scheduled jobs; the expired reservation is
    // charged now (so it is not yet past retention).
    let r = gw.sync.sweep_at(now + 3 * 86_400).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["charged"], 1, "{}", r.body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["pruned"]["usage_events"].as_u64().unwrap() >= 20,
        "{}",
        r.body
    );
    assert!(
        r.body["pruned"]["reservations"].as_u64().unwrap() >= 20,
        "{}",
        r.body
    );
    assert!(
        r.body["pruned"]["idempotency"].as_u64().unwrap() >= 1,
        "{}",
        r.body
    );
    assert_eq!(gw.events("m-ids").await.len(), 1);
    // Two more days: the expired-and-charged reservation and its event go too.
    let r = gw.sync.sweep_at(now + 5 * 86_400).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["pruned"]["reservations"], 1, "{}", r.body);
    assert_eq!(r.body["pruned"]["usage_events"], 1, "{}", r.body);
    assert!(gw.events("m-ids").await.is_empty());
}
