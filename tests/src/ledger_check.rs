//! The ledger invariant every billing test checks after every request, refused or
//! served: **the ledger equals the sum of its usage events.**
//!
//! For each allowance period of the member: `used` = the sum of `charged` of its usage
//! events, and `reserved` = the sum of its open reservations. For the wallet: `balance`
//! = credits − the sum of `charged` of its usage events, and `reserved` = its open
//! reservations. No reservation is closed (settled or expired) without a usage event.
//! The numbers come from `GET /internal/v1/members/{id}/audit`, computed by D1 from the
//! rows themselves.

use serde_json::Value;

use crate::sync_client::{BoxError, SyncClient};

/// One audited member.
#[derive(Debug, Clone)]
pub struct Audit {
    pub raw: Value,
    /// Open reservations of the member.
    pub open_reservations: i64,
    /// Usage events of the member.
    pub events: i64,
}

fn int(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// Reads the audit and checks the invariant; `Err` names what does not add up.
pub async fn check(sync: &SyncClient, member: &str) -> Result<Audit, BoxError> {
    let r = sync.audit(member).await?;
    if r.status != 200 {
        return Err(format!("audit of {member}: status {} {}", r.status, r.body).into());
    }
    let body = r.body;
    let mut problems = Vec::new();
    for a in body["allowances"].as_array().cloned().unwrap_or_default() {
        let (used, charged) = (int(&a, "used"), int(&a, "events_charged"));
        if used != charged {
            problems.push(format!(
                "allowance {}: used {used} != usage events {charged}",
                a["period_start"]
            ));
        }
        let (reserved, open) = (int(&a, "reserved"), int(&a, "open_reserved"));
        if reserved != open {
            problems.push(format!(
                "allowance {}: reserved {reserved} != open reservations {open}",
                a["period_start"]
            ));
        }
        if used < 0 || reserved < 0 {
            problems.push(format!(
                "allowance {}: negative counts {a}",
                a["period_start"]
            ));
        }
    }
    let w = &body["wallet"];
    let balance = int(w, "balance_micros");
    let expected = int(w, "credits_micros") - int(w, "events_charged");
    if !w["balance_micros"].is_null() && balance != expected {
        problems.push(format!(
            "wallet: balance {balance} != credits {} - usage events {}",
            int(w, "credits_micros"),
            int(w, "events_charged")
        ));
    }
    if w["balance_micros"].is_null() && int(w, "events_charged") != 0 {
        problems.push(format!(
            "wallet: no wallet row, but usage events charged {}",
            int(w, "events_charged")
        ));
    }
    if int(w, "reserved_micros") != int(w, "open_reserved") {
        problems.push(format!(
            "wallet: reserved {} != open reservations {}",
            int(w, "reserved_micros"),
            int(w, "open_reserved")
        ));
    }
    if int(w, "closed_without_event") != 0 {
        problems.push(format!(
            "{} closed reservations have no usage event",
            int(w, "closed_without_event")
        ));
    }
    if !problems.is_empty() {
        return Err(format!("ledger of {member} does not add up: {problems:?}\n{body}").into());
    }
    Ok(Audit {
        open_reservations: int(w, "open_reservations"),
        events: int(w, "events"),
        raw: body,
    })
}

/// [`check`], panicking with the reason (for tests).
pub async fn assert_balanced(sync: &SyncClient, member: &str) -> Audit {
    match check(sync, member).await {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

/// Waits until the member has no open reservation (settlement runs in `wait_until`),
/// then checks the invariant.
pub async fn settled_and_balanced(sync: &SyncClient, member: &str) -> Audit {
    for _ in 0..300 {
        let a = assert_balanced(sync, member).await;
        if a.open_reservations == 0 {
            return a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("reservations of {member} never settled");
}
