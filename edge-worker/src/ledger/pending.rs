//! Durable pending settlements: a settlement that failed after its retries is stored here
//! (in D1, else in KV `KEYS` under `pending-settle:<request id>` when D1 itself is what
//! fails) and finished by the Cron Trigger ([`finish_all`]). Settling is idempotent by
//! request id, so finishing one twice changes nothing.

use serde::{Deserialize, Serialize};
use worker::{D1Database, Env};

use super::{num, settle, stmt, text, Admission, Outcome, SettleResult};
use crate::context::{log_error, log_event};

/// KV prefix of pending settlements stored when D1 was unavailable.
pub const KV_PREFIX: &str = "pending-settle:";

/// One pending settlement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub admission: Admission,
    pub outcome: Outcome,
}

/// Stores a settlement to be finished later: D1 first, KV when D1 fails. Returns
/// whether it was stored anywhere (if not, the reservation's expiry still charges it).
pub async fn store(env: &Env, db: Option<&D1Database>, p: &Pending, now: u64) -> bool {
    let (Ok(admission), Ok(outcome)) = (
        serde_json::to_string(&p.admission),
        serde_json::to_string(&p.outcome),
    ) else {
        return false;
    };
    if let Some(db) = db {
        let stored = stmt(
            db,
            "INSERT INTO pending_settlements (request_id, admission, outcome, attempts, \
               created_at, updated_at) VALUES (?1, ?2, ?3, 0, ?4, ?4) \
             ON CONFLICT (request_id) DO UPDATE SET outcome = excluded.outcome, \
               updated_at = excluded.updated_at",
            &[
                text(&p.admission.request_id),
                text(&admission),
                text(&outcome),
                num(now),
            ],
        );
        if let Ok(s) = stored {
            if s.run().await.is_ok() {
                return true;
            }
        }
    }
    let Ok(json) = serde_json::to_string(p) else {
        return false;
    };
    match env.kv("KEYS") {
        Ok(kv) => match kv.put(&format!("{KV_PREFIX}{}", p.admission.request_id), json) {
            Ok(put) => put.execute().await.is_ok(),
            Err(_) => false,
        },
        Err(_) => false,
    }
}

#[derive(Deserialize)]
struct Row {
    request_id: String,
    admission: String,
    outcome: String,
}

/// Finishes up to `limit` pending settlements (D1 rows, then KV entries). Returns how
/// many were settled or found already settled.
pub async fn finish_all(env: &Env, db: &D1Database, limit: u64) -> worker::Result<u64> {
    let mut done = 0u64;
    let rows: Vec<Row> = stmt(
        db,
        "SELECT request_id, admission, outcome FROM pending_settlements \
         ORDER BY updated_at LIMIT ?1",
        &[num(limit)],
    )?
    .all()
    .await?
    .results()?;
    for r in rows {
        let parsed = serde_json::from_str::<Admission>(&r.admission)
            .ok()
            .zip(serde_json::from_str::<Outcome>(&r.outcome).ok());
        let finished = match parsed {
            Some((adm, outcome)) => settle(db, &adm, &outcome).await.is_ok(),
            // Unreadable: nothing can settle it; the expiry charges the reservation.
            None => true,
        };
        if finished {
            stmt(
                db,
                "DELETE FROM pending_settlements WHERE request_id = ?1",
                &[text(&r.request_id)],
            )?
            .run()
            .await?;
            done += 1;
        } else {
            stmt(
                db,
                "UPDATE pending_settlements SET attempts = attempts + 1 WHERE request_id = ?1",
                &[text(&r.request_id)],
            )?
            .run()
            .await?;
        }
    }
    let kv = env.kv("KEYS")?;
    let listed = kv
        .list()
        .prefix(KV_PREFIX.to_owned())
        .limit(limit)
        .execute()
        .await;
    if let Ok(listed) = listed {
        for key in listed.keys {
            let Ok(Some(p)) = kv.get(&key.name).json::<Pending>().await else {
                continue;
            };
            match settle(db, &p.admission, &p.outcome).await {
                Ok(SettleResult::Settled { .. } | SettleResult::AlreadySettled) => {
                    let _ = kv.delete(&key.name).await;
                    done += 1;
                }
                Err(e) => log_error(
                    "pending settlement still failing",
                    serde_json::json!({"request_id": p.admission.request_id, "error": e.to_string()}),
                ),
            }
        }
    }
    if done > 0 {
        log_event(
            "pending settlements finished",
            serde_json::json!({ "count": done }),
        );
    }
    Ok(done)
}

/// How many settlements are pending in D1 (tests and the balance view).
pub async fn count(db: &D1Database) -> worker::Result<u64> {
    let row: Option<super::CountRow> =
        stmt(db, "SELECT COUNT(*) AS n FROM pending_settlements", &[])?
            .first(None)
            .await?;
    Ok(row.map_or(0, |r| super::non_negative(r.n)))
}
