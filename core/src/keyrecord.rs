//! The member API key record the edge keeps in KV `KEYS` under `key:<public id>`.
//! Only the secret's hash is stored; the full key is shown to its owner once.
//!
//! Records carry a `version` set by the control plane: the edge never lets a lower
//! version overwrite a higher one, and a revoked key is kept as a tombstone
//! (`status: revoked`) that no later write can bring back.

use serde::{Deserialize, Serialize};

use crate::auth::verify_secret;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Active,
    Disabled,
    /// A tombstone: the key was revoked and can never become active again.
    Revoked,
}

/// Who holds the key: members call models; operators may also use the dynamic
/// pass-through proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    #[default]
    Member,
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub public_id: String,
    /// sha256 hex of the secret part.
    pub secret_hash: String,
    pub member_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub status: KeyStatus,
    #[serde(default)]
    pub role: KeyRole,
    /// Unix seconds; `None` = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Narrows the plan's models; `None` = whatever the plan allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Capture this key's conversations (docs/training-data.md).
    #[serde(default)]
    pub capture: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The app the key belongs to (captures carry it; `settings.capture.apps` opts apps in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Bring-your-own-key pass-through: the key authenticates with `x-tollbooth-key` and
    /// the caller's own provider key is forwarded (docs/security.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub byok: bool,
    /// Monotonic version from the control plane (0 for records written before versions).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Why a presented key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    BadSecret,
    Disabled,
    Expired,
    Revoked,
}

impl KeyRecord {
    /// KV key under which the record is stored.
    pub fn kv_key(public_id: &str) -> String {
        format!("key:{public_id}")
    }

    /// Checks the presented secret (constant time), status and expiry at `now` (unix s).
    pub fn check(&self, secret: &str, now: u64) -> Result<(), KeyRejection> {
        if !verify_secret(secret, &self.secret_hash) {
            return Err(KeyRejection::BadSecret);
        }
        match self.status {
            KeyStatus::Active => {}
            KeyStatus::Disabled => return Err(KeyRejection::Disabled),
            KeyStatus::Revoked => return Err(KeyRejection::Revoked),
        }
        if self.expires_at.is_some_and(|t| now >= t) {
            return Err(KeyRejection::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ApiKey;

    fn record(key: &ApiKey) -> KeyRecord {
        KeyRecord {
            public_id: key.public_id().to_string(),
            secret_hash: key.secret_hash(),
            member_id: "m1".into(),
            plan_id: "free".into(),
            status: KeyStatus::Active,
            role: KeyRole::Member,
            expires_at: Some(1_000),
            allowed_models: None,
            rpm: None,
            tpm: None,
            capture: false,
            name: None,
            app_id: None,
            byok: false,
            version: 0,
        }
    }

    #[test]
    fn test_check_secret_status_expiry() {
        let key = ApiKey::generate(&[7u8; 32]);
        let mut r = record(&key);
        assert_eq!(r.check(key.secret(), 999), Ok(()));
        assert_eq!(r.check(key.secret(), 1_000), Err(KeyRejection::Expired));
        assert_eq!(
            r.check("wrong-secret-value", 1),
            Err(KeyRejection::BadSecret)
        );
        r.status = KeyStatus::Disabled;
        assert_eq!(r.check(key.secret(), 1), Err(KeyRejection::Disabled));
        r.status = KeyStatus::Revoked;
        assert_eq!(r.check(key.secret(), 1), Err(KeyRejection::Revoked));
    }
}
