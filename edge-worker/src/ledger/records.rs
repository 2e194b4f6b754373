//! Versions and tombstones of the records the control plane pushes into KV `KEYS` (key
//! records, member records). D1 is the arbiter: a write applies only when its version is
//! not lower than the stored one and the record is not a revoked key's tombstone, so a
//! delayed or replayed push can never undo a newer one or bring a revoked key back. KV
//! is then written with what D1 holds, and re-written when a concurrent writer won in
//! between (both writers converge on the highest version).

use serde::Deserialize;
use worker::{D1Database, Env};

use super::{num, stmt, text};

/// What a versioned write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied; the record now stored (with this version).
    Applied,
    /// A higher version is already stored: nothing changed.
    Stale { stored_version: u64 },
    /// The key was revoked: nothing can overwrite its tombstone.
    Revoked,
}

#[derive(Deserialize)]
struct Stored {
    version: i64,
    revoked: i64,
    body: String,
}

async fn stored(db: &D1Database, kind: &str, id: &str) -> worker::Result<Option<Stored>> {
    stmt(
        db,
        "SELECT version, revoked, body FROM edge_records WHERE kind = ?1 AND id = ?2",
        &[text(kind), text(id)],
    )?
    .first(None)
    .await
}

/// One versioned record write.
pub struct Record<'a> {
    /// `key` or `member`.
    pub kind: &'a str,
    pub id: &'a str,
    pub kv_key: &'a str,
    pub version: u64,
    /// The record's JSON, as KV stores it.
    pub body: &'a str,
    /// Marks the record revoked for good.
    pub tombstone: bool,
}

/// Writes the record unless a higher version or a tombstone is stored.
pub async fn write(
    env: &Env,
    db: &D1Database,
    r: &Record<'_>,
    now: u64,
) -> worker::Result<WriteOutcome> {
    let (kind, id, kv_key, version, body, tombstone) =
        (r.kind, r.id, r.kv_key, r.version, r.body, r.tombstone);
    let result = stmt(
        db,
        "INSERT INTO edge_records (kind, id, version, revoked, body, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, \
           revoked = excluded.revoked, body = excluded.body, updated_at = excluded.updated_at \
         WHERE edge_records.revoked = 0 \
           AND (excluded.version >= edge_records.version OR excluded.revoked = 1)",
        &[
            text(kind),
            text(id),
            num(version),
            num(u64::from(tombstone)),
            text(body),
            num(now),
        ],
    )?
    .run()
    .await?;
    if super::changes(&result) == 0 {
        return Ok(match stored(db, kind, id).await? {
            Some(s) if s.revoked != 0 => WriteOutcome::Revoked,
            Some(s) => WriteOutcome::Stale {
                stored_version: super::non_negative(s.version),
            },
            None => WriteOutcome::Stale { stored_version: 0 },
        });
    }
    let kv = env.kv("KEYS")?;
    kv.put(kv_key, body)?.execute().await?;
    // A concurrent writer may have won in D1 after us but written KV before us: repair.
    if let Some(now_stored) = stored(db, kind, id).await? {
        if now_stored.body != body {
            kv.put(kv_key, now_stored.body)?.execute().await?;
        }
    }
    // This isolate serves the new record at once (others within the cache bound).
    match kind {
        "key" => crate::auth::forget_key(id),
        "member" => crate::auth::forget_member(id),
        _ => {}
    }
    Ok(WriteOutcome::Applied)
}

/// The stored body of a record, if D1 has one.
pub async fn body(db: &D1Database, kind: &str, id: &str) -> worker::Result<Option<String>> {
    Ok(stored(db, kind, id).await?.map(|s| s.body))
}
