//! End-to-end checks of the edge periphery in real workerd: the operator pass-through
//! proxy (auth styles, credential isolation, SSRF refusals, no redirects), request
//! protection (413, probe filtering, CORS) and the Cron Trigger health checks.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollbooth_core::auth::ApiKey;
use tollbooth_core::keyrecord::{KeyRecord, KeyRole, KeyStatus};
use tollbooth_tests::harness::{free_port, EdgeWorker, MockUpstream, WorkerOptions};

struct Keys {
    operator: String,
    member: String,
}

fn record(key: &ApiKey, role: KeyRole) -> KeyRecord {
    KeyRecord {
        public_id: key.public_id().to_string(),
        secret_hash: key.secret_hash(),
        member_id: "m-op".into(),
        plan_id: "ops".into(),
        status: KeyStatus::Active,
        role,
        expires_at: None,
        allowed_models: None,
        rpm: None,
        tpm: None,
        capture: false,
        app_id: None,
        byok: false,
        name: None,
        version: 0,
    }
}

fn put_keys(worker: &EdgeWorker) -> Keys {
    let op = ApiKey::generate(&[11u8; 32]);
    let member = ApiKey::generate(&[22u8; 32]);
    for (k, role) in [(&op, KeyRole::Operator), (&member, KeyRole::Member)] {
        let json = serde_json::to_string(&record(k, role)).unwrap();
        worker
            .wrangler_local(&[
                "kv",
                "key",
                "put",
                "--binding",
                "KEYS",
                &KeyRecord::kv_key(k.public_id()),
                &json,
            ])
            .unwrap();
    }
    Keys {
        operator: op.expose(),
        member: member.expose(),
    }
}

fn put_catalogue(worker: &EdgeWorker, snapshot: &Value) {
    let version = snapshot["version"].as_str().unwrap();
    worker
        .wrangler_local(&[
            "kv",
            "key",
            "put",
            "--binding",
            "CONFIG",
            &format!("catalogue:v:{version}"),
            &snapshot.to_string(),
        ])
        .unwrap();
    worker
        .wrangler_local(&[
            "kv",
            "key",
            "put",
            "--binding",
            "CONFIG",
            "catalogue:current",
            version,
        ])
        .unwrap();
}

fn host_of(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_owned()
}

fn env_key_name(domain: &str) -> String {
    format!(
        "PASSTHROUGH_KEY_{}",
        domain
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    )
}

/// A server that answers every request with a redirect to the metadata service.
async fn redirect_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    format!("127.0.0.1:{}", addr.port())
}

async fn mock_requests(mock: &MockUpstream) -> Vec<Value> {
    reqwest::get(format!("{}/_mock/requests", mock.base_url))
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

async fn last_request(mock: &MockUpstream) -> Value {
    mock_requests(mock)
        .await
        .pop()
        .expect("the mock saw a request")
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[tokio::test]
async fn test_passthrough_protection_and_cron_in_local_mode() {
    let openai = MockUpstream::start(&[]).await.unwrap();
    let anthropic = MockUpstream::start(&[]).await.unwrap();
    let google = MockUpstream::start(&[]).await.unwrap();
    let (d_openai, d_anthropic, d_google) = (
        host_of(&openai.base_url),
        host_of(&anthropic.base_url),
        host_of(&google.base_url),
    );
    let d_redirect = redirect_server().await;
    let domains =
        format!("{d_openai}=bearer,{d_anthropic}=x-api-key,{d_google}=google,{d_redirect}=bearer");
    let worker = EdgeWorker::start(WorkerOptions {
        vars: vec![
            ("ALLOW_LOOPBACK_UPSTREAMS".into(), "true".into()),
            ("PASSTHROUGH_DOMAINS".into(), domains),
            ("MAX_BODY_BYTES".into(), "65536".into()),
            ("CORS_ORIGINS".into(), "https://app.example".into()),
            // The Google-style domain has no catalogue provider: its key comes from
            // the secret `PASSTHROUGH_KEY_<DOMAIN>`.
            (env_key_name(&d_google), "sk-env-google-secret".into()),
            (env_key_name(&d_redirect), "sk-redirect-secret".into()),
        ],
    })
    .await
    .unwrap();
    let keys = put_keys(&worker);
    let dead_port = free_port();
    put_catalogue(
        &worker,
        &json!({
            "version": "v1",
            "providers": [
                {"id": "openai-mock", "kind": "openai", "base_url": format!("{}/v1", openai.base_url),
                 "credentials": [{"id": "oa-1", "secret": "sk-upstream-openai-secret"}]},
                {"id": "anthropic-mock", "kind": "anthropic", "base_url": format!("{}/v1", anthropic.base_url),
                 "credentials": [{"id": "an-1", "secret": "sk-upstream-anthropic-secret"}]},
                {"id": "dead", "kind": "openai", "base_url": format!("http://127.0.0.1:{dead_port}/v1"),
                 "credentials": [{"id": "dead-1", "secret": "sk-dead"}]},
                {"id": "off", "kind": "openai", "base_url": format!("{}/v1", openai.base_url),
                 "credentials": [{"id": "off-1", "secret": "sk-off"}], "enabled": false}
            ]
        }),
    );
    let base = &worker.base_url;
    let http = reqwest::Client::new();

    // --- Bearer style: the catalogue credential goes upstream, the caller's key does not.
    let resp = http
        .post(format!("{base}/{d_openai}/v1/chat/completions"))
        .bearer_auth(&keys.operator)
        .header("cookie", "session=abc")
        .header("x-forwarded-for", "10.0.0.1")
        .json(&json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-tollbooth-passthrough"].to_str().unwrap(),
        d_openai
    );
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    let seen = last_request(&openai).await;
    assert_eq!(seen["path"], "/v1/chat/completions");
    assert_eq!(
        seen["headers"]["authorization"],
        "Bearer sk-upstream-openai-secret"
    );
    let seen_text = seen.to_string();
    assert!(!seen_text.contains(&keys.operator), "client key forwarded");
    assert!(seen["headers"].get("cookie").is_none());
    assert!(seen["headers"].get("x-forwarded-for").is_none());

    // --- x-api-key style (Anthropic SDK clients send their key as x-api-key).
    let resp = http
        .post(format!("{base}/{d_anthropic}/v1/messages"))
        .header("x-api-key", &keys.operator)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "message");
    let seen = last_request(&anthropic).await;
    assert_eq!(seen["headers"]["x-api-key"], "sk-upstream-anthropic-secret");
    assert_eq!(seen["headers"]["anthropic-version"], "2023-06-01");
    assert!(seen["headers"].get("authorization").is_none());
    assert!(!seen.to_string().contains(&keys.operator));

    // --- Google style: x-goog-api-key from the env secret; a `?key=` is dropped.
    let resp = http
        .post(format!(
            "{base}/{d_google}/v1beta/models/gemini-x:generateContent?key={}&foo=bar",
            keys.operator
        ))
        .header("x-goog-api-key", &keys.operator)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["candidates"].is_array(), "{body}");
    let seen = last_request(&google).await;
    assert_eq!(seen["headers"]["x-goog-api-key"], "sk-env-google-secret");
    assert!(seen["headers"].get("authorization").is_none());
    let query = seen["query"].as_str().unwrap_or("");
    assert!(!query.contains("key="), "key in upstream URL: {query}");
    assert!(query.contains("foo=bar"), "{query}");
    assert!(!seen.to_string().contains(&keys.operator));

    // --- Streaming passes through chunk by chunk.
    let started = Instant::now();
    let mut resp = http
        .post(format!("{base}/{d_openai}/v1/chat/completions"))
        .bearer_auth(&keys.operator)
        .json(&json!({"model": "gpt-x@chunks=3,delay=400", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut first_at = None;
    let mut all = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        first_at.get_or_insert_with(|| started.elapsed());
        all.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("data: [DONE]"), "{text}");
    let first_at = first_at.unwrap();
    assert!(
        total - first_at >= Duration::from_millis(700),
        "stream was buffered: first chunk at {first_at:?}, end at {total:?}"
    );

    // --- Who may use it.
    let resp = http
        .post(format!("{base}/{d_openai}/v1/chat/completions"))
        .bearer_auth(&keys.member)
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "operator_key_required");
    let resp = http
        .get(format!("{base}/{d_openai}/v1/models"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "missing_api_key");
    let bad = format!("{}x", &keys.operator[..keys.operator.len() - 1]);
    let resp = http
        .get(format!("{base}/{d_openai}/v1/models"))
        .bearer_auth(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // --- SSRF: refused before anything is fetched, with a reason.
    let before = mock_requests(&openai).await.len();
    for (target, status, code, needle) in [
        (
            "169.254.169.254/latest/meta-data/",
            403,
            "destination_not_allowed",
            "LinkLocal",
        ),
        (
            "0xa9fea9fe/latest/meta-data/",
            403,
            "destination_not_allowed",
            "LinkLocal",
        ),
        (
            "2852039166/latest/",
            403,
            "destination_not_allowed",
            "LinkLocal",
        ),
        (
            "10.0.0.1/v1/models",
            403,
            "destination_not_allowed",
            "Private",
        ),
        ("192.168.1.1/", 403, "destination_not_allowed", "Private"),
        (
            "100.64.0.1/",
            403,
            "destination_not_allowed",
            "SharedAddressSpace",
        ),
        ("[fd00::1]/v1", 403, "destination_not_allowed", "Private"),
        (
            "[::ffff:169.254.169.254]/",
            403,
            "destination_not_allowed",
            "LinkLocal",
        ),
        (
            "metadata.google.internal/computeMetadata/v1/",
            403,
            "destination_not_allowed",
            "metadata.google.internal",
        ),
        (
            "foo.localhost/v1",
            403,
            "destination_not_allowed",
            "foo.localhost",
        ),
        (
            "127.0.0.2/v1/models",
            403,
            "destination_not_allowed",
            "Loopback",
        ),
        (
            "evil.example.com/v1/models",
            403,
            "domain_not_allowed",
            "evil.example.com",
        ),
        (
            "api.openai.com/v1/models",
            403,
            "domain_not_allowed",
            "api.openai.com",
        ),
        (
            &format!("api.openai.com@{d_openai}/v1/models"),
            400,
            "invalid_target",
            "credentials",
        ),
    ] {
        let resp = http
            .get(format!("{base}/{target}"))
            .bearer_auth(&keys.operator)
            .send()
            .await
            .unwrap();
        let (got, body) = json_of(resp).await;
        assert_eq!(got, status, "{target}: {body}");
        assert_eq!(body["error"]["code"], code, "{target}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{target}: {msg}");
    }
    assert_eq!(mock_requests(&openai).await.len(), before);

    // --- Redirects are not followed.
    let resp = http
        .get(format!("{base}/{d_redirect}/v1/models"))
        .bearer_auth(&keys.operator)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("location").is_none());
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("redirects are not followed"));

    // --- 413: declared length, and a chunked body without a length.
    let big = vec![b'a'; 70_000];
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large");
    let resp = http
        .post(format!("{base}/v1/messages"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["type"], "error",
        "Anthropic shape on /v1/messages: {body}"
    );
    assert_eq!(body["error"]["type"], "request_too_large");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'b'; 10_000])).collect();
    let resp = http
        .post(format!("{base}/{d_openai}/v1/chat/completions"))
        .bearer_auth(&keys.operator)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 413, "{body}");

    // --- Scanner probes: a bare 404.
    for path in [
        "/.env",
        "/.git/config",
        "/wp-admin/install.php",
        "/index.php",
        "/api/.env.production",
        "/cgi-bin/test",
    ] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.text().await.unwrap(), "Not Found", "{path}");
    }
    for ua in [
        "sqlmap/1.7.2#stable",
        "Mozilla/5.0 Nikto/2.5",
        "masscan/1.3",
        "zgrab/0.x",
    ] {
        let resp = http
            .get(format!("{base}/health"))
            .header("user-agent", ua)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{ua}");
    }
    let resp = http
        .get(format!("{base}/health"))
        .header("user-agent", "OpenAI/Python 1.54.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // --- CORS.
    let resp = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/v1/chat/completions"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let resp = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/v1/chat/completions"),
        )
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = http
        .post(format!("{base}/{d_openai}/v1/chat/completions"))
        .bearer_auth(&keys.operator)
        .header("origin", "https://app.example")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    let exposed = h["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    assert!(exposed.contains("x-tollbooth-passthrough"), "{exposed}");

    // --- Cron Trigger: probe every enabled credential, record the result in D1.
    let resp = http
        .get(format!("{base}/__scheduled?cron=*/5+*+*+*+*"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let rows = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = worker
                .wrangler_local(&[
                    "d1",
                    "execute",
                    "LEDGER",
                    "--json",
                    "--command",
                    "SELECT provider_id, credential_id, ok, status, latency_ms, error, \
                     consecutive_failures, checked_at FROM credential_health ORDER BY provider_id",
                ])
                .unwrap();
            let parsed: Value = serde_json::from_str(&out).unwrap();
            let rows = parsed[0]["results"].as_array().cloned().unwrap_or_default();
            if rows.len() >= 3 || Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    assert_eq!(rows.len(), 3, "{rows:?}");
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["provider_id"] == id)
            .unwrap()
            .clone()
    };
    let ok = row("openai-mock");
    assert_eq!(ok["credential_id"], "oa-1");
    assert_eq!(ok["ok"], 1);
    assert_eq!(ok["status"], 200);
    assert!(ok["checked_at"].as_u64().unwrap() > 1_700_000_000_000);
    // Anthropic's check goes to /v1/models with x-api-key and anthropic-version, which the
    // mock (like the real API) accepts; a refused key is covered by the picky mock in
    // test_websocket_chat_and_health_aware_routing.
    let anth = row("anthropic-mock");
    assert_eq!(anth["credential_id"], "an-1");
    assert_eq!(anth["ok"], 1, "{anth}");
    assert_eq!(anth["status"], 200);
    let dead = row("dead");
    assert_eq!(dead["ok"], 0);
    assert_eq!(dead["status"], Value::Null);
    assert_eq!(dead["consecutive_failures"], 1);
    // The probe used the credential's own key, and never leaked it into D1.
    let probe = mock_requests(&openai)
        .await
        .into_iter()
        .rev()
        .find(|r| r["path"] == "/v1/models")
        .unwrap();
    assert_eq!(
        probe["headers"]["authorization"],
        "Bearer sk-upstream-openai-secret"
    );
    assert!(!format!("{rows:?}").contains("sk-"));

    // A second run counts consecutive failures.
    http.get(format!("{base}/__scheduled?cron=*/5+*+*+*+*"))
        .send()
        .await
        .unwrap();
    let out = worker
        .wrangler_local(&[
            "d1",
            "execute",
            "LEDGER",
            "--json",
            "--command",
            "SELECT consecutive_failures FROM credential_health WHERE provider_id = 'dead'",
        ])
        .unwrap();
    let parsed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed[0]["results"][0]["consecutive_failures"], 2);
}

#[tokio::test]
async fn test_passthrough_loopback_refused_without_local_mode() {
    let mock = MockUpstream::start(&[]).await.unwrap();
    let d = host_of(&mock.base_url);
    let port = d.rsplit(':').next().unwrap().to_owned();
    let worker = EdgeWorker::start(WorkerOptions {
        vars: vec![
            // Listed, but loopback stays refused without ALLOW_LOOPBACK_UPSTREAMS.
            (
                "PASSTHROUGH_DOMAINS".into(),
                json!({ d.clone(): "bearer", format!("localhost:{port}"): "bearer" }).to_string(),
            ),
            (env_key_name(&d), "sk-should-never-be-sent".into()),
        ],
    })
    .await
    .unwrap();
    let keys = put_keys(&worker);
    let http = reqwest::Client::new();
    for target in [
        d.clone(),
        format!("localhost:{port}"),
        format!("LOCALHOST.:{port}"),
        format!("2130706433:{port}"),
        format!("0x7f.1:{port}"),
        format!("0177.0.0.1:{port}"),
        format!("127.1:{port}"),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        "0.0.0.0".to_owned(),
    ] {
        let resp = http
            .get(format!("{}/{target}/v1/models", worker.base_url))
            .bearer_auth(&keys.operator)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(status, 403, "{target}: {body}");
        assert_eq!(body["error"]["code"], "destination_not_allowed", "{target}");
    }
    assert!(mock_requests(&mock).await.is_empty());
}

mod ws {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Sends one request and collects the answer: chunk texts until `[DONE]` or an
    /// error message, with the arrival time of each.
    async fn ask(socket: &mut Socket, request: Value) -> Vec<(Duration, String)> {
        let started = Instant::now();
        socket
            .send(Message::Text(request.to_string()))
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("answer in time")
        {
            let text = match msg.unwrap() {
                Message::Text(t) => t,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            };
            let end = text == "[DONE]" || text.contains("\"error\"");
            out.push((started.elapsed(), text));
            if end {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn test_websocket_chat_and_health_aware_routing() {
        let mock = MockUpstream::start(&[]).await.unwrap();
        // Accepts only one of the two credentials of provider `hc`.
        let picky = MockUpstream::start(&["--require-key", "sk-hc-good"])
            .await
            .unwrap();
        let worker = EdgeWorker::start(WorkerOptions {
            vars: vec![("ALLOW_LOOPBACK_UPSTREAMS".into(), "true".into())],
        })
        .await
        .unwrap();
        let keys = put_keys(&worker);
        put_catalogue(
            &worker,
            &json!({
                "version": "ws1",
                "providers": [
                    {"id": "oa", "kind": "openai", "base_url": format!("{}/v1", mock.base_url),
                     "credentials": [{"id": "oa-1", "secret": "sk-upstream-ws-secret"}]},
                    {"id": "hc", "kind": "openai", "base_url": format!("{}/v1", picky.base_url),
                     "credentials": [{"id": "hc-bad", "secret": "sk-hc-bad"},
                                     {"id": "hc-good", "secret": "sk-hc-good"}]}
                ],
                "models": [
                    {"name": "chat", "free": true, "deployments": [{"provider": "oa", "model": "m@chunks=3,delay=300"}]},
                    {"name": "quick", "free": true, "deployments": [{"provider": "oa", "model": "m"}]},
                    {"name": "hc", "free": true, "deployments": [{"provider": "hc", "model": "m"}]}
                ],
                "plans": [{"id": "ops", "allowed_models": ["*"]}]
            }),
        );

        // --- Health-aware routing: the Cron check marks `hc-bad` failed; after the
        // isolate refreshes its copy, requests never go to it first.
        let http = reqwest::Client::new();
        http.get(format!("{}/__scheduled?cron=*/5+*+*+*+*", worker.base_url))
            .send()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = worker
                .wrangler_local(&[
                    "d1",
                    "execute",
                    "LEDGER",
                    "--json",
                    "--command",
                    "SELECT ok FROM credential_health WHERE credential_id = 'hc-bad'",
                ])
                .unwrap();
            let parsed: Value = serde_json::from_str(&out).unwrap();
            if parsed[0]["results"][0]["ok"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no failed health row: {parsed}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let chat = |model: &str| {
            http.post(format!("{}/v1/chat/completions", worker.base_url))
                .bearer_auth(&keys.member)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
        };
        // The first routed request makes the isolate re-read the health table (after
        // its response, off the request path).
        let _ = chat("hc").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        reqwest::Client::new()
            .delete(format!("{}/_mock/requests", picky.base_url))
            .send()
            .await
            .unwrap();
        for _ in 0..12 {
            let resp = chat("hc").await.unwrap();
            assert_eq!(resp.status(), 200);
        }
        let seen = mock_requests(&picky).await;
        assert_eq!(
            seen.len(),
            12,
            "every request went to the healthy key first"
        );
        assert!(seen
            .iter()
            .all(|r| r["headers"]["authorization"] == "Bearer sk-hc-good"));
        let url = format!(
            "{}/v1/chat/completions/ws",
            worker.base_url.replace("http://", "ws://")
        );

        // Header auth.
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", keys.member).parse().unwrap(),
        );
        let (mut socket, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        assert!(resp.headers().get("x-request-id").is_some());

        let answer = ask(
            &mut socket,
            json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let (last_at, last) = answer.last().unwrap().clone();
        assert_eq!(last, "[DONE]", "{answer:?}");
        let chunks: Vec<Value> = answer[..answer.len() - 1]
            .iter()
            .map(|(_, t)| serde_json::from_str(t).unwrap())
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(text.contains("tok"), "{text}");
        // Chunks arrive as the upstream produces them (300 ms apart), not at the end.
        let first_at = answer[0].0;
        assert!(
            last_at - first_at >= Duration::from_millis(500),
            "buffered: first {first_at:?}, last {last_at:?}"
        );
        // The upstream saw a streaming request with the gateway's credential.
        let seen = last_request(&mock).await;
        assert_eq!(seen["body"]["stream"], true);
        assert_eq!(
            seen["headers"]["authorization"],
            "Bearer sk-upstream-ws-secret"
        );

        // Errors come back as one message and the socket stays usable.
        let answer = ask(
            &mut socket,
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let err: Value = serde_json::from_str(&answer[0].1).unwrap();
        assert_eq!(err["error"]["code"], "model_not_found", "{err}");
        socket.send(Message::Text("not json".into())).await.unwrap();
        let msg = socket.next().await.unwrap().unwrap();
        let err: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error");
        let answer = ask(
            &mut socket,
            json!({"model": "quick", "messages": [{"role": "user", "content": "again"}]}),
        )
        .await;
        assert_eq!(answer.last().unwrap().1, "[DONE]");
        socket.close(None).await.unwrap();

        // Browser style: the key in a subprotocol; the server picks `tollbooth.chat`.
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("tollbooth.chat, openai-insecure-api-key.{}", keys.member)
                .parse()
                .unwrap(),
        );
        let (mut socket, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "tollbooth.chat");
        let answer = ask(
            &mut socket,
            json!({"model": "quick", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(answer.last().unwrap().1, "[DONE]");

        // No key: refused before the upgrade, as plain HTTP.
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401)
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
}
