//! End-to-end tests of the edge data plane: the real worker under `wrangler dev --local`
//! (workerd, local KV and D1) in front of the mock upstream, driven over HTTP by raw
//! requests and by the official Python SDKs.
//!
//! One worker and two mock upstreams are shared by every test in this file (each start
//! costs seconds); tests use distinct models and providers so they do not disturb each
//! other's breakers or mock counters. The processes are stopped at exit.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tollbooth_core::auth::ApiKey;
use tollbooth_core::sse;
use tollbooth_tests::harness::{EdgeWorker, MockUpstream, WorkerOptions};

/// Provider secrets: none of these may ever appear in a response.
const SECRETS: &[&str] = &[
    "sk-upstream-openai-SECRET1",
    "sk-ant-upstream-SECRET2",
    "AIzaUpstreamSECRET3",
    "sk-upstream-failover-SECRET4",
];

struct World {
    worker: EdgeWorker,
    mock: MockUpstream,
    mock_b: MockUpstream,
    keys: Keys,
}

struct Keys {
    basic: String,
    all: String,
    /// An operator key: the only kind shown which deployment answered.
    ops: String,
    narrow: String,
    disabled: String,
    expired: String,
    suspended: String,
    wrong_secret: String,
    unknown: String,
}

static WORLD: OnceCell<World> = OnceCell::const_new();
/// Statics are never dropped, so the shared processes get a watchdog: a detached shell
/// that waits for this test binary to exit, then stops each process group (bash's
/// builtin `kill -- -PGID`) and removes the worker's scratch directory.
fn watchdog(pgids: &[u32], scratch: &std::path::Path) {
    let me = std::process::id();
    let kills: String = pgids
        .iter()
        .map(|p| format!("kill -TERM -- -{p} 2>/dev/null; "))
        .collect();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; {kills} sleep 5; rm -rf -- '{}'",
        scratch.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let _ = cmd.spawn();
}

fn key(seed: u8) -> ApiKey {
    ApiKey::generate(&[seed; 32])
}

fn record(k: &ApiKey, member: &str, plan: &str, extra: Value) -> Value {
    let mut r = json!({
        "public_id": k.public_id(),
        "secret_hash": k.secret_hash(),
        "member_id": member,
        "plan_id": plan,
    });
    if let (Some(obj), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
        for (a, b) in extra {
            obj.insert(a.clone(), b.clone());
        }
    }
    r
}

fn catalogue(a: &str, b: &str) -> Value {
    let oa = |id: &str, base: &str, secret: &str, extra: Value| {
        let mut p = json!({"id": id, "kind": "openai", "base_url": format!("{base}/v1"),
            "credentials": [{"id": format!("{id}-k1"), "secret": secret}]});
        if let (Some(obj), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        p
    };
    let dep = |p: &str, m: &str, w: u32| json!({"provider": p, "model": m, "weight": w});
    // Every model here is marked free: billing is e2e_ledger's; a zero price without
    // the mark is refused (test_unpriced_model_refused_and_prefix_routes_priced).
    let chat =
        |name: &str, deps: Vec<Value>| json!({"name": name, "deployments": deps, "free": true});
    json!({
        "version": "v1",
        "providers": [
            oa("oa", a, SECRETS[0], json!({"prefix_routing": true})),
            {"id": "an", "kind": "anthropic", "base_url": format!("{a}/v1"),
             "credentials": [{"id": "an-k1", "secret": SECRETS[1]}]},
            {"id": "gm", "kind": "gemini", "base_url": format!("{a}/v1beta"),
             "credentials": [{"id": "gm-k1", "secret": SECRETS[2]}]},
            oa("fo-500", b, SECRETS[3], json!({})),
            oa("fo-429", b, SECRETS[3], json!({})),
            oa("fo-good", b, SECRETS[3], json!({})),
            oa("fo-hang", b, SECRETS[3], json!({"timeout_ms": 800,
                "credentials": [{"id": "fo-hang-k1", "secret": SECRETS[3]}, {"id": "fo-hang-k2", "secret": SECRETS[3]}]})),
            oa("fo-ttft", b, SECRETS[3], json!({"timeout_ms": 800,
                "credentials": [{"id": "fo-ttft-k1", "secret": SECRETS[3]}, {"id": "fo-ttft-k2", "secret": SECRETS[3]}]})),
            oa("oa-err", a, SECRETS[0], json!({})),
            oa("br", b, SECRETS[3], json!({})),
            oa("br-backup", b, SECRETS[3], json!({})),
        ],
        "models": [
            {"name": "chat-oa", "aliases": ["gpt-4o-mini"], "deployments": [dep("oa", "m", 1)], "free": true},
            {"name": "unpriced", "deployments": [dep("oa", "m-unpriced", 1)]},
            {"name": "off", "enabled": false, "free": true, "deployments": [dep("oa", "m-off", 1)]},
            chat("chat-oa-tools", vec![dep("oa", "m@tools=1", 1)]),
            chat("chat-an", vec![dep("an", "claude-m", 1)]),
            chat("chat-an-tools", vec![dep("an", "claude-m@tools=1", 1)]),
            chat("chat-gm", vec![dep("gm", "gemini-m", 1)]),
            chat("chat-gm-tools", vec![dep("gm", "gemini-m@tools=1", 1)]),
            chat("slow", vec![dep("oa", "m@delay=200,chunks=5", 1)]),
            chat("midfail", vec![dep("oa", "m@reset_after=2,delay=50", 1)]),
            chat("premium", vec![dep("oa", "m", 1)]),
            {"name": "forced-stream", "stream_mode": "force_stream", "deployments": [dep("gm", "gemini-fs", 1)], "free": true},
            {"name": "forced-nonstream", "stream_mode": "force_non_stream", "deployments": [dep("an", "claude-fns", 1)], "free": true},
            chat("fail500", vec![dep("fo-500", "m@status=500", 1000), dep("fo-good", "ok500", 1)]),
            chat("fail429", vec![dep("fo-429", "m@status=429", 1000), dep("fo-good", "ok429", 1)]),
            chat("hang", vec![dep("fo-hang", "m@hang=1", 1)]),
            chat("slowstart", vec![dep("fo-ttft", "m@ttft=3000", 1)]),
            chat("upstream400", vec![dep("oa-err", "m@status=400", 1)]),
            chat("upstream401", vec![dep("oa-err", "m@status=401", 1)]),
            chat("breaker", vec![dep("br", "m@fail_first=2", 1000), dep("br-backup", "okbr", 1)]),
            {"name": "emb", "kind": "embedding", "deployments": [dep("oa", "text-emb", 1)], "free": true},
            {"name": "rr", "kind": "rerank", "deployments": [dep("oa", "rerank-m", 1)], "free": true},
        ],
        "plans": [
            {"id": "basic", "allowed_models": ["chat-oa", "chat-oa-tools", "chat-an", "chat-an-tools",
                "chat-gm", "chat-gm-tools", "slow", "midfail", "forced-stream", "forced-nonstream",
                "fail500", "fail429", "hang", "slowstart", "upstream400", "upstream401", "breaker", "emb", "rr"]},
            {"id": "all", "allowed_models": ["*"]},
        ],
    })
}

async fn world() -> &'static World {
    WORLD
        .get_or_init(|| async {
            // The request log lines are asserted on (test_one_log_line_per_request...).
            std::env::set_var("TB_WORKER_LOG_LEVEL", "log");
            let mock = MockUpstream::start(&[]).await.expect("mock");
            let mock_b = MockUpstream::start(&[]).await.expect("mock b");
            let worker = EdgeWorker::start(WorkerOptions {
                vars: vec![
                    ("ALLOW_LOOPBACK_UPSTREAMS".into(), "true".into()),
                    ("BREAKER_FAILURE_THRESHOLD".into(), "2".into()),
                    ("BREAKER_COOLDOWN_MS".into(), "1500".into()),
                    ("PATH_PREFIX".into(), "/gw".into()),
                ],
            })
            .await
            .expect("worker");
            watchdog(
                &[worker.proc.pid(), mock.proc.pid(), mock_b.proc.pid()],
                worker.persist.parent().expect("scratch"),
            );

            let (basic, all, narrow, disabled, expired, suspended, ops) =
                (key(1), key(2), key(3), key(4), key(5), key(6), key(7));
            let keys_kv = json!([
                {"key": format!("key:{}", basic.public_id()), "value": record(&basic, "m-basic", "basic", json!({})).to_string()},
                {"key": format!("key:{}", all.public_id()), "value": record(&all, "m-all", "all", json!({})).to_string()},
                {"key": format!("key:{}", ops.public_id()), "value": record(&ops, "m-ops", "all", json!({"role": "operator"})).to_string()},
                {"key": format!("key:{}", narrow.public_id()), "value": record(&narrow, "m-basic", "basic", json!({"allowed_models": ["chat-oa"]})).to_string()},
                {"key": format!("key:{}", disabled.public_id()), "value": record(&disabled, "m-basic", "basic", json!({"status": "disabled"})).to_string()},
                {"key": format!("key:{}", expired.public_id()), "value": record(&expired, "m-basic", "basic", json!({"expires_at": 1000})).to_string()},
                {"key": format!("key:{}", suspended.public_id()), "value": record(&suspended, "m-susp", "basic", json!({})).to_string()},
                {"key": "member:m-susp", "value": "{\"status\":\"suspended\"}"},
            ]);
            let cat = catalogue(&worker_mock_base(&mock), &worker_mock_base(&mock_b));
            let config_kv = json!([
                {"key": "catalogue:v:v1", "value": cat.to_string()},
                {"key": "catalogue:current", "value": "v1"},
            ]);
            let dir = worker.persist.parent().expect("scratch").to_path_buf();
            let kf = dir.join("keys.json");
            let cf = dir.join("config.json");
            std::fs::write(&kf, keys_kv.to_string()).expect("write");
            std::fs::write(&cf, config_kv.to_string()).expect("write");
            worker
                .wrangler_local(&["kv", "bulk", "put", kf.to_str().expect("utf8"), "--binding", "KEYS"])
                .expect("seed keys");
            worker
                .wrangler_local(&["kv", "bulk", "put", cf.to_str().expect("utf8"), "--binding", "CONFIG"])
                .expect("seed catalogue");
            let wrong = format!("sk-{}-{}", basic.public_id(), "a".repeat(52));
            let unknown = key(99).expose();
            World {
                keys: Keys {
                    basic: basic.expose(),
                    all: all.expose(),
                    ops: ops.expose(),
                    narrow: narrow.expose(),
                    disabled: disabled.expose(),
                    expired: expired.expose(),
                    suspended: suspended.expose(),
                    wrong_secret: wrong,
                    unknown,
                },
                worker,
                mock,
                mock_b,
            }
        })
        .await
}

fn worker_mock_base(m: &MockUpstream) -> String {
    m.base_url.trim_end_matches('/').to_owned()
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.worker.base_url, path)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Fails if any provider secret appears in headers or body.
fn assert_no_secrets(headers: &reqwest::header::HeaderMap, body: &str) {
    for s in SECRETS {
        assert!(!body.contains(s), "secret {s} leaked in body: {body}");
        for (name, value) in headers {
            let v = value.to_str().unwrap_or("");
            assert!(!v.contains(s), "secret {s} leaked in header {name}");
        }
    }
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
    /// The `data:` payloads of an SSE body (without `[DONE]`), with their event names.
    fn events(&self) -> Vec<(Option<String>, String)> {
        let mut d = sse::Decoder::new();
        let mut evs = d.push(self.text.as_bytes());
        evs.extend(d.finish());
        evs.into_iter().map(|e| (e.event, e.data)).collect()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    assert_no_secrets(&headers, &text);
    assert!(
        headers.contains_key("x-request-id"),
        "no x-request-id: {status} {text}"
    );
    Reply {
        status,
        headers,
        text,
    }
}

async fn post(w: &World, path: &str, key: &str, body: Value) -> Reply {
    send(client().post(w.url(path)).bearer_auth(key).json(&body)).await
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}])
}

fn chat_body(model: &str, stream: bool, tools: bool) -> Value {
    let mut b =
        json!({"model": model, "messages": [{"role": "user", "content": "hello there world"}]});
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    if tools {
        b["tools"] = weather_tools();
    }
    b
}

/// Assembles an OpenAI stream: (text, tool name, tool args, finish reason, usage).
fn assemble_openai(reply: &Reply) -> (String, String, String, String, Option<Value>) {
    let (mut text, mut name, mut args, mut finish, mut usage) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        None,
    );
    let mut done = false;
    for (_, data) in reply.events() {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let c: Value = serde_json::from_str(&data).expect("chunk json");
        assert!(c.get("error").is_none(), "error event: {data}");
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        for ch in c["choices"].as_array().expect("choices") {
            let d = &ch["delta"];
            if let Some(t) = d["content"].as_str() {
                text.push_str(t);
            }
            if let Some(tcs) = d["tool_calls"].as_array() {
                for tc in tcs {
                    if let Some(n) = tc["function"]["name"].as_str() {
                        name.push_str(n);
                    }
                    if let Some(a) = tc["function"]["arguments"].as_str() {
                        args.push_str(a);
                    }
                }
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                finish = f.to_owned();
            }
        }
    }
    assert!(done, "stream did not end with [DONE]: {}", reply.text);
    (text, name, args, finish, usage)
}

#[tokio::test]
async fn test_chat_every_upstream_stream_and_tools() {
    let w = world().await;
    for (model, provider, tool_completion) in [
        ("chat-oa", "oa", 3u64),
        ("chat-an", "an", 3),
        ("chat-gm", "gm", 1),
    ] {
        for tools in [false, true] {
            let m = if tools {
                format!("{model}-tools")
            } else {
                model.to_owned()
            };
            // Non-stream.
            let r = post(
                w,
                "/v1/chat/completions",
                &w.keys.basic,
                chat_body(&m, false, tools),
            )
            .await;
            assert_eq!(r.status, 200, "{m}: {}", r.text);
            // Members never learn provider ids or upstream model names; operators do.
            assert_eq!(r.header("x-tollbooth-deployment"), None, "{m}");
            let ops = post(
                w,
                "/v1/chat/completions",
                &w.keys.ops,
                chat_body(&m, false, tools),
            )
            .await;
            assert!(ops
                .header("x-tollbooth-deployment")
                .unwrap_or_default()
                .starts_with(&format!("{provider}/")));
            assert!(r.header("x-tollbooth-overhead-ms").is_some());
            let b = r.json();
            assert_eq!(b["object"], "chat.completion");
            assert_eq!(b["model"], m.as_str());
            let msg = &b["choices"][0]["message"];
            if tools {
                assert_eq!(b["choices"][0]["finish_reason"], "tool_calls", "{m}: {b}");
                assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
                let args: Value = serde_json::from_str(
                    msg["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(args, json!({"location": "Paris"}));
                assert_eq!(b["usage"]["completion_tokens"], tool_completion, "{m}: {b}");
            } else {
                assert_eq!(b["choices"][0]["finish_reason"], "stop", "{m}: {b}");
                assert_eq!(msg["content"], "tok0 tok1 tok2 ");
                assert_eq!(b["usage"]["completion_tokens"], 3);
            }
            assert_eq!(b["usage"]["prompt_tokens"], 3, "{m}: {b}");

            // Stream.
            let r = post(
                w,
                "/v1/chat/completions",
                &w.keys.basic,
                chat_body(&m, true, tools),
            )
            .await;
            assert_eq!(r.status, 200, "{m}: {}", r.text);
            assert!(r
                .header("content-type")
                .unwrap_or_default()
                .starts_with("text/event-stream"));
            let (text, name, args, finish, usage) = assemble_openai(&r);
            let usage = usage.unwrap_or_else(|| panic!("{m}: no usage chunk: {}", r.text));
            assert_eq!(usage["prompt_tokens"], 3, "{m}");
            if tools {
                assert_eq!(name, "get_weather", "{m}: {}", r.text);
                assert_eq!(
                    serde_json::from_str::<Value>(&args).unwrap(),
                    json!({"location": "Paris"})
                );
                assert_eq!(finish, "tool_calls");
                assert_eq!(usage["completion_tokens"], tool_completion);
            } else {
                assert_eq!(text, "tok0 tok1 tok2 ", "{m}");
                assert_eq!(finish, "stop");
                assert_eq!(usage["completion_tokens"], 3);
                assert_eq!(usage["total_tokens"], 6);
            }
        }
    }
}

#[tokio::test]
async fn test_stream_usage_chunk_only_when_asked_and_upstream_always_asked() {
    let w = world().await;
    let mut body = chat_body("chat-oa", true, false);
    body["messages"][0]["content"] = json!("usage probe unique words");
    body.as_object_mut().unwrap().remove("stream_options");
    let r = post(w, "/v1/chat/completions", &w.keys.basic, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (text, _, _, _, usage) = assemble_openai(&r);
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert!(usage.is_none(), "client did not ask for usage: {}", r.text);
    // The gateway asked the upstream for it anyway (billing needs it).
    let reqs: Value = client()
        .get(format!("{}/_mock/requests", w.mock.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = reqs
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["body"]["messages"][0]["content"] == "usage probe unique words")
        .expect("request reached the mock");
    assert_eq!(sent["body"]["stream_options"]["include_usage"], true);
    assert_eq!(
        sent["headers"]["authorization"],
        format!("Bearer {}", SECRETS[0])
    );
}

#[tokio::test]
async fn test_upstream_auth_styles_and_anthropic_version() {
    let w = world().await;
    for m in ["chat-an", "chat-gm"] {
        let mut body = chat_body(m, false, false);
        body["messages"][0]["content"] = json!(format!("auth style probe {m}"));
        let r = post(w, "/v1/chat/completions", &w.keys.basic, body).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let reqs: Value = client()
        .get(format!("{}/_mock/requests", w.mock.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reqs = reqs.as_array().unwrap();
    let an = reqs
        .iter()
        .rev()
        .find(|r| {
            r["path"] == "/v1/messages"
                && r["body"].to_string().contains("auth style probe chat-an")
        })
        .expect("anthropic request");
    assert_eq!(an["headers"]["x-api-key"], SECRETS[1]);
    assert!(an["headers"]["anthropic-version"].is_string());
    assert!(an["headers"].get("authorization").is_none());
    let gm = reqs
        .iter()
        .rev()
        .find(|r| {
            r["path"]
                .as_str()
                .unwrap_or("")
                .contains(":generateContent")
                && r["body"].to_string().contains("auth style probe chat-gm")
        })
        .expect("gemini request");
    assert_eq!(gm["headers"]["x-goog-api-key"], SECRETS[2]);
    assert!(
        !gm["query"].to_string().contains("key="),
        "Gemini key must not be in the URL: {gm}"
    );
}

fn messages_body(model: &str, stream: bool, tools: bool) -> Value {
    let mut b = json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hello there world"}]});
    if stream {
        b["stream"] = json!(true);
    }
    if tools {
        b["tools"] = json!([{"name": "get_weather", "description": "Weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]);
    }
    b
}

#[tokio::test]
async fn test_messages_ingress_openai_and_anthropic_upstreams() {
    let w = world().await;
    for model in ["chat-oa", "chat-an", "chat-gm"] {
        for tools in [false, true] {
            let m = if tools {
                format!("{model}-tools")
            } else {
                model.to_owned()
            };
            let r = send(
                client()
                    .post(w.url("/v1/messages"))
                    .header("x-api-key", &w.keys.basic)
                    .header("anthropic-version", "2023-06-01")
                    .json(&messages_body(&m, false, tools)),
            )
            .await;
            assert_eq!(r.status, 200, "{m}: {}", r.text);
            let b = r.json();
            assert_eq!(b["type"], "message");
            assert_eq!(b["role"], "assistant");
            assert_eq!(b["model"], m.as_str());
            assert_eq!(b["usage"]["input_tokens"], 3, "{m}: {b}");
            if tools {
                assert_eq!(b["stop_reason"], "tool_use", "{m}: {b}");
                let tu = b["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["type"] == "tool_use")
                    .expect("tool_use block");
                assert_eq!(tu["name"], "get_weather");
                assert_eq!(tu["input"], json!({"location": "Paris"}));
            } else {
                assert_eq!(b["stop_reason"], "end_turn", "{m}: {b}");
                assert_eq!(b["content"][0]["type"], "text");
                assert_eq!(b["content"][0]["text"], "tok0 tok1 tok2 ");
                assert_eq!(b["usage"]["output_tokens"], 3);
            }

            let r = send(
                client()
                    .post(w.url("/v1/messages"))
                    .header("x-api-key", &w.keys.basic)
                    .header("anthropic-version", "2023-06-01")
                    .json(&messages_body(&m, true, tools)),
            )
            .await;
            assert_eq!(r.status, 200, "{m}: {}", r.text);
            let evs = r.events();
            let names: Vec<String> = evs.iter().filter_map(|(e, _)| e.clone()).collect();
            assert_eq!(
                names.first().map(String::as_str),
                Some("message_start"),
                "{m}: {}",
                r.text
            );
            assert_eq!(
                names.last().map(String::as_str),
                Some("message_stop"),
                "{m}: {}",
                r.text
            );
            let (mut text, mut json_args, mut stop, mut out_tokens, mut tool_name) = (
                String::new(),
                String::new(),
                String::new(),
                0,
                String::new(),
            );
            for (_, data) in &evs {
                let v: Value = serde_json::from_str(data).unwrap();
                match v["type"].as_str().unwrap_or("") {
                    "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                        tool_name = v["content_block"]["name"].as_str().unwrap().to_owned();
                    }
                    "content_block_delta" => {
                        if let Some(t) = v["delta"]["text"].as_str() {
                            text.push_str(t);
                        }
                        if let Some(t) = v["delta"]["partial_json"].as_str() {
                            json_args.push_str(t);
                        }
                    }
                    "message_delta" => {
                        stop = v["delta"]["stop_reason"].as_str().unwrap_or("").to_owned();
                        out_tokens = v["usage"]["output_tokens"].as_u64().unwrap_or(0);
                    }
                    "error" => panic!("{m}: error event {data}"),
                    _ => {}
                }
            }
            if tools {
                assert_eq!(tool_name, "get_weather", "{m}: {}", r.text);
                assert_eq!(
                    serde_json::from_str::<Value>(&json_args).unwrap(),
                    json!({"location": "Paris"})
                );
                assert_eq!(stop, "tool_use");
            } else {
                assert_eq!(text, "tok0 tok1 tok2 ", "{m}");
                assert_eq!(stop, "end_turn");
                assert_eq!(out_tokens, 3, "{m}: {}", r.text);
            }
        }
    }
}

#[tokio::test]
async fn test_force_stream_modes_convert_both_ways() {
    let w = world().await;
    // forced-stream (Gemini upstream streamed) to a non-stream client.
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("forced-stream", false, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(b["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(b["usage"]["completion_tokens"], 3);
    // forced-nonstream (Anthropic upstream whole) to a stream client.
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("forced-nonstream", true, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (text, _, _, finish, usage) = assemble_openai(&r);
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(finish, "stop");
    assert_eq!(usage.expect("usage")["completion_tokens"], 3);
    // The upstream saw the mode, not what the client asked.
    let reqs: Value = client()
        .get(format!("{}/_mock/requests", w.mock.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reqs = reqs.as_array().unwrap();
    assert!(reqs.iter().any(|r| r["path"]
        .as_str()
        .unwrap_or("")
        .contains("gemini-fs:streamGenerateContent")));
    let fns = reqs
        .iter()
        .rev()
        .find(|r| r["body"]["model"] == "claude-fns")
        .expect("anthropic request");
    assert!(
        fns["body"].get("stream").is_none_or(|s| s == false),
        "{fns}"
    );
}

#[tokio::test]
async fn test_embeddings_rerank_models_aliases_and_prefix() {
    let w = world().await;
    let r = post(
        w,
        "/v1/embeddings",
        &w.keys.basic,
        json!({"model": "emb", "input": ["a b", "c"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert_eq!(b["model"], "emb");
    assert_eq!(b["usage"]["prompt_tokens"], 3);

    let r = post(
        w,
        "/v1/rerank",
        &w.keys.basic,
        json!({"model": "rr", "query": "paris weather",
        "documents": ["weather in paris", "london"], "top_n": 2}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(b["results"][0]["index"], 0);
    assert_eq!(b["results"].as_array().unwrap().len(), 2);

    // Plan filter: basic does not include `premium`; `all` does.
    let r = send(client().get(w.url("/v1/models")).bearer_auth(&w.keys.basic)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(b["object"], "list");
    let ids: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"chat-oa") && ids.contains(&"emb"), "{ids:?}");
    assert!(!ids.contains(&"premium"), "{ids:?}");
    assert_eq!(b["data"][0]["object"], "model");
    let r = send(client().get(w.url("/models")).bearer_auth(&w.keys.all)).await;
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"premium".to_owned()), "{ids:?}");
    // A key narrower than its plan.
    let r = send(
        client()
            .get(w.url("/v1/models"))
            .bearer_auth(&w.keys.narrow),
    )
    .await;
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["chat-oa".to_owned()]);

    // Aliases, the /chat/completions alias, the path prefix, provider prefixes.
    let r = post(
        w,
        "/chat/completions",
        &w.keys.basic,
        chat_body("gpt-4o-mini", false, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(
        w,
        "/gw/v1/chat/completions",
        &w.keys.basic,
        chat_body("chat-oa", false, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A provider prefix reaches only what the catalogue prices: `oa/m` is deployed by
    // `chat-oa` and billed as it; an upstream model in no catalogue model (and no
    // provider default price) does not exist for members (regression: issue 10, C1).
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.all,
        chat_body("oa/m", false, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-tollbooth-deployment"), None);
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.all,
        chat_body("oa/some-upstream-model", false, false),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("oa/m", false, false),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test]
async fn test_unpriced_and_disabled_models_unreachable() {
    let w = world().await;
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.all,
        chat_body("unpriced", false, false),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "model_not_priced");
    for model in ["off", "oa/m-off"] {
        let r = post(
            w,
            "/v1/chat/completions",
            &w.keys.all,
            chat_body(model, false, false),
        )
        .await;
        assert_eq!(r.status, 404, "{model}: {}", r.text);
    }
    let r = send(client().get(w.url("/v1/models")).bearer_auth(&w.keys.all)).await;
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !ids.contains(&"unpriced".to_owned()) && !ids.contains(&"off".to_owned()),
        "{ids:?}"
    );
    assert!(r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["owned_by"] == "tollbooth"));
}

#[tokio::test]
async fn test_stream_chunks_arrive_as_sent_not_buffered() {
    let w = world().await;
    let t0 = Instant::now();
    let resp = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(&w.keys.basic)
        .json(&chat_body("slow", true, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut dec = sse::Decoder::new();
    let mut arrivals = Vec::new();
    while let Some(bytes) = body.next().await {
        let bytes = bytes.unwrap();
        for ev in dec.push(&bytes) {
            if ev.data == "[DONE]" {
                continue;
            }
            let c: Value = serde_json::from_str(&ev.data).unwrap();
            if c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| s.starts_with("tok"))
            {
                arrivals.push(t0.elapsed());
            }
        }
    }
    assert_eq!(arrivals.len(), 5, "{arrivals:?}");
    // The mock sends a chunk every 200 ms: a buffering gateway would deliver them together.
    let gaps: Vec<u128> = arrivals
        .windows(2)
        .map(|p| (p[1] - p[0]).as_millis())
        .collect();
    let spaced = gaps.iter().filter(|&&g| g >= 100).count();
    assert!(
        spaced >= 3,
        "chunks were not forwarded as they came: gaps {gaps:?}"
    );
    assert!(
        (arrivals[4] - arrivals[0]).as_millis() >= 600,
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn test_mid_stream_upstream_failure_reaches_client_as_error_event() {
    let w = world().await;
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("midfail", true, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let evs = r.events();
    let contents: Vec<String> = evs
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(contents.join("").starts_with("tok0 tok1"), "{}", r.text);
    let last = evs.last().expect("events");
    let v: Value = serde_json::from_str(&last.1).unwrap_or(Value::Null);
    assert!(
        v.get("error").is_some(),
        "last event should be an error: {}",
        r.text
    );
    assert!(!r.text.contains("[DONE]"));
}

async fn mock_b_requests(w: &World) -> Vec<Value> {
    let v: Value = client()
        .get(format!("{}/_mock/requests", w.mock_b.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn test_failover_500_429_answered_by_next_deployment() {
    let w = world().await;
    for (model, bad, good) in [
        ("fail500", "m@status=500", "ok500"),
        ("fail429", "m@status=429", "ok429"),
    ] {
        for stream in [false, true] {
            let t0 = Instant::now();
            let r = post(
                w,
                "/v1/chat/completions",
                &w.keys.ops,
                chat_body(model, stream, false),
            )
            .await;
            assert_eq!(r.status, 200, "{model}: {}", r.text);
            assert_eq!(
                r.header("x-tollbooth-deployment").as_deref(),
                Some(format!("fo-good/{good}").as_str())
            );
            if stream {
                assert_eq!(assemble_openai(&r).0, "tok0 tok1 tok2 ");
            } else {
                assert_eq!(
                    r.json()["choices"][0]["message"]["content"],
                    "tok0 tok1 tok2 "
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(20));
        }
        let reqs = mock_b_requests(w).await;
        assert!(
            reqs.iter().any(|r| r["model"] == bad),
            "{model}: the failing deployment was never tried"
        );
    }
}

/// Regression (issue 10, M8): an attempt that timed out after it was sent is not
/// retried on the next credential (the provider may be generating, and billing, it).
#[tokio::test]
async fn test_timeout_after_send_is_not_retried() {
    let w = world().await;
    for (model, bad) in [("hang", "m@hang=1"), ("slowstart", "m@ttft=3000")] {
        for stream in [false, true] {
            let before = mock_b_requests(w)
                .await
                .iter()
                .filter(|r| r["model"] == bad)
                .count();
            let t0 = Instant::now();
            let r = post(
                w,
                "/v1/chat/completions",
                &w.keys.ops,
                chat_body(model, stream, false),
            )
            .await;
            assert_eq!(r.status, 504, "{model}: {}", r.text);
            assert_eq!(r.json()["error"]["code"], "upstream_timeout");
            assert!(t0.elapsed() < Duration::from_secs(10));
            let after = mock_b_requests(w)
                .await
                .iter()
                .filter(|r| r["model"] == bad)
                .count();
            // Two credentials could serve it: only one was tried.
            assert_eq!(after - before, 1, "{model} stream={stream}");
        }
    }
}

#[tokio::test]
async fn test_credential_breaker_opens_and_closes_after_cooldown() {
    let w = world().await;
    let count = |reqs: &[Value]| {
        reqs.iter()
            .filter(|r| r["model"] == "m@fail_first=2")
            .count()
    };
    // Drive until the failing credential has failed twice (threshold 2): it opens.
    let mut tries = 0;
    loop {
        let r = post(
            w,
            "/v1/chat/completions",
            &w.keys.ops,
            chat_body("breaker", false, false),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        tries += 1;
        if count(&mock_b_requests(w).await) >= 2 || tries > 30 {
            break;
        }
    }
    let before = count(&mock_b_requests(w).await);
    assert_eq!(
        before, 2,
        "the failing credential should have been tried exactly twice"
    );
    // Open: further requests skip it and go to the backup.
    for _ in 0..5 {
        let r = post(
            w,
            "/v1/chat/completions",
            &w.keys.ops,
            chat_body("breaker", false, false),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-tollbooth-deployment").as_deref(),
            Some("br-backup/okbr")
        );
    }
    assert_eq!(
        count(&mock_b_requests(w).await),
        2,
        "an open breaker must not send traffic"
    );
    // After the cooldown a probe goes through; the upstream has recovered (fail_first=2),
    // so the breaker closes and the deployment serves again.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let mut served = 0;
    for _ in 0..10 {
        let r = post(
            w,
            "/v1/chat/completions",
            &w.keys.ops,
            chat_body("breaker", false, false),
        )
        .await;
        assert_eq!(r.status, 200);
        if r.header("x-tollbooth-deployment").as_deref() == Some("br/m@fail_first=2") {
            served += 1;
        }
    }
    assert!(
        served >= 5,
        "breaker did not close after the cooldown: served {served}/10"
    );
}

#[tokio::test]
async fn test_bad_input_and_auth_errors_in_the_right_shape() {
    let w = world().await;
    let chat = w.url("/v1/chat/completions");
    let r = send(
        client()
            .post(&chat)
            .bearer_auth(&w.keys.basic)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "model");
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        json!({"model": "chat-oa"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "messages");
    let r = post(w, "/v1/chat/completions", &w.keys.basic, json!({"model": "chat-oa", "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"]["param"], "max_tokens", "{}", r.text);

    let r = send(
        client()
            .post(&chat)
            .json(&chat_body("chat-oa", false, false)),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    for (k, status, code) in [
        (&w.keys.unknown, 401, "invalid_api_key"),
        (&w.keys.wrong_secret, 401, "invalid_api_key"),
        (&"garbage".to_owned(), 401, "invalid_api_key"),
        (&w.keys.disabled, 403, "key_disabled"),
        (&w.keys.expired, 403, "key_expired"),
        (&w.keys.suspended, 403, "member_suspended"),
    ] {
        let r = post(
            w,
            "/v1/chat/completions",
            k,
            chat_body("chat-oa", false, false),
        )
        .await;
        assert_eq!(r.status, status, "{code}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], code, "{}", r.text);
    }
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("premium", false, false),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.narrow,
        chat_body("chat-an", false, false),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("no-such-model", false, false),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");

    // Anthropic shape on /v1/messages.
    let msgs = w.url("/v1/messages");
    let r = send(
        client()
            .post(&msgs)
            .header("x-api-key", &w.keys.unknown)
            .json(&messages_body("chat-an", false, false)),
    )
    .await;
    assert_eq!(r.status, 401);
    let b = r.json();
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "authentication_error");
    let r = send(
        client()
            .post(&msgs)
            .header("x-api-key", &w.keys.basic)
            .json(&json!({"model": "chat-an", "max_tokens": 5})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    let r = send(
        client()
            .post(&msgs)
            .header("x-api-key", &w.keys.basic)
            .json(&messages_body("no-such-model", false, false)),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = send(
        client()
            .post(&msgs)
            .header("x-api-key", &w.keys.basic)
            .json(&messages_body("premium", false, false)),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "permission_error");

    // Body size limit and unknown routes.
    let big = "x".repeat(9 * 1024 * 1024);
    let r = send(
        client()
            .post(&chat)
            .bearer_auth(&w.keys.basic)
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!(r.status, 413);
    let r = send(client().get(w.url("/v1/nope")).bearer_auth(&w.keys.basic)).await;
    assert_eq!(r.status, 404);
}

fn run_python(w: &World, script: &str) {
    let python = std::env::var("TB_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = tollbooth_tests::harness::repo_root()
        .join("tests/python")
        .join(script);
    let out = Command::new(python)
        .arg(path)
        .env("BASE_URL", &w.worker.base_url)
        .env("KEY", &w.keys.basic)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_official_openai_python_sdk() {
    let w = world().await;
    tokio::task::block_in_place(|| run_python(w, "openai_sdk.py"));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_official_anthropic_python_sdk() {
    let w = world().await;
    tokio::task::block_in_place(|| run_python(w, "anthropic_sdk.py"));
}

#[tokio::test]
async fn test_messages_to_anthropic_upstream_keeps_anthropic_only_fields() {
    let w = world().await;
    let body = json!({
        "model": "chat-an", "max_tokens": 50,
        "system": [{"type": "text", "text": "passthrough probe", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u-passthrough"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there world", "cache_control": {"type": "ephemeral"}}]}],
    });
    for stream in [false, true] {
        let mut b = body.clone();
        if stream {
            b["stream"] = json!(true);
        }
        let r = send(
            client()
                .post(w.url("/v1/messages"))
                .header("x-api-key", &w.keys.basic)
                .json(&b),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if stream {
            let start = r
                .events()
                .into_iter()
                .find(|(e, _)| e.as_deref() == Some("message_start"))
                .expect("message_start");
            let v: Value = serde_json::from_str(&start.1).unwrap();
            assert_eq!(
                v["message"]["model"], "chat-an",
                "the upstream model name is not shown"
            );
            assert!(r.text.contains("event: message_stop"));
        } else {
            assert_eq!(r.json()["model"], "chat-an");
            assert_eq!(r.json()["content"][0]["text"], "tok0 tok1 tok2 ");
        }
    }
    let reqs: Value = client()
        .get(format!("{}/_mock/requests", w.mock.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent: Vec<&Value> = reqs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["body"]["metadata"]["user_id"] == "u-passthrough")
        .collect();
    assert_eq!(sent.len(), 2);
    for s in sent {
        assert_eq!(s["body"]["model"], "claude-m");
        assert_eq!(
            s["body"]["system"][0]["cache_control"]["type"], "ephemeral",
            "{s}"
        );
        assert_eq!(
            s["body"]["messages"][0]["content"][0]["cache_control"]["type"], "ephemeral",
            "{s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_new_catalogue_version_is_picked_up_without_restart() {
    let w = world().await;
    let mut cat = catalogue(&worker_mock_base(&w.mock), &worker_mock_base(&w.mock_b));
    cat["version"] = json!("v2");
    cat["models"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "late-model", "free": true, "deployments": [{"provider": "oa", "model": "m"}]}));
    let dir = w.worker.persist.parent().unwrap().to_path_buf();
    let f = dir.join("config-v2.json");
    std::fs::write(
        &f,
        json!([
            {"key": "catalogue:v:v2", "value": cat.to_string()},
            {"key": "catalogue:current", "value": "v2"},
        ])
        .to_string(),
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        w.worker
            .wrangler_local(&[
                "kv",
                "bulk",
                "put",
                f.to_str().unwrap(),
                "--binding",
                "CONFIG",
            ])
            .unwrap()
    });
    let t0 = Instant::now();
    loop {
        let r = post(
            w,
            "/v1/chat/completions",
            &w.keys.all,
            chat_body("late-model", false, false),
        )
        .await;
        if r.status == 200 {
            assert_eq!(
                r.json()["choices"][0]["message"]["content"],
                "tok0 tok1 tok2 "
            );
            break;
        }
        assert_eq!(r.status, 404, "{}", r.text);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "new catalogue not live after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn test_one_structured_log_line_per_request_without_secrets() {
    let w = world().await;
    let mut body = chat_body("chat-oa", true, false);
    body["user"] = json!("log-probe");
    let r = post(w, "/v1/chat/completions", &w.keys.basic, body).await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("request id");
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("no-such-model", false, false),
    )
    .await;
    let id404 = r.header("x-request-id").expect("request id");
    // Streams log when they end, in wait_until: give the runtime a moment to flush.
    let t0 = Instant::now();
    let (line, line404) = loop {
        let log = std::fs::read_to_string(&w.worker.proc.log).unwrap_or_default();
        let find = |id: &str| {
            log.lines()
                .filter_map(|l| l.find("{\"msg\":\"request\"").map(|i| &l[i..]))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["request_id"] == id)
        };
        if let (Some(a), Some(b)) = (find(&id), find(&id404)) {
            for s in SECRETS {
                assert!(!log.contains(s), "provider secret {s} in the worker log");
            }
            assert!(!log.contains(&w.keys.basic), "member key in the worker log");
            break (a, b);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no log line for {id} / {id404}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(line["status"], 200);
    assert_eq!(line["model"], "chat-oa");
    assert_eq!(line["deployment"], "oa/m");
    assert_eq!(line["tokens"]["output_tokens"], 3, "{line}");
    assert!(line["ttft_ms"].is_number(), "{line}");
    assert!(line["latency_ms"].is_number());
    assert!(line["key"]
        .as_str()
        .is_some_and(|k| w.keys.basic.contains(k)));
    assert_eq!(line404["status"], 404);
}

#[tokio::test]
async fn test_upstream_errors_mapped_without_leaking_credentials_or_urls() {
    let w = world().await;
    // The caller's fault upstream (400): passed on as 400, not retried.
    let r = post(
        w,
        "/v1/chat/completions",
        &w.keys.basic,
        chat_body("upstream400", false, false),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // Our credential rejected (401): the caller sees a gateway 502, not "invalid key".
    for stream in [false, true] {
        let r = post(
            w,
            "/v1/chat/completions",
            &w.keys.basic,
            chat_body("upstream401", stream, false),
        )
        .await;
        assert_eq!(r.status, 502, "{}", r.text);
        assert_eq!(r.json()["error"]["type"], "upstream_error");
        assert!(
            !r.text.contains("127.0.0.1") && !r.text.contains("/v1/chat"),
            "upstream URL leaked: {}",
            r.text
        );
    }
    let r = send(
        client()
            .post(w.url("/v1/messages"))
            .header("x-api-key", &w.keys.basic)
            .json(&messages_body("upstream401", false, false)),
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "api_error");
}

/// DESIGN.md: if the client disconnects, keep reading the upstream to get real usage.
#[tokio::test]
async fn test_client_disconnect_mid_stream_still_reads_upstream_usage() {
    let w = world().await;
    let resp = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(&w.keys.basic)
        .json(&chat_body("slow", true, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("first bytes").unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data:"));
    drop(body); // the client goes away after the first chunk
    let t0 = Instant::now();
    let line = loop {
        let log = std::fs::read_to_string(&w.worker.proc.log).unwrap_or_default();
        let found = log
            .lines()
            .filter_map(|l| l.find("{\"msg\":\"request\"").map(|i| &l[i..]))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == id.as_str());
        if let Some(v) = found {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no log line for {id}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The upstream was read to its end: the provider's usage for all 5 chunks.
    assert_eq!(line["tokens"]["output_tokens"], 5, "{line}");
    assert_eq!(line["tokens"]["input_tokens"], 3, "{line}");
}
