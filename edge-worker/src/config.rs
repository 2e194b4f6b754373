//! Worker settings from `[vars]` (environment variables), validated once per isolate.
//!
//! | var | default | meaning |
//! |---|---|---|
//! | `PATH_PREFIX` | empty | serve the API under this prefix too (e.g. `/gw` → `/gw/v1/models`) |
//! | `MAX_BODY_BYTES` | 8 MiB | larger request bodies get 413 |
//! | `CATALOGUE_TTL_MS` | 5000 | how long an isolate trusts its catalogue before re-reading the KV pointer |
//! | `KEY_CACHE_TTL_MS` | 5000 | how long an isolate caches key records and member status |
//! | `ALLOW_LOOPBACK_UPSTREAMS` | false | local mode and tests: allow providers on loopback/private addresses |
//! | `BREAKER_FAILURE_THRESHOLD` | 5 | consecutive failures that open a credential's breaker |
//! | `BREAKER_COOLDOWN_MS` | 10000 | first cooldown of an open breaker (doubles per trip) |
//! | `ADMIN_ORIGIN` | unset | the control plane's base URL for `/api/...` (checked: an http(s) URL with a host, no query, fragment or userinfo) |
//! | `SYNC_SECRET` (secret) | unset | the internal API's HMAC secret (checked: at least 16 characters) |
//!
//! The bindings `KEYS`, `CONFIG` (KV) and `LEDGER` (D1) are checked at the same time.
//! A bad value or a missing binding is a deployment mistake: every request then gets a 500 naming the
//! variable (never silently a default).

use std::cell::RefCell;
use std::rc::Rc;

use tollbooth_core::routing::BreakerConfig;
use worker::Env;

pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// The bindings every request path relies on (docs/configuration.md).
const BINDINGS: &[(&str, &str)] = &[
    ("KEYS", "KV namespace"),
    ("CONFIG", "KV namespace"),
    ("LEDGER", "D1 database"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Normalised: empty, or starts with `/` and has no trailing `/`.
    pub path_prefix: String,
    pub max_body_bytes: u64,
    pub catalogue_ttl_ms: u64,
    pub key_cache_ttl_ms: u64,
    pub allow_loopback_upstreams: bool,
    pub breaker: BreakerConfig,
}

thread_local! {
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
}

impl Config {
    /// The isolate's config, read and validated on first use.
    pub fn get(env: &Env) -> Result<Rc<Config>, String> {
        if let Some(c) = CONFIG.with(|c| c.borrow().clone()) {
            return Ok(c);
        }
        // Bindings are checked once too: a typo in wrangler.toml names itself.
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
        if let Some(origin) = get("ADMIN_ORIGIN").filter(|v| !v.trim().is_empty()) {
            check_origin(origin.trim()).map_err(|why| format!("ADMIN_ORIGIN {why}"))?;
        }
        if let Some(secret) = get("SYNC_SECRET").filter(|v| !v.is_empty()) {
            if secret.trim().len() < MIN_SYNC_SECRET_LEN {
                return Err(format!(
                    "SYNC_SECRET must be at least {MIN_SYNC_SECRET_LEN} characters"
                ));
            }
        }
        Ok(Config {
            path_prefix,
            max_body_bytes,
            catalogue_ttl_ms: num("CATALOGUE_TTL_MS", 5_000)?,
            key_cache_ttl_ms: num("KEY_CACHE_TTL_MS", 5_000)?,
            allow_loopback_upstreams: flag("ALLOW_LOOPBACK_UPSTREAMS")?,
            breaker,
        })
    }
}

/// The shortest accepted `SYNC_SECRET` (both planes; generate 32 random bytes in hex).
pub const MIN_SYNC_SECRET_LEN: usize = 16;

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
        assert_eq!(c.path_prefix, "");
        assert_eq!(c.max_body_bytes, 8 * 1024 * 1024);
        assert!(!c.allow_loopback_upstreams);
        assert_eq!(c.breaker, BreakerConfig::default());
    }

    #[test]
    fn test_prefix_normalised_and_values_parsed() {
        let c = cfg(&[
            ("PATH_PREFIX", "gw/"),
            ("MAX_BODY_BYTES", "1024"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
            ("BREAKER_FAILURE_THRESHOLD", "2"),
            ("BREAKER_COOLDOWN_MS", "1500"),
        ])
        .unwrap();
        assert_eq!(c.path_prefix, "/gw");
        assert_eq!(c.max_body_bytes, 1024);
        assert!(c.allow_loopback_upstreams);
        assert_eq!(c.breaker.failure_threshold, 2);
        assert_eq!(c.breaker.base_cooldown_ms, 1500);
    }

    #[test]
    fn test_invalid_values_name_the_variable() {
        let e = cfg(&[("MAX_BODY_BYTES", "8MB")]).unwrap_err();
        assert!(e.contains("MAX_BODY_BYTES"), "{e}");
        let e = cfg(&[("ALLOW_LOOPBACK_UPSTREAMS", "yes please")]).unwrap_err();
        assert!(e.contains("ALLOW_LOOPBACK_UPSTREAMS"), "{e}");
        assert!(cfg(&[("MAX_BODY_BYTES", "0")]).is_err());
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
        for good in [
            "http://127.0.0.1:8788",
            "https://abc.execute-api.us-east-1.amazonaws.com/prod/",
        ] {
            assert!(cfg(&[("ADMIN_ORIGIN", good)]).is_ok(), "{good}");
        }
        let e = cfg(&[("SYNC_SECRET", "short")]).unwrap_err();
        assert!(e.contains("SYNC_SECRET"), "{e}");
        assert!(!e.contains("short"), "the value is never echoed: {e}");
        assert!(cfg(&[("SYNC_SECRET", "0123456789abcdef")]).is_ok());
    }
}
