//! One front door: control-plane paths are forwarded to the admin origin
//! (`ADMIN_ORIGIN`, the Lambda function URL or HTTP API in production, the local admin
//! server in development), so members and apps see one base URL.
//!
//! Forwarded: `/api/...` (except the member endpoints the edge answers itself,
//! `/api/usage` and `/api/v1/key`), `/authorization`, `/v1/verify-token` and
//! `/webhooks/...`, without `PATH_PREFIX`. Method, headers (minus hop-by-hop ones), body
//! (bounded) and status are preserved; redirects are handed to the client, never
//! followed (the app login flow answers with a 302 to the app's callback). The request
//! id is carried across in `x-request-id`, the caller's address in `x-forwarded-for`
//! and, when `SYNC_SECRET` is set, signed in `x-tollbooth-client`
//! ([`tollbooth_core::auth::client_ip`]; bound to the admin origin's host, fresh for
//! 60 s) so the control plane's per-address login limit cannot be chosen by a caller
//! who reaches the origin directly. A client's own `x-tollbooth-client` is dropped.
//! The control plane gets `ADMIN_TIMEOUT_MS` (at most 30 s) to answer its headers;
//! after that the caller gets 504 in the JSON error shape, and the data plane is not
//! affected.

use tollbooth_core::auth::{canonical_host, sign_client_ip, CLIENT_IP_HEADER};
use tollbooth_core::error::GatewayError;
use worker::{Fetch, Headers, Request, RequestInit, RequestRedirect, Response, ResponseBody};

use crate::context::EdgeError;
use crate::middleware::Call;
use crate::protect;
use crate::upstream::within;
use crate::util::{clock_ms, now_s};

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
    CLIENT_IP_HEADER,
];

const DROP_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
];

/// Forwards the request to `ADMIN_ORIGIN`; 503 when the origin is not configured.
pub async fn front_door_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        config,
        path,
        ..
    } = call;
    rc.deployment = Some("admin".into());
    let Some(origin) = config.admin_origin.as_deref() else {
        return Err(GatewayError::Overloaded {
            message: "The control plane is not configured on this gateway.".into(),
            retry_after_secs: None,
        }
        .into());
    };
    let url = req
        .url()
        .map_err(|_| GatewayError::invalid_request("bad request URL"))?;
    let mut target = format!("{origin}{path}");
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
        let secret = config.sync_secret.as_deref().map(str::trim);
        let signed = secret
            .zip(canonical_host(origin))
            .and_then(|(secret, host)| sign_client_ip(secret.as_bytes(), &ip, now_s(), &host));
        if let Some(value) = signed {
            headers.set(CLIENT_IP_HEADER, &value).map_err(internal)?;
        }
    }
    let method = req.method();
    let body = match method {
        worker::Method::Get | worker::Method::Head => Vec::new(),
        _ => protect::read_body_limited(req, config.max_body_bytes).await?,
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
    let sent = within(Fetch::Request(upstream_req).send(), config.admin_timeout_ms).await;
    rc.upstream_ms += clock_ms() - t0;
    let mut upstream = match sent {
        None => {
            return Err(GatewayError::UpstreamTimeout {
                message: "The control plane did not answer in time; try again shortly.".into(),
            }
            .into())
        }
        Some(Err(_)) => {
            return Err(GatewayError::Overloaded {
                message: "The control plane is unreachable; try again shortly.".into(),
                retry_after_secs: Some(5),
            }
            .into())
        }
        Some(Ok(r)) => r,
    };
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
