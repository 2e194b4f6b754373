//! Tollbooth edge worker: the data plane, compiled to wasm and run by workerd.
//!
//! Bindings: KV `KEYS` (key records), KV `CONFIG` (catalogue snapshots), D1 `LEDGER`
//! (wallets, allowances, usage). The worker is the only writer of all three.
//! Handlers never panic: on Workers a panic kills the isolate.

mod health;
pub mod internal;
pub mod ledger;
pub mod member_api;
pub mod ratelimit;

use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    if path.starts_with("/internal/v1/") {
        return internal::internal_handler(req, &env).await;
    }
    match (req.method(), path.as_str()) {
        (worker::Method::Get, "/health") => health::health_handler(&env).await,
        (worker::Method::Get, "/v1/user-profile") => {
            member_api::user_profile_handler(req, &env).await
        }
        (worker::Method::Get, "/api/usage") => member_api::usage_handler(req, &env).await,
        (worker::Method::Get, "/api/v1/key") => member_api::key_info_handler(req, &env).await,
        _ => not_found(&path),
    }
}

fn not_found(path: &str) -> Result<Response> {
    let body = serde_json::json!({
        "error": {
            "message": format!("Unknown route: {path}"),
            "type": "invalid_request_error",
            "code": "not_found",
            "param": null,
        }
    });
    Ok(Response::from_json(&body)?.with_status(404))
}
