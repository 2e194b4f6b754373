//! `GET /health`: cheap enough for anyone to call at any rate. The isolate answers from
//! memory; the bindings are checked (D1 schema version, KV catalogue pointer) at most
//! once per [`DEEP_CHECK_MS`] per isolate, and the answer never carries an error text.

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Response;

use crate::context::{log_error, EdgeError};
use crate::middleware::{json_value, Call};
use crate::util::now_ms;

/// How long an isolate reuses its last check of the bindings.
pub const DEEP_CHECK_MS: u64 = 10_000;

#[derive(Clone, Default)]
struct Checked {
    at_ms: u64,
    d1: Option<Option<String>>,
    kv: Option<Option<String>>,
}

thread_local! {
    static LAST: RefCell<Option<Checked>> = const { RefCell::new(None) };
}

#[derive(Deserialize)]
struct SchemaRow {
    value: String,
}

pub async fn health_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let now = now_ms();
    let cached = LAST.with(|l| {
        l.borrow()
            .clone()
            .filter(|c| now.saturating_sub(c.at_ms) < DEEP_CHECK_MS)
    });
    let checked = match cached {
        Some(c) => c,
        None => {
            let env = call.env;
            let d1 = async {
                let db = env.d1("LEDGER")?;
                let row: Option<SchemaRow> = db
                    .prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
                    .first(None)
                    .await?;
                Ok::<_, worker::Error>(row.map(|r| r.value))
            }
            .await;
            let kv = async {
                env.kv("KEYS")?.get("health:probe").text().await?;
                Ok::<_, worker::Error>(env.kv("CONFIG")?.get("catalogue:current").text().await?)
            }
            .await;
            if let Err(e) = &d1 {
                log_error("health: D1 check failed", json!({ "error": e.to_string() }));
            }
            if let Err(e) = &kv {
                log_error("health: KV check failed", json!({ "error": e.to_string() }));
            }
            let c = Checked {
                at_ms: now,
                d1: d1.ok(),
                kv: kv.ok(),
            };
            LAST.with(|l| *l.borrow_mut() = Some(c.clone()));
            c
        }
    };
    let healthy = checked.d1.is_some() && checked.kv.is_some();
    let part = |v: &Option<Option<String>>, field: &str| match v {
        Some(version) => json!({ "ok": true, field: version }),
        None => json!({ "ok": false }),
    };
    let body: Value = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "service": "tollbooth-edge",
        "version": env!("CARGO_PKG_VERSION"),
        "d1": part(&checked.d1, "schema_version"),
        "kv": part(&checked.kv, "catalogue_version"),
    });
    json_value(if healthy { 200 } else { 503 }, &body)
}
