//! Tollbooth edge worker: the data plane, compiled to wasm and run by workerd.
//!
//! Bindings: KV `KEYS` (key records), KV `CONFIG` (catalogue snapshots), D1 `LEDGER`
//! (wallets, allowances, usage). The worker is the only writer of all three.
//! Handlers never panic: on Workers a panic kills the isolate.
//!
//! Every request first passes `protect::guard` (probe filtering, declared body size,
//! CORS preflight); every response leaves through `protect::finish` (CORS headers).

mod cron;
mod health;
mod passthrough;
mod protect;

use worker::{event, Context, Env, Request, Response, Result, ScheduleContext, ScheduledEvent};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let cfg = protect::ProtectConfig::from_env(&env);
    let origin = req.headers().get("origin")?;
    let resp = match protect::guard(&req, &cfg)? {
        protect::Verdict::Answer(resp) => resp,
        protect::Verdict::Continue => route(req, &env, &cfg).await?,
    };
    protect::finish(resp, origin.as_deref(), &cfg)
}

async fn route(req: Request, env: &Env, cfg: &protect::ProtectConfig) -> Result<Response> {
    let path = req.path();
    match (req.method(), path.as_str()) {
        (worker::Method::Get, "/health") => health::health_handler(env).await,
        _ if passthrough::is_passthrough_path(&path) => {
            passthrough::passthrough_handler(req, env, cfg).await
        }
        _ => not_found(&path),
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    cron::run_health_checks(&env).await;
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
