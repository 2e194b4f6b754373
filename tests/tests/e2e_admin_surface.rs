//! The admin surface of issue 13 through the real stack: the admin server on DynamoDB
//! Local pushing to the worker on workerd, and calls through the worker's front door.
//! Each setting is proven where it takes effect: at the edge.

use serde_json::{json, Value};
use tollbooth_tests::admin_client::Stack;

fn free_plan() -> Value {
    json!({"id": "free", "name": "Free", "period": "month", "allowance_amount": 1_000_000,
           "allowance_unit": "tokens", "allowed_models": ["*"]})
}

/// A second priced model, so a key narrowed to `writer` has something it may not use.
async fn second_model(st: &Stack) {
    let (s, b) = st
        .client
        .req(
            "POST",
            "/api/admin/models",
            Some(&st.root),
            Some(json!({"name": "reader",
                "deployments": [{"provider": "mock", "model": "gpt-4o-mini"}],
                "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000},
                "max_output_tokens": 20})),
        )
        .await;
    assert_eq!(s, 201, "model: {b}");
    let (s, b) = st
        .client
        .req("POST", "/api/admin/catalogue/publish", Some(&st.root), None)
        .await;
    assert_eq!(s, 200, "publish: {b}");
}

#[tokio::test]
async fn test_key_settings_take_effect_at_the_edge() {
    let st = Stack::start().await.unwrap();
    st.catalogue().await;
    second_model(&st).await;
    st.plan(free_plan()).await;
    let c = &st.client;
    let (token, member) = c.signup("keys@example.com").await;
    let (s, b) = c
        .req(
            "POST",
            "/api/me/subscription",
            Some(&token),
            Some(json!({"plan_id": "free"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (key, pid) = st.key(&token).await;
    assert_eq!(st.chat(&key, "writer").await.0, 200);
    assert_eq!(st.chat(&key, "reader").await.0, 200);
    let path = format!("/api/admin/keys/{pid}");

    // Disabled: refused at the edge; enabled again: served.
    let (s, b) = c
        .req(
            "PATCH",
            &path,
            Some(&st.root),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");
    let (s, b) = st.chat(&key, "writer").await;
    assert!(s == 401 || s == 403, "a disabled key is refused: {s} {b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("disabled"),
        "{b}"
    );
    let (s, b) = c
        .req(
            "PATCH",
            &path,
            Some(&st.root),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(st.chat(&key, "writer").await.0, 200);

    // The member narrows the key to one model: the other is refused at the edge.
    let (s, b) = c
        .req(
            "PATCH",
            &format!("/api/me/keys/{pid}"),
            Some(&token),
            Some(json!({"allowed_models": ["writer"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(st.chat(&key, "writer").await.0, 200);
    let (s, b) = st.chat(&key, "reader").await;
    assert!(
        s == 403 || s == 404,
        "a model outside the key's list: {s} {b}"
    );

    // The admin sets the key's RPM: the edge counts against it.
    let (s, b) = c
        .req("PATCH", &path, Some(&st.root), Some(json!({"rpm": 1})))
        .await;
    assert_eq!(s, 200, "{b}");
    // Fixed one-minute windows: of three quick calls at least two share a window.
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(st.chat(&key, "writer").await.0);
    }
    assert_eq!(got[0], 200, "{got:?}");
    assert!(got[1..].contains(&429), "rpm 1 limits the key: {got:?}");
    let (s, b) = c
        .req("PATCH", &path, Some(&st.root), Some(json!({"rpm": null})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(st.chat(&key, "writer").await.0, 200, "the limit is lifted");

    // An expiry a few seconds out: served before, refused after.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (_, other_pid) = st.key(&token).await;
    let (s, b) = c
        .req(
            "POST",
            &format!("/api/admin/members/{member}/keys"),
            Some(&st.root),
            Some(json!({"name": "short", "expires_at": now + 3})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let short = b["key"].as_str().unwrap().to_owned();
    assert_eq!(st.chat(&short, "writer").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (s, b) = st.chat(&short, "writer").await;
    assert!(s == 401 || s == 403, "an expired key is refused: {s} {b}");
    assert!(!other_pid.is_empty());
}

/// The mock's request log.
async fn mock_requests(mock: &tollbooth_tests::harness::MockUpstream) -> Vec<Value> {
    reqwest::get(format!("{}/_mock/requests", mock.base_url))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn test_providers_settings_and_data_plane_through_the_worker() {
    use tollbooth_tests::harness::MockUpstream;
    let st = Stack::start().await.unwrap();
    st.catalogue().await;
    st.plan(free_plan()).await;
    let c = &st.client;
    let root = st.root.as_str();

    // The credential is tried before it is saved: a key the provider refuses is not.
    let strict = MockUpstream::start(&[
        "--require-key",
        "good-key-1",
        "--model",
        "a",
        "--model",
        "b",
    ])
    .await
    .unwrap();
    let strict_provider = |key: &str, base: &str| {
        json!({"id": "strict", "kind": "openai", "base_url": format!("{base}/v1"),
               "name": "Strict", "credentials": [{"secret": key}]})
    };
    let (s, b) = c
        .req(
            "POST",
            "/api/admin/providers",
            Some(root),
            Some(strict_provider("bad-key-9", &strict.base_url)),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "credential_rejected", "{b}");
    assert!(!b.to_string().contains("bad-key-9"), "{b}");
    let (s, _) = c
        .req("GET", "/api/admin/providers/strict", Some(root), None)
        .await;
    assert_eq!(s, 404, "nothing was saved");
    let (s, b) = c
        .req(
            "POST",
            "/api/admin/providers",
            Some(root),
            Some(strict_provider("good-key-1", &strict.base_url)),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["credentials"][0]["health"]["ok"], true, "{b}");

    // A pull adds both models; after the provider drops one, a pull flags it removed.
    let (s, b) = c
        .req("POST", "/api/admin/providers/strict/pull", Some(root), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let mut added: Vec<String> = serde_json::from_value(b["added"].clone()).unwrap();
    added.sort();
    assert_eq!(added, ["strict/a", "strict/b"]);
    let fewer = MockUpstream::start(&["--require-key", "good-key-1", "--model", "a"])
        .await
        .unwrap();
    let mut moved = strict_provider("good-key-1", &fewer.base_url);
    moved["credentials"] = json!([{"id": "strict-1"}]);
    let (s, b) = c
        .req(
            "PUT",
            "/api/admin/providers/strict",
            Some(root),
            Some(moved),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = c
        .req("POST", "/api/admin/providers/strict/pull", Some(root), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["removed"], json!(["strict/b"]), "{b}");
    let (_, b) = c
        .req("GET", "/api/admin/models/strict/b", Some(root), None)
        .await;
    assert_eq!(
        (b["removed"].clone(), b["enabled"].clone()),
        (json!(true), json!(false)),
        "{b}"
    );
    let (_, b) = c
        .req("GET", "/api/admin/providers/strict", Some(root), None)
        .await;
    assert_eq!(b["credentials"][0]["health"]["ok"], true, "{b}");
    assert!(b["credentials"][0]["health"]["checked_at"].is_u64(), "{b}");

    // Azure: api-version (a query parameter) and the api-key header reach the upstream.
    let (s, b) = c
        .req(
            "POST",
            "/api/admin/providers",
            Some(root),
            Some(json!({"id": "az", "kind": "azure", "base_url": format!("{}/openai", st.mock.base_url),
                "query": {"api-version": "2024-10-21"}, "timeout_ms": 20000,
                "credentials": [{"secret": "az-key-123456"}]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = c
        .req(
            "POST",
            "/api/admin/models",
            Some(root),
            Some(json!({"name": "az-writer", "deployments": [{"provider": "az", "model": "gpt-4o-mini"}],
                "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000},
                "max_output_tokens": 20, "description": "Azure writer"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = c
        .req("POST", "/api/admin/catalogue/publish", Some(root), None)
        .await;
    assert_eq!((s, b["edge"]["synced"].clone()), (200, json!(true)), "{b}");
    let (token, _) = c.signup("surface@example.com").await;
    let (s, b) = c
        .req(
            "POST",
            "/api/me/subscription",
            Some(&token),
            Some(json!({"plan_id": "free"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (key, _) = st.key(&token).await;
    let _ = st.chat(&key, "az-writer").await;
    let seen = mock_requests(&st.mock).await;
    let az = seen
        .iter()
        .find(|r| r["path"] == "/openai/deployments/gpt-4o-mini/chat/completions")
        .unwrap_or_else(|| panic!("no Azure request in {seen:?}"));
    assert_eq!(az["query"], "api-version=2024-10-21", "{az}");
    assert_eq!(az["headers"]["api-key"], "az-key-123456", "{az}");

    // /v1/models items carry the fields older clients read.
    let models: Value = c
        .http
        .get(format!("{}/v1/models", st.worker.base_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let writer = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "writer")
        .unwrap_or_else(|| panic!("{models}"))
        .clone();
    assert_eq!(writer["root"], "writer", "{writer}");
    assert!(writer["parent"].is_null(), "{writer}");
    assert_eq!(
        writer["permission"][0]["object"], "model_permission",
        "{writer}"
    );

    // /ws/chat is the WebSocket endpoint too.
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("{}/ws/chat", st.worker.base_url.replace("http://", "ws://"));
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let (mut socket, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        socket
            .send(Message::Text(
                json!({"model": "writer", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ))
            .await
            .unwrap();
        let mut last = String::new();
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(std::time::Duration::from_secs(20), socket.next()).await
        {
            if let Message::Text(t) = msg {
                last = t.to_string();
                if last == "[DONE]" || last.contains("\"error\"") {
                    break;
                }
            }
        }
        assert_eq!(last, "[DONE]");
    }

    // CORS origins set in the admin settings take effect at the edge.
    let preflight = |origin: &'static str| {
        let http = c.http.clone();
        let url = format!("{}/v1/chat/completions", st.worker.base_url);
        async move {
            let r = http
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("access-control-allow-origin")
                    .map(|v| v.to_str().unwrap_or("").to_owned()),
            )
        }
    };
    assert_eq!(
        preflight("https://evil.example").await.1.as_deref(),
        Some("*"),
        "the worker's default"
    );
    let (s, b) = c
        .req(
            "PUT",
            "/api/admin/settings",
            Some(root),
            Some(json!({"cors_origins": ["https://app.example.com"], "timezone": "+08:00"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], true, "{b}");
    let (s, allow) = preflight("https://app.example.com").await;
    assert_eq!(
        (s, allow.as_deref()),
        (204, Some("https://app.example.com"))
    );
    let (_, allow) = preflight("https://evil.example").await;
    assert_eq!(
        allow, None,
        "an origin not in the settings gets no CORS headers"
    );
    // The summary answers per-day buckets in the statistics timezone.
    let (s, b) = c
        .req("GET", "/api/admin/summary?hours=2", Some(root), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["utc_offset_secs"], 8 * 3600, "{b}");
    assert!(b["by_day"].is_array(), "{b}");
}
