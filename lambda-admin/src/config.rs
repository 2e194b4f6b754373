//! Configuration, read from the environment once and validated at start.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Validated admin-side configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// DynamoDB single table name (`TABLE_NAME`, default `tollbooth`).
    pub table_name: String,
    /// When set, serve HTTP locally on this address instead of running under Lambda.
    pub local_http_addr: Option<SocketAddr>,
    /// Create the table at start if it is missing (`CREATE_TABLE=1`; local use).
    pub create_table: bool,
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
        Ok(Self {
            table_name,
            local_http_addr,
            create_table,
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
    fn test_defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.table_name, "tollbooth");
        assert_eq!(c.local_http_addr, None);
        assert!(!c.create_table);
    }

    #[test]
    fn test_bad_values_are_named() {
        let e = cfg(&[("LOCAL_HTTP_ADDR", "localhost")]).unwrap_err();
        assert!(
            e.to_string().starts_with("LOCAL_HTTP_ADDR is invalid"),
            "{e}"
        );
        let e = cfg(&[("TABLE_NAME", "a b")]).unwrap_err();
        assert!(e.to_string().starts_with("TABLE_NAME is invalid"), "{e}");
    }

    #[test]
    fn test_local_addr_parsed() {
        let c = cfg(&[("LOCAL_HTTP_ADDR", "127.0.0.1:9000"), ("CREATE_TABLE", "1")]).unwrap();
        assert_eq!(c.local_http_addr, Some("127.0.0.1:9000".parse().unwrap()));
        assert!(c.create_table);
    }
}
