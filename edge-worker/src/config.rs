//! Every worker setting, read from `[vars]` and secrets and validated **once per
//! isolate** into one typed [`Config`] (docs/configuration.md has the full table).
//!
//! | var | default | meaning |
//! |---|---|---|
//! | `ENVIRONMENT` | `production` | `local`, `test` or `development` permit the test hooks below |
//! | `PATH_PREFIX` | empty | serve the API under this prefix too (e.g. `/gw` → `/gw/v1/models`) |
//! | `MAX_BODY_BYTES` | 8 MiB | larger model API bodies get 413 (declared length, then streamed length) |
//! | `INTERNAL_MAX_BODY_BYTES` | 4 MiB | the same bound for the signed internal API, checked before the signature |
//! | `CATALOGUE_TTL_MS` | 5000 | how long an isolate trusts its catalogue before re-reading the KV pointer |
//! | `KEY_CACHE_TTL_MS` | 5000 | how long an isolate caches key records and member status |
//! | `BREAKER_FAILURE_THRESHOLD` | 5 | consecutive failures that open a credential's breaker |
//! | `BREAKER_COOLDOWN_MS` | 10000 | first cooldown of an open breaker (doubles per trip) |
//! | `ADMIN_ORIGIN` | unset | the control plane's base URL for `/api/...` (an http(s) URL with a host, no query, fragment or userinfo) |
//! | `ADMIN_TIMEOUT_MS` | 25000 | the front door answers 504 when the control plane is slower (at most 30000) |
//! | `SYNC_SECRET` (secret) | unset | the internal API's HMAC secret (at least 16 characters) |
//! | `CORS_ORIGINS` | `*` | `*`, a comma-separated list of exact origins, or `none` |
//! | `PROBE_PATHS`, `BLOCKED_USER_AGENTS` | built-in lists | scanner filtering (`none` disables) |
//! | `PASSTHROUGH_DOMAINS` | built-in list | the pass-through proxy's allow-list |
//! | `RESERVATION_TTL_SECS` | 900 | a reservation not settled (nor kept alive by its stream) within this is charged by the sweep |
//! | `DRAIN_TIMEOUT_MS` | 20000 | after a client disconnects, how long the stream is still read for the provider's usage |
//! | `USAGE_RETENTION_DAYS` | 90 | usage events and settled reservations older than this are pruned by the cron |
//!
//! Test hooks, refused (every request answers 500, the log names the variable) unless
//! `ENVIRONMENT` is `local`, `test` or `development`: `TEST_CLOCK=1` (the caller picks
//! the ledger clock with `x-tollbooth-test-now`), `TEST_REPLAY_SETTLE=1`,
//! `TEST_FAIL_SETTLE=N`, `METERING=off`, `ALLOW_LOOPBACK_UPSTREAMS=true`,
//! `TEST_FAIL_CAPTURE=<member id | *>` (that member's capture body writes fail),
//! `TEST_LEDGER_DELAY_MS=N` (every admission waits N ms before its D1 batch: the round
//! trip to a far D1 primary, for speculative admission's tests and benchmark).
//!
//! The bindings `KEYS`, `CONFIG` (KV) and `LEDGER` (D1) are checked at the same time. A
//! bad value or a missing binding is a deployment mistake, never silently a default.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use tollbooth_core::catalogue::AuthStyle;
use tollbooth_core::routing::BreakerConfig;
use tollbooth_core::ssrf;
use worker::Env;

pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_INTERNAL_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// The front door never waits longer than this for the control plane.
pub const MAX_ADMIN_TIMEOUT_MS: u64 = 30_000;

/// The shortest accepted `SYNC_SECRET` (both planes; generate 32 random bytes in hex).
pub const MIN_SYNC_SECRET_LEN: usize = 16;

/// The bindings every request path relies on (docs/configuration.md).
const BINDINGS: &[(&str, &str)] = &[
    ("KEYS", "KV namespace"),
    ("CONFIG", "KV namespace"),
    ("LEDGER", "D1 database"),
];

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

/// Allow-listed pass-through domains when `PASSTHROUGH_DOMAINS` is unset.
pub const DEFAULT_PASSTHROUGH_DOMAINS: &[(&str, AuthStyle)] = &[
    ("api.openai.com", AuthStyle::Bearer),
    ("api.anthropic.com", AuthStyle::XApiKey),
    ("api.deepseek.com", AuthStyle::Bearer),
    ("api.siliconflow.cn", AuthStyle::Bearer),
    ("api.moonshot.cn", AuthStyle::Bearer),
    ("dashscope.aliyuncs.com", AuthStyle::Bearer),
    ("models.inference.ai.azure.com", AuthStyle::Bearer),
    ("generativelanguage.googleapis.com", AuthStyle::Google),
];

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    Disabled,
    Any,
    Origins(Vec<String>),
}

/// The test hooks (see the module docs); all off in production.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestHooks {
    /// `x-tollbooth-test-now` sets the ledger clock of the request.
    pub clock: bool,
    /// Every settlement runs twice; the second must be a no-op.
    pub replay_settle: bool,
    /// The first N settlement attempts of the isolate fail (durable pending-settle tests).
    pub fail_settle: u64,
    /// No rate limits, reservations or settlement (the metering cost benchmark).
    pub metering_off: bool,
    /// Upstreams on loopback (the mock upstream) are allowed.
    pub allow_loopback: bool,
    /// Capture body writes to R2 fail for this member (`*`: for everyone); capture must
    /// never change the response.
    pub fail_capture: Option<String>,
    /// Every admission waits this long before its D1 batch (a far D1 primary).
    pub ledger_delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub environment: String,
    /// Normalised: empty, or starts with `/` and has no trailing `/`.
    pub path_prefix: String,
    pub max_body_bytes: u64,
    pub internal_max_body_bytes: u64,
    pub catalogue_ttl_ms: u64,
    pub key_cache_ttl_ms: u64,
    pub breaker: BreakerConfig,
    /// Without a trailing `/`.
    pub admin_origin: Option<String>,
    pub admin_timeout_ms: u64,
    pub sync_secret: Option<String>,
    pub cors: Cors,
    /// Lowercased patterns.
    pub probe_paths: Vec<String>,
    /// Lowercased substrings.
    pub blocked_agents: Vec<String>,
    /// Normalised authority (`host` or `host:port`) → auth style.
    pub passthrough_domains: BTreeMap<String, AuthStyle>,
    pub reservation_ttl_secs: u64,
    pub drain_timeout_ms: u64,
    pub usage_retention_days: u64,
    pub hooks: TestHooks,
}

thread_local! {
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
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

fn parse_style(s: &str) -> Option<AuthStyle> {
    match s.trim().to_ascii_lowercase().as_str() {
        "bearer" | "openai" => Some(AuthStyle::Bearer),
        "x-api-key" | "anthropic" => Some(AuthStyle::XApiKey),
        "google" | "x-goog-api-key" | "gemini" => Some(AuthStyle::Google),
        "api-key" | "azure" => Some(AuthStyle::ApiKey),
        _ => None,
    }
}

/// Normalises a configured pass-through domain (`Host[:port]`) to its lookup key.
pub fn normalise_domain(domain: &str) -> Option<String> {
    let url = ssrf::parse_url(&format!("https://{}/", domain.trim())).ok()?;
    Some(domain_key(&url))
}

/// `host`, or `host:port` when the port was given.
pub fn domain_key(url: &ssrf::ParsedUrl) -> String {
    if url.explicit_port {
        format!("{}:{}", url.host, url.port)
    } else {
        url.host.to_string()
    }
}

/// `PASSTHROUGH_DOMAINS`: a JSON object `{"domain": "style"}` or `domain=style,...`.
fn passthrough_domains(raw: Option<String>) -> Result<BTreeMap<String, AuthStyle>, String> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(DEFAULT_PASSTHROUGH_DOMAINS
            .iter()
            .map(|(d, s)| ((*d).to_owned(), *s))
            .collect());
    };
    let pairs: Vec<(String, String)> = match serde_json::from_str::<BTreeMap<String, String>>(&raw)
    {
        Ok(map) => map.into_iter().collect(),
        Err(_) => raw
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                e.split_once('=')
                    .map(|(d, s)| (d.to_owned(), s.to_owned()))
                    .ok_or_else(|| format!("PASSTHROUGH_DOMAINS entry {e:?} is not domain=style"))
            })
            .collect::<Result<_, _>>()?,
    };
    pairs
        .into_iter()
        .map(|(d, s)| {
            let domain = normalise_domain(&d)
                .ok_or_else(|| format!("PASSTHROUGH_DOMAINS: {d:?} is not a domain"))?;
            let style = parse_style(&s)
                .ok_or_else(|| format!("PASSTHROUGH_DOMAINS: unknown auth style {s:?}"))?;
            Ok((domain, style))
        })
        .collect()
}

/// An origin the gateway forwards to: `http(s)://host[:port][/base path]`.
fn check_origin(v: &str) -> Result<(), &'static str> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host");
    }
    if v.contains(['?', '#', '@']) || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain a query, fragment, userinfo or spaces");
    }
    Ok(())
}

impl Config {
    /// The isolate's config, read and validated on first use.
    pub fn get(env: &Env) -> Result<Rc<Config>, String> {
        if let Some(c) = CONFIG.with(|c| c.borrow().clone()) {
            return Ok(c);
        }
        for (name, kind) in BINDINGS {
            let present = match *kind {
                "KV namespace" => env.kv(name).is_ok(),
                _ => env.d1(name).is_ok(),
            };
            if !present {
                return Err(format!(
                    "binding {name} ({kind}) is missing: declare it in wrangler.toml"
                ));
            }
        }
        let cfg = Rc::new(Self::from_lookup(|name| {
            env.var(name)
                .map(|v| v.to_string())
                .or_else(|_| env.secret(name).map(|v| v.to_string()))
                .ok()
        })?);
        CONFIG.with(|c| *c.borrow_mut() = Some(cfg.clone()));
        Ok(cfg)
    }

    /// Builds the config from a variable lookup (pure, for unit tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let num = |name: &str, default: u64| -> Result<u64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) if v.trim().is_empty() => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{name} must be a non-negative integer, got {v:?}")),
            }
        };
        let flag = |name: &str| -> Result<bool, String> {
            match get(name).as_deref().map(str::trim) {
                None | Some("") | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(v) => Err(format!("{name} must be true or false, got {v:?}")),
            }
        };
        let environment = get("ENVIRONMENT")
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "production".into());
        let prefix = get("PATH_PREFIX").unwrap_or_default();
        let prefix = prefix.trim().trim_end_matches('/');
        let path_prefix = if prefix.is_empty() {
            String::new()
        } else if prefix.starts_with('/') {
            prefix.to_owned()
        } else {
            format!("/{prefix}")
        };
        let max_body_bytes = num("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
        if max_body_bytes == 0 {
            return Err("MAX_BODY_BYTES must be greater than 0".into());
        }
        let internal_max_body_bytes =
            num("INTERNAL_MAX_BODY_BYTES", DEFAULT_INTERNAL_MAX_BODY_BYTES)?;
        if internal_max_body_bytes == 0 {
            return Err("INTERNAL_MAX_BODY_BYTES must be greater than 0".into());
        }
        let defaults = BreakerConfig::default();
        let threshold = num(
            "BREAKER_FAILURE_THRESHOLD",
            u64::from(defaults.failure_threshold),
        )?;
        let breaker = BreakerConfig {
            failure_threshold: u32::try_from(threshold.max(1))
                .map_err(|_| "BREAKER_FAILURE_THRESHOLD is too large".to_string())?,
            base_cooldown_ms: num("BREAKER_COOLDOWN_MS", defaults.base_cooldown_ms)?,
            ..defaults
        };
        let admin_origin = match get("ADMIN_ORIGIN").filter(|v| !v.trim().is_empty()) {
            Some(origin) => {
                let origin = origin.trim();
                check_origin(origin).map_err(|why| format!("ADMIN_ORIGIN {why}"))?;
                Some(origin.trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let admin_timeout_ms = num("ADMIN_TIMEOUT_MS", 25_000)?;
        if admin_timeout_ms == 0 || admin_timeout_ms > MAX_ADMIN_TIMEOUT_MS {
            return Err(format!(
                "ADMIN_TIMEOUT_MS must be between 1 and {MAX_ADMIN_TIMEOUT_MS}"
            ));
        }
        let sync_secret = match get("SYNC_SECRET").filter(|v| !v.is_empty()) {
            Some(secret) if secret.trim().len() < MIN_SYNC_SECRET_LEN => {
                return Err(format!(
                    "SYNC_SECRET must be at least {MIN_SYNC_SECRET_LEN} characters"
                ))
            }
            Some(secret) => Some(secret),
            None => None,
        };
        let cors = match get("CORS_ORIGINS").as_deref().map(str::trim) {
            None | Some("*") => Cors::Any,
            Some(s) if s.eq_ignore_ascii_case("none") || s.is_empty() => Cors::Disabled,
            Some(s) => Cors::Origins(
                s.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
        };
        let reservation_ttl_secs = num("RESERVATION_TTL_SECS", 900)?;
        if reservation_ttl_secs < 6 {
            return Err("RESERVATION_TTL_SECS must be at least 6".into());
        }
        let fail_settle = num("TEST_FAIL_SETTLE", 0)?;
        let hooks = TestHooks {
            clock: flag("TEST_CLOCK")?,
            replay_settle: flag("TEST_REPLAY_SETTLE")?,
            fail_settle,
            metering_off: match get("METERING").as_deref().map(str::trim) {
                None | Some("") | Some("on") => false,
                Some("off") => true,
                Some(v) => return Err(format!("METERING must be on or off, got {v:?}")),
            },
            allow_loopback: flag("ALLOW_LOOPBACK_UPSTREAMS")?,
            fail_capture: get("TEST_FAIL_CAPTURE")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
            ledger_delay_ms: num("TEST_LEDGER_DELAY_MS", 0)?,
        };
        if hooks != TestHooks::default()
            && !matches!(environment.as_str(), "local" | "test" | "development")
        {
            let set = [
                ("TEST_CLOCK", hooks.clock),
                ("TEST_REPLAY_SETTLE", hooks.replay_settle),
                ("TEST_FAIL_SETTLE", hooks.fail_settle > 0),
                ("METERING", hooks.metering_off),
                ("ALLOW_LOOPBACK_UPSTREAMS", hooks.allow_loopback),
                ("TEST_FAIL_CAPTURE", hooks.fail_capture.is_some()),
                ("TEST_LEDGER_DELAY_MS", hooks.ledger_delay_ms > 0),
            ]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
            return Err(format!(
                "test hooks ({set}) are refused when ENVIRONMENT is {environment:?}; \
                 set ENVIRONMENT to local, test or development, or remove them"
            ));
        }
        Ok(Config {
            environment,
            path_prefix,
            max_body_bytes,
            internal_max_body_bytes,
            catalogue_ttl_ms: num("CATALOGUE_TTL_MS", 5_000)?,
            key_cache_ttl_ms: num("KEY_CACHE_TTL_MS", 5_000)?,
            breaker,
            admin_origin,
            admin_timeout_ms,
            sync_secret,
            cors,
            probe_paths: list(get("PROBE_PATHS"), DEFAULT_PROBE_PATHS),
            blocked_agents: list(get("BLOCKED_USER_AGENTS"), DEFAULT_BLOCKED_AGENTS),
            passthrough_domains: passthrough_domains(get("PASSTHROUGH_DOMAINS"))?,
            reservation_ttl_secs,
            drain_timeout_ms: num("DRAIN_TIMEOUT_MS", 20_000)?,
            usage_retention_days: num("USAGE_RETENTION_DAYS", 90)?.max(1),
            hooks,
        })
    }

    /// Strips `PATH_PREFIX` from a path (once, for the route table).
    pub fn strip_prefix<'a>(&self, path: &'a str) -> &'a str {
        if self.path_prefix.is_empty() {
            return path;
        }
        path.strip_prefix(self.path_prefix.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or(path)
    }

    /// Whether the request looks like a scanner's probe.
    pub fn is_probe(&self, path: &str, user_agent: Option<&str>) -> bool {
        let path = path.to_ascii_lowercase();
        if self.probe_paths.iter().any(|p| path_matches(p, &path)) {
            return true;
        }
        user_agent.is_some_and(|ua| {
            let ua = ua.to_ascii_lowercase();
            self.blocked_agents.iter().any(|b| ua.contains(b.as_str()))
        })
    }
}

impl Cors {
    /// The origins published in the catalogue settings (`cors_origins`, set through the
    /// admin API): `["*"]` any, `[]` none, else the exact origins.
    pub fn published(list: &[String]) -> Cors {
        if list.iter().any(|o| o.trim() == "*") {
            return Cors::Any;
        }
        let origins: Vec<String> = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            Cors::Disabled
        } else {
            Cors::Origins(origins)
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    pub fn allow(&self, origin: &str) -> Option<String> {
        match self {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn test_defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.environment, "production");
        assert_eq!(c.path_prefix, "");
        assert_eq!(c.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(c.internal_max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.hooks, TestHooks::default());
        assert_eq!(c.breaker, BreakerConfig::default());
        assert_eq!(c.cors, Cors::Any);
        assert!(c.admin_timeout_ms < 30_000);
        assert_eq!(c.reservation_ttl_secs, 900);
        assert!(c.passthrough_domains.contains_key("api.openai.com"));
    }

    #[test]
    fn test_prefix_normalised_and_values_parsed() {
        let c = cfg(&[
            ("ENVIRONMENT", "test"),
            ("PATH_PREFIX", "gw/"),
            ("MAX_BODY_BYTES", "1024"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
            ("BREAKER_FAILURE_THRESHOLD", "2"),
            ("BREAKER_COOLDOWN_MS", "1500"),
            ("CORS_ORIGINS", "https://A.example/, https://b.example"),
            (
                "PASSTHROUGH_DOMAINS",
                "api.example.com=bearer,localhost:9=google",
            ),
        ])
        .unwrap();
        assert_eq!(c.path_prefix, "/gw");
        assert_eq!(c.strip_prefix("/gw/v1/models"), "/v1/models");
        assert_eq!(c.strip_prefix("/gwx/v1"), "/gwx/v1");
        assert_eq!(c.max_body_bytes, 1024);
        assert!(c.hooks.allow_loopback);
        assert_eq!(c.breaker.failure_threshold, 2);
        assert_eq!(c.breaker.base_cooldown_ms, 1500);
        assert_eq!(
            c.cors.allow("https://a.example").as_deref(),
            Some("https://a.example")
        );
        assert!(c.cors.allow("https://c.example").is_none());
        // Origins published in the catalogue settings replace CORS_ORIGINS.
        let published = Cors::published(&["https://C.example/".into()]);
        assert_eq!(
            published.allow("https://c.example").as_deref(),
            Some("https://c.example")
        );
        assert!(published.allow("https://a.example").is_none());
        assert_eq!(Cors::published(&["*".into()]), Cors::Any);
        assert_eq!(Cors::published(&[]), Cors::Disabled);
        assert_eq!(
            c.passthrough_domains.get("localhost:9"),
            Some(&AuthStyle::Google)
        );
    }

    #[test]
    fn test_invalid_values_name_the_variable() {
        let e = cfg(&[("MAX_BODY_BYTES", "8MB")]).unwrap_err();
        assert!(e.contains("MAX_BODY_BYTES"), "{e}");
        let e = cfg(&[
            ("ENVIRONMENT", "test"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "yes please"),
        ])
        .unwrap_err();
        assert!(e.contains("ALLOW_LOOPBACK_UPSTREAMS"), "{e}");
        assert!(cfg(&[("MAX_BODY_BYTES", "0")]).is_err());
        assert!(cfg(&[("ADMIN_TIMEOUT_MS", "60000")]).is_err());
        assert!(cfg(&[("PASSTHROUGH_DOMAINS", "api.x.com=telepathy")]).is_err());
        assert!(cfg(&[("METERING", "maybe")]).is_err());
    }

    #[test]
    fn test_test_hooks_refused_in_production() {
        for hook in [
            ("TEST_CLOCK", "1"),
            ("TEST_REPLAY_SETTLE", "1"),
            ("TEST_FAIL_SETTLE", "2"),
            ("METERING", "off"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
            ("TEST_FAIL_CAPTURE", "*"),
        ] {
            for env in [None, Some("production"), Some("staging")] {
                let mut vars = vec![hook];
                if let Some(e) = env {
                    vars.push(("ENVIRONMENT", e));
                }
                let e = cfg(&vars).unwrap_err();
                assert!(e.contains(hook.0), "{e}");
            }
            for env in ["local", "test", "development"] {
                assert!(cfg(&[hook, ("ENVIRONMENT", env)]).is_ok(), "{env}");
            }
        }
    }

    #[test]
    fn test_admin_origin_and_sync_secret_checked() {
        for bad in [
            "localhost:8788",
            "ftp://x",
            "http://",
            "http://:80",
            "http://a/b?c=1",
            "http://u@h",
        ] {
            let e = cfg(&[("ADMIN_ORIGIN", bad)]).unwrap_err();
            assert!(e.starts_with("ADMIN_ORIGIN"), "{bad}: {e}");
        }
        let c = cfg(&[(
            "ADMIN_ORIGIN",
            "https://abc.execute-api.us-east-1.amazonaws.com/prod/",
        )])
        .unwrap();
        assert_eq!(
            c.admin_origin.as_deref(),
            Some("https://abc.execute-api.us-east-1.amazonaws.com/prod")
        );
        let e = cfg(&[("SYNC_SECRET", "short")]).unwrap_err();
        assert!(e.contains("SYNC_SECRET"), "{e}");
        assert!(!e.contains("short"), "the value is never echoed: {e}");
        assert!(cfg(&[("SYNC_SECRET", "0123456789abcdef")]).is_ok());
    }

    #[test]
    fn test_probe_patterns() {
        let c = cfg(&[]).unwrap();
        assert!(c.is_probe("/.env", None));
        assert!(c.is_probe("/x/wp-login.php", None));
        assert!(c.is_probe("/v1/models", Some("sqlmap/1.0")));
        assert!(!c.is_probe("/v1/chat/completions", Some("openai-python")));
    }
}
