//! One front door: control-plane paths are forwarded to the admin origin
//! (`ADMIN_ORIGIN`, the Lambda function URL or HTTP API in production, the local admin
//! server in development), so members and apps see one base URL.
//!
//! Forwarded: `/api/...` (except the member endpoints the edge answers itself,
//! `/api/usage` and `/api/v1/key`), `/authorization`, `/v1/verify-token` and
//! `/webhooks/...`. Method, headers (minus hop-by-hop ones), body and status are
//! preserved; redirects are handed to the client, never followed (the app login flow
//! answers with a 302 to the app's callback). The request id is carried across in
//! `x-request-id`, and the caller's address in `x-forwarded-for`.

use tollbooth_core::error::GatewayError;
use worker::{Env, Fetch, Headers, Request, RequestInit, RequestRedirect, Response, ResponseBody};

use crate::protect;
use crate::proxy::{error_response, ReqCtx, Shape};
use crate::util::{clock_ms, request_id};

/// Whether `path` (after the path prefix) belongs to the control plane.
pub fn is_front_door_path(path: &str) -> bool {
    if matches!(path, "/api/usage" | "/api/v1/key") {
        return false;
    }
    path.starts_with("/api/")
        || path == "/authorization"
        || path == "/v1/verify-token"
        || path.starts_with("/webhooks/")
}

/// Request headers never forwarded: hop-by-hop ones and those the runtime sets.
const DROP_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "content-length",
    "cf-connecting-ip",
    "x-request-id",
];

const DROP_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
];

/// Forwards the request to `ADMIN_ORIGIN`; 503 when the origin is not configured.
pub async fn front_door_handler(
    mut req: Request,
    env: &Env,
    max_body_bytes: u64,
) -> worker::Result<Response> {
    let mut rc = ReqCtx::new(request_id(), req.method().to_string(), req.path());
    rc.deployment = Some("admin".into());
    let resp = match forward(&mut rc, &mut req, env, max_body_bytes).await {
        Ok(resp) => {
            rc.status = resp.status_code();
            resp
        }
        Err(e) => {
            rc.status = e.http_status();
            rc.error = Some(e.safe_message());
            error_response(&e, Shape::OpenAi)
        }
    };
    rc.stamp(resp.headers());
    rc.log();
    Ok(resp)
}

fn admin_origin(env: &Env) -> Result<String, GatewayError> {
    let origin = env
        .var("ADMIN_ORIGIN")
        .map(|v| v.to_string())
        .unwrap_or_default();
    let origin = origin.trim().trim_end_matches('/').to_owned();
    if !(origin.starts_with("http://") || origin.starts_with("https://")) {
        return Err(GatewayError::Overloaded {
            message: "The control plane is not configured on this gateway (ADMIN_ORIGIN).".into(),
            retry_after_secs: None,
        });
    }
    Ok(origin)
}

async fn forward(
    rc: &mut ReqCtx,
    req: &mut Request,
    env: &Env,
    max_body_bytes: u64,
) -> Result<Response, GatewayError> {
    let origin = admin_origin(env)?;
    protect::check_declared_length(req, max_body_bytes)?;
    let url = req
        .url()
        .map_err(|_| GatewayError::invalid_request("bad request URL"))?;
    let mut target = format!("{origin}{}", url.path());
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let internal = |_| GatewayError::internal("could not build the control-plane request");
    let headers = Headers::new();
    for (name, value) in req.headers().entries() {
        if !DROP_REQUEST_HEADERS.contains(&name.as_str()) {
            headers.set(&name, &value).map_err(internal)?;
        }
    }
    headers.set("x-request-id", &rc.id).map_err(internal)?;
    if let Ok(Some(ip)) = req.headers().get("cf-connecting-ip") {
        headers.set("x-forwarded-for", &ip).map_err(internal)?;
    }
    let method = req.method();
    let body = match method {
        worker::Method::Get | worker::Method::Head => Vec::new(),
        _ => protect::read_body_limited(req, max_body_bytes).await?,
    };
    let mut init = RequestInit::new();
    init.with_method(method)
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if !body.is_empty() {
        let array = worker::js_sys::Uint8Array::from(body.as_slice());
        init.with_body(Some(array.into()));
    }
    let upstream_req = Request::new_with_init(&target, &init).map_err(internal)?;
    let t0 = clock_ms();
    let sent = Fetch::Request(upstream_req).send().await;
    rc.upstream_ms += clock_ms() - t0;
    let mut upstream = sent.map_err(|_| GatewayError::Overloaded {
        message: "The control plane is unreachable; try again shortly.".into(),
        retry_after_secs: Some(5),
    })?;

    let out = Headers::new();
    for (name, value) in upstream.headers().entries() {
        if !DROP_RESPONSE_HEADERS.contains(&name.as_str()) {
            out.append(&name, &value).map_err(internal)?;
        }
    }
    let status = upstream.status_code();
    let resp = match upstream.body() {
        ResponseBody::Stream(_) => {
            Response::from_stream(upstream.stream().map_err(internal)?).map_err(internal)?
        }
        ResponseBody::Body(bytes) => Response::from_bytes(bytes.clone()).map_err(internal)?,
        ResponseBody::Empty => Response::empty().map_err(internal)?,
    };
    Ok(resp.with_status(status).with_headers(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_front_door_paths() {
        for p in [
            "/api/auth/login",
            "/api/admin/members",
            "/authorization",
            "/v1/verify-token",
            "/webhooks/stripe",
        ] {
            assert!(is_front_door_path(p), "{p}");
        }
        for p in [
            "/api/usage",
            "/api/v1/key",
            "/v1/chat/completions",
            "/health",
            "/apis",
            "/authorization/x",
        ] {
            assert!(!is_front_door_path(p), "{p}");
        }
    }
}
