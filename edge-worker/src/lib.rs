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
mod metering;
mod proxy;
mod router;
mod upstream;
mod util;

use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    router::handle(req, env, ctx).await
}
