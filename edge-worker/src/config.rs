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
//!
//! A bad value is a deployment mistake: every request then gets a 500 naming the
//! variable (never silently a default).

use std::cell::RefCell;
use std::rc::Rc;

use tollbooth_core::routing::BreakerConfig;
use worker::Env;

pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

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
        let cfg = Rc::new(Self::from_lookup(|name| {
            env.var(name).ok().map(|v| v.to_string())
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
