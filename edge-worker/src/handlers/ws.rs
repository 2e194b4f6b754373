//! WebSocket chat: `GET /v1/chat/completions/ws` (also `/chat/completions/ws`).
//!
//! Each text message from the client is one chat completions request (OpenAI JSON). It
//! runs through exactly the same pipeline as `POST /v1/chat/completions` — auth,
//! permissions, price, admission, attempts, translation, settlement — with `stream`
//! forced on; the hub chunks come back as one message per chunk (the chunk JSON, as in
//! the SSE `data:` lines, straight from the hub encoder, never re-decoded), then a
//! message `[DONE]`. A failed request is answered with one message `{"error": {...}}`
//! (OpenAI shape, no `[DONE]`) and the socket stays open. Requests on one socket are
//! served one after another.
//!
//! Auth, checked before the upgrade (401/403 as plain HTTP) and again for every message
//! (so a revoked key stops working within the key cache TTL):
//! * `Authorization: Bearer <key>` or `x-api-key` for clients that can set headers;
//! * for browsers, which cannot: the subprotocols `tollbooth.chat` and
//!   `openai-insecure-api-key.<key>` (the convention OpenAI's Realtime API uses). The
//!   server answers with `Sec-WebSocket-Protocol: tollbooth.chat`, never echoing the key.
//!
//! Keys in query strings are not accepted: URLs end up in logs.

use std::rc::Rc;

use futures_util::StreamExt;
use serde_json::Value;
use tollbooth_core::billing::{Ending, Observed};
use tollbooth_core::error::GatewayError;
use tollbooth_core::sse;
use tollbooth_core::translate::hub::{response_output, Ingress};
use worker::{
    Context, Env, Headers, Request, RequestInit, Response, WebSocket, WebSocketPair, WebsocketEvent,
};

use super::authed;
use super::chat::{encoder, full_as_events, prepare, ChatAnswer, Prepared};
use crate::catalogue;
use crate::config::Config;
use crate::context::ReqCtx;
use crate::ledger::clock;
use crate::middleware::error_response;
use crate::pipeline::ingress::parse_chat;
use crate::pipeline::metering::Finish;
use crate::pipeline::stream::{self, Sink};
use crate::util::request_id;

const SUBPROTOCOL: &str = "tollbooth.chat";
const KEY_SUBPROTOCOL_PREFIX: &str = "openai-insecure-api-key.";

/// The offered subprotocols, trimmed.
fn offered_protocols(req: &Request) -> Vec<String> {
    req.headers()
        .get("sec-websocket-protocol")
        .ok()
        .flatten()
        .map(|v| {
            v.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A request carrying only the caller's credential, for the shared `authenticate`.
fn auth_request(req: &Request) -> Result<Request, GatewayError> {
    let internal = |_| GatewayError::internal("could not read the credentials");
    let headers = Headers::new();
    for name in ["authorization", "x-api-key"] {
        if let Ok(Some(v)) = req.headers().get(name) {
            headers.set(name, &v).map_err(internal)?;
        }
    }
    if !headers.has("authorization").unwrap_or(false) && !headers.has("x-api-key").unwrap_or(false)
    {
        if let Some(key) = offered_protocols(req)
            .iter()
            .find_map(|p| p.strip_prefix(KEY_SUBPROTOCOL_PREFIX).map(str::to_owned))
        {
            headers
                .set("authorization", &format!("Bearer {key}"))
                .map_err(internal)?;
        }
    }
    let mut init = RequestInit::new();
    init.with_headers(headers);
    Request::new_with_init("https://tollbooth.internal/ws-auth", &init).map_err(internal)
}

/// Upgrades after checking the key; the session then runs until the socket closes.
pub async fn ws_handler(
    req: Request,
    env: Env,
    ctx: Context,
    config: Rc<Config>,
    path: String,
) -> worker::Result<Response> {
    let mut rc = ReqCtx::new(request_id(), "GET".into(), path, clock::now());
    let resp = match upgrade(&req, &mut rc, env, ctx, config).await {
        Ok(resp) => {
            rc.status = 101;
            resp
        }
        Err(e) => {
            rc.fail(&e);
            error_response(&e.into(), Ingress::OpenAiChat)
        }
    };
    rc.stamp(resp.headers());
    rc.write_log();
    Ok(resp)
}

async fn upgrade(
    req: &Request,
    rc: &mut ReqCtx,
    env: Env,
    ctx: Context,
    config: Rc<Config>,
) -> Result<Response, GatewayError> {
    let is_upgrade = req
        .headers()
        .get("upgrade")
        .ok()
        .flatten()
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Err(GatewayError::InvalidRequest {
            message: "This endpoint speaks WebSocket: send `Upgrade: websocket`.".into(),
            param: None,
            code: Some("upgrade_required".into()),
        });
    }
    let auth_req = auth_request(req)?;
    authed(rc, &auth_req, &env, &config).await?;
    let internal = |_| GatewayError::internal("could not open the WebSocket");
    let pair = WebSocketPair::new().map_err(internal)?;
    pair.server.accept().map_err(internal)?;
    let session = Session {
        socket: pair.server,
        env,
        ctx,
        config,
        auth_req,
    };
    worker::wasm_bindgen_futures::spawn_local(session.run());
    let mut resp = Response::from_websocket(pair.client).map_err(internal)?;
    if offered_protocols(req).iter().any(|p| p == SUBPROTOCOL) {
        resp.headers_mut()
            .set("sec-websocket-protocol", SUBPROTOCOL)
            .map_err(internal)?;
    }
    Ok(resp)
}

struct Session {
    socket: WebSocket,
    env: Env,
    ctx: Context,
    config: Rc<Config>,
    auth_req: Request,
}

/// Socket messages: each event's data (the chunk JSON, `[DONE]`, or the error body).
struct WsSink<'a>(&'a WebSocket);

impl Sink for WsSink<'_> {
    fn send(&mut self, events: &[sse::Event]) -> bool {
        events
            .iter()
            .all(|ev| self.0.send_with_str(&ev.data).is_ok())
    }
}

impl Session {
    async fn run(self) {
        let Ok(mut events) = self.socket.events() else {
            return;
        };
        while let Some(event) = events.next().await {
            match event {
                Ok(WebsocketEvent::Message(msg)) => {
                    let body = msg
                        .text()
                        .map(String::into_bytes)
                        .or_else(|| msg.bytes())
                        .unwrap_or_default();
                    self.answer(&body).await;
                }
                Ok(WebsocketEvent::Close(_)) | Err(_) => break,
            }
        }
    }

    /// Runs one request through the chat pipeline and streams the chunks back.
    async fn answer(&self, body: &[u8]) {
        let mut rc = ReqCtx::new(
            request_id(),
            "WS".into(),
            "/v1/chat/completions/ws".into(),
            clock::now(),
        );
        if let Err(e) = self.run_chat(&mut rc, body).await {
            rc.fail(&e);
            let _ = self.socket.send_with_str(e.openai_body().to_string());
        }
        rc.write_log();
    }

    async fn run_chat(&self, rc: &mut ReqCtx, body: &[u8]) -> Result<(), GatewayError> {
        if body.len() as u64 > self.config.max_body_bytes {
            return Err(GatewayError::payload_too_large(self.config.max_body_bytes));
        }
        let mut request: Value = serde_json::from_slice(body).map_err(|e| {
            GatewayError::invalid_request(format!("Each message must be a JSON chat request: {e}"))
        })?;
        let Some(obj) = request.as_object_mut() else {
            return Err(GatewayError::invalid_request(
                "Each message must be a JSON object (a chat completions request).",
            ));
        };
        obj.insert("stream".into(), Value::Bool(true));
        let body = serde_json::to_vec(&request)
            .map_err(|_| GatewayError::internal("could not encode the request"))?;
        let key = authed(rc, &self.auth_req, &self.env, &self.config).await?;
        let job = parse_chat(Ingress::OpenAiChat, &body)?;
        let catalogue = catalogue::load(&self.env, self.config.catalogue_ttl_ms).await?;
        let prepared = prepare(
            rc,
            &self.env,
            &self.ctx,
            &self.config,
            &catalogue,
            &key,
            job,
        )
        .await
        .map_err(|e| e.error)?;
        self.deliver(rc, prepared).await;
        Ok(())
    }

    async fn deliver(&self, rc: &mut ReqCtx, prepared: Prepared) {
        let Prepared {
            job,
            settlement,
            answer,
            raw,
        } = prepared;
        let mut sink = WsSink(&self.socket);
        rc.status = 200;
        match answer {
            ChatAnswer::Full(answer) => {
                let events = full_as_events(rc, &job, &answer);
                let delivered = sink.send(&events);
                rc.usage = answer.usage;
                let output = response_output(&answer.hub);
                settlement
                    .finish_now(Finish {
                        observed: Observed {
                            ending: if delivered {
                                Ending::Completed
                            } else {
                                Ending::ClientAbort
                            },
                            usage: answer.usage,
                            output_chars: output.chars,
                            output_tokens_est: output.tokens,
                        },
                        deployment: rc.deployment.clone(),
                        ttft_ms: None,
                        response: None,
                    })
                    .await;
            }
            ChatAnswer::Stream(up) => {
                let enc = encoder(rc, &job, raw);
                let assemble = settlement.wants_response();
                let pumped = stream::pump(
                    *up,
                    enc,
                    &mut sink,
                    rc,
                    &settlement,
                    self.config.drain_timeout_ms,
                    assemble,
                )
                .await;
                settlement
                    .finish_now(Finish {
                        observed: pumped.observed,
                        deployment: rc.deployment.clone(),
                        ttft_ms: rc.ttft_ms.map(|t| t.max(0.0).round() as u64),
                        response: pumped.response.map(Box::new),
                    })
                    .await;
            }
        }
    }
}
