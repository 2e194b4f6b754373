//! Conversation capture on the real edge (workerd under `wrangler dev --local`, local
//! D1 and R2, the mock upstream): opt-in, what is stored (and what never is), capture
//! from OpenAI, Anthropic and Gemini upstreams with and without streaming and with tool
//! calls, a five-turn chat threaded into one conversation, every review operation,
//! retention by the Cron Trigger, broken capture storage leaving the response bytes
//! unchanged, and bring-your-own-key pass-through. One worker for the whole file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollbooth_core::auth::ApiKey;
use tollbooth_core::keyrecord::{KeyRecord, KeyRole};
use tollbooth_tests::gateway::{now_unix, Gateway};
use tollbooth_tests::mock::{spawn, MockConfig, MockHandle};
use tollbooth_tests::sync_client::SyncResponse;

const TOOLS_SYSTEM: &str = "You are terse.";

/// The catalogue; `pass_domain` is the pass-through domain whose operator traffic is
/// captured.
fn catalogue(mock: &str, pass_domain: &str) -> Value {
    let price = json!({"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000});
    let model = |name: &str, provider: &str, upstream: &str| {
        json!({"name": name, "deployments": [{"provider": provider, "model": upstream}],
               "price": price, "max_output_tokens": 1000})
    };
    json!({
        "version": "capture-1",
        "providers": [
            {"id": "oa", "kind": "openai", "base_url": format!("{mock}/v1"),
             "credentials": [{"id": "oa1", "secret": "sk-upstream-oa-secret-000"}]},
            {"id": "an", "kind": "anthropic", "base_url": format!("{mock}/v1"),
             "credentials": [{"id": "an1", "secret": "sk-upstream-an-secret-000"}]},
            {"id": "gm", "kind": "gemini", "base_url": format!("{mock}/v1beta"),
             "credentials": [{"id": "gm1", "secret": "upstream-gm-secret-000"}]},
        ],
        "models": [
            model("m-oa", "oa", "gpt-4o-mini"),
            model("m-oa-tools", "oa", "gpt-4o-mini@tools=once"),
            model("m-an-tools", "an", "claude-x@tools=once"),
            model("m-gm-tools", "gm", "gemini-x@tools=once"),
        ],
        "plans": [
            {"id": "basic", "allowed_models": ["*"]},
            {"id": "captured", "allowed_models": ["*"], "capture": true},
        ],
        "settings": {"capture": {"apps": ["app-x"], "passthrough_domains": [pass_domain],
                                 "retention_days": 30}},
    })
}

struct Kit {
    gw: Gateway,
    pass: MockHandle,
}

impl Kit {
    /// A key with the capture-related fields set.
    async fn key(
        &self,
        member: &str,
        plan: &str,
        capture: bool,
        app: Option<&str>,
        byok: bool,
    ) -> String {
        let mut seed = [3u8; 32];
        for (i, b) in member.bytes().take(32).enumerate() {
            seed[i] = b;
        }
        let key = ApiKey::generate(&seed);
        let record = KeyRecord {
            public_id: key.public_id().to_string(),
            secret_hash: key.secret_hash(),
            member_id: member.into(),
            plan_id: plan.into(),
            status: Default::default(),
            role: KeyRole::Member,
            expires_at: None,
            allowed_models: None,
            rpm: None,
            tpm: None,
            capture,
            name: None,
            app_id: app.map(str::to_owned),
            byok,
            version: 1,
        };
        let r = self.gw.sync.put_key(&record).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        self.gw.credit(member, 50_000_000).await;
        key.expose()
    }

    async fn get(&self, path: &str) -> SyncResponse {
        self.send("GET", path, None).await
    }

    /// A signed call. Polling sends many identical calls per second; a unique `_`
    /// query parameter keeps their signatures apart (the API ignores it).
    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> SyncResponse {
        static N: AtomicU64 = AtomicU64::new(0);
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}_={}", N.fetch_add(1, Ordering::Relaxed));
        let call = self.gw.sync.call(method, &path, body, None);
        self.gw.sync.send(&call).await.unwrap()
    }

    async fn stats(&self) -> Value {
        let r = self.get("/internal/v1/captures/stats").await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Waits until `written + write_failures` reaches `n` (captures run after the
    /// response, in `wait_until`).
    async fn wait_captures(&self, n: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.stats().await;
            let done = s["written"].as_i64().unwrap() + s["write_failures"].as_i64().unwrap();
            if done >= n {
                return s;
            }
            assert!(Instant::now() < deadline, "captures never written: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn conversations(&self, query: &str) -> Vec<Value> {
        let r = self
            .get(&format!("/internal/v1/conversations?{query}"))
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        r.body["conversations"].as_array().cloned().unwrap()
    }

    async fn capture(&self, id: &str) -> Value {
        let r = self.get(&format!("/internal/v1/captures/{id}")).await;
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        r.body
    }
}

fn tools_body(model: &str, stream: bool, user: &str) -> Value {
    json!({
        "model": model, "stream": stream, "max_tokens": 50,
        "messages": [{"role": "system", "content": TOOLS_SYSTEM},
                     {"role": "user", "content": user}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}}}}],
    })
}

/// `(status, request id, body text)` of a chat request.
async fn chat(gw: &Gateway, key: &str, body: &Value) -> (u16, String, String) {
    let r = gw.post("/v1/chat/completions", key, body).await;
    let status = r.status().as_u16();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    (status, id, r.text().await.unwrap())
}

/// `marker` followed by digits → `marker` followed by `0`.
fn zero_after(s: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        let (head, tail) = rest.split_at(i + marker.len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// The body with what differs per request by design replaced (the gateway's request
/// id, timestamps, the mock's answer counter); everything else must be byte-identical.
fn normalized(body: &str, request_id: &str) -> String {
    let s = body.replace(request_id, "RID");
    zero_after(&zero_after(&s, "\"created\":"), "chatcmpl-mock-")
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_capture_end_to_end() {
    // The worker's own log lines (console.log) go to its log file, so the checks that
    // no credential is logged read every line it wrote.
    std::env::set_var("TB_WORKER_LOG_LEVEL", "log");
    let pass = spawn(MockConfig::default()).await.unwrap();
    let pass_host = host_of(&pass.base_url());
    let domains = format!("{pass_host}=bearer");
    let pass_secret_var = format!(
        "PASSTHROUGH_KEY_{}",
        pass_host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    );
    let gw = Gateway::start(
        &[
            ("TEST_FAIL_CAPTURE", "broken"),
            ("PASSTHROUGH_DOMAINS", &domains),
            (&pass_secret_var, "sk-operator-pass-secret-0123"),
        ],
        |mock| catalogue(mock, &pass_host),
    )
    .await;
    let kit = Kit { gw, pass };
    let mut expected = 0;

    // --- Opt-in: nothing for a plain key; the plan, the key and the app each opt in.
    let plain = kit.key("plain", "basic", false, None, false).await;
    let by_plan = kit.key("by-plan", "captured", false, None, false).await;
    let by_key = kit.key("by-key", "basic", true, None, false).await;
    let by_app = kit
        .key("by-app", "basic", false, Some("app-x"), false)
        .await;
    let other_app = kit
        .key("other-app", "basic", false, Some("app-y"), false)
        .await;
    for k in [&plain, &by_plan, &by_key, &by_app, &other_app] {
        let (s, _, b) = chat(
            &kit.gw,
            k,
            &json!({"model": "m-oa", "messages": [
            {"role": "user", "content": "opt-in check"}]}),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    expected += 3;
    kit.wait_captures(expected).await;
    for (member, n) in [
        ("plain", 0),
        ("by-plan", 1),
        ("by-key", 1),
        ("by-app", 1),
        ("other-app", 0),
    ] {
        let convs = kit.conversations(&format!("member={member}")).await;
        assert_eq!(convs.len(), n, "{member}");
    }
    let app = kit.conversations("app=app-x").await;
    assert_eq!(app.len(), 1);
    assert_eq!(app[0]["member_id"], "by-app");

    // --- The size cap: a body larger than `max_bytes` (256 KiB) is cut and flagged.
    let bigk = kit.key("big", "basic", true, None, false).await;
    let big = "lorem ipsum ".repeat(30_000);
    let (s, big_id, text) = chat(
        &kit.gw,
        &bigk,
        &json!({"model": "m-oa", "messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    expected += 1;
    kit.wait_captures(expected).await;
    let c = kit.capture(&big_id).await;
    assert_eq!(c["record"]["truncated"], true);
    assert_eq!(c["capture"]["truncated"], 1);
    let bytes = c["capture"]["bytes"].as_u64().unwrap();
    assert!(
        bytes <= 256 * 1024 && bytes == c["record"].to_string().len() as u64,
        "{bytes}"
    );
    assert!(c["record"]["request"]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .ends_with("…[truncated]"));

    // --- Three upstream protocols × stream/non-stream, with tool calls; what is stored.
    let tk = kit.key("tools", "basic", true, None, false).await;
    let secret_in_text = "my key sk-live-abcdefghijklmnopqrstu and mail jane@example.com";
    let mut tool_captures = Vec::new();
    for model in ["m-oa-tools", "m-an-tools", "m-gm-tools"] {
        for stream in [false, true] {
            let body = tools_body(
                model,
                stream,
                &format!("weather in {model} {stream}? {secret_in_text}"),
            );
            let (s, id, text) = chat(&kit.gw, &tk, &body).await;
            assert_eq!(s, 200, "{model} {stream}: {text}");
            tool_captures.push((model, stream, id));
            expected += 1;
        }
    }
    kit.wait_captures(expected).await;
    let events = kit.gw.events("tools").await;
    for (model, stream, id) in &tool_captures {
        let c = kit.capture(id).await;
        let rec = &c["record"];
        let row = &c["capture"];
        assert_eq!(rec["model_requested"], *model, "{rec}");
        assert!(rec["model_served"].as_str().unwrap().contains('/'), "{rec}");
        assert_eq!(rec["status"], "ok");
        assert_eq!(rec["member_id"], "tools");
        assert_eq!(rec["ingress"], "/v1/chat/completions");
        assert_eq!(rec["system"], TOOLS_SYSTEM, "{model} {stream}");
        assert_eq!(rec["tools"][0]["name"], "get_weather");
        assert_eq!(rec["truncated"], false);
        assert!(rec["latency_ms"].as_u64().is_some());
        assert!(rec["created_at"].as_u64().unwrap() > 1_600_000_000);
        let call = &rec["response"]["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(
            call["function"]["name"], "get_weather",
            "{model} stream={stream}: {rec}"
        );
        assert!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).is_ok()
        );
        // Usage and cost equal the usage event's.
        let ev = events
            .iter()
            .find(|e| e["request_id"] == id.as_str())
            .unwrap();
        assert_eq!(rec["input_tokens"], ev["input_tokens"], "{model}");
        assert_eq!(rec["output_tokens"], ev["output_tokens"]);
        assert_eq!(rec["cost_micros"], ev["cost_micros"]);
        assert!(rec["cost_micros"].as_u64().unwrap() > 0);
        assert_eq!(row["has_tools"], 1);
        // Redacted; never a header or a credential.
        let text = rec.to_string();
        assert!(!text.contains("sk-live-abc"), "{text}");
        assert!(!text.contains("jane@example.com"));
        assert!(text.contains("[REDACTED_KEY]") && text.contains("[REDACTED_EMAIL]"));
        for needle in [
            &tk[..],
            "sk-upstream",
            "upstream-gm-secret",
            "authorization",
            "x-api-key",
            "bearer",
        ] {
            assert!(
                !text.to_lowercase().contains(&needle.to_lowercase()),
                "{needle} in {text}"
            );
        }
    }
    // The Anthropic ingress against an Anthropic upstream forwards the upstream's own
    // events; the capture still holds the reassembled hub answer with its tool call.
    let ak = kit.key("anth", "basic", true, None, false).await;
    for stream in [false, true] {
        let r = kit
            .gw
            .post(
                "/v1/messages",
                &ak,
                &json!({"model": "m-an-tools", "max_tokens": 50, "stream": stream,
                    "system": TOOLS_SYSTEM,
                    "messages": [{"role": "user", "content": "weather in Oslo?"}],
                    "tools": [{"name": "get_weather", "description": "Weather",
                               "input_schema": {"type": "object"}}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let _ = r.text().await.unwrap();
        expected += 1;
        kit.wait_captures(expected).await;
        let rec = kit.capture(&id).await["record"].clone();
        assert_eq!(rec["ingress"], "/v1/messages");
        assert_eq!(rec["system"], TOOLS_SYSTEM, "{rec}");
        assert_eq!(
            rec["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather",
            "stream={stream}: {rec}"
        );
    }

    let tool_convs = kit.conversations("member=tools&tools=true").await;
    assert_eq!(tool_convs.len(), 6);
    assert!(kit
        .conversations("member=tools&tools=false")
        .await
        .is_empty());
    assert_eq!(
        kit.conversations("member=tools&model=m-an-tools")
            .await
            .len(),
        2
    );

    // A tool turn answered: the conversation grows (Anthropic upstream), one conversation.
    let (_, _, stream_first_id) = tool_captures[2].clone();
    let first = kit.capture(&stream_first_id).await["record"].clone();
    let call = first["response"]["choices"][0]["message"]["tool_calls"][0].clone();
    let mut body = tools_body(
        "m-an-tools",
        false,
        first["request"]["messages"][1]["content"].as_str().unwrap(),
    );
    body["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [call.clone()]}),
        json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny"}),
    ]);
    let (s, second_id, text) = chat(&kit.gw, &tk, &body).await;
    assert_eq!(s, 200, "{text}");
    expected += 1;
    kit.wait_captures(expected).await;
    let second = kit.capture(&second_id).await;
    assert_eq!(
        second["capture"]["conversation_id"],
        kit.capture(&stream_first_id).await["capture"]["conversation_id"]
    );
    assert_eq!(kit.conversations("member=tools").await.len(), 6);

    // --- Five turns of one chat → one conversation, longest form, stats.
    let ck = kit.key("chat5", "basic", true, None, false).await;
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    let mut ids = Vec::new();
    for i in 0..5 {
        messages
            .push(json!({"role": "user", "content": format!("question number {i} about zebras")}));
        let (s, id, text) = chat(
            &kit.gw,
            &ck,
            &json!({"model": "m-oa", "messages": messages}),
        )
        .await;
        assert_eq!(s, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        messages.push(v["choices"][0]["message"].clone());
        ids.push(id);
        expected += 1;
    }
    kit.wait_captures(expected).await;
    let convs = kit.conversations("member=chat5").await;
    assert_eq!(convs.len(), 1, "{convs:?}");
    let conv = &convs[0];
    assert_eq!(conv["turns"], 5);
    assert_eq!(conv["captures"], 5);
    assert_eq!(conv["longest_len"], 11);
    assert_eq!(conv["longest_capture_id"], ids[4].as_str());
    let events = kit.gw.events("chat5").await;
    let sum = |f: &str| events.iter().map(|e| e[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(conv["input_tokens"].as_u64().unwrap(), sum("input_tokens"));
    assert_eq!(
        conv["output_tokens"].as_u64().unwrap(),
        sum("output_tokens")
    );
    assert_eq!(conv["cost_micros"].as_u64().unwrap(), sum("cost_micros"));
    assert!(conv["duration_ms"].as_i64().unwrap() >= 0);
    assert!(conv["last_ms"].as_i64().unwrap() >= conv["first_ms"].as_i64().unwrap());
    let conv_id = conv["id"].as_str().unwrap().to_owned();
    let view = kit
        .get(&format!("/internal/v1/conversations/{conv_id}"))
        .await;
    assert_eq!(view.status, 200, "{}", view.body);
    assert_eq!(view.body["captures"].as_array().unwrap().len(), 5);
    assert_eq!(
        view.body["longest"]["request"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert!(view.body["longest"]["response"]["choices"][0]["message"]["content"].is_string());

    // --- Review: search, filters, paging, mark, batch, delete, member deletion.
    let found = kit.conversations("q=ZEBRAS").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], conv_id.as_str());
    assert!(kit
        .conversations("q=no-such-word-anywhere")
        .await
        .is_empty());
    assert_eq!(kit.conversations("q=zebras&from=1").await.len(), 1);
    let now = now_unix();
    assert!(kit
        .conversations(&format!("member=chat5&to={}", now - 3600))
        .await
        .is_empty());
    assert_eq!(
        kit.conversations(&format!("member=chat5&from={}", now - 3600))
            .await
            .len(),
        1
    );
    assert_eq!(kit.conversations("member=chat5&status=ok").await.len(), 1);
    let all = kit.conversations("limit=200").await;
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = kit
            .get(&format!(
                "/internal/v1/conversations?limit=3&cursor={cursor}"
            ))
            .await;
        assert_eq!(r.status, 200);
        paged.extend(
            r.body["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].clone()),
        );
        match r.body["next"].as_str() {
            Some(n) => cursor = n.to_owned(),
            None => break,
        }
    }
    let all_ids: Vec<Value> = all.iter().map(|c| c["id"].clone()).collect();
    assert_eq!(
        paged, all_ids,
        "paging lists each conversation once, newest first"
    );

    let r = kit
        .send(
            "POST",
            &format!("/internal/v1/conversations/{conv_id}/review"),
            Some(&json!({"review": "confirmed", "tags": ["good", "zebra"], "note": "clean"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = &kit
        .get(&format!("/internal/v1/conversations/{conv_id}"))
        .await
        .body["conversation"];
    assert_eq!(c["review"], "confirmed");
    assert_eq!(c["tags"], json!(["good", "zebra"]));
    assert_eq!(c["note"], "clean");
    assert_eq!(kit.conversations("review=confirmed").await.len(), 1);
    let r = kit
        .send(
            "POST",
            &format!("/internal/v1/conversations/{conv_id}/review"),
            Some(&json!({"review": "great"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "review");
    let r = kit
        .send(
            "POST",
            "/internal/v1/conversations/conv_nope/review",
            Some(&json!({"review": "rejected"})),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        kit.get("/internal/v1/conversations?review=maybe")
            .await
            .status,
        400
    );

    let r = kit
        .send(
            "POST",
            "/internal/v1/conversations/review",
            Some(&json!({"filter": {"member": "tools"}, "review": "rejected", "tags": ["batch"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["updated"], 6);
    assert_eq!(r.body["more"], false);
    assert_eq!(
        kit.conversations("member=tools&review=rejected")
            .await
            .len(),
        6
    );
    assert_eq!(
        kit.conversations("review=confirmed").await.len(),
        1,
        "the batch touched only its filter"
    );

    let victim = tool_convs[0]["id"].as_str().unwrap().to_owned();
    let victim_capture = tool_convs[0]["longest_capture_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = kit
        .send(
            "DELETE",
            &format!("/internal/v1/conversations/{victim}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        kit.get(&format!("/internal/v1/conversations/{victim}"))
            .await
            .status,
        404
    );
    assert_eq!(
        kit.get(&format!("/internal/v1/captures/{victim_capture}"))
            .await
            .status,
        404
    );
    assert_eq!(kit.conversations("member=tools").await.len(), 5);

    let before = kit.stats().await["captures"].as_i64().unwrap();
    let r = kit
        .send("DELETE", "/internal/v1/members/tools/captures", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["more"], false);
    assert!(kit.conversations("member=tools").await.is_empty());
    let after = kit.stats().await["captures"].as_i64().unwrap();
    assert_eq!(before - after, r.body["captures"].as_i64().unwrap());
    assert!(r.body["captures"].as_i64().unwrap() >= 6);

    // --- Broken capture storage: the response bytes equal the capture-off response.
    let broken = kit.key("broken", "basic", true, None, false).await;
    let failures_before = kit.stats().await["write_failures"].as_i64().unwrap();
    for stream in [false, true] {
        let body = json!({"model": "m-oa", "stream": stream, "messages": [
            {"role": "user", "content": "identical please"}]});
        let r_off = kit.gw.post("/v1/chat/completions", &plain, &body).await;
        let r_broken = kit.gw.post("/v1/chat/completions", &broken, &body).await;
        assert_eq!(r_off.status(), r_broken.status());
        assert_eq!(
            r_off.headers()["content-type"],
            r_broken.headers()["content-type"]
        );
        let (id_off, id_broken) = (
            r_off.headers()["x-request-id"].to_str().unwrap().to_owned(),
            r_broken.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let (t_off, t_broken) = (r_off.text().await.unwrap(), r_broken.text().await.unwrap());
        assert_eq!(
            normalized(&t_off, &id_off),
            normalized(&t_broken, &id_broken),
            "stream={stream}"
        );
        expected += 1;
    }
    let s = kit.wait_captures(expected).await;
    assert_eq!(
        s["write_failures"].as_i64().unwrap() - failures_before,
        2,
        "{s}"
    );
    assert!(kit.conversations("member=broken").await.is_empty());

    // --- Bring your own key: forwarded, never stored or logged, captured, metered.
    let bk = kit.key("byok", "basic", true, None, true).await;
    kit.gw.grant("byok", "requests", 10).await;
    let pass_base = format!("{}/{pass_host}", kit.gw.worker.base_url);
    let provider_key = "sk-byok-provider-key-0123456789";
    let r = kit
        .gw
        .http
        .post(format!("{pass_base}/v1/chat/completions"))
        .header("x-tollbooth-key", &bk)
        .bearer_auth(provider_key)
        .json(
            &json!({"model": "gpt-4o-mini", "stream": true, "messages": [
            {"role": "user", "content": "byok stream hello"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let byok_id_1 = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let ant_key = "sk-ant-byok-provider-key-0123456789";
    let r = kit
        .gw
        .http
        .post(format!("{pass_base}/v1/messages"))
        .header("x-tollbooth-key", &bk)
        .header("x-api-key", ant_key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "max_tokens": 20, "messages": [
            {"role": "user", "content": "byok anthropic hello"}]}))
        .send()
        .await
        .unwrap();
    let byok_id_2 = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    expected += 2;
    kit.wait_captures(expected).await;
    let seen: Value = kit
        .gw
        .http
        .get(format!("{}/_mock/requests", kit.pass.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = seen.as_array().unwrap();
    let oa = seen
        .iter()
        .find(|r| r["path"] == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        oa["headers"]["authorization"],
        format!("Bearer {provider_key}")
    );
    let an = seen.iter().find(|r| r["path"] == "/v1/messages").unwrap();
    assert_eq!(an["headers"]["x-api-key"], ant_key);
    assert!(an["headers"].get("authorization").is_none());
    for r in seen {
        assert!(
            r["headers"].get("x-tollbooth-key").is_none(),
            "the Tollbooth key went upstream"
        );
    }
    let c1 = kit.capture(&byok_id_1).await;
    // The stream was reassembled into one answer.
    assert_eq!(
        c1["record"]["response"]["choices"][0]["message"]["content"], "tok0 tok1 tok2 ",
        "{c1}"
    );
    assert_eq!(c1["record"]["ingress"], "passthrough");
    let c2 = kit.capture(&byok_id_2).await;
    assert_eq!(
        c2["record"]["response"]["choices"][0]["finish_reason"], "stop",
        "{c2}"
    );
    for c in [&c1, &c2] {
        let t = c.to_string();
        assert!(!t.contains("byok-provider-key") && !t.contains(&bk), "{t}");
    }
    let events = kit.gw.events("byok").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["charged_unit"] == "requests" && e["charged"] == 1),
        "{events:?}"
    );
    // Refusals: a key without the permission, and no provider key.
    let r = kit
        .gw
        .http
        .post(format!("{pass_base}/v1/chat/completions"))
        .header("x-tollbooth-key", &by_key)
        .bearer_auth(provider_key)
        .json(&json!({"model": "x", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "byok_not_allowed"
    );
    let r = kit
        .gw
        .http
        .post(format!("{pass_base}/v1/chat/completions"))
        .header("x-tollbooth-key", &bk)
        .json(&json!({"model": "x", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let log = std::fs::read_to_string(&kit.gw.worker.proc.log).unwrap();
    assert!(
        log.contains("\"captured\""),
        "the worker's log lines are not in the file"
    );
    assert!(
        log.contains(&byok_id_1),
        "the BYOK request was not logged at all"
    );
    for secret in ["byok-provider-key", &bk[..], &tk[..], "jane@example.com"] {
        assert!(!log.contains(secret), "{secret} reached the log");
    }

    // --- Operator pass-through to a domain listed in `settings.capture.passthrough_domains`.
    let ops = kit.gw.key("ops", "basic", KeyRole::Operator).await;
    let r = kit
        .gw
        .http
        .post(format!("{pass_base}/v1/chat/completions"))
        .bearer_auth(&ops)
        .json(&json!({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "operator pass-through"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ops_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let _ = r.text().await.unwrap();
    expected += 1;
    kit.wait_captures(expected).await;
    let c = kit.capture(&ops_id).await;
    assert_eq!(c["record"]["member_id"], "ops");
    assert_eq!(
        c["record"]["request"]["messages"][0]["content"],
        "operator pass-through"
    );
    assert_eq!(
        c["record"]["response"]["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 "
    );
    let t = c.to_string();
    assert!(
        !t.contains("operator-pass-secret") && !t.contains(&ops),
        "{t}"
    );
    assert!(
        kit.gw.events("ops").await.is_empty(),
        "operator traffic is not metered"
    );

    // --- Retention: the Cron Trigger deletes conversations past `retention_days`.
    let ok_key = kit.key("old", "basic", true, None, false).await;
    let old = now_unix() - 40 * 86_400;
    let r = kit
        .gw
        .http
        .post(format!("{}/v1/chat/completions", kit.gw.worker.base_url))
        .bearer_auth(&ok_key)
        .header("x-tollbooth-test-now", old.to_string())
        .json(&json!({"model": "m-oa", "messages": [{"role": "user", "content": "ancient"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expected += 1;
    kit.wait_captures(expected).await;
    assert_eq!(kit.conversations("member=old").await.len(), 1);
    let r = kit
        .gw
        .http
        .get(format!(
            "{}/__scheduled?cron=*/5+*+*+*+*",
            kit.gw.worker.base_url
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kit.conversations("member=old").await.is_empty() {
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        kit.conversations("member=chat5").await.len(),
        1,
        "recent conversations stay"
    );
    assert!(kit.stats().await["pruned"].as_i64().unwrap() >= 1);
}
