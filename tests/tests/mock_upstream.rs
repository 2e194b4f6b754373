//! The mock upstream itself: every protocol, stream and non-stream, and every directive the
//! gateway tests rely on. Runs in process through `mock::spawn`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tollbooth_core::sse;
use tollbooth_tests::mock::{self, MockConfig, MockHandle};

async fn start() -> MockHandle {
    mock::spawn(MockConfig::default()).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `(event name, parsed data)` of every SSE event, decoded by the gateway's own decoder;
/// `[DONE]` becomes `Value::String`, and data that is not JSON becomes `Value::Null`.
fn sse_events(body: &str) -> Vec<(Option<String>, Value)> {
    let mut dec = sse::Decoder::new();
    let mut events = dec.push(body.as_bytes());
    events.extend(dec.finish());
    events
        .into_iter()
        .map(|e| {
            let value = if e.data == sse::DONE_DATA {
                Value::String(e.data)
            } else {
                serde_json::from_str(&e.data).unwrap_or(Value::Null)
            };
            (e.event, value)
        })
        .collect()
}

async fn openai_chat(m: &MockHandle, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", m.base_url()))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn anthropic(m: &MockHandle, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", m.base_url()))
        .header("x-api-key", "ak-test")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn gemini(m: &MockHandle, model: &str, action: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1beta/models/{model}:{action}", m.base_url()))
        .header("x-goog-api-key", "gk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn user(text: &str) -> Value {
    json!([{ "role": "system", "content": "be brief" }, { "role": "user", "content": text }])
}

const WEATHER_TOOL: &str = "get_weather";

#[tokio::test]
async fn test_openai_non_stream_content_and_usage() {
    let m = start().await;
    let resp = openai_chat(
        &m,
        json!({ "model": "gpt-4o-mini", "messages": user("one two three") }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // "be brief" + "one two three" = 5 words.
    assert_eq!(
        v["usage"],
        json!({ "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8 })
    );

    let v: Value = openai_chat(
        &m,
        json!({ "model": "gpt-4o-mini@chunks=5,usage=0,cached=2", "messages": user("x") }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert!(v.get("usage").is_none());

    let v: Value = openai_chat(
        &m,
        json!({ "model": "gpt-4o-mini@cached=2", "messages": user("x y z") }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
}

#[tokio::test]
async fn test_openai_stream_chunks_and_include_usage() {
    let m = start().await;
    let resp = openai_chat(
        &m,
        json!({ "model": "gpt-4o-mini@chunks=4", "stream": true, "messages": user("hi") }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&resp.text().await.unwrap());
    assert_eq!(
        events.first().unwrap().1["choices"][0]["delta"]["role"],
        "assistant"
    );
    let content: String = events
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 ");
    let n = events.len();
    assert_eq!(events[n - 2].1["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[n - 1].1, json!("[DONE]"));
    // No include_usage: no usage chunk, no usage field at all.
    assert!(events.iter().all(|(_, v)| v.get("usage").is_none()));

    let resp = openai_chat(
        &m,
        json!({ "model": "gpt-4o-mini@cached=1", "stream": true, "stream_options": { "include_usage": true }, "messages": user("a b c") }),
    )
    .await;
    let events = sse_events(&resp.text().await.unwrap());
    let n = events.len();
    let usage_chunk = &events[n - 2].1;
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 5);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 3);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 8);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        1
    );
    assert_eq!(events[0].1["usage"], Value::Null);
    assert_eq!(events[n - 1].1, json!("[DONE]"));

    // usage=force: the usage chunk without include_usage; usage=0: never.
    let events = sse_events(
        &openai_chat(
            &m,
            json!({ "model": "m@usage=force", "stream": true, "messages": user("a") }),
        )
        .await
        .text()
        .await
        .unwrap(),
    );
    assert_eq!(events[events.len() - 2].1["usage"]["completion_tokens"], 3);
    let events = sse_events(
        &openai_chat(
            &m,
            json!({ "model": "m@usage=0", "stream": true, "stream_options": { "include_usage": true }, "messages": user("a") }),
        )
        .await
        .text()
        .await
        .unwrap(),
    );
    assert!(events.iter().all(|(_, v)| v["usage"].is_null()));
}

fn openai_tools() -> Value {
    json!([
        { "type": "function", "function": { "name": WEATHER_TOOL, "parameters": { "type": "object" } } },
        { "type": "function", "function": { "name": "other", "parameters": { "type": "object" } } },
    ])
}

#[tokio::test]
async fn test_openai_tool_calls_stream_and_non_stream() {
    let m = start().await;
    let v: Value = openai_chat(
        &m,
        json!({ "model": "gpt-4o@tools=1", "messages": user("weather?"), "tools": openai_tools() }),
    )
    .await
    .json()
    .await
    .unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], WEATHER_TOOL);
    assert_eq!(call["id"], "call_mock_0");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({ "location": "Paris" }));

    // Without tools=1, or without tools in the request, the answer is text.
    let v: Value = openai_chat(
        &m,
        json!({ "model": "gpt-4o", "messages": user("w"), "tools": openai_tools() }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let resp = openai_chat(
        &m,
        json!({ "model": "gpt-4o@tools,chunks=4", "stream": true, "messages": user("w"), "tools": openai_tools(),
                "tool_choice": { "type": "function", "function": { "name": "other" } } }),
    )
    .await;
    let events = sse_events(&resp.text().await.unwrap());
    let head = &events[0].1["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["function"]["name"], "other");
    assert_eq!(head["function"]["arguments"], "");
    let fragments: Vec<&str> = events[1..]
        .iter()
        .filter_map(|(_, v)| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert_eq!(fragments.len(), 4);
    assert_eq!(fragments.concat(), r#"{"location":"Paris"}"#);
    let n = events.len();
    assert_eq!(events[n - 2].1["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn test_anthropic_non_stream_and_stream() {
    let m = start().await;
    let req = json!({ "model": "claude-3-5-haiku@cached=2", "max_tokens": 100, "system": "be brief",
                      "messages": [{ "role": "user", "content": [{ "type": "text", "text": "one two three" }] }] });
    let resp = anthropic(&m, req.clone()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"],
        json!([{ "type": "text", "text": "tok0 tok1 tok2 " }])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["usage"],
        json!({ "input_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": 3 })
    );

    let mut req = req;
    req["stream"] = json!(true);
    req["model"] = json!("claude-3-5-haiku@chunks=2");
    let resp = anthropic(&m, req).await;
    let events = sse_events(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_deref().unwrap());
    }
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 5);
    assert_eq!(
        events[3].1["delta"],
        json!({ "type": "text_delta", "text": "tok0 " })
    );
    assert_eq!(events[4].1["delta"]["text"], "tok1 ");
    assert_eq!(events[6].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[6].1["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn test_anthropic_tool_use_and_header_errors() {
    let m = start().await;
    let tools = json!([{ "name": WEATHER_TOOL, "input_schema": { "type": "object" } }]);
    let v: Value = anthropic(&m, json!({ "model": "claude@tools=1", "max_tokens": 10, "tools": tools, "messages": [{ "role": "user", "content": "w" }] }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"],
        json!([{ "type": "tool_use", "id": "toolu_mock_0", "name": WEATHER_TOOL, "input": { "location": "Paris" } }])
    );

    let resp = anthropic(
        &m,
        json!({ "model": "claude@tools=1,chunks=3", "stream": true, "max_tokens": 10, "tools": tools, "messages": [{ "role": "user", "content": "w" }] }),
    )
    .await;
    let events = sse_events(&resp.text().await.unwrap());
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["name"], WEATHER_TOOL);
    let partial: Vec<&str> = events
        .iter()
        .filter(|(_, v)| v["delta"]["type"] == "input_json_delta")
        .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(partial.len(), 3);
    assert_eq!(partial.concat(), r#"{"location":"Paris"}"#);
    let delta = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");

    // Missing key -> 401 authentication_error; missing version -> 400.
    let url = format!("{}/v1/messages", m.base_url());
    let body = json!({ "model": "claude", "max_tokens": 1, "messages": [] });
    let resp = client()
        .post(&url)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    let resp = client()
        .post(&url)
        .header("x-api-key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    // A Bearer header is not Anthropic's auth style.
    let resp = client()
        .post(&url)
        .bearer_auth("k")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn test_gemini_generate_stream_and_function_call() {
    let m = start().await;
    let req = json!({ "systemInstruction": { "parts": [{ "text": "be brief" }] },
                      "contents": [{ "role": "user", "parts": [{ "text": "one two three" }] }] });
    let resp = gemini(
        &m,
        "gemini-2.0-flash@cached=4",
        "generateContent",
        req.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(
        cand["content"]["parts"],
        json!([{ "text": "tok0 tok1 tok2 " }])
    );
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(
        v["usageMetadata"],
        json!({ "promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8, "cachedContentTokenCount": 4 })
    );
    assert_eq!(v["modelVersion"], "gemini-2.0-flash@cached=4");

    // Stream with the key in the query instead of the header.
    let resp = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash@chunks=3:streamGenerateContent?alt=sse&key=gk-q",
            m.base_url()
        ))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.text().await.unwrap());
    assert_eq!(events.len(), 3);
    let text: String = events
        .iter()
        .map(|(_, v)| {
            v["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert!(events[..2]
        .iter()
        .all(|(_, v)| v.get("usageMetadata").is_none()
            && v["candidates"][0].get("finishReason").is_none()));
    assert_eq!(events[2].1["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[2].1["usageMetadata"]["candidatesTokenCount"], 3);

    // Function call.
    let mut treq = req.clone();
    treq["tools"] = json!([{ "functionDeclarations": [{ "name": WEATHER_TOOL, "parameters": { "type": "OBJECT" } }] }]);
    let v: Value = gemini(&m, "gemini@tools=1", "generateContent", treq.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"],
        json!([{ "functionCall": { "name": WEATHER_TOOL, "args": { "location": "Paris" } },
                 "thoughtSignature": "mock-thought-signature" }])
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let resp = gemini(&m, "gemini@tools=1", "streamGenerateContent?alt=sse", treq).await;
    let events = sse_events(&resp.text().await.unwrap());
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].1["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        WEATHER_TOOL
    );
    assert_eq!(events[0].1["usageMetadata"]["candidatesTokenCount"], 1);

    // Without alt=sse the stream is one JSON array.
    let v: Value = gemini(&m, "gemini", "streamGenerateContent", req)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    // No key at all.
    let resp = client()
        .post(format!(
            "{}/v1beta/models/gemini:generateContent",
            m.base_url()
        ))
        .json(&json!({ "contents": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["status"],
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn test_embeddings_rerank_and_models() {
    let m = start().await;
    let c = client();
    let post = |path: &str, body: Value| {
        c.post(format!("{}{path}", m.base_url()))
            .bearer_auth("sk")
            .json(&body)
            .send()
    };
    let v: Value = post(
        "/v1/embeddings",
        json!({ "model": "text-embedding-3-small@dim=8", "input": ["hello world", "x"] }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let e0: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(e0.len(), 8);
    assert!((e0.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3);
    assert_eq!(v["usage"], json!({ "prompt_tokens": 3, "total_tokens": 3 }));
    // Deterministic: same text, same vector, whatever the model string.
    let again: Value = post(
        "/v1/embeddings",
        json!({ "model": "other", "input": "hello world", "dimensions": 8 }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(again["data"][0]["embedding"], data[0]["embedding"]);
    // base64: 8 f32 = 32 bytes = 44 base64 chars.
    let b64: Value = post(
        "/v1/embeddings",
        json!({ "model": "e@dim=8", "input": "hello world", "encoding_format": "base64" }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(b64["data"][0]["embedding"].as_str().unwrap().len(), 44);
    let resp = post("/v1/embeddings", json!({ "model": "e" }))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let v: Value = post(
        "/v1/rerank",
        json!({ "model": "rerank", "query": "red apple", "documents": ["green pear", "a red apple", "apple pie"], "top_n": 2, "return_documents": true }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        v["results"],
        json!([
            { "index": 1, "relevance_score": 1.0, "document": { "text": "a red apple" } },
            { "index": 2, "relevance_score": 0.5, "document": { "text": "apple pie" } },
        ])
    );
    assert_eq!(v["usage"]["total_tokens"], 9);

    let v: Value = c
        .get(format!("{}/v1/models", m.base_url()))
        .bearer_auth("sk")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == "gpt-4o-mini"));
}

#[tokio::test]
async fn test_status_directive_gives_protocol_shaped_errors() {
    let m = start().await;
    let resp = openai_chat(
        &m,
        json!({ "model": "gpt-4o@status=429", "messages": user("x") }),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    // Errors come as JSON even for stream requests.
    let resp = anthropic(
        &m,
        json!({ "model": "claude@status=529", "stream": true, "max_tokens": 1, "messages": [] }),
    )
    .await;
    assert_eq!(resp.status(), 529);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );

    let resp = gemini(
        &m,
        "gemini@status=503",
        "streamGenerateContent?alt=sse",
        json!({ "contents": [] }),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["error"],
        json!({ "code": 503, "message": "mock status=503", "status": "UNAVAILABLE" })
    );

    // The x-mock header wins over the model name.
    let resp = client()
        .post(format!("{}/v1/chat/completions", m.base_url()))
        .bearer_auth("k")
        .header("x-mock", "status=500")
        .json(&json!({ "model": "gpt-4o@status=400", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );

    // Malformed JSON is a protocol-shaped 400, not a crash.
    let resp = client()
        .post(format!("{}/v1/messages", m.base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["type"], "error");
}

#[tokio::test]
async fn test_fail_first_counts_per_model_string() {
    let m = start().await;
    let body = |model: &str| json!({ "model": model, "messages": user("x") });
    let statuses = async |model: &str, n: usize| {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(openai_chat(&m, body(model)).await.status().as_u16());
        }
        out
    };
    assert_eq!(
        statuses("gpt-4o@fail_first=2", 4).await,
        [500, 500, 200, 200]
    );
    // Another model string has its own counter.
    assert_eq!(
        statuses("gpt-4o@fail_first=1,chunks=1", 2).await,
        [500, 200]
    );

    let stats: Value = client()
        .get(format!("{}/_mock/stats", m.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["models"]["gpt-4o@fail_first=2"], 4);
    assert_eq!(stats["total"], 6);

    // DELETE /_mock/stats resets the counters.
    client()
        .delete(format!("{}/_mock/stats", m.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(statuses("gpt-4o@fail_first=2", 1).await, [500]);
}

/// Collects the body as (arrival time, bytes) until the end or an error.
async fn timed_chunks(resp: reqwest::Response) -> (Vec<(Instant, String)>, Option<reqwest::Error>) {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => out.push((Instant::now(), String::from_utf8_lossy(&b).into_owned())),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[tokio::test]
async fn test_reset_after_breaks_the_stream() {
    let m = start().await;
    let resp = openai_chat(
        &m,
        json!({ "model": "gpt-4o@reset_after=2,chunks=5", "stream": true, "messages": user("x") }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (chunks, err) = timed_chunks(resp).await;
    assert!(err.is_some(), "the client must see the stream break");
    let body: String = chunks.into_iter().map(|(_, s)| s).collect();
    assert!(body.contains("tok1 "), "{body}");
    assert!(
        !body.contains("tok2 ") && !body.contains("[DONE]"),
        "{body}"
    );

    // Non-stream: headers and half the body, then the reset.
    let resp = anthropic(
        &m,
        json!({ "model": "claude@reset_after=0", "max_tokens": 1, "messages": [] }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());

    // The server keeps serving new connections afterwards.
    let resp = openai_chat(&m, json!({ "model": "gpt-4o", "messages": user("x") })).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn test_hang_and_hang_after_until_the_client_gives_up() {
    let m = start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", m.base_url()))
        .bearer_auth("k")
        .timeout(Duration::from_millis(300))
        .json(&json!({ "model": "gpt-4o@hang=1", "messages": [] }))
        .send()
        .await;
    assert!(resp.unwrap_err().is_timeout());

    let resp = client()
        .post(format!("{}/v1/chat/completions", m.base_url()))
        .bearer_auth("k")
        .timeout(Duration::from_millis(500))
        .json(&json!({ "model": "gpt-4o@hang_after=1", "stream": true, "messages": [] }))
        .send()
        .await
        .unwrap();
    let (chunks, err) = timed_chunks(resp).await;
    assert!(err.unwrap().is_timeout());
    let body: String = chunks.into_iter().map(|(_, s)| s).collect();
    assert!(body.contains("tok0 ") && !body.contains("tok1 "), "{body}");
}

#[tokio::test]
async fn test_delay_and_ttft_pacing_is_observable() {
    let m = start().await;
    let sent = Instant::now();
    let resp = openai_chat(&m, json!({ "model": "gpt-4o@ttft=300,delay=200,chunks=3", "stream": true, "messages": user("x") })).await;
    // Stream headers come at once; ttft delays the first event.
    assert!(
        sent.elapsed() < Duration::from_millis(250),
        "{:?}",
        sent.elapsed()
    );
    let (chunks, err) = timed_chunks(resp).await;
    assert!(err.is_none());
    let mut content_times = Vec::new();
    for (t, s) in &chunks {
        for (_, v) in sse_events(s) {
            if let Some(text) = v["choices"][0]["delta"]["content"].as_str() {
                if text.starts_with("tok") {
                    content_times.push(*t);
                }
            }
        }
    }
    assert_eq!(
        content_times.len(),
        3,
        "every chunk arrives in its own read"
    );
    assert!(chunks[0].0 - sent >= Duration::from_millis(280));
    for pair in content_times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(150),
            "chunks only {gap:?} apart"
        );
    }

    // Non-stream: ttft delays the status line.
    let sent = Instant::now();
    let resp = anthropic(
        &m,
        json!({ "model": "claude@ttft=200", "max_tokens": 1, "messages": [] }),
    )
    .await;
    assert!(sent.elapsed() >= Duration::from_millis(180));
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn test_malformed_and_echo() {
    let m = start().await;
    let text = openai_chat(
        &m,
        json!({ "model": "gpt-4o@malformed=1", "stream": true, "messages": user("x") }),
    )
    .await
    .text()
    .await
    .unwrap();
    let events = sse_events(&text);
    assert!(
        events.iter().any(|(_, v)| v.is_null()),
        "an invalid event is present"
    );
    assert_eq!(events.last().unwrap().1, json!("[DONE]"));

    let resp = openai_chat(
        &m,
        json!({ "model": "gpt-4o@malformed=1", "messages": user("x") }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err());

    let v: Value = openai_chat(
        &m,
        json!({ "model": "gpt-4o@echo=1,chunks=2", "messages": user("say it back") }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "say it back");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn test_requests_log_records_credentials_and_clears() {
    let m = start().await;
    openai_chat(&m, json!({ "model": "gpt-4o", "messages": user("x") })).await;
    anthropic(
        &m,
        json!({ "model": "claude", "max_tokens": 1, "messages": [] }),
    )
    .await;
    client()
        .post(format!(
            "{}/v1beta/models/gemini:generateContent?key=gk-query",
            m.base_url()
        ))
        .json(&json!({ "contents": [] }))
        .send()
        .await
        .unwrap();

    let url = format!("{}/_mock/requests", m.base_url());
    let log: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["path"], "/v1/chat/completions");
    assert_eq!(log[0]["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(log[0]["body"]["model"], "gpt-4o");
    assert_eq!(log[1]["headers"]["x-api-key"], "ak-test");
    assert_eq!(log[1]["headers"]["anthropic-version"], "2023-06-01");
    assert_eq!(log[2]["query"], "key=gk-query");
    assert_eq!(log[2]["model"], "gemini");

    client().delete(&url).send().await.unwrap();
    let log: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log, json!([]));
    let health = client()
        .get(format!("{}/_mock/health", m.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    m.shutdown().await;
}

#[tokio::test]
async fn test_require_key_is_enforced_per_protocol() {
    let m = mock::spawn(MockConfig::default().require_key("good"))
        .await
        .unwrap();
    let c = client();
    let chat = |key: &str| {
        c.post(format!("{}/v1/chat/completions", m.base_url()))
            .bearer_auth(key)
            .json(&json!({ "model": "gpt-4o", "messages": [] }))
            .send()
    };
    assert_eq!(chat("good").await.unwrap().status(), 200);
    let resp = chat("bad").await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );

    let msg = |key: &str| {
        c.post(format!("{}/v1/messages", m.base_url()))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({ "model": "claude", "max_tokens": 1, "messages": [] }))
            .send()
    };
    assert_eq!(msg("good").await.unwrap().status(), 200);
    assert_eq!(msg("bad").await.unwrap().status(), 401);

    let gem = |key: &str| {
        c.post(format!(
            "{}/v1beta/models/gemini:generateContent?key={key}",
            m.base_url()
        ))
        .json(&json!({ "contents": [] }))
        .send()
    };
    assert_eq!(gem("good").await.unwrap().status(), 200);
    assert_eq!(gem("bad").await.unwrap().status(), 401);

    // Without a key at all, even an open mock refuses.
    let open = start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", open.base_url()))
        .json(&json!({ "model": "gpt-4o", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

async fn responses(m: &MockHandle, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/responses", m.base_url()))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn weather_tools(kind: &str) -> Value {
    match kind {
        "custom" => json!([{ "type": "web_search" }, { "type": "custom", "name": "apply_patch" }]),
        _ => json!([{ "type": "web_search" },
                    { "type": "function", "name": WEATHER_TOOL, "parameters": { "type": "object" } }]),
    }
}

#[tokio::test]
async fn test_responses_non_stream_text_tools_and_usage() {
    let m = start().await;
    let v: Value = responses(
        &m,
        json!({ "model": "gpt-5@cached=2", "instructions": "be brief",
                "input": [{ "role": "user", "content": [{ "type": "input_text", "text": "one two three" }] }] }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-5@cached=2");
    assert!(v["id"].as_str().unwrap().starts_with("resp_mock_"));
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], "tok0 tok1 tok2 ");
    // "be brief" + "one two three" = 5 words.
    assert_eq!(
        v["usage"],
        json!({ "input_tokens": 5, "input_tokens_details": { "cached_tokens": 2 },
                "output_tokens": 3, "output_tokens_details": { "reasoning_tokens": 0 },
                "total_tokens": 8 })
    );

    // A function call (hosted tools are skipped), a custom tool call, and none.
    let v: Value = responses(
        &m,
        json!({ "model": "gpt-5@tools=1", "input": "weather?", "tools": weather_tools("function") }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["output"][0]["type"], "function_call");
    assert_eq!(v["output"][0]["name"], WEATHER_TOOL);
    assert_eq!(v["output"][0]["call_id"], "call_mock_0");
    assert_eq!(v["output"][0]["arguments"], r#"{"location":"Paris"}"#);
    let v: Value = responses(
        &m,
        json!({ "model": "gpt-5@tools=1", "input": "patch it", "tools": weather_tools("custom") }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["output"][0]["type"], "custom_tool_call");
    assert_eq!(v["output"][0]["name"], "apply_patch");
    assert_eq!(v["output"][0]["input"], r#"{"location":"Paris"}"#);
    let v: Value = responses(
        &m,
        json!({ "model": "gpt-5@tools=1,usage=0", "input": "x", "tool_choice": "none",
                "tools": weather_tools("function") }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["usage"], Value::Null);
}

/// Every event carries `type` = its `event:` name and a `sequence_number` counting from 0.
fn check_sequence(events: &[(Option<String>, Value)]) {
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(name.as_deref(), data["type"].as_str(), "{data}");
        assert_eq!(data["sequence_number"], json!(i), "{data}");
    }
}

#[tokio::test]
async fn test_responses_stream_events_in_order() {
    let m = start().await;
    let resp = responses(
        &m,
        json!({ "model": "gpt-5@chunks=4", "stream": true, "input": "one two" }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&resp.text().await.unwrap());
    check_sequence(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let deltas: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"].as_str())
        .collect();
    assert_eq!(deltas, "tok0 tok1 tok2 tok3 ");
    let completed = &events[11].1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["content"][0]["text"], deltas);
    assert_eq!(completed["usage"]["input_tokens"], 2);
    assert_eq!(completed["usage"]["output_tokens"], 4);
    // Same response id on every lifecycle event.
    assert_eq!(events[0].1["response"]["id"], completed["id"]);

    // Tool call: the arguments stream as fragments that add up to the final arguments.
    let resp = responses(
        &m,
        json!({ "model": "gpt-5@tools=1,chunks=3", "stream": true, "input": "w",
                "tools": weather_tools("function") }),
    )
    .await;
    let events = sse_events(&resp.text().await.unwrap());
    check_sequence(&events);
    let args: String = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, r#"{"location":"Paris"}"#);
    let done = events
        .iter()
        .find(|(n, _)| n.as_deref() == Some("response.function_call_arguments.done"))
        .unwrap();
    assert_eq!(done.1["arguments"], args);
    let added = &events[2].1["item"];
    assert_eq!(added["type"], "function_call");
    assert_eq!(added["arguments"], "");
    let last = &events.last().unwrap().1;
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output"][0]["arguments"], args);

    // Custom tool input streams with its own events.
    let resp = responses(
        &m,
        json!({ "model": "gpt-5@tools=1", "stream": true, "input": "p",
                "tools": weather_tools("custom") }),
    )
    .await;
    let events = sse_events(&resp.text().await.unwrap());
    check_sequence(&events);
    assert!(events
        .iter()
        .any(|(n, _)| n.as_deref() == Some("response.custom_tool_call_input.done")));
}

#[tokio::test]
async fn test_responses_directives_and_errors() {
    let m = start().await;
    // Errors are in the OpenAI shape.
    let resp = responses(&m, json!({ "model": "gpt-5@status=429", "input": "x" })).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let resp = client()
        .post(format!("{}/v1/responses", m.base_url()))
        .json(&json!({ "model": "gpt-5", "input": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // malformed=1 inserts an unparsable event after the first delta.
    let resp = responses(
        &m,
        json!({ "model": "gpt-5@malformed=1", "stream": true, "input": "x" }),
    )
    .await;
    let events = sse_events(&resp.text().await.unwrap());
    assert!(events.iter().any(|(_, v)| v.is_null()));
    assert_eq!(
        events.last().unwrap().0.as_deref(),
        Some("response.completed")
    );
    // hang_after=1: one delta, then nothing more.
    let resp = client()
        .post(format!("{}/v1/responses", m.base_url()))
        .bearer_auth("sk")
        .timeout(Duration::from_millis(500))
        .json(&json!({ "model": "gpt-5@hang_after=1", "stream": true, "input": "x" }))
        .send()
        .await
        .unwrap();
    let (chunks, err) = timed_chunks(resp).await;
    assert!(err.is_some());
    let text: String = chunks.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(text.matches("response.output_text.delta").count(), 2); // event: + type
}

/// The mock speaks Responses well enough for the official SDK's strict stream parser.
#[tokio::test(flavor = "multi_thread")]
async fn test_responses_accepted_by_the_official_openai_sdk() {
    let m = start().await;
    let base = format!("{}/v1", m.base_url());
    tokio::task::block_in_place(|| {
        let python = std::env::var("TB_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = tollbooth_tests::harness::repo_root().join("tests/python/responses_sdk.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .env("BASE_URL", &base)
            .env("KEY", "sk-test")
            .env("MODEL", "gpt-5")
            .env("TOOL_MODEL", "gpt-5@tools=1")
            .env("EXPECT_TEXT", "tok0 tok1 tok2 ")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `tools=once`: a tool call until the conversation carries a tool result, then text, in
/// every protocol (what an agent's tool turn needs).
#[tokio::test]
async fn test_tools_once_calls_until_a_result_is_back() {
    let m = start().await;
    let tools =
        json!([{ "type": "function", "function": { "name": WEATHER_TOOL, "parameters": {} } }]);
    let first = json!([{ "role": "user", "content": "w?" }]);
    let v: Value = openai_chat(
        &m,
        json!({ "model": "m@tools=once", "messages": first, "tools": tools }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let answered = json!([{ "role": "user", "content": "w?" },
        { "role": "assistant", "tool_calls": [{ "id": "call_mock_0", "type": "function",
          "function": { "name": WEATHER_TOOL, "arguments": "{}" } }] },
        { "role": "tool", "tool_call_id": "call_mock_0", "content": "18C" }]);
    let v: Value = openai_chat(
        &m,
        json!({ "model": "m@tools=once", "messages": answered, "tools": tools }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let an_tools = json!([{ "name": WEATHER_TOOL, "input_schema": { "type": "object" } }]);
    let an_answered = json!([{ "role": "user", "content": "w?" },
        { "role": "assistant", "content": [{ "type": "tool_use", "id": "t", "name": WEATHER_TOOL, "input": {} }] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "t", "content": "18C" }] }]);
    let v: Value = anthropic(
        &m,
        json!({ "model": "c@tools=once", "max_tokens": 9,
        "messages": an_answered, "tools": an_tools }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["stop_reason"], "end_turn");

    let g_tools = json!([{ "functionDeclarations": [{ "name": WEATHER_TOOL }] }]);
    let g_answered = json!([{ "role": "user", "parts": [{ "text": "w?" }] },
        { "role": "model", "parts": [{ "functionCall": { "name": WEATHER_TOOL, "args": {} },
                                      "thoughtSignature": "skip_thought_signature_validator" }] },
        { "role": "user", "parts": [{ "functionResponse": { "name": WEATHER_TOOL, "response": {} } }] }]);
    // Without the signature Gemini 3 (and the mock) refuse the follow-up.
    let mut unsigned = g_answered.clone();
    unsigned[1]["parts"][0]
        .as_object_mut()
        .unwrap()
        .remove("thoughtSignature");
    let r = gemini(
        &m,
        "g@tools=once",
        "generateContent",
        json!({ "contents": unsigned, "tools": g_tools }),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("thought_signature"));
    let v: Value = gemini(
        &m,
        "g@tools=once",
        "generateContent",
        json!({ "contents": g_answered, "tools": g_tools }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());

    let r_tools = weather_tools("function");
    let v: Value = responses(
        &m,
        json!({ "model": "r@tools=once", "input": "w?", "tools": r_tools }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["output"][0]["type"], "function_call");
    let v: Value = responses(
        &m,
        json!({ "model": "r@tools=once", "tools": r_tools, "input": [
        { "role": "user", "content": "w?" },
        { "type": "function_call", "call_id": "c", "name": WEATHER_TOOL, "arguments": "{}" },
        { "type": "function_call_output", "call_id": "c", "output": "18C" }] }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["output"][0]["type"], "message");
}
