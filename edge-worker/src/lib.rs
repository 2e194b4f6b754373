//! Tollbooth edge worker: the data plane, compiled to wasm and run by workerd.
//!
//! Bindings: KV `KEYS` (key records), KV `CONFIG` (catalogue snapshots), D1 `LEDGER`
//! (wallets, allowances, usage). The worker is the only writer of all three.
//! Handlers never panic: on Workers a panic kills the isolate. The request pipeline is
//! documented at the top of [`router`].

mod auth;
mod breakers;
mod catalogue;
mod config;
mod health;
pub mod internal;
pub mod ledger;
pub mod member_api;
mod metering;
mod proxy;
pub mod ratelimit;
mod router;
mod upstream;
mod util;

use worker::{event, Context, Env, Method, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    ledger::clock::observe(&req, &env);
    let path = req.path();
    if path.starts_with("/internal/v1/") {
        return internal::internal_handler(req, &env).await;
    }
    match (req.method(), path.as_str()) {
        (Method::Get, "/v1/user-profile") => member_api::user_profile_handler(req, &env).await,
        (Method::Get, "/api/usage") => member_api::usage_handler(req, &env).await,
        (Method::Get, "/api/v1/key") => member_api::key_info_handler(req, &env).await,
        _ => {
            let resp = router::handle(req, env, ctx).await?;
            Ok(ratelimit::decorate_refusal(resp))
        }
    }
}
