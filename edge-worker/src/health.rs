//! `GET /health`: proves the isolate is up and its bindings answer.

use serde::Deserialize;
use serde_json::json;
use worker::{Env, Response, Result};

#[derive(Deserialize)]
struct SchemaRow {
    value: String,
}

/// Reads the D1 schema version and the KV catalogue pointer; 503 if either binding fails.
pub async fn health_handler(env: &Env) -> Result<Response> {
    let d1_result = d1_schema_version(env).await;
    let kv_result = kv_catalogue_version(env).await;
    let healthy = d1_result.is_ok() && kv_result.is_ok();
    let d1 = match d1_result {
        Ok(v) => json!({ "ok": true, "schema_version": v }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    };
    let kv = match kv_result {
        Ok(v) => json!({ "ok": true, "catalogue_version": v }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    };
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "service": "tollbooth-edge",
        "version": env!("CARGO_PKG_VERSION"),
        "d1": d1,
        "kv": kv,
    });
    Ok(Response::from_json(&body)?.with_status(if healthy { 200 } else { 503 }))
}

async fn d1_schema_version(env: &Env) -> Result<Option<String>> {
    let db = env.d1("LEDGER")?;
    let row: Option<SchemaRow> = db
        .prepare("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        .first(None)
        .await?;
    Ok(row.map(|r| r.value))
}

async fn kv_catalogue_version(env: &Env) -> Result<Option<String>> {
    // Touch both namespaces so a missing binding shows up here, not on the first request.
    env.kv("KEYS")?.get("health:probe").text().await?;
    Ok(env.kv("CONFIG")?.get("catalogue:current").text().await?)
}
