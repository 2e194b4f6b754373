//! What every function binary does: read the config, build the state, serve. Under
//! Lambda it runs with `lambda_http::run`; with `LOCAL_HTTP_ADDR` set it serves the same
//! handler over plain HTTP.

use std::sync::Arc;

use tollbooth_core::auth::{JwtKey, JwtKeySet};

use crate::app::{handle, unix_now, AppState};
use crate::config::Config;
use crate::dynamo::DynamoStore;
use crate::sync::HttpEdgeSync;

/// Reads the config and builds the shared state (the store, the sync client, keys).
async fn build_state() -> Result<(Config, AppState<DynamoStore, HttpEdgeSync>), lambda_http::Error>
{
    let config = Config::from_env().map_err(|e| format!("configuration error: {e}"))?;
    let store = DynamoStore::from_env(config.table_name.clone()).await;
    if config.create_table {
        store.ensure_table().await?;
    }
    let mut keys = config
        .jwt_keys
        .iter()
        .map(|(kid, s)| JwtKey::new(kid.clone(), s.0.clone()));
    let mut jwt = JwtKeySet::new(keys.next().ok_or("JWT_KEYS is empty")?);
    for k in keys {
        jwt = jwt.with_previous(k);
    }
    if let Some((email, password)) = &config.bootstrap_admin {
        let password =
            String::from_utf8(password.0.clone()).map_err(|_| "ADMIN_PASSWORD is not UTF-8")?;
        crate::admin::bootstrap_admin(&store, email, &password, unix_now())
            .await
            .map_err(|e| format!("creating the first admin failed: {}", e.message))?;
    }
    let sync = HttpEdgeSync::new(
        config.edge_origin.clone(),
        config
            .sync_secret
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_default(),
    );
    let state = AppState {
        store,
        sync,
        jwt,
        master_key: config.master_key,
        policy: config.policy.clone(),
        payments: crate::payments::Payments::from_env()
            .map_err(|e| format!("configuration error: {e}"))?,
    };
    Ok((config, state))
}

/// Runs one function. Every binary serves the whole router (routes are cheap); which
/// paths reach which function is decided by the API in template.yaml.
pub async fn run() -> Result<(), lambda_http::Error> {
    let (config, state) = build_state().await?;
    let state = Arc::new(state);
    let handler = move |req| {
        let state = Arc::clone(&state);
        async move { handle(&*state, req).await }
    };
    match config.local_http_addr {
        Some(addr) => Ok(crate::local::serve_until_signal(addr, handler).await?),
        None => {
            lambda_http::run(lambda_http::service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            }))
            .await
        }
    }
}

/// Runs the scheduled job ([`crate::jobs::run`]): once per EventBridge event under
/// Lambda, or every `JOBS_INTERVAL_SECS` seconds locally.
pub async fn run_jobs() -> Result<(), lambda_http::Error> {
    let (_, state) = build_state().await?;
    let state = Arc::new(state);
    let interval = std::env::var("JOBS_INTERVAL_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0);
    match interval {
        Some(secs) => loop {
            if let Err(e) = crate::jobs::run(&*state, unix_now(), false).await {
                eprintln!(
                    "{}",
                    serde_json::json!({"msg": "jobs failed", "error": e.message})
                );
            }
            tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
        },
        None => {
            lambda_http::lambda_runtime::run(lambda_http::lambda_runtime::service_fn(
                move |_event: lambda_http::lambda_runtime::LambdaEvent<serde_json::Value>| {
                    let state = Arc::clone(&state);
                    async move {
                        crate::jobs::run(&*state, unix_now(), false)
                            .await
                            .map_err(|e| lambda_http::Error::from(e.message))
                    }
                },
            ))
            .await
        }
    }
}
