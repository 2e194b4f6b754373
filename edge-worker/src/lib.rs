//! Tollbooth edge worker: the data plane, compiled to wasm and run by workerd.
//!
//! Bindings: KV `KEYS` (key records), KV `CONFIG` (catalogue snapshots), D1 `LEDGER`
//! (wallets, allowances, usage). The worker is the only writer of all three.
//! Handlers never panic: on Workers a panic kills the isolate.

mod health;

use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    match (req.method(), path.as_str()) {
        (worker::Method::Get, "/health") => health::health_handler(&env).await,
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
