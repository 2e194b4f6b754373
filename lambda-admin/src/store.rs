//! Store ports the handlers are generic over, and the in-memory adapter for unit tests.
//!
//! The port is deliberately small and item-shaped, mirroring the single-table design in
//! docs/dynamodb.md: every entity is one [`Item`] with `pk`/`sk`, up to two GSI key
//! pairs, an optional `ttl` and a JSON document. The domain repositories in
//! [`crate::repo`] build on it, so the in-memory adapter and DynamoDB behave the same and
//! one contract suite (tests/tests/dynamo_contract.rs) covers both.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A condition failed: the item already exists (or, for `take`, is gone).
    #[error("conflict")]
    Conflict,
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
}

/// What every store must answer: is the backing table reachable.
pub trait HealthStore: Send + Sync {
    /// Returns the backing table's status (e.g. `ACTIVE`) or an error.
    fn ping(&self) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// The two overloaded global secondary indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    Gsi1,
    Gsi2,
}

impl Index {
    pub fn name(self) -> &'static str {
        match self {
            Index::Gsi1 => "gsi1",
            Index::Gsi2 => "gsi2",
        }
    }
}

/// One row of the single table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub gsi1: Option<(String, String)>,
    pub gsi2: Option<(String, String)>,
    /// Epoch seconds after which the item is dead (DynamoDB deletes it lazily, so
    /// readers must check it too).
    pub ttl: Option<u64>,
    /// Optimistic-concurrency version (attribute `ver`), checked by [`Put::IfVersion`].
    pub version: Option<u64>,
    /// The entity as JSON.
    pub data: String,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>, data: String) -> Self {
        Item {
            pk: pk.into(),
            sk: sk.into(),
            data,
            ..Item::default()
        }
    }
    pub fn gsi1(mut self, pk: impl Into<String>, sk: impl Into<String>) -> Self {
        self.gsi1 = Some((pk.into(), sk.into()));
        self
    }
    pub fn gsi2(mut self, pk: impl Into<String>, sk: impl Into<String>) -> Self {
        self.gsi2 = Some((pk.into(), sk.into()));
        self
    }
    pub fn ttl(mut self, ttl: u64) -> Self {
        self.ttl = Some(ttl);
        self
    }
    pub fn version(mut self, v: u64) -> Self {
        self.version = Some(v);
        self
    }
    /// Whether the item is expired at `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.ttl.is_some_and(|t| t <= now)
    }
}

/// Whether a put may overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Create or replace.
    Upsert,
    /// Fail with [`StoreError::Conflict`] when an item with the same key exists.
    IfAbsent,
    /// Compare-and-swap: replace only while the stored item's version is `n` (an absent
    /// item, or one written before versions, counts as version 0); otherwise
    /// [`StoreError::Conflict`]. The new item carries its own (higher) version.
    IfVersion(u64),
}

/// The outcome of [`ItemStore::hit`], an atomic attempt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// Counted: this is attempt `count` of the window (1-based), `count <= limit`.
    Counted { count: u64 },
    /// The window already holds `limit` attempts; it ends at `until` (epoch seconds).
    Refused { until: u64 },
}

/// A query: items of one partition (of the table or an index) whose sort key starts
/// with `sk_prefix`, in sort-key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub index: Option<Index>,
    pub pk: String,
    pub sk_prefix: String,
    pub descending: bool,
    pub limit: usize,
}

impl Query {
    pub fn table(pk: impl Into<String>, sk_prefix: impl Into<String>) -> Self {
        Query {
            index: None,
            pk: pk.into(),
            sk_prefix: sk_prefix.into(),
            descending: false,
            limit: 1000,
        }
    }
    pub fn index(index: Index, pk: impl Into<String>, sk_prefix: impl Into<String>) -> Self {
        Query {
            index: Some(index),
            ..Query::table(pk, sk_prefix)
        }
    }
    pub fn desc(mut self) -> Self {
        self.descending = true;
        self
    }
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }
}

/// The item-level port.
pub trait ItemStore: HealthStore {
    fn get(
        &self,
        pk: &str,
        sk: &str,
    ) -> impl Future<Output = Result<Option<Item>, StoreError>> + Send;
    fn put(&self, item: Item, mode: Put) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// All puts or none (DynamoDB `TransactWriteItems`); any failed `IfAbsent` makes the
    /// whole write fail with [`StoreError::Conflict`].
    fn put_all(
        &self,
        items: Vec<(Item, Put)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete(&self, pk: &str, sk: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes the item and returns it, atomically: of two concurrent takers only one
    /// gets `Some` (single-use tokens).
    fn take(
        &self,
        pk: &str,
        sk: &str,
    ) -> impl Future<Output = Result<Option<Item>, StoreError>> + Send;
    fn query(&self, q: Query) -> impl Future<Output = Result<Vec<Item>, StoreError>> + Send;
    /// Counts one attempt in the window item `pk`/`sk`, atomically: when the window
    /// (which starts at its first attempt and lasts `window_secs`) already holds `limit`
    /// attempts the attempt is refused and nothing changes. Of N concurrent callers at
    /// most `limit` per window are counted. An expired window starts over. Delete the
    /// item to reset the count.
    fn hit(
        &self,
        pk: &str,
        sk: &str,
        limit: u64,
        window_secs: u64,
        now: u64,
    ) -> impl Future<Output = Result<Hit, StoreError>> + Send;
}

/// The data of a window item written by [`ItemStore::hit`] (the count lives in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub count: u64,
}

/// In-memory store for fast handler tests. Clones share the same data.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    pub down: bool,
    items: Arc<Mutex<BTreeMap<(String, String), Item>>>,
}

impl MemoryStore {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<(String, String), Item>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.down {
            return Err(StoreError::Unavailable("memory store marked down".into()));
        }
        let mut guard = self
            .items
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        f(&mut guard)
    }
}

impl MemoryStore {
    /// Number of stored items (tests check that refused input wrote nothing).
    pub fn item_count(&self) -> usize {
        self.items.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Every stored item's JSON, for tests that look for leaked secrets.
    pub fn dump(&self) -> String {
        self.items
            .lock()
            .map(|m| {
                m.values()
                    .map(|i| i.data.clone())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

impl HealthStore for MemoryStore {
    async fn ping(&self) -> Result<String, StoreError> {
        self.with(|_| Ok("ACTIVE".to_owned()))
    }
}

impl ItemStore for MemoryStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.with(|m| Ok(m.get(&(pk.to_owned(), sk.to_owned())).cloned()))
    }

    async fn put(&self, item: Item, mode: Put) -> Result<(), StoreError> {
        self.put_all(vec![(item, mode)]).await
    }

    async fn put_all(&self, items: Vec<(Item, Put)>) -> Result<(), StoreError> {
        self.with(|m| {
            for (item, mode) in &items {
                let stored = m.get(&(item.pk.clone(), item.sk.clone()));
                match mode {
                    Put::IfAbsent if stored.is_some() => return Err(StoreError::Conflict),
                    Put::IfVersion(n) if stored.and_then(|s| s.version).unwrap_or(0) != *n => {
                        return Err(StoreError::Conflict)
                    }
                    _ => {}
                }
            }
            for (item, _) in items {
                m.insert((item.pk.clone(), item.sk.clone()), item);
            }
            Ok(())
        })
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.with(|m| {
            m.remove(&(pk.to_owned(), sk.to_owned()));
            Ok(())
        })
    }

    async fn take(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.with(|m| Ok(m.remove(&(pk.to_owned(), sk.to_owned()))))
    }

    async fn query(&self, q: Query) -> Result<Vec<Item>, StoreError> {
        self.with(|m| {
            let mut out: Vec<(String, Item)> = m
                .values()
                .filter_map(|it| {
                    let (pk, sk) = match q.index {
                        None => (it.pk.clone(), it.sk.clone()),
                        Some(Index::Gsi1) => it.gsi1.clone()?,
                        Some(Index::Gsi2) => it.gsi2.clone()?,
                    };
                    (pk == q.pk && sk.starts_with(&q.sk_prefix)).then(|| (sk, it.clone()))
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            if q.descending {
                out.reverse();
            }
            out.truncate(q.limit);
            Ok(out.into_iter().map(|(_, it)| it).collect())
        })
    }

    async fn hit(
        &self,
        pk: &str,
        sk: &str,
        limit: u64,
        window_secs: u64,
        now: u64,
    ) -> Result<Hit, StoreError> {
        self.with(|m| {
            let key = (pk.to_owned(), sk.to_owned());
            let current = m
                .get(&key)
                .filter(|it| !it.expired(now))
                .map(|it| {
                    serde_json::from_str::<Window>(&it.data)
                        .map(|w| (w.count, it.ttl.unwrap_or(now)))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .transpose()?;
            let (count, until) = match current {
                Some((count, until)) if count >= limit => return Ok(Hit::Refused { until }),
                Some((count, until)) => (count + 1, until),
                None if limit == 0 => {
                    return Ok(Hit::Refused {
                        until: now.saturating_add(window_secs),
                    })
                }
                None => (1, now.saturating_add(window_secs)),
            };
            let data = serde_json::to_string(&Window { count })
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            m.insert(key, Item::new(pk, sk, data).ttl(until));
            Ok(Hit::Counted { count })
        })
    }
}
