//! The core translators against the official clients, before any route exists: a tiny
//! translating server composed only of `tollbooth-core` pieces (ingress request → hub →
//! upstream request; upstream answer → hub → ingress answer, streams through
//! `sse::Decoder` and the per-event translators) in front of the mock upstream. The
//! official `openai` Python SDK's `responses.create` and strict `responses.stream` then
//! run against it, with the mock speaking OpenAI chat or Anthropic behind it.
//!
//! Paths: `/{upstream}/v1/responses` where `{upstream}` is `openai` (mock chat
//! completions) or `anthropic` (mock Messages).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::protocol::responses as rs;
use tollbooth_core::sse;
use tollbooth_core::translate::anthropic as tan;
use tollbooth_core::translate::responses_ingress as ri;
use tollbooth_tests::mock::{self, MockConfig};

const CREATED: u64 = 1_700_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Upstream {
    OpenAi,
    Anthropic,
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

/// What the edge will do for `POST /v1/responses`, minus auth, billing and routing.
async fn translate(
    upstream: Upstream,
    body: Bytes,
    mock_base: &str,
) -> Result<(String, String), String> {
    let req: rs::ResponsesRequest =
        serde_json::from_slice(&body).map_err(|e| format!("bad request: {e}"))?;
    let hub = ri::responses_to_hub_request(&req).map_err(|e| e.to_string())?;
    let stream = req.is_stream();
    let echo = ri::ResponsesEcho::new(&req, "resp_sdk_1", CREATED, req.model.clone(), false);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let sent = match upstream {
        Upstream::OpenAi => {
            client
                .post(format!("{mock_base}/v1/chat/completions"))
                .bearer_auth("sk-mock")
                .json(&hub)
                .send()
                .await
        }
        Upstream::Anthropic => {
            let mut an_req =
                tan::openai_to_anthropic_request(&hub, 1024).map_err(|e| e.to_string())?;
            an_req.stream = stream.then_some(true);
            client
                .post(format!("{mock_base}/v1/messages"))
                .header("x-api-key", "ak-mock")
                .header("anthropic-version", "2023-06-01")
                .json(&an_req)
                .send()
                .await
        }
    };
    let text = sent
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if !stream {
        let hub_resp = match upstream {
            Upstream::OpenAi => serde_json::from_str::<oa::ChatCompletionResponse>(&text)
                .map_err(|e| e.to_string())?,
            Upstream::Anthropic => {
                let r: an::MessagesResponse =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                tan::anthropic_to_openai_response(&r, CREATED)
            }
        };
        let out = ri::hub_to_responses_response(&hub_resp, &echo);
        return Ok((
            "application/json".into(),
            serde_json::to_string(&out).unwrap(),
        ));
    }
    let mut dec = sse::Decoder::new();
    let mut events = dec.push(text.as_bytes());
    events.extend(dec.finish());
    let mut chunks = Vec::new();
    match upstream {
        Upstream::OpenAi => {
            for ev in events {
                if let Ok(oa::ChatStreamItem::Chunk(c)) = oa::ChatStreamItem::parse(&ev.data) {
                    chunks.push(c);
                }
            }
        }
        Upstream::Anthropic => {
            let mut t = tan::AnthropicToOpenAiStream::new(CREATED, true);
            for ev in events {
                chunks.extend(t.on_event(an::StreamEvent::from_data(&ev.data).unwrap()));
            }
            chunks.extend(t.finish());
            assert!(t.error().is_none());
        }
    }
    let mut t = ri::HubToResponsesStream::new(echo);
    let mut out = String::new();
    let mut push = |evs: Vec<rs::StreamEvent>| {
        for e in evs {
            out.push_str(&sse::encode(&e.to_sse().unwrap()));
        }
    };
    for c in chunks {
        push(t.on_event(c));
    }
    push(t.finish());
    Ok(("text/event-stream".into(), out))
}

async fn serve(listener: TcpListener, mock_base: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let mock_base = mock_base.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let mock_base = mock_base.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let upstream = match path.as_str() {
                        "/openai/v1/responses" => Upstream::OpenAi,
                        "/anthropic/v1/responses" => Upstream::Anthropic,
                        _ => return Ok::<_, Infallible>(reply(404, "text/plain", path)),
                    };
                    Ok(match translate(upstream, body, &mock_base).await {
                        Ok((ct, body)) => reply(200, &ct, body),
                        Err(e) => {
                            let err = oa::ErrorResponse::new("invalid_request_error", e);
                            reply(
                                400,
                                "application/json",
                                serde_json::to_string(&err).unwrap(),
                            )
                        }
                    })
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_official_sdk_accepts_translated_responses_from_chat_and_anthropic_upstreams() {
    let m = mock::spawn(MockConfig::default()).await.unwrap();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, m.base_url()));
    for upstream in ["openai", "anthropic"] {
        let base = format!("http://{addr}/{upstream}/v1");
        tokio::task::block_in_place(|| {
            let python = std::env::var("TB_PYTHON").unwrap_or_else(|_| "python3".into());
            let script =
                tollbooth_tests::harness::repo_root().join("tests/python/responses_sdk.py");
            let out = std::process::Command::new(python)
                .arg(script)
                .env("BASE_URL", &base)
                .env("KEY", "sk-client")
                .env("MODEL", "gpt-5")
                .env("TOOL_MODEL", "gpt-5@tools=1")
                .env("EXPECT_TEXT", "tok0 tok1 tok2 ")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{upstream}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        });
    }
}
