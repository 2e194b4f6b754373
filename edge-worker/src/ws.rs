//! WebSocket chat: `GET /v1/chat/completions/ws` (also `/chat/completions/ws`).
//!
//! Each text message from the client is one chat completions request (OpenAI JSON). It
//! runs through exactly the same pipeline as `POST /v1/chat/completions` — auth,
//! permissions, rate limit, quota, routing, translation, metering — with `stream`
//! forced on; the answer comes back as one message per chunk (the chunk JSON, as in the
//! SSE `data:` lines), then a message `[DONE]`. A failed request is answered with one
//! message `{"error": {...}}` (OpenAI shape, no `[DONE]`) and the socket stays open.
//! Requests on one socket are served one after another.
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
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::sse;
use worker::{
    Context, Env, Headers, Method, Request, RequestInit, Response, ResponseBody, WebSocket,
    WebSocketPair, WebsocketEvent,
};

use crate::auth::{authenticate, KvKeyStore};
use crate::catalogue;
use crate::config::Config;
use crate::proxy::{chat::chat_handler, error_response, ReqCtx, Shape};
use crate::util::request_id;

const SUBPROTOCOL: &str = "tollbooth.chat";
const KEY_SUBPROTOCOL_PREFIX: &str = "openai-insecure-api-key.";

/// Whether this is the WebSocket chat route (after the optional path prefix).
pub fn is_ws_path(method: &Method, path: &str) -> bool {
    *method == Method::Get
        && (path.ends_with("/v1/chat/completions/ws") || path.ends_with("/chat/completions/ws"))
}

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
pub async fn ws_handler(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let mut rc = ReqCtx::new(request_id(), "GET".into(), req.path());
    let result = upgrade(&req, &mut rc, env, ctx).await;
    let resp = match result {
        Ok(resp) => {
            rc.status = 101;
            resp
        }
        Err(e) => {
            rc.status = e.http_status();
            rc.error = Some(e.safe_message());
            error_response(&e, Shape::OpenAi)
        }
    };
    rc.stamp(resp.headers());
    rc.log();
    Ok(resp)
}

async fn upgrade(
    req: &Request,
    rc: &mut ReqCtx,
    env: Env,
    ctx: Context,
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
    let config =
        Config::get(&env).map_err(|_| GatewayError::internal("Invalid gateway configuration."))?;
    let auth_req = auth_request(req)?;
    let key = {
        let store = KvKeyStore::new(&env, config.key_cache_ttl_ms);
        authenticate(&auth_req, &store).await?
    };
    rc.key_public_id = Some(key.public_id.clone());

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
                    if let Err(e) = self.answer(&body).await {
                        let _ = self.socket.send_with_str(e.openai_body().to_string());
                    }
                }
                Ok(WebsocketEvent::Close(_)) | Err(_) => break,
            }
        }
    }

    /// Runs one request through the chat pipeline and streams the chunks back.
    async fn answer(&self, body: &[u8]) -> Result<(), GatewayError> {
        let mut rc = ReqCtx::new(request_id(), "WS".into(), "/v1/chat/completions/ws".into());
        let result = self.run_chat(&mut rc, body).await;
        if let Err(e) = &result {
            rc.status = e.http_status();
            rc.error = Some(e.safe_message());
        }
        // Streams log when they end; anything else logs now.
        if rc.status != 0 {
            rc.log();
        }
        result
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

        let store = KvKeyStore::new(&self.env, self.config.key_cache_ttl_ms);
        let key: Rc<KeyRecord> = authenticate(&self.auth_req, &store).await?;
        rc.key_public_id = Some(key.public_id.clone());
        let catalogue = catalogue::load(&self.env, self.config.catalogue_ttl_ms).await?;
        let mut resp = chat_handler(
            rc,
            &self.env,
            &self.ctx,
            &self.config,
            catalogue,
            key,
            &body,
            Shape::OpenAi,
        )
        .await?;

        let send = |text: &str| {
            self.socket
                .send_with_str(text)
                .map_err(|_| GatewayError::internal("the client went away"))
        };
        match resp.body() {
            ResponseBody::Stream(_) => {
                let mut stream = resp
                    .stream()
                    .map_err(|_| GatewayError::internal("could not read the stream"))?;
                let mut decoder = sse::Decoder::new();
                let mut done = false;
                while let Some(chunk) = stream.next().await {
                    let Ok(chunk) = chunk else { break };
                    for ev in decoder.push(&chunk) {
                        done |= ev.is_done();
                        send(&ev.data)?;
                    }
                }
                for ev in decoder.finish() {
                    done |= ev.is_done();
                    send(&ev.data)?;
                }
                if !done {
                    send("[DONE]")?;
                }
            }
            ResponseBody::Body(bytes) => {
                send(&String::from_utf8_lossy(bytes))?;
                send("[DONE]")?;
            }
            ResponseBody::Empty => send("[DONE]")?,
        }
        Ok(())
    }
}
