//! The control-plane router: one function from request to response, shared by the
//! Lambda binaries and the local server. Handlers are generic over the store port
//! ([`ItemStore`]) and the edge sync port ([`EdgeSync`]).

use std::collections::HashMap;

use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollbooth_core::auth::{bearer_token, JwtKeySet, Validation};

use crate::error::{ApiError, ApiResult};
use crate::model::{self, Role};
use crate::store::{HealthStore, ItemStore};
use crate::sync::{EdgeSync, SyncCall};
use crate::{admin, app_login, members};

/// Tunable security policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub session_ttl_secs: u64,
    pub app_token_ttl_secs: u64,
    pub max_login_failures: u32,
    pub lockout_secs: u64,
    /// Login attempts one client address may make per `lockout_secs` window, over all
    /// accounts (members and admins together).
    pub max_logins_per_address: u32,
    /// Provider base URLs and model pulls may target loopback (tests, `make dev`).
    pub allow_loopback_upstreams: bool,
    /// `SYNC_SECRET`: verifies the client address the worker signs
    /// (`x-tollbooth-client`, see [`crate::login::client_address`]).
    pub client_ip_secret: Option<crate::config::Secret>,
    /// A bare `x-forwarded-for` may name the client (only with `ENVIRONMENT` local,
    /// test or development: the local server has no trusted source address).
    pub trust_forwarded_for: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            session_ttl_secs: 7 * 24 * 3600,
            app_token_ttl_secs: 300,
            max_login_failures: 5,
            lockout_secs: 900,
            max_logins_per_address: 100,
            allow_loopback_upstreams: false,
            client_ip_secret: None,
            trust_forwarded_for: false,
        }
    }
}

/// Shared state handed to every handler.
pub struct AppState<S, E> {
    pub store: S,
    pub sync: E,
    pub jwt: JwtKeySet,
    /// AES-256-GCM key for credentials at rest.
    pub master_key: [u8; 32],
    pub policy: Policy,
    pub payments: crate::payments::Payments,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One parsed request.
pub struct Ctx {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub now: u64,
    /// The address API Gateway saw (`requestContext.http.sourceIp`); `None` on the
    /// local server. Through the worker it is Cloudflare's, not the caller's.
    pub source_ip: Option<String>,
}

impl Ctx {
    pub fn from_request(req: Request, now: u64) -> Ctx {
        let (parts, body) = req.into_parts();
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let source_ip = match parts
            .extensions
            .get::<lambda_http::request::RequestContext>()
        {
            Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) => c.http.source_ip.clone(),
            Some(lambda_http::request::RequestContext::ApiGatewayV1(c)) => {
                c.identity.source_ip.clone()
            }
            _ => None,
        };
        Ctx {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query,
            headers: parts.headers,
            body: body.as_ref().to_vec(),
            now,
            source_ip,
        }
    }

    /// The JSON body as `T`; a clear 400 otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> ApiResult<T> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            // serde names the field and the expectation; keep values out of the message.
            let msg = e.to_string();
            let msg = msg
                .split(" at line ")
                .next()
                .unwrap_or("invalid JSON")
                .to_owned();
            ApiError::bad_request(format!("invalid JSON body: {}", redact_values(&msg)))
        })
    }

    pub fn form(&self) -> HashMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    pub fn bearer(&self) -> Option<&str> {
        self.headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
    }
}

/// Drops quoted values serde echoes (`invalid type: string "..."`), which could be a
/// password typed into the wrong field.
fn redact_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '"' {
            in_quote = !in_quote;
            if in_quote {
                out.push_str("\"…");
            } else {
                out.push('"');
            }
        } else if !in_quote {
            out.push(c);
        }
    }
    out
}

/// Session claims of members and admins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub sid: String,
    pub typ: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub iat: u64,
    pub exp: u64,
}

/// Routes one request. Never fails: errors become JSON error responses.
pub async fn handle<S: ItemStore, E: EdgeSync>(
    state: &AppState<S, E>,
    req: Request,
) -> Response<Body> {
    let ctx = Ctx::from_request(req, unix_now());
    handle_ctx(state, ctx).await
}

/// Routes an already parsed request (tests pin the clock through `ctx.now`).
pub async fn handle_ctx<S: ItemStore, E: EdgeSync>(
    state: &AppState<S, E>,
    ctx: Ctx,
) -> Response<Body> {
    let started = std::time::Instant::now();
    // The worker's front door sends its request id; direct callers get a fresh one.
    let request_id = ctx
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("adm_{}", crate::crypto::new_id().unwrap_or_default()));
    let path = ctx.path.clone();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = route(state, &ctx, &segs).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // One structured line per request: never the query, headers or body (tokens,
    // passwords and callback secrets travel there).
    println!(
        "{}",
        json!({"msg": "request", "plane": "admin", "request_id": request_id,
               "method": ctx.method, "path": path, "status": resp.status().as_u16(),
               "latency_ms": started.elapsed().as_millis() as u64})
    );
    resp
}

async fn route<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    segs: &[&str],
) -> ApiResult<Response<Body>> {
    if let Some(resp) = crate::payments::route(st, ctx, segs).await {
        return resp;
    }
    let m = ctx.method.as_str();
    match (m, segs) {
        ("GET", ["health"]) | ("GET", ["api", "health"]) => Ok(health_handler(&st.store).await),
        ("GET", ["api", "openapi.json"]) => Ok(raw_response(
            200,
            "application/json",
            include_str!("../openapi.json").to_owned(),
        )),
        ("GET", ["authorization"]) => app_login::authorization_page_handler(st, ctx).await,
        ("POST", ["authorization"]) => app_login::authorization_submit_handler(st, ctx).await,
        ("GET", ["v1", "verify-token"]) => app_login::verify_token_handler(st, ctx).await,
        ("POST", ["api", "auth", "signup"]) => members::signup_handler(st, ctx).await,
        ("POST", ["api", "auth", "login"]) => members::login_handler(st, ctx).await,
        ("POST", ["api", "auth", "logout"]) => members::logout_handler(st, ctx).await,
        ("GET", ["api", "me"]) => members::profile_handler(st, ctx).await,
        ("PATCH", ["api", "me"]) => members::update_profile_handler(st, ctx).await,
        ("POST", ["api", "me", "password"]) => members::password_handler(st, ctx).await,
        ("GET", ["api", "me", "keys"]) => members::list_keys_handler(st, ctx).await,
        ("POST", ["api", "me", "keys"]) => members::create_key_handler(st, ctx).await,
        ("DELETE", ["api", "me", "keys", id]) => members::revoke_key_handler(st, ctx, id).await,
        ("PATCH", ["api", "me", "keys", id]) => members::update_key_handler(st, ctx, id).await,
        ("GET", ["api", "plans"]) => admin::public_plans_handler(st, ctx).await,
        ("GET", ["api", "me", "subscription"]) => members::subscription_handler(st, ctx).await,
        ("POST", ["api", "me", "subscription"]) => members::subscribe_handler(st, ctx).await,
        // Boxed: the admin router's future is large (debug builds overflow the stack).
        (_, ["api", "admin", rest @ ..]) => Box::pin(admin::route(st, ctx, rest)).await,
        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("Unknown route: {} {}", ctx.method, ctx.path),
        )),
    }
}

async fn health_handler<S: HealthStore>(store: &S) -> Response<Body> {
    match store.ping().await {
        Ok(table_status) => json_response(
            200,
            &json!({"status": "ok", "service": "tollbooth-admin",
                    "version": env!("CARGO_PKG_VERSION"), "table_status": table_status}),
        ),
        Err(e) => {
            // The SDK's error context can name the account, role or table: logged, not
            // shown to an unauthenticated caller.
            eprintln!(
                "{}",
                json!({"msg": "health: store unavailable", "plane": "admin", "error": e.to_string()})
            );
            json_response(
                503,
                &json!({"status": "degraded", "service": "tollbooth-admin",
                        "error": "the store is unavailable"}),
            )
        }
    }
}

pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    raw_response(status, "application/json", body.to_string())
}

pub fn raw_response(status: u16, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

pub fn ok(body: Value) -> ApiResult<Response<Body>> {
    Ok(json_response(200, &body))
}

pub fn created(body: Value) -> ApiResult<Response<Body>> {
    Ok(json_response(201, &body))
}

/// Sends a sync call; the store is the source of truth, so a failed push is reported
/// in the response (`edge.synced = false`) rather than undoing the write.
pub async fn push<E: EdgeSync>(sync: &E, calls: Vec<SyncCall>) -> Value {
    let mut errors = Vec::new();
    for call in calls {
        if let Err(e) = sync.send(call).await {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        json!({"synced": true})
    } else {
        json!({"synced": false, "errors": errors})
    }
}

pub fn issue_session<S, E>(
    st: &AppState<S, E>,
    sub: &str,
    sid: &str,
    typ: &str,
    role: Option<Role>,
    now: u64,
) -> ApiResult<(String, u64)> {
    let exp = now.saturating_add(st.policy.session_ttl_secs);
    let token = st
        .jwt
        .issue(&Claims {
            sub: sub.to_owned(),
            sid: sid.to_owned(),
            typ: typ.to_owned(),
            role,
            iat: now,
            exp,
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((token, exp))
}

/// Verifies a session JWT of type `typ` and that its session still exists (logout and
/// password change delete sessions).
pub async fn session_claims<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    typ: &str,
) -> ApiResult<Claims> {
    let token = ctx
        .bearer()
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let claims: Claims = st
        .jwt
        .verify(token, ctx.now, &Validation::default())
        .map_err(|e| ApiError::unauthorized(format!("invalid session: {e}")))?;
    if claims.typ != typ {
        return Err(ApiError::unauthorized("invalid session: wrong token type"));
    }
    let session: Option<model::Session> = model::load(
        &st.store,
        &model::session_pk(&claims.sid),
        model::ONE,
        ctx.now,
    )
    .await?;
    match session {
        Some(s) if s.member_id == claims.sub => Ok(claims),
        _ => Err(ApiError::unauthorized("session has ended")),
    }
}

/// A tiny HTML escaper for the login page.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
