//! Configuration, read from the environment once and validated at start.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// The shortest accepted `SYNC_SECRET` (the worker checks the same).
pub const MIN_SYNC_SECRET_LEN: usize = 16;

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Validated admin-side configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HS256 session keys, current first (`JWT_KEYS="kid:secret,oldkid:oldsecret"`).
    pub jwt_keys: Vec<(String, Secret)>,
    /// AES-256 key for credentials at rest (`MASTER_KEY`, 64 hex characters).
    pub master_key: [u8; 32],
    /// The worker's base URL for the internal API (`EDGE_ORIGIN`); unset = no sync.
    pub edge_origin: Option<String>,
    /// `SYNC_SECRET`, shared with the worker.
    pub sync_secret: Option<Secret>,
    /// First admin (`ADMIN_EMAIL` / `ADMIN_PASSWORD`), created when absent.
    pub bootstrap_admin: Option<(String, Secret)>,
    pub policy: crate::app::Policy,
    /// DynamoDB single table name (`TABLE_NAME`, default `tollbooth`).
    pub table_name: String,
    /// When set, serve HTTP locally on this address instead of running under Lambda.
    pub local_http_addr: Option<SocketAddr>,
    /// Create the table at start if it is missing (`CREATE_TABLE=1`; local use).
    pub create_table: bool,
    /// `DEV_DEFAULTS=1`: a local run may fall back to fixed, public development secrets
    /// for `JWT_KEYS`, `MASTER_KEY` and the first admin. Without it a missing secret is
    /// a start-up error, locally too.
    pub dev_defaults: bool,
    /// `ALLOW_LOOPBACK_UPSTREAMS=1`: provider base URLs and model pulls may target
    /// `127.0.0.1`/`[::1]`/`localhost` (tests and `make dev`). Refused unless
    /// `ENVIRONMENT` is `local`, `test` or `development`.
    pub allow_loopback: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Builds the config from any variable lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table_name = get("TABLE_NAME").unwrap_or_else(|| "tollbooth".to_owned());
        if table_name.len() < 3
            || table_name.len() > 255
            || !table_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ConfigError::Invalid {
                name: "TABLE_NAME",
                reason: "use 3-255 characters from [A-Za-z0-9_.-]".into(),
            });
        }
        let local_http_addr = match get("LOCAL_HTTP_ADDR").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| ConfigError::Invalid {
                name: "LOCAL_HTTP_ADDR",
                reason: format!("{v:?} is not an ip:port address"),
            })?),
        };
        let create_table = matches!(get("CREATE_TABLE").as_deref(), Some("1" | "true"));
        let flag = |k: &str| matches!(get(k).as_deref().map(str::trim), Some("1" | "true"));
        // Development flags need an explicit development environment (as the edge's
        // config does): a deployment that forgot ENVIRONMENT refuses them too.
        let development = matches!(
            get("ENVIRONMENT").as_deref().map(str::trim),
            Some("local" | "test" | "development")
        );
        let dev_defaults = flag("DEV_DEFAULTS");
        let allow_loopback = flag("ALLOW_LOOPBACK_UPSTREAMS");
        for (on, name) in [
            (dev_defaults, "DEV_DEFAULTS"),
            (allow_loopback, "ALLOW_LOOPBACK_UPSTREAMS"),
        ] {
            if on && !development {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "a development flag needs ENVIRONMENT=local, test or development"
                        .into(),
                });
            }
        }
        // Every secret must be given; only an explicit local development run
        // (`LOCAL_HTTP_ADDR` and `DEV_DEFAULTS=1`) falls back to fixed, public values,
        // which keep a restarted dev server able to read what it sealed before.
        let local = local_http_addr.is_some() && dev_defaults;
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let jwt_raw = match nonempty("JWT_KEYS") {
            Some(v) => v,
            None if local => "local:local-development-jwt-secret-not-for-production".to_owned(),
            None => return Err(ConfigError::Missing { name: "JWT_KEYS" }),
        };
        let mut jwt_keys = Vec::new();
        for part in jwt_raw.split(',') {
            let (kid, secret) =
                part.trim()
                    .split_once(':')
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "JWT_KEYS",
                        reason: "use kid:secret[,kid:secret...]".into(),
                    })?;
            if kid.is_empty() || secret.len() < 32 {
                return Err(ConfigError::Invalid {
                    name: "JWT_KEYS",
                    reason: "each key needs a kid and a secret of at least 32 characters".into(),
                });
            }
            jwt_keys.push((kid.to_owned(), Secret(secret.as_bytes().to_vec())));
        }
        let master_hex = match nonempty("MASTER_KEY") {
            Some(v) => v,
            None if local => {
                "6c6f63616c2d6465762d6d61737465722d6b65792d6e6f742d666f722d70726f".to_owned()
            }
            None => return Err(ConfigError::Missing { name: "MASTER_KEY" }),
        };
        let master_key: [u8; 32] = hex::decode(master_hex.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ConfigError::Invalid {
                name: "MASTER_KEY",
                reason: "must be 64 hex characters (32 bytes)".into(),
            })?;
        let edge_origin = nonempty("EDGE_ORIGIN").map(|o| o.trim().to_owned());
        if let Some(o) = &edge_origin {
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .map(|rest| rest.split('/').next().unwrap_or_default());
            let bad_chars = o.contains(['?', '#', '@']) || o.chars().any(char::is_whitespace);
            if !matches!(host, Some(h) if !h.is_empty() && !h.starts_with(':')) || bad_chars {
                return Err(ConfigError::Invalid {
                    name: "EDGE_ORIGIN",
                    reason: "must be an http(s) URL with a host and no query, fragment or userinfo"
                        .into(),
                });
            }
        }
        let sync_secret = nonempty("SYNC_SECRET").map(|s| Secret(s.trim().as_bytes().to_vec()));
        if sync_secret
            .as_ref()
            .is_some_and(|s| s.0.len() < MIN_SYNC_SECRET_LEN)
        {
            return Err(ConfigError::Invalid {
                name: "SYNC_SECRET",
                reason: format!("must be at least {MIN_SYNC_SECRET_LEN} characters"),
            });
        }
        let bootstrap_admin = match (nonempty("ADMIN_EMAIL"), nonempty("ADMIN_PASSWORD")) {
            (Some(e), Some(p)) => Some((e, Secret(p.into_bytes()))),
            (None, None) if local => Some((
                "admin@tollbooth.local".to_owned(),
                Secret(b"local-dev-admin-1".to_vec()),
            )),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "ADMIN_EMAIL",
                    reason: "set ADMIN_EMAIL and ADMIN_PASSWORD together".into(),
                })
            }
        };
        let num =
            |k: &'static str, default: u64| -> Result<u64, ConfigError> {
                match nonempty(k) {
                    None => Ok(default),
                    Some(v) => v.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or(
                        ConfigError::Invalid {
                            name: k,
                            reason: "must be a positive integer".into(),
                        },
                    ),
                }
            };
        let d = crate::app::Policy::default();
        let policy = crate::app::Policy {
            session_ttl_secs: num("SESSION_TTL_SECS", d.session_ttl_secs)?,
            app_token_ttl_secs: num("APP_TOKEN_TTL_SECS", d.app_token_ttl_secs)?,
            max_login_failures: u32::try_from(num(
                "LOGIN_MAX_FAILURES",
                u64::from(d.max_login_failures),
            )?)
            .unwrap_or(d.max_login_failures),
            lockout_secs: num("LOCKOUT_SECS", d.lockout_secs)?,
            max_logins_per_address: u32::try_from(num(
                "LOGIN_MAX_PER_ADDRESS",
                u64::from(d.max_logins_per_address),
            )?)
            .unwrap_or(d.max_logins_per_address),
            allow_loopback_upstreams: allow_loopback,
            client_ip_secret: sync_secret.clone(),
            trust_forwarded_for: development,
        };
        Ok(Self {
            table_name,
            local_http_addr,
            create_table,
            jwt_keys,
            master_key,
            edge_origin,
            sync_secret,
            bootstrap_admin,
            policy,
            dev_defaults,
            allow_loopback,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn test_secrets_required_outside_local() {
        assert_eq!(
            cfg(&[]).unwrap_err(),
            ConfigError::Missing { name: "JWT_KEYS" }
        );
        let e = cfg(&[("JWT_KEYS", "k1:short")]).unwrap_err();
        assert!(e.to_string().starts_with("JWT_KEYS is invalid"), "{e}");
        // A local address alone does not enable the public development secrets.
        assert_eq!(
            cfg(&[("LOCAL_HTTP_ADDR", "127.0.0.1:1")]).unwrap_err(),
            ConfigError::Missing { name: "JWT_KEYS" }
        );
        let c = cfg(&[
            ("LOCAL_HTTP_ADDR", "127.0.0.1:1"),
            ("DEV_DEFAULTS", "1"),
            ("ENVIRONMENT", "local"),
        ])
        .unwrap();
        assert!(c.bootstrap_admin.is_some());
        assert!(format!("{c:?}").contains("<redacted>"));
        assert!(!format!("{c:?}").contains("local-dev-admin-1"));
    }

    const PROD: [(&str, &str); 2] = [
        (
            "JWT_KEYS",
            "k2:0123456789abcdef0123456789abcdef,k1:abcdefabcdefabcdefabcdefabcdefabcdef",
        ),
        (
            "MASTER_KEY",
            "0000000000000000000000000000000000000000000000000000000000000001",
        ),
    ];

    #[test]
    fn test_defaults() {
        let c = cfg(&PROD).unwrap();
        assert_eq!(c.jwt_keys.len(), 2);
        assert!(c.bootstrap_admin.is_none());
        assert_eq!(c.table_name, "tollbooth");
        assert_eq!(c.local_http_addr, None);
        assert!(!c.create_table);
    }

    #[test]
    fn test_bad_values_are_named() {
        let mut bad = PROD.to_vec();
        bad.push(("MASTER_KEY", "zz"));
        let e = cfg(&bad).unwrap_err();
        assert!(e.to_string().starts_with("MASTER_KEY is invalid"), "{e}");
        let e = cfg(&[("LOCAL_HTTP_ADDR", "localhost")]).unwrap_err();
        assert!(
            e.to_string().starts_with("LOCAL_HTTP_ADDR is invalid"),
            "{e}"
        );
        let e = cfg(&[("TABLE_NAME", "a b")]).unwrap_err();
        assert!(e.to_string().starts_with("TABLE_NAME is invalid"), "{e}");
    }

    #[test]
    fn test_edge_origin_and_sync_secret_checked() {
        for bad in [
            "edge.example.com",
            "http://",
            "https://:1",
            "http://e?x=1",
            "http://u@e",
        ] {
            let mut v = PROD.to_vec();
            v.push(("EDGE_ORIGIN", bad));
            let e = cfg(&v).unwrap_err();
            assert!(
                e.to_string().starts_with("EDGE_ORIGIN is invalid"),
                "{bad}: {e}"
            );
        }
        let mut v = PROD.to_vec();
        v.push(("EDGE_ORIGIN", "https://gw.example.com"));
        v.push(("SYNC_SECRET", "too-short"));
        let e = cfg(&v).unwrap_err();
        assert!(e.to_string().starts_with("SYNC_SECRET is invalid"), "{e}");
        assert!(!e.to_string().contains("too-short"));
        v.pop();
        v.push(("SYNC_SECRET", "0123456789abcdef0123"));
        let c = cfg(&v).unwrap();
        assert_eq!(c.edge_origin.as_deref(), Some("https://gw.example.com"));
    }

    #[test]
    fn test_development_flags_refused_in_production() {
        // Refused in production, with no ENVIRONMENT at all, and with any other value.
        for env in [Some("production"), None, Some("staging"), Some("")] {
            for flag in ["DEV_DEFAULTS", "ALLOW_LOOPBACK_UPSTREAMS"] {
                let mut v = PROD.to_vec();
                if let Some(env) = env {
                    v.push(("ENVIRONMENT", env));
                }
                v.push((flag, "1"));
                let e = cfg(&v).unwrap_err();
                assert!(
                    e.to_string().starts_with(&format!("{flag} is invalid")),
                    "{env:?}: {e}"
                );
            }
        }
        // Allowed only in an explicit development environment.
        for env in ["local", "test", "development"] {
            let mut v = PROD.to_vec();
            v.push(("ENVIRONMENT", env));
            v.push(("ALLOW_LOOPBACK_UPSTREAMS", "1"));
            assert!(cfg(&v).unwrap().allow_loopback, "{env}");
        }
        assert!(!cfg(&PROD).unwrap().allow_loopback);
        let mut v = PROD.to_vec();
        v.push(("ENVIRONMENT", "production"));
        assert!(!cfg(&v).unwrap().allow_loopback);
    }

    #[test]
    fn test_local_addr_parsed() {
        let c = cfg(&[
            ("LOCAL_HTTP_ADDR", "127.0.0.1:9000"),
            ("CREATE_TABLE", "1"),
            ("DEV_DEFAULTS", "1"),
            ("ENVIRONMENT", "test"),
        ])
        .unwrap();
        assert_eq!(c.local_http_addr, Some("127.0.0.1:9000".parse().unwrap()));
        assert!(c.create_table);
    }
}
