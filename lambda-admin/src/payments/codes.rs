//! Redemption codes: admins generate batches worth a wallet amount or one plan period;
//! members redeem each code once.
//!
//! | item | pk | sk | gsi1 |
//! |---|---|---|---|
//! | code | `CODE#<sha256(code)>` | `#` | `CODEBATCH#<batch>` / `<hash>` |
//! | redemption | `CODE#<sha256(code)>` | `REDEEMED` | `CODEBATCH#<batch>#REDEEMED` / `<hash>` |
//! | batch | `CODEBATCH#<batch>` | `#` | `CODEBATCHES` / `<created:010>#<batch>` |
//!
//! Only the hash of a code is stored; the codes are shown once, when generated. A
//! redemption writes the `REDEEMED` item `IfAbsent` in the same transaction as a paid
//! order, so of two concurrent redemptions exactly one succeeds, and the order goes
//! through the same fulfilment (and outbox) as a paid one.

use lambda_http::{Body, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollbooth_core::auth::sha256;

use crate::app::{created, ok, AppState, Claims, Ctx};
use crate::crypto::{new_id, random_bytes};
use crate::error::{ApiError, ApiResult};
use crate::members::current_member;
use crate::model::{from_item, index1, load, plan_pk, to_item, Plan, ONE};
use crate::store::{ItemStore, Put};
use crate::sync::EdgeSync;

use super::fulfil::{fulfil, grant_for, LEASE_SECS};
use super::order::*;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const MAX_BATCH: u32 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CodeValue {
    /// Wallet micro-units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_micros: Option<u64>,
    /// One period of this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCode {
    pub batch_id: String,
    pub value: CodeValue,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    pub value: CodeValue,
    pub count: u32,
    pub expires_at: u64,
    pub created_at: u64,
    pub created_by: String,
    #[serde(default)]
    pub note: String,
}

fn code_pk(hash: &str) -> String {
    format!("CODE#{hash}")
}

/// Upper case, without dashes and spaces: what is hashed.
pub fn normalize_code(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn hash_code(raw: &str) -> String {
    hex::encode(sha256(normalize_code(raw).as_bytes()))
}

/// A new code: `TB-` and 20 Crockford base32 characters (100 bits) in groups of five.
pub fn new_code() -> ApiResult<String> {
    let bytes = random_bytes::<20>()?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| {
            ALPHABET
                .get(usize::from(b & 31))
                .map(|c| char::from(*c))
                .unwrap_or('0')
        })
        .collect();
    let groups: Vec<String> = chars.chunks(5).map(|g| g.iter().collect()).collect();
    Ok(format!("TB-{}", groups.join("-")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    count: u32,
    #[serde(default)]
    wallet_micros: Option<u64>,
    #[serde(default)]
    plan_id: Option<String>,
    /// Unix seconds; default 365 days from now.
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    note: String,
}

/// `POST /api/admin/redemption-codes`: the codes are in this answer only.
pub async fn create_batch<S: ItemStore, E>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    admin: &Claims,
) -> ApiResult<Response<Body>> {
    let b: BatchBody = ctx.json()?;
    if b.count == 0 || b.count > MAX_BATCH {
        return Err(ApiError::invalid(
            "count",
            format!("count must be 1-{MAX_BATCH}"),
        ));
    }
    let value = match (b.wallet_micros, b.plan_id) {
        (Some(w), None) if w > 0 && i64::try_from(w).is_ok() => CodeValue {
            wallet_micros: Some(w),
            plan_id: None,
        },
        (None, Some(p)) => {
            load::<Plan, _>(&st.store, &plan_pk(&p), ONE, ctx.now)
                .await?
                .ok_or_else(|| ApiError {
                    param: Some("plan_id".into()),
                    ..ApiError::not_found("plan")
                })?;
            CodeValue {
                wallet_micros: None,
                plan_id: Some(p),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "wallet_micros",
                "give exactly one of wallet_micros (> 0) or plan_id",
            ))
        }
    };
    let expires_at = b
        .expires_at
        .unwrap_or_else(|| ctx.now.saturating_add(365 * 86_400));
    if expires_at <= ctx.now {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let note: String = b.note.trim().chars().take(200).collect();
    let batch = Batch {
        id: new_id()?,
        value: value.clone(),
        count: b.count,
        expires_at,
        created_at: ctx.now,
        created_by: admin.sub.clone(),
        note,
    };
    let mut codes = Vec::with_capacity(b.count as usize);
    let mut items = Vec::new();
    for _ in 0..b.count {
        let code = new_code()?;
        let h = hash_code(&code);
        let stored = StoredCode {
            batch_id: batch.id.clone(),
            value: value.clone(),
            expires_at,
        };
        items.push((
            to_item(code_pk(&h), ONE, &stored)?.gsi1(format!("CODEBATCH#{}", batch.id), h),
            Put::IfAbsent,
        ));
        codes.push(code);
    }
    for chunk in items.chunks(25) {
        st.store.put_all(chunk.to_vec()).await?;
    }
    st.store
        .put(
            to_item(format!("CODEBATCH#{}", batch.id), ONE, &batch)?.gsi1(
                "CODEBATCHES",
                format!("{:010}#{}", batch.created_at, batch.id),
            ),
            Put::IfAbsent,
        )
        .await?;
    crate::admin::audit(
        st,
        ctx,
        admin,
        "codes.create",
        &batch.id,
        json!({"count": batch.count, "value": value, "expires_at": expires_at}),
    )
    .await?;
    created(json!({"batch": batch, "codes": codes}))
}

/// `GET /api/admin/redemption-codes`: batches with their redemption counts.
pub async fn list_batches<S: ItemStore, E>(
    st: &AppState<S, E>,
    _ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let batches = st.store.query(index1("CODEBATCHES").desc()).await?;
    let mut out = Vec::new();
    for it in batches {
        let b: Batch = from_item(&it)?;
        let redeemed = st
            .store
            .query(index1(&format!("CODEBATCH#{}#REDEEMED", b.id)))
            .await?
            .len();
        let mut v = serde_json::to_value(&b).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("redeemed".into(), json!(redeemed));
        }
        out.push(v);
    }
    ok(json!({"data": out}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    code: String,
}

/// `POST /api/me/redeem`.
pub async fn redeem_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let m = current_member(st, ctx).await?;
    let b: RedeemBody = ctx.json()?;
    let invalid = || ApiError {
        param: Some("code".into()),
        ..ApiError::new(
            404,
            "invalid_request_error",
            "invalid_code",
            "this code is not valid",
        )
    };
    if b.code.len() > 64 {
        return Err(invalid());
    }
    let h = hash_code(&b.code);
    let stored: StoredCode = load(&st.store, &code_pk(&h), ONE, ctx.now)
        .await?
        .ok_or_else(invalid)?;
    if stored.expires_at <= ctx.now {
        return Err(ApiError {
            param: Some("code".into()),
            ..ApiError::new(
                410,
                "invalid_request_error",
                "code_expired",
                "this code has expired",
            )
        });
    }
    let grant = match &stored.value.plan_id {
        Some(p) => Some(grant_for(&st.store, p, ctx.now).await?),
        None => None,
    };
    let id = new_id()?;
    let order = Order {
        id: id.clone(),
        member_id: m.id.clone(),
        kind: if grant.is_some() {
            OrderKind::Plan
        } else {
            OrderKind::Topup
        },
        provider: PaymentProvider::Code,
        amount_minor: 0,
        currency: "XXX".into(),
        credit_micros: stored.value.wallet_micros.unwrap_or(0),
        plan_id: stored.value.plan_id.clone(),
        description: "redemption code".into(),
        state: OrderState::Paid,
        version: 1,
        created_at: ctx.now,
        expires_at: ctx.now,
        paid_at: Some(ctx.now),
        fulfilled_at: None,
        refunded_at: None,
        provider_ref: None,
        payment_ref: None,
        checkout_url: None,
        grant,
        refunded_minor: 0,
        refund_debits: vec![],
        flags: vec![],
        code_batch: Some(stored.batch_id.clone()),
        plan_terms: None,
    };
    let redemption = to_item(
        code_pk(&h),
        "REDEEMED",
        &json!({"member_id": m.id, "order_id": id, "at": ctx.now}),
    )?
    .gsi1(format!("CODEBATCH#{}#REDEEMED", stored.batch_id), h.clone());
    let outbox = OutboxEntry {
        order_id: id.clone(),
        next_attempt_at: ctx.now.saturating_add(LEASE_SECS),
        attempts: 0,
        last_error: None,
    };
    match create(
        &st.store,
        &order,
        vec![(redemption, Put::IfAbsent), (outbox.item()?, Put::Upsert)],
    )
    .await
    {
        Ok(()) => {}
        Err(e) if e.status == 409 => {
            return Err(ApiError {
                param: Some("code".into()),
                ..ApiError::conflict("this code has already been redeemed")
            })
        }
        Err(e) => return Err(e),
    }
    let done = fulfil(st, &id, ctx.now).await.unwrap_or(order);
    ok(json!({"order": done.public()}))
}
