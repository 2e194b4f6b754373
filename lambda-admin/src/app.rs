//! The control-plane router: one function from request to response, shared by the
//! Lambda binaries and the local server.

use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::store::HealthStore;

/// Shared state handed to every handler.
pub struct AppState<S> {
    pub store: S,
}

/// Routes one request. Never fails: errors become JSON error responses.
pub async fn handle<S: HealthStore>(state: &AppState<S>, req: Request) -> Response<Body> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/health") | ("GET", "/api/health") => health_handler(&state.store).await,
        _ => json_response(
            404,
            &json!({"error": {"message": format!("Unknown route: {}", req.uri().path()),
                              "type": "invalid_request_error", "code": "not_found", "param": null}}),
        ),
    }
}

async fn health_handler<S: HealthStore>(store: &S) -> Response<Body> {
    match store.ping().await {
        Ok(table_status) => json_response(
            200,
            &json!({"status": "ok", "service": "tollbooth-admin",
                    "version": env!("CARGO_PKG_VERSION"), "table_status": table_status}),
        ),
        Err(e) => json_response(
            503,
            &json!({"status": "degraded", "service": "tollbooth-admin", "error": e.to_string()}),
        ),
    }
}

pub fn json_response(status: u16, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body.to_string()));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn get(path: &str) -> Request {
        http::Request::builder()
            .uri(path)
            .body(Body::Empty)
            .unwrap()
    }

    fn body_json(resp: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(resp.body().as_ref()).unwrap()
    }

    #[tokio::test]
    async fn test_health_reports_table_status() {
        let state = AppState {
            store: MemoryStore::default(),
        };
        let resp = handle(&state, get("/health")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body_json(&resp)["table_status"], "ACTIVE");
    }

    #[tokio::test]
    async fn test_health_degraded_when_store_down() {
        let state = AppState {
            store: MemoryStore { down: true },
        };
        let resp = handle(&state, get("/health")).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(body_json(&resp)["status"], "degraded");
    }

    #[tokio::test]
    async fn test_unknown_route_is_openai_shaped_404() {
        let state = AppState {
            store: MemoryStore::default(),
        };
        let resp = handle(&state, get("/nope")).await;
        assert_eq!(resp.status(), 404);
        assert_eq!(body_json(&resp)["error"]["code"], "not_found");
    }
}
