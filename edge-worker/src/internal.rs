//! The signed internal API (`/internal/v1/...`, docs/sync-api.md): how the control plane
//! changes edge state. The worker is the only writer of KV and D1.
//!
//! Every call: `SYNC_SECRET` configured (else 503) → timestamp within ±300 s and HMAC
//! signature valid (else 401) → signature not seen before (remembered in D1 until stale;
//! else 401) → for POST/PUT/DELETE an idempotency key, whose stored first result is
//! returned on repeats → the handler. Nothing changes before all checks pass.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollbooth_core::auth::signing::{
    parse_timestamp, verify_request, SignedRequest, DEFAULT_WINDOW_SECS, SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
};
use tollbooth_core::catalogue::{Catalogue, CatalogueSnapshot};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use worker::{D1Database, Env, Method, Request, Response, Result};

use crate::ledger::{self, changes, num, stmt, text};

pub const IDEMPOTENCY_HEADER: &str = "x-tollbooth-idempotency-key";
pub const REPLAY_HEADER: &str = "x-tollbooth-idempotent-replay";

/// The member record in KV `KEYS` under `member:<id>`: status (suspended members' keys
/// are refused at the edge) and the profile shown by `/v1/user-profile`.
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
pub async fn member_record(env: &Env, member_id: &str) -> Result<Option<MemberRecord>> {
    Ok(env
        .kv("KEYS")?
        .get(&MemberRecord::kv_key(member_id))
        .json()
        .await?)
}

fn error(err: &GatewayError) -> Result<Response> {
    Ok(Response::from_json(&err.openai_body())?.with_status(err.http_status()))
}

fn unauthorized(message: &str) -> Result<Response> {
    error(&GatewayError::authentication(message, "invalid_signature"))
}

fn bad_request(message: impl Into<String>, param: &str) -> Result<Response> {
    error(&GatewayError::invalid_param(message, param))
}

fn not_found(message: &str) -> Result<Response> {
    error(&GatewayError::NotFound {
        message: message.into(),
        code: Some("not_found".into()),
    })
}

fn ok(extra: Value) -> Result<Response> {
    let mut body = json!({ "ok": true });
    if let (Some(b), Value::Object(m)) = (body.as_object_mut(), extra) {
        b.extend(m);
    }
    Response::from_json(&body)
}

/// Entry point for every `/internal/v1/...` request.
pub async fn internal_handler(mut req: Request, env: &Env) -> Result<Response> {
    // The same checks as every other path (SYNC_SECRET length, ADMIN_ORIGIN, bindings).
    if let Err(msg) = crate::config::Config::get(env) {
        return error(&GatewayError::internal(format!(
            "Invalid gateway configuration: {msg}"
        )));
    }
    let secret = env
        .secret("SYNC_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("SYNC_SECRET").map(|v| v.to_string()))
        .unwrap_or_default();
    if secret.is_empty() {
        return error(&GatewayError::Overloaded {
            message: "The internal API is disabled: SYNC_SECRET is not configured.".into(),
            retry_after_secs: None,
        })
        .map(|r| r.with_status(503));
    }
    let url = req.url()?;
    let path = url.path().to_string();
    let path_and_query = match url.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let method = req.method();
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let (Some(ts), Some(sig)) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)) else {
        return unauthorized("Missing signature or timestamp.");
    };
    let idem_key = header(IDEMPOTENCY_HEADER);
    let Ok(timestamp) = parse_timestamp(&ts) else {
        return unauthorized("Malformed timestamp.");
    };
    let body = req.bytes().await.unwrap_or_default();
    // Freshness uses the real clock, never a test override.
    let now = worker::Date::now().as_millis() / 1000;
    let signed = SignedRequest {
        method: method.as_ref(),
        path_and_query: &path_and_query,
        timestamp,
        body: &body,
    };
    let verified = match verify_request(secret.as_bytes(), &signed, &sig, now, DEFAULT_WINDOW_SECS)
    {
        Ok(v) => v,
        Err(e) => return unauthorized(&format!("Rejected signature: {e}.")),
    };
    let db = ledger::db(env)?;
    // Replay protection: the signature is remembered until it is stale anyway.
    let seen = stmt(
        &db,
        "INSERT INTO seen_signatures (nonce, expires_at) VALUES (?1, ?2) \
         ON CONFLICT (nonce) DO NOTHING",
        &[
            text(&verified.nonce),
            num(verified.remember_until.saturating_add(DEFAULT_WINDOW_SECS)),
        ],
    )?
    .run()
    .await?;
    if changes(&seen) == 0 {
        return unauthorized("Replayed signature.");
    }

    let mutating = matches!(method, Method::Post | Method::Put | Method::Delete);
    let idem_key = match (mutating, idem_key) {
        (true, Some(k)) if !k.trim().is_empty() => Some(k.trim().to_string()),
        (true, _) => {
            return bad_request(
                format!("{IDEMPOTENCY_HEADER} is required on mutating calls."),
                IDEMPOTENCY_HEADER,
            )
        }
        (false, _) => None,
    };
    if let Some(key) = &idem_key {
        if let Some(stored) = stored_result(&db, key).await? {
            if stored.method != method.as_ref() || stored.path != path {
                return bad_request(
                    "Idempotency key was already used for a different request.",
                    IDEMPOTENCY_HEADER,
                );
            }
            let mut resp = Response::ok(stored.body)?.with_status(200);
            resp.headers_mut().set("content-type", "application/json")?;
            resp.headers_mut().set(REPLAY_HEADER, "true")?;
            return Ok(resp);
        }
    }

    let resp = route(&method, &path, &url, &body, env, &db, now).await?;
    if let Some(key) = idem_key {
        if (200..300).contains(&resp.status_code()) {
            let mut resp = resp;
            let text_body = resp.text().await.unwrap_or_default();
            let _ = stmt(
                &db,
                "INSERT OR IGNORE INTO internal_idempotency (idem_key, method, path, status, \
                 body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[
                    text(&key),
                    text(method.as_ref()),
                    text(&path),
                    num(u64::from(resp.status_code())),
                    text(&text_body),
                    num(now),
                ],
            )?
            .run()
            .await;
            let mut out = Response::ok(text_body)?.with_status(resp.status_code());
            out.headers_mut().set("content-type", "application/json")?;
            return Ok(out);
        }
        return Ok(resp);
    }
    Ok(resp)
}

#[derive(Deserialize)]
struct StoredResult {
    method: String,
    path: String,
    body: String,
}

async fn stored_result(db: &D1Database, key: &str) -> Result<Option<StoredResult>> {
    stmt(
        db,
        "SELECT method, path, body FROM internal_idempotency WHERE idem_key = ?1",
        &[text(key)],
    )?
    .first(None)
    .await
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

async fn route(
    method: &Method,
    path: &str,
    url: &worker::Url,
    body: &[u8],
    env: &Env,
    db: &D1Database,
    now: u64,
) -> Result<Response> {
    let rest = path.strip_prefix("/internal/v1/").unwrap_or_default();
    let segs: Vec<&str> = rest.split('/').collect();
    match (method, segs.as_slice()) {
        (Method::Put, ["keys", id]) => put_key(id, body, env).await,
        (Method::Delete, ["keys", id]) => {
            env.kv("KEYS")?.delete(&KeyRecord::kv_key(id)).await?;
            ok(json!({ "public_id": id, "revoked": true }))
        }
        (Method::Put, ["members", id, "status"]) => put_member_status(id, body, env).await,
        (Method::Put, ["members", id]) => put_member(id, body, env).await,
        (Method::Put, ["catalogue"]) => put_catalogue(body, env).await,
        (Method::Post, ["wallets", id, "credits"]) => {
            let credit: ledger::WalletCredit = match parse(body) {
                Ok(c) => c,
                Err(e) => return bad_request(format!("Invalid credit: {e}"), "body"),
            };
            if credit.credit_id.is_empty() {
                return bad_request("credit_id must not be empty", "credit_id");
            }
            let out = ledger::apply_credit(db, id, &credit, now).await?;
            ok(json!({
                "member_id": id,
                "credit_id": credit.credit_id,
                "applied": out.applied,
                "balance_micros": out.balance_micros,
            }))
        }
        (Method::Put, ["allowances", id]) => {
            let grant: ledger::AllowanceGrant = match parse(body) {
                Ok(g) => g,
                Err(e) => return bad_request(format!("Invalid allowance: {e}"), "body"),
            };
            if let Err((field, msg)) = grant.validate() {
                return bad_request(msg, field);
            }
            let applied = ledger::apply_grant(db, id, &grant, now).await?;
            ok(json!({ "member_id": id, "grant_id": grant.grant_id, "applied": applied }))
        }
        (Method::Get, ["members", id, "balance"]) => {
            let balance = ledger::balance(db, id, now).await?;
            let present = |k: &str| balance.get(k).is_some_and(|v| !v.is_null());
            let requests = balance
                .get("usage")
                .and_then(|u| u.get("requests"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let known = present("wallet") || present("allowance") || requests > 0;
            if !known {
                return not_found("Unknown member.");
            }
            ok(balance)
        }
        (Method::Get, ["usage"]) => read_cursor(db, url, Feed::Usage).await,
        (Method::Get, ["rollups"]) => read_cursor(db, url, Feed::Rollups).await,
        (Method::Get, ["captures"]) => read_cursor(db, url, Feed::Captures).await,
        (Method::Post, ["sweep"]) => {
            let released = ledger::sweep_expired(db, None, now, 500).await?;
            ok(json!({ "released": released }))
        }
        _ => not_found("Unknown internal route."),
    }
}

async fn put_key(id: &str, body: &[u8], env: &Env) -> Result<Response> {
    let record: KeyRecord = match parse(body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("Invalid key record: {e}"), "body"),
    };
    if record.public_id != id {
        return bad_request("public_id does not match the path", "public_id");
    }
    let json =
        serde_json::to_string(&record).map_err(|e| worker::Error::RustError(e.to_string()))?;
    env.kv("KEYS")?
        .put(&KeyRecord::kv_key(id), json)?
        .execute()
        .await?;
    ok(json!({ "public_id": id }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
}

async fn put_member_status(id: &str, body: &[u8], env: &Env) -> Result<Response> {
    let status: StatusBody = match parse(body) {
        Ok(s) => s,
        Err(e) => return bad_request(format!("Invalid status: {e}"), "status"),
    };
    if status.status != "active" && status.status != "suspended" {
        return bad_request("status must be active or suspended", "status");
    }
    let mut record = member_record(env, id)
        .await?
        .unwrap_or_else(|| MemberRecord {
            member_id: id.to_string(),
            ..MemberRecord::default()
        });
    record.status = status.status;
    store_member(env, &record).await?;
    ok(json!({ "member_id": id, "status": record.status }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    plan_expires_at: Option<u64>,
}

async fn put_member(id: &str, body: &[u8], env: &Env) -> Result<Response> {
    let b: MemberBody = match parse(body) {
        Ok(b) => b,
        Err(e) => return bad_request(format!("Invalid member profile: {e}"), "body"),
    };
    if let Some(s) = &b.status {
        if s != "active" && s != "suspended" {
            return bad_request("status must be active or suspended", "status");
        }
    }
    let previous = member_record(env, id).await?;
    let record = MemberRecord {
        member_id: id.to_string(),
        status: b
            .status
            .or_else(|| previous.map(|p| p.status))
            .unwrap_or_else(active),
        email: b.email,
        username: b.username,
        plan_expires_at: b.plan_expires_at,
    };
    store_member(env, &record).await?;
    ok(json!({ "member_id": id, "status": record.status }))
}

async fn store_member(env: &Env, record: &MemberRecord) -> Result<()> {
    let json =
        serde_json::to_string(record).map_err(|e| worker::Error::RustError(e.to_string()))?;
    env.kv("KEYS")?
        .put(&MemberRecord::kv_key(&record.member_id), json)?
        .execute()
        .await?;
    Ok(())
}

async fn put_catalogue(body: &[u8], env: &Env) -> Result<Response> {
    let snapshot: CatalogueSnapshot = match parse(body) {
        Ok(s) => s,
        Err(e) => return bad_request(format!("Invalid catalogue: {e}"), "body"),
    };
    let catalogue = match Catalogue::new(snapshot) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("Invalid catalogue: {e}"), "body"),
    };
    let version = catalogue.version().to_string();
    if version.is_empty() {
        return bad_request("version must not be empty", "version");
    }
    let json = serde_json::to_string(catalogue.snapshot())
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let kv = env.kv("CONFIG")?;
    kv.put(&format!("catalogue:v:{version}"), json)?
        .execute()
        .await?;
    kv.put("catalogue:current", version.clone())?
        .execute()
        .await?;
    ok(json!({ "version": version }))
}

#[derive(Clone, Copy)]
enum Feed {
    Usage,
    Rollups,
    Captures,
}

/// `?after=<cursor>&limit=<n>` → `{"events": [...], "next": "<cursor>"}`. Usage events
/// by their sequence number; rollups by revision (a rollup reappears with its new totals
/// whenever it changes, so consumers upsert); captures by their sequence number.
async fn read_cursor(db: &D1Database, url: &worker::Url, feed: Feed) -> Result<Response> {
    let mut after: u64 = 0;
    let mut limit: u64 = 100;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "after" if !v.is_empty() => match v.parse() {
                Ok(n) => after = n,
                Err(_) => return bad_request("after must be a cursor from `next`", "after"),
            },
            "limit" => match v.parse::<u64>() {
                Ok(n) => limit = n.clamp(1, 1000),
                Err(_) => return bad_request("limit must be an integer", "limit"),
            },
            _ => {}
        }
    }
    let (sql, cursor_col) = match feed {
        Feed::Usage => (
            "SELECT * FROM usage_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            "seq",
        ),
        Feed::Rollups => (
            "SELECT * FROM rollups_hourly WHERE rev > ?1 ORDER BY rev LIMIT ?2",
            "rev",
        ),
        Feed::Captures => (
            "SELECT * FROM captures WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            "seq",
        ),
    };
    let rows: Vec<Value> = match stmt(db, sql, &[num(after), num(limit)])?.all().await {
        Ok(r) => r.results()?,
        // Captures are written by the capture feature's own migration; until it exists
        // the feed is empty.
        Err(_) if matches!(feed, Feed::Captures) => Vec::new(),
        Err(e) => return Err(e),
    };
    let next = rows
        .last()
        .and_then(|r| r.get(cursor_col).and_then(Value::as_u64))
        .unwrap_or(after);
    ok(json!({ "events": rows, "next": next.to_string() }))
}
