//! Member authentication and the KV `KEYS` store: `Authorization: Bearer
//! sk-<id>-<secret>` or `x-api-key` (what the Anthropic SDK sends), and on the Gemini
//! routes also `x-goog-api-key` or the `?key=` query parameter (what Gemini clients
//! send; the query is never logged: log lines carry the path only), looked up by public
//! id (`key:<id>`) and checked against the stored hash in constant time; the member
//! record (`member:<id>`) says whether the member is suspended. Records are served from
//! isolate memory, stale-while-revalidate: younger than `KEY_CACHE_TTL_MS` they are
//! used as they are; up to twice that old they are still used, and the request that
//! finds them so starts a refresh from KV in the background (`refresh_in_background`,
//! one in flight per record); older, they are read from KV before answering. With a TTL
//! of 0 nothing is cached. KV itself is eventually consistent (up to about 60 s), so a
//! revocation or suspension takes effect within that plus twice the cache TTL (and at
//! once in an isolate that received the push itself). A revoked key is a tombstone
//! record (`status: revoked`), answered like an unknown key.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tollbooth_core::auth::{bearer_token, ApiKey};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::{KeyRecord, KeyRejection};
use worker::{Context, Env, Request};

use crate::util::{now_ms, now_s};

/// Bounds the caches so a flood of random key ids cannot grow isolate memory forever.
const MAX_CACHED: usize = 10_000;

struct Cached<T> {
    value: T,
    fetched_ms: u64,
}

thread_local! {
    static KEYS: RefCell<HashMap<String, Cached<Option<Rc<KeyRecord>>>>> = RefCell::new(HashMap::new());
    static MEMBERS: RefCell<HashMap<String, Cached<bool>>> = RefCell::new(HashMap::new());
    /// Records served stale, to refresh (`key:<id>` / `member:<id>`), and the refreshes
    /// running.
    static STALE: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    static REFRESHING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// How a cached entry of age `age` may be used with a TTL of `ttl`.
#[derive(Debug, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Serve it, and refresh it in the background.
    Stale,
    Expired,
}

fn freshness(age: u64, ttl: u64) -> Freshness {
    if age < ttl {
        Freshness::Fresh
    } else if age < ttl.saturating_mul(2) {
        Freshness::Stale
    } else {
        Freshness::Expired
    }
}

fn mark_stale(record: String) {
    STALE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < 1024 {
            s.insert(record);
        }
    });
}

/// Drops an isolate's cached key record (the internal API just wrote it).
pub fn forget_key(public_id: &str) {
    KEYS.with(|k| k.borrow_mut().remove(public_id));
}

/// Drops an isolate's cached member status (the internal API just wrote it).
pub fn forget_member(member_id: &str) {
    MEMBERS.with(|m| m.borrow_mut().remove(member_id));
}

/// Refreshes, in `ctx.wait_until`, the records this isolate served stale (called once
/// per request by the middleware; a no-op when there are none).
pub fn refresh_in_background(env: &Env, ctx: &Context, ttl_ms: u64) {
    let stale: Vec<String> = STALE.with(|s| s.borrow_mut().drain().collect());
    for record in stale {
        let fresh = REFRESHING.with(|r| r.borrow_mut().insert(record.clone()));
        if !fresh {
            continue;
        }
        let env = env.clone();
        ctx.wait_until(async move {
            let store = KvKeyStore::new(&env, ttl_ms);
            if let Some(id) = record.strip_prefix("key:") {
                let _ = store.fetch_key(id).await;
            } else if let Some(id) = record.strip_prefix("member:") {
                let _ = store.fetch_member(id).await;
            }
            REFRESHING.with(|r| r.borrow_mut().remove(&record));
        });
    }
}

/// The member record in KV `KEYS` under `member:<id>`: status (suspended members' keys
/// are refused at the edge), the profile shown by `/v1/user-profile`, and the version
/// the control plane wrote it at (a lower version never overwrites a higher one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    #[serde(default = "active")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Subscription expiry (unix seconds), shown as `expire_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_expires_at: Option<u64>,
    #[serde(default)]
    pub version: u64,
}

fn active() -> String {
    "active".into()
}

impl MemberRecord {
    pub fn kv_key(member_id: &str) -> String {
        format!("member:{member_id}")
    }
}

/// Reads a member record (none if never pushed).
pub async fn member_record(env: &Env, member_id: &str) -> worker::Result<Option<MemberRecord>> {
    Ok(env
        .kv("KEYS")?
        .get(&MemberRecord::kv_key(member_id))
        .json()
        .await?)
}

#[derive(Deserialize)]
struct MemberState {
    #[serde(default)]
    status: String,
}

/// Key records from KV `KEYS`, cached per isolate.
pub struct KvKeyStore<'a> {
    env: &'a Env,
    ttl_ms: u64,
}

impl<'a> KvKeyStore<'a> {
    pub fn new(env: &'a Env, ttl_ms: u64) -> Self {
        Self { env, ttl_ms }
    }

    /// The record for `public_id`, or `None` when no such key exists.
    pub async fn get(&self, public_id: &str) -> Result<Option<Rc<KeyRecord>>, GatewayError> {
        let now = now_ms();
        let hit = KEYS.with(|k| {
            k.borrow().get(public_id).map(|c| {
                (
                    c.value.clone(),
                    freshness(now.saturating_sub(c.fetched_ms), self.ttl_ms),
                )
            })
        });
        match hit {
            Some((v, Freshness::Fresh)) => return Ok(v),
            Some((v, Freshness::Stale)) => {
                mark_stale(format!("key:{public_id}"));
                return Ok(v);
            }
            _ => {}
        }
        self.fetch_key(public_id).await
    }

    /// Reads a key record from KV and caches it.
    async fn fetch_key(&self, public_id: &str) -> Result<Option<Rc<KeyRecord>>, GatewayError> {
        let now = now_ms();
        let kv = self
            .env
            .kv("KEYS")
            .map_err(|_| GatewayError::internal("key store unavailable"))?;
        let text = kv
            .get(&KeyRecord::kv_key(public_id))
            .text()
            .await
            .map_err(|_| GatewayError::internal("key store unavailable"))?;
        let record = match text {
            None => None,
            Some(t) => Some(Rc::new(serde_json::from_str::<KeyRecord>(&t).map_err(
                |e| {
                    worker::console_error!(
                        "{{\"msg\":\"invalid key record\",\"public_id\":{:?},\"error\":{:?}}}",
                        public_id,
                        e.to_string()
                    );
                    GatewayError::internal("key record unreadable")
                },
            )?)),
        };
        KEYS.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= MAX_CACHED {
                k.clear();
            }
            k.insert(
                public_id.to_owned(),
                Cached {
                    value: record.clone(),
                    fetched_ms: now,
                },
            );
        });
        Ok(record)
    }

    /// Whether the member is suspended (KEYS `member:<id>` = `{"status":"suspended"}`).
    pub async fn member_suspended(&self, member_id: &str) -> Result<bool, GatewayError> {
        let now = now_ms();
        let hit = MEMBERS.with(|m| {
            m.borrow().get(member_id).map(|c| {
                (
                    c.value,
                    freshness(now.saturating_sub(c.fetched_ms), self.ttl_ms),
                )
            })
        });
        match hit {
            Some((v, Freshness::Fresh)) => return Ok(v),
            Some((v, Freshness::Stale)) => {
                mark_stale(format!("member:{member_id}"));
                return Ok(v);
            }
            _ => {}
        }
        self.fetch_member(member_id).await
    }

    /// Reads a member's status from KV and caches it.
    async fn fetch_member(&self, member_id: &str) -> Result<bool, GatewayError> {
        let now = now_ms();
        let kv = self
            .env
            .kv("KEYS")
            .map_err(|_| GatewayError::internal("key store unavailable"))?;
        let text = kv
            .get(&MemberRecord::kv_key(member_id))
            .text()
            .await
            .map_err(|_| GatewayError::internal("key store unavailable"))?;
        let suspended = text
            .and_then(|t| serde_json::from_str::<MemberState>(&t).ok())
            .is_some_and(|s| s.status == "suspended");
        MEMBERS.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= MAX_CACHED {
                m.clear();
            }
            m.insert(
                member_id.to_owned(),
                Cached {
                    value: suspended,
                    fetched_ms: now,
                },
            );
        });
        Ok(suspended)
    }
}

/// Where a route looks for the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `Authorization: Bearer`, then `x-api-key`.
    Standard,
    /// As `Standard`, then `x-goog-api-key`, then `?key=` (the Gemini routes).
    Google,
}

fn header_value(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .ok()
        .flatten()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The presented key: `Authorization: Bearer` wins, then `x-api-key`; for `Google`
/// then `x-goog-api-key`, then `?key=`.
fn presented_key(req: &Request, source: KeySource) -> Option<String> {
    if let Some(v) = header_value(req, "authorization") {
        if let Some(t) = bearer_token(&v) {
            return Some(t.to_owned());
        }
    }
    if let Some(v) = header_value(req, "x-api-key") {
        return Some(v);
    }
    if source == KeySource::Standard {
        return None;
    }
    if let Some(v) = header_value(req, "x-goog-api-key") {
        return Some(v);
    }
    let url = req.url().ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Authenticates the request: 401 for a missing, malformed or unknown key or a wrong
/// secret; 403 for a disabled or expired key or a suspended member.
pub async fn authenticate(
    req: &Request,
    store: &KvKeyStore<'_>,
) -> Result<Rc<KeyRecord>, GatewayError> {
    authenticate_from(req, store, KeySource::Standard).await
}

/// [`authenticate`] with the key looked for in `source`.
pub async fn authenticate_from(
    req: &Request,
    store: &KvKeyStore<'_>,
    source: KeySource,
) -> Result<Rc<KeyRecord>, GatewayError> {
    let Some(token) = presented_key(req, source) else {
        let how = match source {
            KeySource::Standard => {
                "Missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`."
            }
            KeySource::Google => {
                "Missing API key: send `x-goog-api-key: <key>`, `?key=<key>` or `Authorization: Bearer <key>`."
            }
        };
        return Err(GatewayError::authentication(how, "missing_api_key"));
    };
    let key = ApiKey::parse(&token).map_err(|_| GatewayError::invalid_api_key())?;
    let record = store
        .get(key.public_id())
        .await?
        .ok_or_else(GatewayError::invalid_api_key)?;
    match record.check(key.secret(), now_s()) {
        Ok(()) => {}
        // A revoked key looks like an unknown one.
        Err(KeyRejection::BadSecret | KeyRejection::Revoked) => {
            return Err(GatewayError::invalid_api_key())
        }
        Err(KeyRejection::Disabled) => {
            return Err(GatewayError::permission_denied(
                "This API key is disabled.",
                "key_disabled",
            ))
        }
        Err(KeyRejection::Expired) => {
            return Err(GatewayError::permission_denied(
                "This API key has expired.",
                "key_expired",
            ))
        }
    }
    if store.member_suspended(&record.member_id).await? {
        return Err(GatewayError::permission_denied(
            "This account is suspended.",
            "member_suspended",
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_freshness_serves_stale_for_one_more_ttl_and_never_with_ttl_zero() {
        assert_eq!(freshness(0, 5000), Freshness::Fresh);
        assert_eq!(freshness(4999, 5000), Freshness::Fresh);
        assert_eq!(freshness(5000, 5000), Freshness::Stale);
        assert_eq!(freshness(9999, 5000), Freshness::Stale);
        assert_eq!(freshness(10_000, 5000), Freshness::Expired);
        assert_eq!(freshness(0, 0), Freshness::Expired);
    }
}
