//! The scheduled job: what must happen on time whether or not anyone calls the API.
//!
//! - Subscriptions whose `expires_at` passed are downgraded at the edge (their keys are
//!   re-pushed without the paid plan, at a new member version), found through the
//!   `SUBEXP` index (`gsi2`, by expiry).
//! - The edge outbox ([`crate::outbox`]) is drained: revocations, status changes,
//!   allowances and credits the edge did not acknowledge are retried.
//! - The payments outbox (orders paid but not yet fulfilled) is retried.
//!
//! In AWS it runs as the `jobs` function on an EventBridge schedule (template.yaml);
//! under `make dev` the `jobs` binary runs the same [`run`] on a timer. Admins can run
//! it at once with `POST /api/admin/jobs/run`. Every step is idempotent, so overlapping
//! runs are harmless.

use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::ApiResult;
use crate::model::{load, member_pk, Subscription, SUBSCRIPTION, SUB_EXPIRY_PK};
use crate::store::{Index, ItemStore, Put, Query};
use crate::sync::EdgeSync;

/// Ends `sub` now (or at its own expiry, if earlier) and downgrades the member's keys at
/// the edge, in one versioned change of the member.
pub async fn expire_subscription<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    sub: Subscription,
    now: u64,
) -> ApiResult<(Subscription, Value)> {
    let ended = Subscription {
        status: "expired".into(),
        expires_at: Some(sub.expires_at.map_or(now, |t| t.min(now))),
        ..sub
    };
    let item = ended.item()?;
    let edge = crate::members::repush_keys(
        st,
        &ended.member_id,
        |_| Ok(vec![(item.clone(), Put::Upsert)]),
        Some(ended.clone()),
        now,
    )
    .await?;
    Ok((ended, edge))
}

/// Downgrades every subscription whose expiry passed, oldest first, up to `limit`.
pub async fn downgrade_expired<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    now: u64,
    limit: usize,
) -> ApiResult<Vec<String>> {
    let due = st
        .store
        .query(Query::index(Index::Gsi2, SUB_EXPIRY_PK, "").limit(limit))
        .await?;
    let mut done = Vec::new();
    for it in due {
        let Some((_, sk)) = &it.gsi2 else { continue };
        let at = sk
            .split('#')
            .next()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if at > now {
            break;
        }
        // The stored subscription decides (the index may lag a renewal).
        let member_id = it.pk.trim_start_matches("MEMBER#").to_owned();
        let sub: Option<Subscription> =
            load(&st.store, &member_pk(&member_id), SUBSCRIPTION, now).await?;
        match sub {
            Some(s) if s.status == "active" && s.expires_at.is_some_and(|t| t <= now) => {
                expire_subscription(st, s, now).await?;
                done.push(member_id);
            }
            Some(s) if s.status == "active" => {}
            // Ended some other way: drop it from the index.
            Some(s) => {
                st.store.put(s.item()?, Put::Upsert).await?;
            }
            None => {}
        }
    }
    Ok(done)
}

/// One run of every job; `force` retries outbox entries before their backoff ends.
pub async fn run<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    now: u64,
    force: bool,
) -> ApiResult<Value> {
    let downgraded = downgrade_expired(st, now, 200).await?;
    let outbox = crate::outbox::drain(st, now, force, 500).await?;
    let payments = crate::payments::fulfil::run_outbox(st, now, force, 100).await?;
    let report = json!({"downgraded": downgraded, "edge_outbox": outbox,
                        "payments_outbox": payments, "at": now});
    println!(
        "{}",
        json!({"msg": "jobs", "plane": "admin", "report": report})
    );
    Ok(report)
}
