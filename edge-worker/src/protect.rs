//! Protection the router applies before anything else: scanner/probe filtering, the
//! request size limit and CORS. All of it is configured from `[vars]`, read once per
//! request from `Env` (cheap: plain strings).
//!
//! | var | default | meaning |
//! |---|---|---|
//! | `MAX_BODY_BYTES` | 8 MiB | larger bodies get 413 (`Content-Length` checked up front, the real length when read) |
//! | `PROBE_PATHS` | see [`DEFAULT_PROBE_PATHS`] | comma-separated path patterns answered with a bare 404: `*x` suffix, `x*` prefix, `*x*` contains, else exact; case-insensitive; `none` disables |
//! | `BLOCKED_USER_AGENTS` | see [`DEFAULT_BLOCKED_AGENTS`] | comma-separated, case-insensitive substrings of `User-Agent`; `none` disables |
//! | `CORS_ORIGINS` | `*` | `*`, a comma-separated list of exact origins, or `none` |
//!
//! Probes get a plain-text 404 and no log line: scanners hit every public endpoint all
//! day, and logging them drowns the requests that matter.

use futures_util::StreamExt;
use tollbooth_core::error::GatewayError;
use worker::{Env, Headers, Method, Request, Response, Result};

/// Default body limit: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// Paths no LLM client ever asks for, but vulnerability scanners always do.
pub const DEFAULT_PROBE_PATHS: &[&str] = &[
    "*/.env*",
    "*/.git*",
    "*/.svn*",
    "*/.hg*",
    "*/.aws*",
    "*/.ssh*",
    "*/.ds_store",
    "*/.htaccess",
    "*/.htpasswd",
    "*/wp-admin*",
    "*/wp-login*",
    "*/wp-content*",
    "*/wp-includes*",
    "*/xmlrpc*",
    "*.php",
    "*.php7",
    "*.asp",
    "*.aspx",
    "*.jsp",
    "*.cgi",
    "*.bak",
    "*.sql",
    "/cgi-bin*",
    "*/phpmyadmin*",
    "/actuator*",
    "/server-status*",
    "/solr/*",
    "/boaform*",
    "/hnap1*",
    "/console/login*",
    "/owa/*",
    "/vendor/phpunit*",
    "/.well-known/acme-challenge/*",
];

/// User agents of well-known scanners.
pub const DEFAULT_BLOCKED_AGENTS: &[&str] = &[
    "sqlmap",
    "nikto",
    "masscan",
    "zgrab",
    "nmap",
    "nuclei",
    "dirbuster",
    "gobuster",
    "wpscan",
    "acunetix",
    "netsparker",
    "zmeu",
    "jorgee",
    "fuzz faster u fool",
    "censysinspect",
];

/// Headers a browser client may read from our responses.
const EXPOSED_FIXED: &[&str] = &["x-request-id", "retry-after"];

/// The protection settings for one request.
#[derive(Debug, Clone)]
pub struct ProtectConfig {
    pub max_body_bytes: u64,
    probe_paths: Vec<String>,
    blocked_agents: Vec<String>,
    cors: Cors,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cors {
    Disabled,
    Any,
    Origins(Vec<String>),
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

fn list(raw: Option<String>, default: &[&str]) -> Vec<String> {
    match raw {
        None => default.iter().map(|s| s.to_string()).collect(),
        Some(s) if s.trim().eq_ignore_ascii_case("none") => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect(),
    }
}

impl ProtectConfig {
    pub fn from_env(env: &Env) -> Self {
        let max_body_bytes = var(env, "MAX_BODY_BYTES")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let cors = match var(env, "CORS_ORIGINS").as_deref().map(str::trim) {
            None | Some("*") => Cors::Any,
            Some(s) if s.eq_ignore_ascii_case("none") || s.is_empty() => Cors::Disabled,
            Some(s) => Cors::Origins(
                s.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
        };
        Self {
            max_body_bytes,
            probe_paths: list(var(env, "PROBE_PATHS"), DEFAULT_PROBE_PATHS),
            blocked_agents: list(var(env, "BLOCKED_USER_AGENTS"), DEFAULT_BLOCKED_AGENTS),
            cors,
        }
    }

    /// Whether the request looks like a scanner's probe.
    pub fn is_probe(&self, path: &str, user_agent: Option<&str>) -> bool {
        let path = path.to_ascii_lowercase();
        if self.probe_paths.iter().any(|p| path_matches(p, &path)) {
            return true;
        }
        match user_agent {
            Some(ua) => {
                let ua = ua.to_ascii_lowercase();
                self.blocked_agents.iter().any(|b| ua.contains(b.as_str()))
            }
            None => false,
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    fn allow_origin(&self, origin: &str) -> Option<String> {
        match &self.cors {
            Cors::Disabled => None,
            Cors::Any => Some("*".to_owned()),
            Cors::Origins(list) => {
                let o = origin.trim_end_matches('/').to_ascii_lowercase();
                list.contains(&o).then(|| origin.to_owned())
            }
        }
    }
}

/// `*x` suffix, `x*` prefix, `*x*` contains, else exact.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (lead, rest) = match pattern.strip_prefix('*') {
        Some(r) => (true, r),
        None => (false, pattern),
    };
    let (trail, core) = match rest.strip_suffix('*') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    match (lead, trail) {
        (true, true) => path.contains(core),
        (true, false) => path.ends_with(core),
        (false, true) => path.starts_with(core),
        (false, false) => path == core,
    }
}

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

/// What the router should do before dispatching.
pub enum Verdict {
    /// Go on to the route handlers.
    Continue,
    /// Answer with this response (probe 404, 413, CORS preflight). Pass it through
    /// [`finish`] like any other response.
    Answer(Response),
}

/// The checks that run before any route: probes and CORS preflight. (The body limit is
/// checked by each handler, before auth, with [`check_declared_length`], so that the
/// 413 carries the request id and gets its log line like every other error.)
pub fn guard(req: &Request, cfg: &ProtectConfig) -> Result<Verdict> {
    let path = req.path();
    let ua = req.headers().get("user-agent")?;
    if cfg.is_probe(&path, ua.as_deref()) {
        return Ok(Verdict::Answer(probe_response()?));
    }
    if req.method() == Method::Options {
        let origin = req.headers().get("origin")?;
        let wants_cors = req.headers().has("access-control-request-method")?;
        if let (Some(origin), true) = (origin, wants_cors) {
            return Ok(Verdict::Answer(preflight(req, cfg, &origin)?));
        }
        let mut resp = Response::empty()?.with_status(204);
        resp.headers_mut().set("allow", "GET, POST, OPTIONS")?;
        return Ok(Verdict::Answer(resp));
    }
    Ok(Verdict::Continue)
}

fn preflight(req: &Request, cfg: &ProtectConfig, origin: &str) -> Result<Response> {
    let mut resp = Response::empty()?.with_status(204);
    let h = resp.headers_mut();
    h.set("vary", "Origin")?;
    let Some(allow) = cfg.allow_origin(origin) else {
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
pub fn finish(mut resp: Response, origin: Option<&str>, cfg: &ProtectConfig) -> Result<Response> {
    let Some(origin) = origin else {
        return Ok(resp);
    };
    let Some(allow) = cfg.allow_origin(origin) else {
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

/// Reads the whole request body, refusing more than `limit` bytes (the declared
/// `Content-Length` is checked by [`guard`]; this catches chunked or lying bodies and
/// stops reading as soon as the limit is passed).
pub async fn read_body_limited(
    req: &mut Request,
    limit: u64,
) -> std::result::Result<Vec<u8>, GatewayError> {
    if req.inner().body().is_none() {
        return Ok(Vec::new());
    }
    let mut stream = req
        .stream()
        .map_err(|_| GatewayError::invalid_request("could not read the request body"))?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| GatewayError::invalid_request("could not read the request body"))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(GatewayError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
