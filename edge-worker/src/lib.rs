//! Tollbooth edge worker: the data plane, compiled to wasm and run by workerd.
//!
//! Bindings: KV `KEYS` (key records), KV `CONFIG` (catalogue snapshots), D1 `LEDGER`
//! (wallets, allowances, usage). The worker is the only writer of all three.
//! Handlers never panic: on Workers a panic kills the isolate. The request pipeline is
//! documented at the top of [`router`]; before it, every request passes
//! [`protect::guard`] (probe filtering, declared body size, CORS preflight), and every
//! response leaves through [`protect::finish`] (CORS headers).

mod auth;
mod breakers;
mod catalogue;
mod config;
mod cron;
mod health;
mod metering;
mod passthrough;
mod protect;
mod proxy;
mod router;
mod upstream;
mod util;
mod ws;

use worker::{event, Context, Env, Request, Response, Result, ScheduleContext, ScheduledEvent};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let cfg = protect::ProtectConfig::from_env(&env);
    let origin = req.headers().get("origin")?;
    let resp = match protect::guard(&req, &cfg)? {
        protect::Verdict::Answer(resp) => resp,
        protect::Verdict::Continue => {
            let path = passthrough::strip_prefix(&req.path(), &env).to_owned();
            if ws::is_ws_path(&req.method(), &path) {
                // A 101 carries no CORS headers (browsers do not apply CORS to sockets).
                return ws::ws_handler(req, env, ctx).await;
            }
            if passthrough::is_passthrough_path(&path) {
                passthrough::passthrough_handler(req, &env, &cfg).await?
            } else {
                router::handle(req, env, ctx).await?
            }
        }
    };
    protect::finish(resp, origin.as_deref(), &cfg)
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    cron::run_health_checks(&env).await;
}
