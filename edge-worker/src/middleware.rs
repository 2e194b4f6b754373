//! The one request wrapper: config, probe filtering and CORS preflight, the route, the
//! request context, the declared body size, then the handler; its error rendered in the
//! caller's shape; `x-request-id` / `x-tollbooth-overhead-ms` stamped; one log line
//! (unless the handler deferred it to a stream's end); CORS headers on the way out.
//!
//! An invalid configuration answers every request 500 with a generic message: the log
//! names the variable, the caller (maybe unauthenticated) learns nothing internal.

use std::rc::Rc;

use tollbooth_core::error::GatewayError;
use worker::{Context, Env, Headers, Method, Request, Response, Result};

use crate::config::{Config, Cors};
use crate::context::{log_error, EdgeError, LogMode, ReqCtx};
use crate::handlers;
use crate::ledger::clock;
use crate::protect;
use crate::routes::{self, Route};
use crate::util::request_id;

/// What every handler is given.
pub struct Call<'a> {
    pub rc: &'a mut ReqCtx,
    pub req: &'a mut Request,
    pub env: &'a Env,
    pub ctx: &'a Context,
    pub config: &'a Rc<Config>,
    /// The path without `PATH_PREFIX`.
    pub path: &'a str,
}

/// Entry point of every HTTP request.
pub async fn handle(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let config = match Config::get(&env) {
        Ok(c) => c,
        Err(msg) => {
            log_error("invalid configuration", serde_json::json!({ "error": msg }));
            let err = GatewayError::Internal {
                message: "The gateway is misconfigured; the operator has been told.".into(),
            };
            return Ok(error_response(
                &EdgeError::from(err),
                tollbooth_core::translate::hub::Ingress::OpenAiChat,
            ));
        }
    };
    clock::observe(&req, config.hooks.clock);
    let full_path = req.path();
    let user_agent = req.headers().get("user-agent")?;
    if config.is_probe(&full_path, user_agent.as_deref()) {
        return protect::probe_response();
    }
    let method = req.method();
    let origin = req.headers().get("origin")?;
    let cors = effective_cors(&env, &config, origin.is_some()).await;
    if method == Method::Options {
        return protect::preflight(&req, &cors);
    }
    let path = config.strip_prefix(&full_path).to_owned();
    let route = routes::route(&method, &path);
    if route == Route::Ws {
        // A 101 carries no CORS headers (browsers do not apply CORS to sockets).
        return handlers::ws::ws_handler(req, env, ctx, config, full_path).await;
    }
    let mut rc = ReqCtx::new(request_id(), method.to_string(), full_path, clock::now());
    let limit = route.body_limit(config.max_body_bytes, config.internal_max_body_bytes);
    let result = match protect::check_declared_length(&req, limit) {
        Err(e) => Err(EdgeError::from(e)),
        Ok(()) => {
            let call = Call {
                rc: &mut rc,
                req: &mut req,
                env: &env,
                ctx: &ctx,
                config: &config,
                path: &path,
            };
            dispatch(route, call).await
        }
    };
    let resp = match result {
        Ok(resp) => {
            if rc.status == 0 {
                rc.status = resp.status_code();
            }
            resp
        }
        Err(e) => {
            rc.fail(&e.error);
            error_response(&e, route.error_shape(&path))
        }
    };
    rc.stamp(resp.headers());
    // Records served stale from isolate memory are re-read off the request path.
    crate::auth::refresh_in_background(&env, &ctx, config.key_cache_ttl_ms);
    crate::catalogue::refresh_in_background(&env, &ctx);
    if rc.log == LogMode::Now {
        rc.write_log();
    }
    protect::finish(resp, origin.as_deref(), &cors)
}

/// The CORS origins in force: those published in the catalogue settings (admin API
/// `cors_origins`) when set, else `CORS_ORIGINS`. Only a request with an `Origin` (a
/// browser's) reads the catalogue, from the isolate's cache.
async fn effective_cors(env: &Env, config: &Config, has_origin: bool) -> Cors {
    if has_origin {
        if let Ok(cat) = crate::catalogue::load(env, config.catalogue_ttl_ms).await {
            if let Some(list) = &cat.settings().cors_origins {
                return Cors::published(list);
            }
        }
    }
    config.cors.clone()
}

async fn dispatch(route: Route, call: Call<'_>) -> std::result::Result<Response, EdgeError> {
    match route {
        Route::Internal => handlers::internal::internal_handler(call).await,
        Route::MemberProfile => handlers::member::user_profile_handler(call).await,
        Route::MemberUsage => handlers::member::usage_handler(call).await,
        Route::MemberKey => handlers::member::key_info_handler(call).await,
        Route::FrontDoor => handlers::front_door::front_door_handler(call).await,
        Route::Passthrough => handlers::passthrough::passthrough_handler(call).await,
        Route::Health => handlers::health::health_handler(call).await,
        Route::Chat(ingress) => handlers::chat::chat_handler(call, ingress).await,
        Route::Embeddings => {
            handlers::json::json_handler(call, handlers::json::JsonEndpoint::Embeddings).await
        }
        Route::Rerank => {
            handlers::json::json_handler(call, handlers::json::JsonEndpoint::Rerank).await
        }
        Route::Models => handlers::models::models_handler(call).await,
        Route::ResponsesStored => handlers::ingress_extra::responses_stored_handler(call).await,
        Route::CountTokens(ingress) => {
            handlers::ingress_extra::count_tokens_handler(call, ingress).await
        }
        Route::GeminiModels => handlers::ingress_extra::gemini_models_handler(call).await,
        Route::GeminiModel => handlers::ingress_extra::gemini_model_handler(call).await,
        // Answered before the context exists (see `handle`).
        Route::Ws | Route::NotFound => Err(GatewayError::NotFound {
            message: format!("Unknown route: {} {}", call.rc.method, call.path),
            code: Some("not_found".into()),
        }
        .into()),
    }
}

/// An error response in the caller's shape, with the error's own headers.
pub fn error_response(err: &EdgeError, shape: tollbooth_core::translate::hub::Ingress) -> Response {
    let text = shape.error_body(&err.error).to_string();
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    if let Some(secs) = err.error.retry_after_secs() {
        let _ = headers.set("retry-after", &secs.to_string());
    }
    for (k, v) in &err.headers {
        let _ = headers.set(k, v);
    }
    match Response::ok(text) {
        Ok(r) => r.with_status(err.error.http_status()).with_headers(headers),
        Err(_) => Response::empty()
            .map(|r| r.with_status(500))
            .unwrap_or_else(|_| Response::from(worker::web_sys::Response::error())),
    }
}

/// A JSON response with status 200.
pub fn json_response(body: String) -> std::result::Result<Response, GatewayError> {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    Response::ok(body)
        .map(|r| r.with_headers(headers))
        .map_err(|_| GatewayError::internal("could not build the response"))
}

/// A JSON response from a value with a status.
pub fn json_value(status: u16, v: &serde_json::Value) -> std::result::Result<Response, EdgeError> {
    Ok(json_response(v.to_string())?.with_status(status))
}

/// Maps a runtime (D1/KV) error to a generic 500, logging the detail.
pub fn internal(what: &'static str) -> impl Fn(worker::Error) -> EdgeError {
    move |e| {
        log_error(what, serde_json::json!({ "error": e.to_string() }));
        GatewayError::internal(format!("{what}.")).into()
    }
}
