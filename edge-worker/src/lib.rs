//! Tollbooth edge worker: the data plane, compiled to wasm and run by workerd.
//!
//! Bindings: KV `KEYS` (key records), KV `CONFIG` (catalogue snapshots), D1 `LEDGER`
//! (wallets, allowances, usage). The worker is the only writer of all three.
//! Handlers never panic: on Workers a panic kills the isolate.
//!
//! Every request first passes [`protect::guard`] (probe filtering, declared body size,
//! CORS preflight) and every response leaves through [`protect::finish`] (CORS
//! headers). In between, by path: the signed internal API ([`internal`]), the member
//! endpoints ([`member_api`]), the front door to the control plane ([`front_door`]),
//! WebSocket chat ([`ws`]), the operator pass-through ([`passthrough`]), and the model
//! API, whose pipeline is documented at the top of [`router`].

mod auth;
mod breakers;
mod catalogue;
mod config;
mod cron;
mod front_door;
mod health;
pub mod internal;
pub mod ledger;
pub mod member_api;
mod metering;
mod passthrough;
mod protect;
mod proxy;
pub mod ratelimit;
mod router;
mod upstream;
mod util;
mod ws;

use worker::{
    event, Context, Env, Method, Request, Response, Result, ScheduleContext, ScheduledEvent,
};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    ledger::clock::observe(&req, &env);
    let cfg = protect::ProtectConfig::from_env(&env);
    let origin = req.headers().get("origin")?;
    let resp = match protect::guard(&req, &cfg)? {
        protect::Verdict::Answer(resp) => resp,
        protect::Verdict::Continue => {
            let path = passthrough::strip_prefix(&req.path(), &env).to_owned();
            match (req.method(), path.as_str()) {
                (_, p) if p.starts_with("/internal/v1/") => {
                    internal::internal_handler(req, &env).await?
                }
                (Method::Get, "/v1/user-profile") => {
                    member_api::user_profile_handler(req, &env).await?
                }
                (Method::Get, "/api/usage") => member_api::usage_handler(req, &env).await?,
                (Method::Get, "/api/v1/key") => member_api::key_info_handler(req, &env).await?,
                (_, p) if front_door::is_front_door_path(p) => {
                    front_door::front_door_handler(req, &env, cfg.max_body_bytes).await?
                }
                (m, p) if ws::is_ws_path(&m, p) => {
                    // A 101 carries no CORS headers (browsers do not apply CORS to sockets).
                    return ws::ws_handler(req, env, ctx).await;
                }
                (_, p) if passthrough::is_passthrough_path(p) => {
                    passthrough::passthrough_handler(req, &env, &cfg).await?
                }
                _ => ratelimit::decorate_refusal(router::handle(req, env, ctx).await?),
            }
        }
    };
    protect::finish(resp, origin.as_deref(), &cfg)
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    cron::run_health_checks(&env).await;
    match ledger::scheduled_sweep(&env, 500).await {
        Ok(swept) if swept > 0 => worker::console_log!(
            "{}",
            serde_json::json!({"msg": "expired stale reservations", "count": swept})
        ),
        Ok(_) => {}
        Err(e) => worker::console_error!(
            "{}",
            serde_json::json!({"msg": "reservation sweep failed", "error": e.to_string()})
        ),
    }
}
