//! Every ingress against every upstream protocol the mock speaks, through the real edge
//! (issue 15): `POST /v1/responses` (JSON and typed SSE events), Gemini's
//! `:generateContent` / `:streamGenerateContent` (with and without `alt=sse`) and
//! `:countTokens`, `GET /v1beta/models[/{model}]`, `POST /v1/messages/count_tokens`, and
//! the OpenAI chat and Anthropic ingresses against a Responses upstream.
//!
//! After each group of requests the member's ledger equals the sum of its usage events
//! (`tollbooth_tests::ledger_check`), and exactly the served requests left one usage
//! event each. Errors come back in each protocol's own shape; unpriced models are
//! refused on every new path; the Gemini routes accept `x-goog-api-key`, `?key=` and
//! Bearer; the key never reaches the worker's log line. The official `openai` Python SDK
//! (`responses.create` and the strict `responses.stream`) runs against the gateway for
//! each upstream protocol.
//!
//! One worker for the whole file (one test function).

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use serde_json::{json, Value};
use tollbooth_core::keyrecord::KeyRole;
use tollbooth_tests::gateway::Gateway;

/// The mock's answer text with the default 3 chunks.
const TEXT: &str = "tok0 tok1 tok2 ";

/// (virtual model, provider kind): each model is served by a provider of that kind.
const UPSTREAMS: [(&str, &str); 4] = [
    ("m-oa", "openai"),
    ("m-an", "anthropic"),
    ("m-gm", "gemini"),
    ("m-rs", "responses"),
];

fn price() -> Value {
    json!({"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000})
}

fn catalogue(mock: &str) -> Value {
    let provider = |id: &str, kind: &str| {
        let base = if kind == "gemini" {
            format!("{mock}/v1beta")
        } else {
            format!("{mock}/v1")
        };
        json!({"id": id, "kind": kind, "base_url": base,
               "credentials": [{"id": format!("{id}-1"), "secret": format!("sk-upstream-{id}")}]})
    };
    let mut models = Vec::new();
    for (name, kind) in UPSTREAMS {
        let p = format!("p-{kind}");
        models.push(
            json!({"name": name, "price": price(), "max_output_tokens": 1000,
            "deployments": [{"provider": p, "model": format!("up-{kind}")}]}),
        );
        models.push(
            json!({"name": format!("{name}-tools"), "price": price(), "max_output_tokens": 1000,
            "deployments": [{"provider": p, "model": format!("up-{kind}@tools=1")}]}),
        );
    }
    models.push(
        json!({"name": "zero", "price": {}, "max_output_tokens": 1000,
        "deployments": [{"provider": "p-openai", "model": "up-zero"}]}),
    );
    // Force-stream modes, and upstreams that break off after one chunk.
    models.push(
        json!({"name": "m-fs", "price": price(), "max_output_tokens": 1000,
        "stream_mode": "force_stream",
        "deployments": [{"provider": "p-anthropic", "model": "up-fs"}]}),
    );
    models.push(
        json!({"name": "m-fns", "price": price(), "max_output_tokens": 1000,
        "stream_mode": "force_non_stream",
        "deployments": [{"provider": "p-responses", "model": "up-fns"}]}),
    );
    models.push(
        json!({"name": "m-slow", "price": price(), "max_output_tokens": 1000,
        "deployments": [{"provider": "p-openai", "model": "up-slow@chunks=5,delay=200"}]}),
    );
    for kind in ["openai", "responses"] {
        models.push(json!({"name": format!("m-reset-{kind}"), "price": price(), "max_output_tokens": 1000,
            "deployments": [{"provider": format!("p-{kind}"), "model": format!("up-{kind}@reset_after=1")}]}));
    }
    json!({
        "version": "ingress-1",
        "providers": UPSTREAMS.iter().map(|(_, k)| provider(&format!("p-{k}"), k)).collect::<Vec<_>>(),
        "models": models,
        "plans": [
            {"id": "all", "allowed_models": ["*"]},
            {"id": "slow", "allowed_models": ["*"], "rpm": 2},
        ],
    })
}

/// The events of an SSE body: (event name, data as JSON).
fn sse_events(text: &str) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    for block in text.replace("\r\n", "\n").split("\n\n") {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() {
            let v = serde_json::from_str(&data).unwrap_or(Value::String(data));
            out.push((name, v));
        }
    }
    out
}

fn responses_text(resp: &Value) -> String {
    let mut s = String::new();
    for item in resp["output"].as_array().into_iter().flatten() {
        if item["type"] == "message" {
            for part in item["content"].as_array().into_iter().flatten() {
                if part["type"] == "output_text" {
                    s.push_str(part["text"].as_str().unwrap_or(""));
                }
            }
        }
    }
    s
}

fn gemini_text(chunk: &Value) -> String {
    let mut s = String::new();
    for c in chunk["candidates"].as_array().into_iter().flatten() {
        for p in c["content"]["parts"].as_array().into_iter().flatten() {
            if p["thought"] != true {
                s.push_str(p["text"].as_str().unwrap_or(""));
            }
        }
    }
    s
}

struct Client<'a> {
    gw: &'a Gateway,
}

impl Client<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.worker.base_url)
    }

    /// POST with a Bearer key: (status, content type, body text).
    async fn post_raw(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, String, String) {
        let mut rb = self.gw.http.post(self.url(path)).json(body);
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ct, r.text().await.unwrap_or_default())
    }

    /// POST to a Gemini route with `x-goog-api-key`.
    async fn gemini(&self, path: &str, key: &str, body: &Value) -> (u16, String, String) {
        let r = self
            .gw
            .http
            .post(self.url(path))
            .header("x-goog-api-key", key)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ct, r.text().await.unwrap_or_default())
    }

    async fn get(&self, path: &str, header: Option<(&str, &str)>) -> (u16, Value) {
        let mut rb = self.gw.http.get(self.url(path));
        if let Some((k, v)) = header {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Asserts a Gemini error body with `code`.
fn assert_gemini_error(status: u16, text: &str, code: u16, what: &str) {
    assert_eq!(status, code, "{what}: {text}");
    let v = json_of(text);
    assert_eq!(v["error"]["code"], code, "{what}: {text}");
    assert!(v["error"]["message"].is_string(), "{what}: {text}");
    assert!(v["error"]["status"].is_string(), "{what}: {text}");
    assert!(
        v["error"].get("type").is_none(),
        "{what}: not the OpenAI shape: {text}"
    );
}

/// Asserts an OpenAI error body.
fn assert_openai_error(status: u16, text: &str, code: u16, what: &str) -> Value {
    assert_eq!(status, code, "{what}: {text}");
    let v = json_of(text);
    assert!(v["error"]["message"].is_string(), "{what}: {text}");
    assert!(v["error"]["type"].is_string(), "{what}: {text}");
    v
}

fn gemini_body(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}],
           "systemInstruction": {"parts": [{"text": "Be brief."}]},
           "generationConfig": {"maxOutputTokens": 50}})
}

/// When each piece of a streamed body arrived, and the body.
async fn arrivals(resp: reqwest::Response) -> (Vec<(Duration, String)>, String) {
    let t0 = Instant::now();
    let mut body = resp.bytes_stream();
    let mut out = Vec::new();
    let mut all = String::new();
    while let Some(bytes) = body.next().await {
        let text = String::from_utf8_lossy(&bytes.expect("body")).into_owned();
        all.push_str(&text);
        out.push((t0.elapsed(), text));
    }
    (out, all)
}

/// The mock sends a chunk every 200 ms: the pieces holding `tok1` .. `tok4` must arrive
/// spaced out, not buffered into one write.
fn assert_spaced(what: &str, pieces: &[(Duration, String)]) {
    let at: Vec<Duration> = (1..5)
        .map(|i| {
            pieces
                .iter()
                .find(|(_, t)| t.contains(&format!("tok{i}")))
                .unwrap_or_else(|| panic!("{what}: no tok{i} in {pieces:?}"))
                .0
        })
        .collect();
    let gaps: Vec<u128> = at.windows(2).map(|p| (p[1] - p[0]).as_millis()).collect();
    assert!(
        gaps.iter().filter(|&&g| g >= 100).count() >= 2,
        "{what}: chunks were not forwarded as they came: gaps {gaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_every_ingress_against_every_upstream() {
    std::env::set_var("TB_WORKER_LOG_LEVEL", "log");
    let gw = Gateway::start(&[], catalogue).await;
    let c = Client { gw: &gw };
    let member = "m-ingress";
    let key = gw.key(member, "all", KeyRole::Member).await;
    gw.credit(member, 10_000_000).await;
    let mut served = 0i64;

    // --- Responses ingress × every upstream, JSON and stream ---------------------------
    for (model, kind) in UPSTREAMS {
        let body = json!({"model": model, "input": "Say hello", "instructions": "Be brief.",
                          "max_output_tokens": 100});
        let (s, _, text) = c.post_raw("/v1/responses", Some(&key), &body).await;
        assert_eq!(s, 200, "responses/{kind}: {text}");
        let v = json_of(&text);
        assert_eq!(v["object"], "response", "{text}");
        assert_eq!(v["status"], "completed", "{text}");
        assert_eq!(v["model"], model, "{text}");
        assert_eq!(responses_text(&v), TEXT, "responses/{kind}: {text}");
        assert!(
            v["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0,
            "{text}"
        );
        assert!(
            v["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
            "{text}"
        );
        assert!(!text.contains("up-"), "upstream model name leaked: {text}");
        served += 1;

        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let (s, ct, text) = c.post_raw("/v1/responses", Some(&key), &sbody).await;
        assert_eq!(s, 200, "responses stream/{kind}: {text}");
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let events = sse_events(&text);
        let names: Vec<String> = events.iter().filter_map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names.first().map(String::as_str),
            Some("response.created"),
            "{names:?}"
        );
        assert_eq!(
            names.last().map(String::as_str),
            Some("response.completed"),
            "{names:?}"
        );
        for want in [
            "response.output_item.added",
            "response.output_text.delta",
            "response.output_item.done",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{kind}: no {want} in {names:?}"
            );
        }
        // Sequence numbers count up from 0 without gaps.
        for (i, (_, d)) in events.iter().enumerate() {
            assert_eq!(d["sequence_number"], i as u64, "{kind}: {text}");
        }
        let deltas: String = events
            .iter()
            .filter(|(n, _)| n.as_deref() == Some("response.output_text.delta"))
            .map(|(_, d)| d["delta"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(deltas, TEXT, "responses stream/{kind}");
        let done = &events.last().unwrap().1["response"];
        assert_eq!(done["model"], model);
        assert_eq!(responses_text(done), TEXT);
        assert!(
            done["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0,
            "{text}"
        );
        assert!(!text.contains("up-"), "upstream model name leaked: {text}");
        served += 1;

        // A tool call comes back as a function_call item, streamed with argument deltas.
        let tools = json!([{"type": "function", "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]);
        let tbody = json!({"model": format!("{model}-tools"), "input": "Weather in Paris?",
                           "tools": tools, "stream": true});
        let (s, _, text) = c.post_raw("/v1/responses", Some(&key), &tbody).await;
        assert_eq!(s, 200, "{text}");
        let events = sse_events(&text);
        let args: String = events
            .iter()
            .filter(|(n, _)| n.as_deref() == Some("response.function_call_arguments.delta"))
            .map(|(_, d)| d["delta"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            json_of(&args),
            json!({"location": "Paris"}),
            "{kind}: {text}"
        );
        let done = &events.last().unwrap().1["response"];
        let call = done["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "function_call")
            .unwrap_or_else(|| panic!("{kind}: no call in {done}"));
        assert_eq!(call["name"], "get_weather");
        served += 1;
    }
    let audit = gw.settled(member).await;
    assert_eq!(audit.events, served, "one usage event per served request");

    // Responses against a Responses upstream: the client's body goes as is (reasoning
    // items and `include` kept), with hosted tools, `service_tier` and fields outside
    // the allow-list dropped, `store` false, encrypted reasoning asked for (nothing is
    // stored upstream) and the output cap set.
    let body = json!({"model": "m-rs", "stream": true, "store": false,
        "include": ["message.output_text.logprobs"], "service_tier": "priority",
        "surprise_field": {"x": 1},
        "input": [{"type": "reasoning", "id": "rs_1", "summary": [],
                   "encrypted_content": "opaque-blob"},
                  {"role": "user", "content": "Say hello"}],
        "tools": [{"type": "web_search"},
                  {"type": "function", "name": "f", "parameters": {"type": "object"}}]});
    let (s, _, text) = c.post_raw("/v1/responses", Some(&key), &body).await;
    assert_eq!(s, 200, "{text}");
    served += 1;
    let events = sse_events(&text);
    assert_eq!(
        events.last().unwrap().1["response"]["model"],
        "m-rs",
        "{text}"
    );
    let ups = gw.upstream_requests().await;
    let sent = ups
        .iter()
        .rev()
        .find(|r| r["path"].as_str().unwrap_or("").ends_with("/v1/responses"))
        .expect("upstream responses request");
    let sent_body = if sent["body"].is_string() {
        json_of(sent["body"].as_str().unwrap())
    } else {
        sent["body"].clone()
    };
    assert_eq!(sent_body["model"], "up-responses", "{sent}");
    assert_eq!(
        sent_body["input"][0]["encrypted_content"], "opaque-blob",
        "{sent}"
    );
    assert_eq!(
        sent_body["include"],
        json!([
            "message.output_text.logprobs",
            "reasoning.encrypted_content"
        ]),
        "{sent}"
    );
    assert_eq!(sent_body["store"], false, "{sent}");
    assert!(sent_body.get("service_tier").is_none(), "{sent}");
    assert!(sent_body.get("surprise_field").is_none(), "{sent}");
    assert!(
        sent_body["max_output_tokens"]
            .as_u64()
            .is_some_and(|n| n <= 1000),
        "{sent}"
    );
    let tool_types: Vec<&str> = sent_body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert_eq!(tool_types, ["function"], "{sent}");

    // --- OpenAI chat and Anthropic ingresses against the Responses upstream -------------
    let chat = json!({"model": "m-rs", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "Say hello"}]});
    let (s, b) = gw.post_json("/v1/chat/completions", &key, &chat).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], TEXT, "{b}");
    assert_eq!(b["model"], "m-rs");
    served += 1;
    let mut chat_s = chat.clone();
    chat_s["stream"] = json!(true);
    chat_s["stream_options"] = json!({"include_usage": true});
    let r = gw.post("/v1/chat/completions", &key, &chat_s).await;
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    let content: String = sse_events(&text)
        .iter()
        .filter_map(|(_, d)| {
            d["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, TEXT, "{text}");
    assert!(text.contains("\"usage\""), "{text}");
    served += 1;
    for stream in [false, true] {
        let msg = json!({"model": "m-rs", "max_tokens": 50, "stream": stream,
                         "messages": [{"role": "user", "content": "Say hello"}]});
        let r = gw.post("/v1/messages", &key, &msg).await;
        assert_eq!(r.status().as_u16(), 200);
        let text = r.text().await.unwrap();
        let got: String = if stream {
            sse_events(&text)
                .iter()
                .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_owned))
                .collect()
        } else {
            json_of(&text)["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(got, TEXT, "messages stream={stream}: {text}");
        served += 1;
    }

    // --- Gemini ingress × every upstream: JSON, alt=sse and the streamed array ---------
    for (model, kind) in UPSTREAMS {
        let body = gemini_body("Say hello");
        let (s, ct, text) = c
            .gemini(
                &format!("/v1beta/models/{model}:generateContent"),
                &key,
                &body,
            )
            .await;
        assert_eq!(s, 200, "gemini/{kind}: {text}");
        assert!(ct.starts_with("application/json"), "{ct}");
        let v = json_of(&text);
        assert_eq!(gemini_text(&v), TEXT, "gemini/{kind}: {text}");
        assert_eq!(v["modelVersion"], model, "{text}");
        assert!(
            v["usageMetadata"]["promptTokenCount"].as_u64().unwrap_or(0) > 0,
            "{text}"
        );
        assert!(!text.contains("up-"), "upstream model name leaked: {text}");
        served += 1;

        let (s, ct, text) = c
            .gemini(
                &format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                &key,
                &body,
            )
            .await;
        assert_eq!(s, 200, "gemini sse/{kind}: {text}");
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let chunks = sse_events(&text);
        let got: String = chunks.iter().map(|(_, d)| gemini_text(d)).collect();
        assert_eq!(got, TEXT, "gemini sse/{kind}: {text}");
        assert!(
            chunks
                .iter()
                .any(|(_, d)| d["usageMetadata"]["totalTokenCount"].as_u64().unwrap_or(0) > 0),
            "{text}"
        );
        served += 1;

        let (s, ct, text) = c
            .gemini(
                &format!("/v1beta/models/{model}:streamGenerateContent"),
                &key,
                &body,
            )
            .await;
        assert_eq!(s, 200, "gemini array/{kind}: {text}");
        assert!(ct.starts_with("application/json"), "{ct}");
        let arr = json_of(&text);
        let arr = arr
            .as_array()
            .unwrap_or_else(|| panic!("not a JSON array: {text}"));
        let got: String = arr.iter().map(gemini_text).collect();
        assert_eq!(got, TEXT, "gemini array/{kind}: {text}");
        served += 1;

        // Function declarations → a functionCall part.
        let tbody = json!({"contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather",
                "parameters": {"type": "OBJECT", "properties": {"location": {"type": "STRING"}}}}]}]});
        let (s, _, text) = c
            .gemini(
                &format!("/v1beta/models/{model}-tools:generateContent"),
                &key,
                &tbody,
            )
            .await;
        assert_eq!(s, 200, "{text}");
        let v = json_of(&text);
        let call = &v["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p.get("functionCall").is_some())
            .unwrap_or_else(|| panic!("{kind}: no functionCall in {text}"))["functionCall"];
        assert_eq!(call["name"], "get_weather");
        assert_eq!(call["args"], json!({"location": "Paris"}));
        served += 1;
    }
    let audit = gw.settled(member).await;
    assert_eq!(audit.events, served, "one usage event per served request");

    // --- Gemini auth variants; the key never reaches the log line ------------------------
    let body = gemini_body("Say hello");
    let path = "/v1beta/models/m-oa:generateContent";
    let r = gw
        .http
        .post(format!("{}{path}?key={key}", gw.worker.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "?key=");
    served += 1;
    let (s, _, text) = c.post_raw(path, Some(&key), &body).await;
    assert_eq!(s, 200, "bearer: {text}");
    served += 1;
    let (s, _, text) = c.post_raw(path, None, &body).await;
    assert_gemini_error(s, &text, 401, "no key");
    assert_eq!(json_of(&text)["error"]["status"], "UNAUTHENTICATED");
    let (s, _, text) = c.gemini(path, "sk-nope-nope", &body).await;
    assert_gemini_error(s, &text, 401, "bad key");
    // `?key=` and `x-goog-api-key` are Gemini-only: the OpenAI routes do not read them.
    let r = gw
        .http
        .post(format!("{}/v1/responses?key={key}", gw.worker.base_url))
        .header("x-goog-api-key", &key)
        .json(&json!({"model": "m-oa", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // --- Errors in each protocol's shape; unpriced and unknown models refused ----------
    let (s, _, text) = c
        .gemini("/v1beta/models/zero:generateContent", &key, &body)
        .await;
    assert_gemini_error(s, &text, 403, "unpriced gemini");
    assert!(text.contains("no price"), "{text}");
    let (s, _, text) = c
        .gemini(
            "/v1beta/models/zero:streamGenerateContent?alt=sse",
            &key,
            &body,
        )
        .await;
    assert_gemini_error(s, &text, 403, "unpriced gemini stream");
    let (s, _, text) = c
        .gemini("/v1beta/models/nope:generateContent", &key, &body)
        .await;
    assert_gemini_error(s, &text, 404, "unknown gemini model");
    let (s, _, text) = c
        .gemini(
            "/v1beta/models/p-openai%2Fup-openai:generateContent",
            &key,
            &body,
        )
        .await;
    assert_gemini_error(s, &text, 404, "provider prefix without prefix routing");
    let (s, _, text) = c
        .gemini("/v1beta/models/m-oa:embedContent", &key, &body)
        .await;
    assert_gemini_error(s, &text, 404, "unknown gemini method");
    let (s, _, text) = c.gemini(path, &key, &json!({"contents": "nope"})).await;
    assert_gemini_error(s, &text, 400, "bad contents");
    assert_eq!(json_of(&text)["error"]["status"], "INVALID_ARGUMENT");
    let (s, _, text) = c
        .gemini(path, &key, &json!({"contents": [], "cachedContent": "c/1"}))
        .await;
    assert_gemini_error(s, &text, 400, "cachedContent");

    let (cref, kref) = (&c, key.as_str());
    let refuse =
        move |body: Value| async move { cref.post_raw("/v1/responses", Some(kref), &body).await };
    let (s, _, text) = refuse(json!({"model": "zero", "input": "hi"})).await;
    let v = assert_openai_error(s, &text, 403, "unpriced responses");
    assert_eq!(v["error"]["code"], "model_not_priced");
    let (s, _, text) = refuse(json!({"model": "zero", "input": "hi", "stream": true})).await;
    assert_openai_error(s, &text, 403, "unpriced responses stream");
    let (s, _, text) = refuse(json!({"model": "p-openai/up-openai", "input": "hi"})).await;
    assert_openai_error(s, &text, 404, "provider prefix");
    let (s, _, text) = refuse(json!({"input": "hi"})).await;
    let v = assert_openai_error(s, &text, 400, "no model");
    assert_eq!(v["error"]["param"], "model");
    let (s, _, text) = refuse(json!({"model": "m-oa", "input": "hi", "store": true})).await;
    let v = assert_openai_error(s, &text, 400, "store");
    assert_eq!(v["error"]["param"], "store");
    let (s, _, text) =
        refuse(json!({"model": "m-oa", "input": "hi", "previous_response_id": "resp_1"})).await;
    let v = assert_openai_error(s, &text, 400, "previous_response_id");
    assert_eq!(v["error"]["param"], "previous_response_id");
    let (s, _, text) = refuse(json!({"model": "m-oa"})).await;
    assert_openai_error(s, &text, 400, "no input");
    let (s, _, text) = c
        .post_raw(
            "/v1/responses",
            None,
            &json!({"model": "m-oa", "input": "hi"}),
        )
        .await;
    assert_openai_error(s, &text, 401, "no key");
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = gw
            .http
            .request(method.clone(), c.url("/v1/responses/resp_123"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{method}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "response_not_found", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not stored"),
            "{v}"
        );
    }

    // --- count_tokens: authenticated, catalogue models only, never billed --------------
    let before = gw.events(member).await.len();
    let ct = json!({"model": "m-an", "system": "Be brief.",
                    "messages": [{"role": "user", "content": "hello world, count me"}]});
    let r = gw.post("/v1/messages/count_tokens", &key, &ct).await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap_or(0) > 0, "{v}");
    let mut ct_zero = ct.clone();
    ct_zero["model"] = json!("zero");
    let r = gw.post("/v1/messages/count_tokens", &key, &ct_zero).await;
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic shape: {v}");
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    let r = gw
        .http
        .post(c.url("/v1/messages/count_tokens"))
        .json(&ct)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, _, text) = c
        .gemini(
            "/v1beta/models/m-gm:countTokens",
            &key,
            &json!({"contents": body["contents"]}),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(
        json_of(&text)["totalTokens"].as_u64().unwrap_or(0) > 0,
        "{text}"
    );
    let (s, _, text) = c
        .gemini(
            "/v1beta/models/m-gm:countTokens",
            &key,
            &json!({"generateContentRequest": body}),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let (s, _, text) = c
        .gemini(
            "/v1beta/models/zero:countTokens",
            &key,
            &json!({"contents": body["contents"]}),
        )
        .await;
    assert_gemini_error(s, &text, 403, "unpriced countTokens");
    assert_eq!(
        gw.events(member).await.len(),
        before,
        "count_tokens is not billed"
    );

    // --- GET /v1beta/models -------------------------------------------------------------
    let (s, v) = c
        .get("/v1beta/models", Some(("x-goog-api-key", &key)))
        .await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"models/m-gm") && names.contains(&"models/m-oa"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"models/zero"),
        "unpriced listed: {names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("up-")), "{names:?}");
    let (s, v) = c.get(&format!("/v1beta/models/m-gm?key={key}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "models/m-gm");
    assert!(
        v["supportedGenerationMethods"].as_array().unwrap().len() >= 2,
        "{v}"
    );
    let (s, v) = c
        .get("/v1beta/models/zero", Some(("x-goog-api-key", &key)))
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], 404);
    let (s, v) = c.get("/v1beta/models", None).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");

    let audit = gw.settled(member).await;
    assert_eq!(audit.events, served, "refused requests left no usage event");

    // --- Rate limits and the wallet through the same admission -------------------------
    let slow = gw.key("m-slow", "slow", KeyRole::Member).await;
    gw.credit("m-slow", 1_000_000).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let (s, _, text) = if i % 2 == 0 {
            c.gemini(path, &slow, &body).await
        } else {
            c.post_raw(
                "/v1/responses",
                Some(&slow),
                &json!({"model": "m-oa", "input": "hi"}),
            )
            .await
        };
        statuses.push(s);
        if s == 429 {
            assert_gemini_error(s, &text, 429, "gemini rate limit");
            assert_eq!(json_of(&text)["error"]["status"], "RESOURCE_EXHAUSTED");
        }
    }
    assert_eq!(statuses, [200, 200, 429], "rpm 2 over both ingresses");
    let r = gw
        .http
        .post(c.url("/v1/responses"))
        .bearer_auth(&slow)
        .json(&json!({"model": "m-oa", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["type"].is_string(), "OpenAI shape: {v}");
    let slow_audit = gw.settled("m-slow").await;
    // A 429 refused while its upstream call ran speculatively also leaves a usage event,
    // charged 0 (docs/billing.md); the admitted requests are the others.
    let aborted = gw
        .events("m-slow")
        .await
        .iter()
        .filter(|e| e["status"] == "speculative_abort" && e["charged"] == 0)
        .count();
    assert!(aborted <= 1, "the refused key is not speculated for again");
    assert_eq!(slow_audit.events - aborted as i64, 2);

    let poor = gw.key("m-poor", "all", KeyRole::Member).await;
    let (s, _, text) = c.gemini(path, &poor, &body).await;
    assert_gemini_error(s, &text, 402, "no money (gemini)");
    let (s, _, text) = c
        .post_raw(
            "/v1/responses",
            Some(&poor),
            &json!({"model": "m-oa", "input": "hi"}),
        )
        .await;
    assert_openai_error(s, &text, 402, "no money (responses)");
    let poor_audit = gw.settled("m-poor").await;
    assert_eq!(poor_audit.events, 0);

    // The worker's request log lines name the path only, never the `?key=` secret.
    let log = std::fs::read_to_string(&gw.worker.proc.log).unwrap_or_default();
    let secret = key.rsplit('-').next().unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"msg\":\"request\""))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/v1beta/models/m-oa:generateContent")),
        "the worker logged no Gemini request line"
    );
    for l in &lines {
        assert!(!l.contains(secret), "key in the log: {l}");
    }

    // --- Force-stream modes convert both ways on the new ingresses ----------------------
    let (s, _, text) = c
        .post_raw(
            "/v1/responses",
            Some(&key),
            &json!({"model": "m-fs", "input": "hi"}),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        responses_text(&json_of(&text)),
        TEXT,
        "force stream → JSON: {text}"
    );
    served += 1;
    let (s, _, text) = c
        .post_raw(
            "/v1/responses",
            Some(&key),
            &json!({"model": "m-fns", "input": "hi", "stream": true}),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let events = sse_events(&text);
    assert_eq!(
        events.last().unwrap().0.as_deref(),
        Some("response.completed"),
        "{text}"
    );
    assert_eq!(responses_text(&events.last().unwrap().1["response"]), TEXT);
    served += 1;
    let (s, ct, text) = c
        .gemini("/v1beta/models/m-fns:streamGenerateContent", &key, &body)
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let got: String = json_of(&text)
        .as_array()
        .unwrap_or_else(|| panic!("force non-stream → array: {text}"))
        .iter()
        .map(gemini_text)
        .collect();
    assert_eq!(got, TEXT);
    served += 1;
    let (s, _, text) = c
        .gemini("/v1beta/models/m-fs:generateContent", &key, &body)
        .await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(gemini_text(&json_of(&text)), TEXT, "{text}");
    served += 1;

    // --- An upstream that breaks off mid-stream: the caller's own error event, billed
    //     for what was produced --------------------------------------------------------
    for kind in ["openai", "responses"] {
        let model = format!("m-reset-{kind}");
        let (s, _, text) = c
            .post_raw(
                "/v1/responses",
                Some(&key),
                &json!({"model": model, "input": "hi", "stream": true}),
            )
            .await;
        assert_eq!(s, 200, "{text}");
        let events = sse_events(&text);
        let last = events.last().unwrap();
        assert!(
            matches!(last.0.as_deref(), Some("response.failed") | Some("error")),
            "{kind}: a broken stream must end with response.failed or error: {text}"
        );
        assert!(!text.contains("response.completed"), "{text}");
        served += 1;
        for (path, array) in [
            (
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                false,
            ),
            (
                format!("/v1beta/models/{model}:streamGenerateContent"),
                true,
            ),
        ] {
            let (s, _, text) = c.gemini(&path, &key, &body).await;
            assert_eq!(s, 200, "{text}");
            let items: Vec<Value> = if array {
                json_of(&text)
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| panic!("{kind}: not a closed JSON array: {text}"))
            } else {
                sse_events(&text).into_iter().map(|(_, d)| d).collect()
            };
            let err = items.last().unwrap();
            assert!(err["error"]["code"].is_number(), "{kind} {path}: {text}");
            assert!(err["error"]["status"].is_string(), "{kind} {path}: {text}");
            served += 1;
        }
    }
    let audit = gw.settled(member).await;
    assert_eq!(
        audit.events, served,
        "broken and converted streams are billed once each"
    );

    // --- Streams are forwarded as they arrive ---------------------------------------------
    let r = gw
        .http
        .post(c.url("/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"model": "m-slow", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (pieces, _) = arrivals(r).await;
    assert_spaced("responses", &pieces);
    served += 1;
    for q in ["?alt=sse", ""] {
        let r = gw
            .http
            .post(c.url(&format!("/v1beta/models/m-slow:streamGenerateContent{q}")))
            .header("x-goog-api-key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let (pieces, all) = arrivals(r).await;
        assert_spaced(&format!("gemini{q}"), &pieces);
        if q.is_empty() {
            assert!(json_of(&all).is_array(), "{all}");
        }
        served += 1;
    }

    // --- The official openai SDK's Responses client through the gateway ----------------
    for (model, kind) in UPSTREAMS {
        let python = std::env::var("TB_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = tollbooth_tests::harness::repo_root().join("tests/python/responses_sdk.py");
        let out = tokio::task::block_in_place(|| {
            Command::new(python)
                .arg(script)
                .env("BASE_URL", format!("{}/v1", gw.worker.base_url))
                .env("KEY", &key)
                .env("MODEL", model)
                .env("TOOL_MODEL", format!("{model}-tools"))
                .env("EXPECT_TEXT", TEXT)
                .output()
                .expect("python")
        });
        assert!(
            out.status.success(),
            "openai SDK via {kind}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each SDK run makes five model calls (create, stream, tool create, tool stream, the
    // answer to the tool result): each one billed once.
    let audit = gw.settled(member).await;
    assert_eq!(audit.events, served + 5 * UPSTREAMS.len() as i64);
}
