//! Protection the middleware applies around every route: CORS (preflight and response
//! headers), the declared and the streamed body size. Scanner filtering is
//! [`crate::config::Config::is_probe`]. The CORS origins are the middleware's: the
//! catalogue's published ones, else the isolate's config.

use futures_util::StreamExt;
use tollbooth_core::error::GatewayError;
use worker::{Headers, Request, Response, Result};

use crate::config::Cors;

/// Headers a browser client may read from our responses.
const EXPOSED_FIXED: &[&str] = &["x-request-id", "retry-after"];

/// A bare 404 for probes: no JSON, no hint that anything lives here.
pub fn probe_response() -> Result<Response> {
    Response::error("Not Found", 404)
}

/// 413 when the declared `Content-Length` exceeds `limit` (before reading anything).
pub fn check_declared_length(req: &Request, limit: u64) -> std::result::Result<(), GatewayError> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(GatewayError::payload_too_large(limit)),
        _ => Ok(()),
    }
}

/// Reads the whole request body, refusing more than `limit` bytes: stops reading as soon
/// as the limit is passed, whatever the declared length said (chunked or lying bodies).
pub async fn read_body_limited(
    req: &mut Request,
    limit: u64,
) -> std::result::Result<Vec<u8>, GatewayError> {
    read_limited(body_stream(req)?, limit).await
}

/// The request body as a stream (`None` without a body). Taking it first lets the body
/// be read while the request is still borrowed elsewhere (authentication).
pub fn body_stream(
    req: &mut Request,
) -> std::result::Result<Option<worker::ByteStream>, GatewayError> {
    if req.inner().body().is_none() {
        return Ok(None);
    }
    req.stream()
        .map(Some)
        .map_err(|_| GatewayError::invalid_request("Could not read the request body."))
}

/// Reads a body stream, refusing it (413) past `limit` bytes.
pub async fn read_limited(
    stream: Option<worker::ByteStream>,
    limit: u64,
) -> std::result::Result<Vec<u8>, GatewayError> {
    let Some(mut stream) = stream else {
        return Ok(Vec::new());
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| GatewayError::invalid_request("Could not read the request body."))?;
        if u64::try_from(body.len().saturating_add(chunk.len())).unwrap_or(u64::MAX) > limit {
            return Err(GatewayError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The answer to a CORS preflight (or a plain `OPTIONS`).
pub fn preflight(req: &Request, cors: &Cors) -> Result<Response> {
    let origin = req.headers().get("origin")?;
    let wants_cors = req.headers().has("access-control-request-method")?;
    let mut resp = Response::empty()?.with_status(204);
    let (Some(origin), true) = (origin, wants_cors) else {
        resp.headers_mut().set("allow", "GET, POST, OPTIONS")?;
        return Ok(resp);
    };
    let h = resp.headers_mut();
    h.set("vary", "Origin")?;
    let Some(allow) = cors.allow(&origin) else {
        // No CORS headers: the browser refuses the real request.
        return Ok(resp);
    };
    h.set("access-control-allow-origin", &allow)?;
    h.set("access-control-allow-methods", "GET, POST, OPTIONS")?;
    let requested = req
        .headers()
        .get("access-control-request-headers")?
        .unwrap_or_default();
    // Echo the requested header names when they are plain tokens (SDKs send many
    // `x-stainless-*` headers); fall back to the ones our API reads.
    let allow_headers = if !requested.is_empty()
        && requested.len() < 2048
        && requested
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
    {
        requested
    } else {
        "authorization, content-type, x-api-key, anthropic-version".to_owned()
    };
    h.set("access-control-allow-headers", &allow_headers)?;
    h.set("access-control-max-age", "86400")?;
    Ok(resp)
}

/// Adds CORS headers to a response for a request that carried `Origin`.
pub fn finish(mut resp: Response, origin: Option<&str>, cors: &Cors) -> Result<Response> {
    let Some(origin) = origin else {
        return Ok(resp);
    };
    let Some(allow) = cors.allow(origin) else {
        return Ok(resp);
    };
    let exposed = exposed_headers(resp.headers());
    let h = resp.headers_mut();
    if h.has("access-control-allow-origin")? {
        return Ok(resp);
    }
    h.set("access-control-allow-origin", &allow)?;
    if allow != "*" {
        h.append("vary", "Origin")?;
    }
    h.set("access-control-expose-headers", &exposed)?;
    Ok(resp)
}

/// `x-request-id`, `retry-after` and every `x-tollbooth-*` / `x-ratelimit-*` header
/// the response carries.
fn exposed_headers(h: &Headers) -> String {
    let mut names: Vec<String> = EXPOSED_FIXED.iter().map(|s| s.to_string()).collect();
    for name in h.keys() {
        let n = name.to_ascii_lowercase();
        if (n.starts_with("x-tollbooth-") || n.starts_with("x-ratelimit-")) && !names.contains(&n) {
            names.push(n);
        }
    }
    names.join(", ")
}
