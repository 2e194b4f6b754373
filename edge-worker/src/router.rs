//! The edge request pipeline, in order:
//!
//! 1. **auth** — `Authorization: Bearer` / `x-api-key`, KV `KEYS`, hash check
//!    ([`crate::auth`]); 401 / 403.
//! 2. **permissions** — the key's plan and the key allow the model
//!    ([`crate::proxy::resolve_allowed`]); 404 `model_not_found` / 403.
//! 3. **rate limit** — [`crate::metering::check_rate_limit`] (seam for the ledger).
//! 4. **reserve quota** — [`crate::metering::reserve`] (seam for the ledger).
//! 5. **route** — catalogue aliases → deployments, weights, per-credential breakers,
//!    retry/fallback before the first byte ([`crate::proxy::chat`]).
//! 6. **translate** — hub format (OpenAI chat) ↔ the upstream's and the caller's protocol.
//! 7. **stream** — chunk by chunk, first event peeked before the 200 is committed.
//! 8. **settle in `wait_until`** — [`crate::metering::settle`] with the provider's usage.
//!
//! Every response carries `x-request-id` and `x-tollbooth-overhead-ms`; every request
//! produces one structured log line.

use std::rc::Rc;

use tollbooth_core::error::GatewayError;
use worker::{Context, Env, Method, Request, Response, Result};

use crate::auth::{authenticate, KvKeyStore};
use crate::catalogue;
use crate::config::Config;
use crate::health;
use crate::proxy::simple::JsonEndpoint;
use crate::proxy::{self, error_response, ReqCtx, Shape};
use crate::util::request_id;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Chat,
    Messages,
    Embeddings,
    Rerank,
    Models,
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let r = match (method, path) {
        (Method::Get, "/health") => Route::Health,
        (Method::Post, "/v1/chat/completions" | "/chat/completions") => Route::Chat,
        (Method::Post, "/v1/messages") => Route::Messages,
        (Method::Post, "/v1/embeddings" | "/embeddings") => Route::Embeddings,
        (Method::Post, "/v1/rerank" | "/rerank") => Route::Rerank,
        (Method::Get, "/v1/models" | "/models") => Route::Models,
        _ => return None,
    };
    Some(r)
}

/// Entry point of every request.
pub async fn handle(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let full_path = req.path();
    let method = req.method();
    let mut rc = ReqCtx::new(request_id(), method.to_string(), full_path.clone());
    let shape = if full_path.ends_with("/v1/messages") {
        Shape::Anthropic
    } else {
        Shape::OpenAi
    };
    let result = match Config::get(&env) {
        Err(msg) => {
            worker::console_error!(
                "{}",
                serde_json::json!({"msg": "invalid configuration", "error": msg})
            );
            Err(GatewayError::internal(format!(
                "Invalid gateway configuration: {msg}"
            )))
        }
        Ok(config) => dispatch(&mut rc, &mut req, &env, &ctx, &config, &full_path, shape).await,
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            rc.status = e.http_status();
            rc.error = Some(e.safe_message());
            let resp = error_response(&e, shape);
            rc.stamp(resp.headers());
            resp
        }
    };
    // Streams log when they end (status 0 here); everything else logs now.
    if rc.status != 0 {
        rc.log();
    }
    Ok(resp)
}

async fn dispatch(
    rc: &mut ReqCtx,
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    config: &Rc<Config>,
    full_path: &str,
    shape: Shape,
) -> std::result::Result<Response, GatewayError> {
    let path = if config.path_prefix.is_empty() {
        full_path
    } else {
        full_path
            .strip_prefix(config.path_prefix.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or(full_path)
    };
    let method = req.method();
    let Some(route) = route(&method, path) else {
        return Err(GatewayError::NotFound {
            message: format!("Unknown route: {method} {path}"),
            code: Some("not_found".into()),
        });
    };
    if route == Route::Health {
        let resp = health::health_handler(env)
            .await
            .map_err(|_| GatewayError::internal("health check failed"))?;
        rc.status = resp.status_code();
        rc.stamp(resp.headers());
        return Ok(resp);
    }

    // Body size first: refuse before reading a huge body.
    if let Ok(Some(len)) = req.headers().get("content-length") {
        if len
            .trim()
            .parse::<u64>()
            .is_ok_and(|n| n > config.max_body_bytes)
        {
            return Err(GatewayError::payload_too_large(config.max_body_bytes));
        }
    }

    // 1. auth
    let store = KvKeyStore::new(env, config.key_cache_ttl_ms);
    let key = authenticate(req, &store).await?;
    rc.key_public_id = Some(key.public_id.clone());
    let catalogue = catalogue::load(env, config.catalogue_ttl_ms).await?;

    let body = if method == Method::Post {
        let bytes = req
            .bytes()
            .await
            .map_err(|_| GatewayError::invalid_request("Could not read the request body."))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > config.max_body_bytes {
            return Err(GatewayError::payload_too_large(config.max_body_bytes));
        }
        bytes
    } else {
        Vec::new()
    };

    // 2..8 per endpoint.
    let resp = match route {
        Route::Models => proxy::models::models_handler(&catalogue, &key)?,
        Route::Chat => {
            proxy::chat::chat_handler(rc, env, ctx, config, catalogue, key, &body, Shape::OpenAi)
                .await?
        }
        Route::Messages => {
            proxy::chat::chat_handler(rc, env, ctx, config, catalogue, key, &body, shape).await?
        }
        Route::Embeddings => {
            proxy::simple::json_handler(
                rc,
                env,
                ctx,
                config,
                catalogue,
                key,
                &body,
                JsonEndpoint::Embeddings,
            )
            .await?
        }
        Route::Rerank => {
            proxy::simple::json_handler(
                rc,
                env,
                ctx,
                config,
                catalogue,
                key,
                &body,
                JsonEndpoint::Rerank,
            )
            .await?
        }
        Route::Health => return Err(GatewayError::internal("unreachable route")),
    };
    if rc.status != 0 || route == Route::Models {
        if rc.status == 0 && route == Route::Models {
            rc.status = 200;
        }
        // Streams were stamped when they were built.
        rc.stamp(resp.headers());
    }
    Ok(resp)
}
