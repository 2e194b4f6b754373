//! The edge outbox: every control-plane change the edge must learn (key records and
//! revocations, member records and status, allowances, wallet credits) is written to
//! DynamoDB as an outbox entry, in the same transaction as the change where the change
//! is a single write, then sent at once. An entry is deleted only when the edge
//! acknowledges it: any 2xx, including the edge's `{"applied": false, "stale": true}`
//! (a newer version is already there) and `{"revoked": true}` (a tombstone) answers.
//! What the edge did not acknowledge stays and is retried by [`drain`] (the scheduled
//! job, `jobs.rs`), with exponential backoff, until it is.
//!
//! Order between entries does not matter for correctness: key and member records carry
//! the member's version (the edge ignores lower versions), a revocation is a tombstone
//! no later PUT can overwrite, and allowance grants and credits are idempotent by id.
//! Every entry keeps its idempotency key, so a retry of a call that did reach the edge
//! changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::model::{from_item, to_item};
use crate::store::{Item, ItemStore, Put, Query};
use crate::sync::{EdgeSync, SyncCall};

/// The outbox partition (sort key `{created_at:010}#{id}`, oldest first).
pub const EDGE_OUTBOX_PK: &str = "EDGEOUTBOX";
/// The longest wait between two attempts of one entry.
pub const MAX_BACKOFF_SECS: u64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub id: String,
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: Option<Value>,
    pub idempotency_key: String,
    pub created_at: u64,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub next_attempt_at: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Entry {
    pub fn new(call: &SyncCall, now: u64) -> ApiResult<Entry> {
        Ok(Entry {
            id: crate::crypto::new_id()?,
            method: call.method.to_owned(),
            path: call.path.clone(),
            body: call.body.clone(),
            idempotency_key: call.idempotency_key.clone(),
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
        })
    }

    pub fn sk(&self) -> String {
        format!("{:010}#{}", self.created_at, self.id)
    }

    pub fn item(&self) -> ApiResult<Item> {
        to_item(EDGE_OUTBOX_PK.into(), self.sk(), self)
    }

    pub fn call(&self) -> ApiResult<SyncCall> {
        let method = match self.method.as_str() {
            "PUT" => "PUT",
            "POST" => "POST",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            _ => return Err(ApiError::internal("outbox entry with an unknown method")),
        };
        Ok(SyncCall {
            method,
            path: self.path.clone(),
            body: self.body.clone(),
            idempotency_key: self.idempotency_key.clone(),
        })
    }
}

/// Entries for `calls`, to be written with the change they announce.
pub fn entries(calls: &[SyncCall], now: u64) -> ApiResult<Vec<Entry>> {
    calls.iter().map(|c| Entry::new(c, now)).collect()
}

/// The items to add to the change's own `put_all`.
pub fn items(entries: &[Entry]) -> ApiResult<Vec<(Item, Put)>> {
    entries
        .iter()
        .map(|e| Ok((e.item()?, Put::IfAbsent)))
        .collect()
}

/// Sends entries already stored, deleting each one the edge acknowledges. The answer
/// for the response: `{"synced": true}` or `{"synced": false, "queued": n, "errors"}`
/// (queued entries are retried by the job; the change is not lost).
pub async fn deliver<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    entries: Vec<Entry>,
    now: u64,
) -> Value {
    let mut errors = Vec::new();
    for e in entries {
        if let Err(msg) = attempt(st, e, now).await {
            errors.push(msg);
        }
    }
    if errors.is_empty() {
        json!({"synced": true})
    } else {
        json!({"synced": false, "queued": errors.len(), "errors": errors})
    }
}

/// Stores entries for `calls` (one transaction) and sends them: for changes whose own
/// write already happened.
pub async fn send<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    calls: Vec<SyncCall>,
    now: u64,
) -> ApiResult<Value> {
    if calls.is_empty() {
        return Ok(json!({"synced": true}));
    }
    let entries = entries(&calls, now)?;
    st.store.put_all(items(&entries)?).await?;
    Ok(deliver(st, entries, now).await)
}

/// One attempt: on acknowledgement the entry is deleted; on failure it is rescheduled
/// (only if it is still there: a concurrent drain may have delivered it).
async fn attempt<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    e: Entry,
    now: u64,
) -> Result<(), String> {
    let call = e.call().map_err(|x| x.message)?;
    match st.sync.send(call).await {
        Ok(_) => {
            st.store
                .delete(EDGE_OUTBOX_PK, &e.sk())
                .await
                .map_err(|x| x.to_string())?;
            Ok(())
        }
        Err(err) => {
            let msg = err.to_string();
            let attempts = e.attempts.saturating_add(1);
            let backoff = 5u64
                .saturating_mul(2u64.saturating_pow(attempts.min(16)))
                .min(MAX_BACKOFF_SECS);
            let next = Entry {
                attempts,
                next_attempt_at: now.saturating_add(backoff),
                last_error: Some(msg.clone()),
                ..e
            };
            if let Ok(Some(_)) = st.store.get(EDGE_OUTBOX_PK, &next.sk()).await {
                if let Ok(item) = next.item() {
                    let _ = st.store.put(item, Put::Upsert).await;
                }
            }
            Err(msg)
        }
    }
}

/// Sends every due entry (every entry with `force`), oldest first, up to `limit`.
pub async fn drain<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    now: u64,
    force: bool,
    limit: usize,
) -> ApiResult<Value> {
    let items = st
        .store
        .query(Query::table(EDGE_OUTBOX_PK, "").limit(1000))
        .await?;
    let (mut delivered, mut failed, mut waiting) = (0usize, 0usize, 0usize);
    for it in items {
        let Ok(entry) = from_item::<Entry>(&it) else {
            continue;
        };
        if (!force && entry.next_attempt_at > now) || delivered + failed >= limit {
            waiting += 1;
            continue;
        }
        match attempt(st, entry, now).await {
            Ok(()) => delivered += 1,
            Err(_) => failed += 1,
        }
    }
    Ok(json!({"delivered": delivered, "failed": failed, "waiting": waiting}))
}

/// The entries waiting (for the admin view and tests).
pub async fn pending<S: ItemStore>(store: &S) -> ApiResult<Vec<Entry>> {
    store
        .query(Query::table(EDGE_OUTBOX_PK, "").limit(1000))
        .await?
        .iter()
        .map(from_item)
        .collect()
}
