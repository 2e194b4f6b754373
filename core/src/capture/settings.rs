//! Capture settings carried in the catalogue (`settings.capture`) and the opt-in
//! decision taken once at admission.

use serde::{Deserialize, Serialize};

/// Default cap on one stored capture (the serialized record), in bytes.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024;
/// Default retention of captures, in days.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// `settings.capture` in the catalogue. Every field has a default, so older snapshots
/// parse unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSettings {
    /// Apps (`KeyRecord::app_id`) whose traffic is captured, whatever the key or plan say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Pass-through domains (`api.openai.com`, `127.0.0.1:8080`) whose traffic is captured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough_domains: Vec<String>,
    /// Redact API-key-like tokens (see [`crate::capture::redact`]).
    #[serde(default = "yes")]
    pub redact_api_keys: bool,
    /// Prefixes that start an API key; empty = the built-in list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_prefixes: Vec<String>,
    #[serde(default = "yes")]
    pub redact_emails: bool,
    #[serde(default = "yes")]
    pub redact_phones: bool,
    /// Literal strings the operator wants removed (case-sensitive), e.g. an internal host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact_literals: Vec<String>,
    /// Largest stored record in bytes; larger ones are cut and flagged `truncated`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Captures older than this are deleted by the Cron Trigger (0 = keep forever).
    #[serde(default = "default_retention")]
    pub retention_days: u64,
}

fn yes() -> bool {
    true
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION_DAYS
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            passthrough_domains: Vec::new(),
            redact_api_keys: true,
            key_prefixes: Vec::new(),
            redact_emails: true,
            redact_phones: true,
            redact_literals: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

/// Whether a request is captured: the key, its plan or its app opted in. Decided once at
/// admission.
pub fn capture_enabled(
    key_capture: bool,
    plan_capture: bool,
    app_id: Option<&str>,
    settings: &CaptureSettings,
) -> bool {
    key_capture || plan_capture || app_id.is_some_and(|a| settings.apps.iter().any(|x| x == a))
}

/// Whether pass-through traffic to `domain` (the allow-list key) is captured.
pub fn passthrough_captured(domain: &str, settings: &CaptureSettings) -> bool {
    settings
        .passthrough_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_opt_in_by_key_plan_or_app() {
        let mut s = CaptureSettings::default();
        assert!(!capture_enabled(false, false, Some("app1"), &s));
        assert!(capture_enabled(true, false, None, &s));
        assert!(capture_enabled(false, true, None, &s));
        s.apps.push("app1".into());
        assert!(capture_enabled(false, false, Some("app1"), &s));
        assert!(!capture_enabled(false, false, Some("app2"), &s));
        assert!(!capture_enabled(false, false, None, &s));
    }

    #[test]
    fn test_settings_default_when_absent() {
        let s: CaptureSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, CaptureSettings::default());
        assert!(serde_json::from_str::<CaptureSettings>(r#"{"nope":1}"#).is_err());
        let s = CaptureSettings {
            passthrough_domains: vec!["API.openai.com".into()],
            ..CaptureSettings::default()
        };
        assert!(passthrough_captured("api.openai.com", &s));
        assert!(!passthrough_captured("api.anthropic.com", &s));
    }
}
