//! Adversarial: getting served without paying the catalogue price (issue 10, invariants
//! 1 and 4). Prefix routes to unpriced or disabled models, zero prices, provider ids and
//! upstream model names leaking to members, request fields the provider bills outside
//! the token usage, cache writes billed as plain input, generated output a characters
//! plan does not count. After every request, refused or served, the member's ledger
//! equals the sum of its usage events (`tollbooth_tests::ledger_check`).

use serde_json::{json, Value};
use tollbooth_core::keyrecord::KeyRole;
use tollbooth_tests::gateway::Gateway;
use tollbooth_tests::ledger_check::assert_balanced;

/// 1 micro per input token, 2 per output token, 3 per cache-write token.
fn price() -> Value {
    json!({"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000,
           "cache_write_per_mtok": 3_000_000})
}

fn catalogue(mock: &str) -> Value {
    let oa = |id: &str, extra: Value| {
        let mut p = json!({"id": id, "kind": "openai", "base_url": format!("{mock}/v1"),
            "credentials": [{"id": format!("{id}-1"), "secret": "sk-upstream-pricing"}]});
        if let (Some(o), Value::Object(e)) = (p.as_object_mut(), extra) {
            o.extend(e);
        }
        p
    };
    let model = |name: &str, provider: &str, upstream: &str, extra: Value| {
        let mut m = json!({"name": name, "deployments": [{"provider": provider, "model": upstream}],
            "price": price(), "max_output_tokens": 1000});
        if let (Some(o), Value::Object(e)) = (m.as_object_mut(), extra) {
            o.extend(e);
        }
        m
    };
    json!({
        "version": "pricing-1",
        "providers": [
            oa("oa", json!({"prefix_routing": true})),
            oa("dp", json!({"prefix_routing": true,
                "default_price": {"input_per_mtok": 3_000_000, "output_per_mtok": 6_000_000}})),
            oa("np", json!({})),
            {"id": "an", "kind": "anthropic", "base_url": format!("{mock}/v1"),
             "credentials": [{"id": "an-1", "secret": "sk-ant-upstream-pricing"}]},
        ],
        "models": [
            model("priced", "oa", "gpt-up", json!({"owned_by": "oa"})),
            model("zero", "oa", "zero-up", json!({"price": {}})),
            model("gift", "oa", "gift-up", json!({"price": {}, "free": true})),
            model("off", "oa", "off-up", json!({"enabled": false})),
            model("tooly", "oa", "tool-up@tools=1", json!({})),
            model("claude", "an", "claude-up@prompt=5000,cache_write=1000", json!({})),
            model("claude-search", "an", "claude-search-up", json!({})),
        ],
        "plans": [
            {"id": "all", "allowed_models": ["*"]},
            {"id": "basic", "allowed_models": ["priced"]},
        ],
    })
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 10,
           "messages": [{"role": "user", "content": "hello world"}]})
}

/// Cost of "hello world" (2 prompt tokens) answered with 3 chunks (3 output tokens).
const PRICED_COST: i64 = 2 + 3 * 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_prefix_routes_reach_only_priced_models_and_bill_them() {
    let gw = Gateway::start(&[], catalogue).await;
    let member = "m-prefix";
    let key = gw.key(member, "all", KeyRole::Member).await;
    gw.credit(member, 1_000_000).await;

    // The original exploit (issue 10): a model in no catalogue, through the provider id.
    for _ in 0..20 {
        let (s, b) = gw
            .post_json("/v1/chat/completions", &key, &chat("oa/o1-pro"))
            .await;
        assert_eq!(s, 404, "{b}");
        assert_eq!(b["error"]["code"], "model_not_found");
    }
    assert_balanced(&gw.sync, member).await;

    // A prefix route to an upstream model the catalogue prices: billed at that price.
    let (s, b) = gw
        .post_json("/v1/chat/completions", &key, &chat("oa/gpt-up"))
        .await;
    assert_eq!(s, 200, "{b}");
    // At the provider's default price when no catalogue model deploys it.
    let (s, b) = gw
        .post_json("/v1/chat/completions", &key, &chat("dp/any-upstream"))
        .await;
    assert_eq!(s, 200, "{b}");
    let audit = gw.settled(member).await;
    let events = gw.events(member).await;
    let cost = |model: &str| {
        events
            .iter()
            .find(|e| e["model"] == model)
            .map(|e| e["cost_micros"].as_i64().unwrap_or(-1))
    };
    assert_eq!(cost("oa/gpt-up"), Some(PRICED_COST), "{events:?}");
    assert_eq!(cost("dp/any-upstream"), Some(2 * 3 + 3 * 6), "{events:?}");
    assert_eq!(audit.events, 2);

    // Prefix routing is off unless the provider turns it on.
    let (s, _) = gw
        .post_json("/v1/chat/completions", &key, &chat("np/gpt-up"))
        .await;
    assert_eq!(s, 404);
    // A disabled model is unreachable by every path.
    for model in ["off", "oa/off-up"] {
        let (s, b) = gw
            .post_json("/v1/chat/completions", &key, &chat(model))
            .await;
        assert_eq!(s, 404, "{model}: {b}");
    }
    // A zero price is refused unless the operator marked the model free, by name and
    // by prefix.
    for model in ["zero", "oa/zero-up"] {
        let (s, b) = gw
            .post_json("/v1/chat/completions", &key, &chat(model))
            .await;
        assert_eq!(s, 403, "{model}: {b}");
        assert_eq!(b["error"]["code"], "model_not_priced");
    }
    // A model marked free is served at zero, even to a member with no wallet at all.
    let poor = gw.key("m-poor", "all", KeyRole::Member).await;
    let (s, b) = gw
        .post_json("/v1/chat/completions", &poor, &chat("gift"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = gw
        .post_json("/v1/chat/completions", &poor, &chat("priced"))
        .await;
    assert_eq!(s, 402, "a priced model still needs money");
    gw.settled("m-poor").await;
    let ev = gw.events("m-poor").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["charged"], 0);
    let a = gw.settled(member).await;
    assert_eq!(a.events, 2, "refused requests left no usage event");
    let b = gw.balance(member).await;
    assert_eq!(b["wallet"]["balance_micros"], 1_000_000 - PRICED_COST - 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_members_never_learn_providers_or_upstream_models() {
    let gw = Gateway::start(&[], catalogue).await;
    let key = gw.key("m-anon", "all", KeyRole::Member).await;
    let ops = gw.key("m-ops", "all", KeyRole::Operator).await;
    gw.credit("m-anon", 1_000_000).await;
    gw.credit("m-ops", 1_000_000).await;
    for stream in [false, true] {
        let mut body = chat("priced");
        body["stream"] = json!(stream);
        let r = gw.post("/v1/chat/completions", &key, &body).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-tollbooth-deployment").is_none());
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("gpt-up"),
            "upstream model name leaked: {text}"
        );
        let r = gw.post("/v1/chat/completions", &ops, &body).await;
        assert_eq!(r.headers()["x-tollbooth-deployment"], "oa/gpt-up");
    }
    let models: Value = gw
        .http
        .get(format!("{}/v1/models", gw.worker.base_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = models["data"].as_array().unwrap();
    assert!(
        data.iter().all(|m| m["owned_by"] == "tollbooth"),
        "{models}"
    );
    let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(!ids.contains(&"zero") && !ids.contains(&"off"), "{ids:?}");
    gw.settled("m-anon").await;
    gw.settled("m-ops").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_priced_features_are_refused_or_billed() {
    let gw = Gateway::start(&[], catalogue).await;
    let member = "m-feat";
    let key = gw.key(member, "all", KeyRole::Member).await;
    gw.credit(member, 10_000_000).await;

    // Billed per use by the provider, outside the token usage: refused.
    let mut search = chat("priced");
    search["web_search_options"] = json!({});
    let mut audio = chat("priced");
    audio["modalities"] = json!(["text", "audio"]);
    audio["audio"] = json!({"voice": "alloy", "format": "wav"});
    let mut builtin = chat("priced");
    builtin["tools"] = json!([{"type": "builtin_function", "function": {"name": "$web_search"}}]);
    let mut many = chat("priced");
    many["n"] = json!(64);
    for body in [search, audio, builtin, many] {
        let (s, b) = gw.post_json("/v1/chat/completions", &key, &body).await;
        assert_eq!(s, 400, "{b}");
    }
    let server_tool = json!({"model": "claude-search", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 50}]});
    let (s, b) = gw.post_json("/v1/messages", &key, &server_tool).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["type"], "error", "Anthropic error shape: {b}");
    for body in [
        json!({"model": "claude-search", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
               "mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}),
        json!({"model": "claude-search", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
               "container": "c-1"}),
    ] {
        let (s, _) = gw.post_json("/v1/messages", &key, &body).await;
        assert_eq!(s, 400);
    }
    let a = assert_balanced(&gw.sync, member).await;
    assert_eq!(
        a.events, 0,
        "refused before admission: nothing reserved or billed"
    );
    assert!(
        gw.upstream_requests().await.is_empty(),
        "nothing reached the provider"
    );

    // A priority tier is not forwarded (the catalogue prices the default tier), nor
    // are fields outside the allow-list.
    let mut tier = chat("priced");
    tier["service_tier"] = json!("priority");
    tier["logprobs"] = json!(true);
    tier["surprise_field"] = json!({"costly": true});
    let (s, b) = gw.post_json("/v1/chat/completions", &key, &tier).await;
    assert_eq!(s, 200, "{b}");
    let anthropic_tier = json!({"model": "claude-search", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello"}], "service_tier": "auto"});
    let (s, b) = gw.post_json("/v1/messages", &key, &anthropic_tier).await;
    assert_eq!(s, 200, "{b}");
    let reqs = gw.upstream_requests().await;
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert!(r["body"].get("service_tier").is_none(), "{r}");
        assert!(r["body"].get("surprise_field").is_none(), "{r}");
    }
    assert_eq!(reqs[0]["body"]["logprobs"], true);

    // Anthropic cache writes are priced as cache writes, also without streaming
    // (regression: issue 10, M7): 4000 input + 1000 written + 3 output tokens.
    let expected = 4000 + 1000 * 3 + 3 * 2;
    for stream in [false, true] {
        let body = json!({"model": "claude", "max_tokens": 10, "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]});
        let r = gw.post("/v1/messages", &key, &body).await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
        let r = gw.post("/v1/chat/completions", &key, &body).await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
    }
    gw.settled(member).await;
    let events = gw.events(member).await;
    let claude: Vec<&Value> = events.iter().filter(|e| e["model"] == "claude").collect();
    assert_eq!(claude.len(), 4);
    for e in claude {
        assert_eq!(e["cost_micros"], expected, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_characters_plans_count_every_generated_field() {
    let gw = Gateway::start(&[], catalogue).await;
    let member = "m-chars";
    let key = gw.key(member, "all", KeyRole::Member).await;
    gw.grant(member, "characters", 100_000).await;
    // The answer is a tool call: its arguments are generated output.
    let args = r#"{"location":"Paris"}"#.chars().count() as i64;
    for stream in [false, true] {
        let body = json!({"model": "tooly", "max_tokens": 10, "stream": stream,
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]});
        let r = gw.post("/v1/chat/completions", &key, &body).await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await;
    }
    gw.settled(member).await;
    let events = gw.events(member).await;
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e["charged"], args, "{e}");
        assert_eq!(e["charged_unit"], "characters");
    }
    let b = gw.balance(member).await;
    assert_eq!(b["allowance"]["used"], 2 * args);
}
