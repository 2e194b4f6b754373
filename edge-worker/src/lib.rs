//! Tollbooth edge worker: the data plane, compiled to wasm and run by workerd.
//!
//! Bindings: KV `KEYS` (key and member records), KV `CONFIG` (catalogue snapshots), D1
//! `LEDGER` (wallets, allowances, usage, the capture index), R2 `CAPTURES` (capture
//! bodies). The worker is the only writer of all of them.
//! Handlers never panic: on Workers a panic kills the isolate.
//!
//! Every request goes through [`middleware::handle`] and the one route table
//! [`routes`] (whose file doc is the model API pipeline, step by step); the scheduled
//! handler runs [`cron::run`].

mod auth;
mod breakers;
mod capture;
mod catalogue;
mod config;
mod context;
mod cron;
mod handlers;
pub mod ledger;
mod middleware;
mod pipeline;
mod protect;
mod routes;
mod upstream;
mod util;

use worker::{event, Context, Env, Request, Response, Result, ScheduleContext, ScheduledEvent};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    middleware::handle(req, env, ctx).await
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    cron::run(&env).await;
}
