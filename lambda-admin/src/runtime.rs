//! What every function binary does: read the config, build the state, serve. Under
//! Lambda it runs with `lambda_http::run`; with `LOCAL_HTTP_ADDR` set it serves the same
//! handler over plain HTTP.

use std::sync::Arc;

use tollbooth_core::auth::{JwtKey, JwtKeySet};

use crate::app::{handle, unix_now, AppState};
use crate::config::Config;
use crate::dynamo::DynamoStore;
use crate::export::files::{ExportFiles, S3Files};
use crate::export::ExportConfig;
use crate::store::ItemStore;
use crate::sync::EdgeSync;
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

type Exports = crate::export::Exports<S3Files>;

/// The export side, when `EXPORT_BUCKET` is set (`S3_ENDPOINT` for a local S3). With
/// `CREATE_TABLE` (local runs) the bucket is created too. `local` adds the wake-up the
/// background runner waits on.
async fn build_exports(
    config: &Config,
    local: bool,
) -> Result<Option<Arc<Exports>>, lambda_http::Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let Some(bucket) = var("EXPORT_BUCKET") else {
        return Ok(None);
    };
    let files = S3Files::from_env(bucket, var("S3_ENDPOINT")).await;
    if config.create_table {
        files.ensure_bucket().await?;
    }
    let export_config = ExportConfig::from_lookup(|k| std::env::var(k).ok())
        .map_err(|e| format!("configuration error: {e}"))?;
    Ok(Some(Arc::new(crate::export::Exports {
        files,
        config: export_config,
        wake: local.then(|| Arc::new(tokio::sync::Notify::new())),
    })))
}

/// One request: the export routes to [`crate::export`], everything else to the router.
pub async fn dispatch<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    state: &AppState<S, E>,
    exports: Option<&crate::export::Exports<F>>,
    req: lambda_http::Request,
) -> lambda_http::Response<lambda_http::Body> {
    if crate::export::owns(req.uri().path()) {
        crate::export::handle(state, exports, req).await
    } else {
        handle(state, req).await
    }
}

/// Runs one function. Every binary serves the whole router (routes are cheap); which
/// paths reach which function is decided by the API in template.yaml. Locally, with
/// `EXPORT_BUCKET` set, export jobs run in a background task of this process.
pub async fn run() -> Result<(), lambda_http::Error> {
    let (config, state) = build_state().await?;
    let state = Arc::new(state);
    let exports = build_exports(&config, config.local_http_addr.is_some()).await?;
    if let (Some(ex), Some(_)) = (&exports, config.local_http_addr) {
        tokio::spawn(crate::export::run_local(
            Arc::clone(&state),
            Arc::clone(ex),
            std::time::Duration::from_secs(5),
        ));
    }
    let handler = move |req| {
        let state = Arc::clone(&state);
        let exports = exports.clone();
        async move { dispatch(&state, exports.as_deref(), req).await }
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

/// The `export` function: the export routes (HTTP API events) and, on its schedule (any
/// other event), a sweep that runs queued jobs and resumes those whose runner died
/// (docs/architecture.md). With `LOCAL_HTTP_ADDR` it serves like [`run`].
pub async fn run_export() -> Result<(), lambda_http::Error> {
    let (config, state) = build_state().await?;
    if config.local_http_addr.is_some() {
        return run().await;
    }
    let state = Arc::new(state);
    let exports = build_exports(&config, false)
        .await?
        .ok_or("EXPORT_BUCKET is not set")?;
    lambda_http::lambda_runtime::run(lambda_http::lambda_runtime::service_fn(
        move |event: lambda_http::lambda_runtime::LambdaEvent<serde_json::Value>| {
            let state = Arc::clone(&state);
            let exports = Arc::clone(&exports);
            async move { export_event(&state, &exports, event.payload).await }
        },
    ))
    .await
}

/// One invocation of the `export` function: an HTTP API event (it has a
/// `requestContext`) is served and answered in the payload 2.0 response shape; any other
/// event (the schedule's) runs a sweep.
pub async fn export_event<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    state: &AppState<S, E>,
    exports: &crate::export::Exports<F>,
    payload: serde_json::Value,
) -> Result<serde_json::Value, lambda_http::Error> {
    if payload.get("requestContext").is_some() {
        let req: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
        let resp = dispatch(state, Some(exports), req.into()).await;
        Ok(api_gateway_response(resp))
    } else {
        let ran = crate::export::sweep(state, exports)
            .await
            .map_err(|e| lambda_http::Error::from(e.message))?;
        Ok(serde_json::json!({"ran": ran}))
    }
}

/// An HTTP API (payload 2.0) response for `resp`.
fn api_gateway_response(resp: lambda_http::Response<lambda_http::Body>) -> serde_json::Value {
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
    let (parts, body) = resp.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    out.is_base64_encoded = matches!(body, lambda_http::Body::Binary(_));
    out.body = match body {
        lambda_http::Body::Empty => None,
        b => Some(b),
    };
    serde_json::to_value(out).unwrap_or_default()
}
