//! The admin API function. Under Lambda it runs with `lambda_http::run`; with
//! `LOCAL_HTTP_ADDR` set it serves the same handler over plain HTTP.

use std::sync::Arc;

use tollbooth_admin::app::{handle, AppState};
use tollbooth_admin::config::Config;
use tollbooth_admin::dynamo::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Config::from_env().map_err(|e| format!("configuration error: {e}"))?;
    let store = DynamoStore::from_env(config.table_name.clone()).await;
    if config.create_table {
        store.ensure_table().await?;
    }
    let state = Arc::new(AppState { store });
    let handler = move |req| {
        let state = Arc::clone(&state);
        async move { handle(&state, req).await }
    };
    match config.local_http_addr {
        Some(addr) => Ok(tollbooth_admin::local::serve_until_signal(addr, handler).await?),
        None => {
            lambda_http::run(lambda_http::service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            }))
            .await
        }
    }
}
