//! The review API on the signed internal API (docs/sync-api.md, "Captures"): list
//! conversations with filters and a cursor, view one, mark it (confirmed / rejected,
//! tags, note), mark many over a filter, delete one, delete a member's data, read one
//! capture and the write counters. Retention ([`prune`]) is run by the Cron Trigger.
//!
//! Conversations page newest first by their immutable `seq`; a conversation is listed
//! once, in its longest form. Text search (`q`) looks at each conversation's bounded
//! search window (the last 4096 characters of its longest form, lowercased) and, unless
//! `from` is given, only at conversations active in the last [`SEARCH_DAYS`] days.

use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use tollbooth_core::error::GatewayError;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, Env, Method, Url};

use super::store::BUCKET;
use crate::context::EdgeError;
use crate::handlers::internal::{bad_request as bad, not_found, ok};
use crate::ledger::{num, stmt, text};
use crate::middleware::internal;

/// Default window of a text search without `from`, in days.
pub const SEARCH_DAYS: u64 = 30;
/// Conversations a batch mark changes per call (the caller repeats while `more`).
pub const BATCH_LIMIT: u64 = 500;
/// Captures a member deletion removes per call (the caller repeats while `more`).
pub const DELETE_LIMIT: u64 = 500;

const MAX_TAGS: usize = 20;
const MAX_TAG_CHARS: usize = 64;
const MAX_NOTE_CHARS: usize = 2_000;

/// The filters of a list or a batch.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub app: Option<String>,
    /// The longest capture's status (`ok`, `client_abort`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// `pending`, `confirmed` or `rejected`.
    #[serde(default)]
    pub review: Option<String>,
    /// Conversations with (or without) tool definitions, calls or results.
    #[serde(default)]
    pub tools: Option<bool>,
    /// Text search in the bounded window.
    #[serde(default)]
    pub q: Option<String>,
    /// Last activity at or after (unix seconds).
    #[serde(default)]
    pub from: Option<u64>,
    /// Last activity before (unix seconds).
    #[serde(default)]
    pub to: Option<u64>,
}

impl Filter {
    fn from_query(url: &Url) -> Result<(Filter, Option<u64>, u64), EdgeError> {
        let mut f = Filter::default();
        let mut cursor = None;
        let mut limit = 50;
        let int = |v: &str, name: &str| -> Result<u64, EdgeError> {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{name} must be a non-negative integer"), name))
        };
        for (k, v) in url.query_pairs() {
            let v = v.into_owned();
            match k.as_ref() {
                "member" => f.member = Some(v),
                "model" => f.model = Some(v),
                "app" => f.app = Some(v),
                "status" => f.status = Some(v),
                "review" => f.review = Some(v),
                "tools" => {
                    f.tools = Some(match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad("tools must be true or false", "tools")),
                    })
                }
                "q" => f.q = Some(v),
                "from" => f.from = Some(int(&v, "from")?),
                "to" => f.to = Some(int(&v, "to")?),
                "cursor" if !v.is_empty() => cursor = Some(int(&v, "cursor")?),
                "limit" => limit = int(&v, "limit")?.clamp(1, 200),
                _ => {}
            }
        }
        f.validate()?;
        Ok((f, cursor, limit))
    }

    fn validate(&self) -> Result<(), EdgeError> {
        if let Some(r) = &self.review {
            if !matches!(r.as_str(), "pending" | "confirmed" | "rejected") {
                return Err(bad(
                    "review must be pending, confirmed or rejected",
                    "review",
                ));
            }
        }
        if self.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
            return Err(bad("q must be at most 200 characters", "q"));
        }
        Ok(())
    }

    /// `WHERE` conditions and their parameters (numbered from `?1`).
    fn sql(&self, now: u64) -> (Vec<String>, Vec<JsValue>) {
        let mut conds = Vec::new();
        let mut params: Vec<JsValue> = Vec::new();
        let mut push = |cond: &str, p: JsValue, conds: &mut Vec<String>| {
            params.push(p);
            conds.push(cond.replace('#', &format!("?{}", params.len())));
        };
        if let Some(v) = &self.member {
            push("member_id = #", text(v), &mut conds);
        }
        if let Some(v) = &self.model {
            push("model = #", text(v), &mut conds);
        }
        if let Some(v) = &self.app {
            push("app_id = #", text(v), &mut conds);
        }
        if let Some(v) = &self.status {
            push("status = #", text(v), &mut conds);
        }
        if let Some(v) = &self.review {
            push("review = #", text(v), &mut conds);
        }
        if let Some(v) = self.tools {
            push("has_tools = #", num(u64::from(v)), &mut conds);
        }
        let mut from = self.from;
        if let Some(q) = self.q.as_ref().filter(|q| !q.is_empty()) {
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            push(
                "search_text LIKE # ESCAPE '\\'",
                text(&format!("%{escaped}%")),
                &mut conds,
            );
            from = Some(from.unwrap_or_else(|| now.saturating_sub(SEARCH_DAYS * 86_400)));
        }
        if let Some(v) = from {
            push("last_ms >= #", num(v.saturating_mul(1000)), &mut conds);
        }
        if let Some(v) = self.to {
            push("last_ms < #", num(v.saturating_mul(1000)), &mut conds);
        }
        (conds, params)
    }
}

const CONVERSATION_COLUMNS: &str = "seq, id, member_id, key_id, app_id, model, status, has_tools, \
     longest_capture_id, longest_len, turns, captures, input_tokens, output_tokens, cost_micros, \
     first_ms, last_ms, review, tags, note, reviewed_at";

/// A conversation row as the API shows it.
fn present(mut row: Value) -> Value {
    if let Some(m) = row.as_object_mut() {
        let tags = m
            .get("tags")
            .and_then(Value::as_str)
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or_else(|| json!([]));
        m.insert("tags".into(), tags);
        let has_tools = m.get("has_tools").and_then(Value::as_i64).unwrap_or(0) != 0;
        m.insert("has_tools".into(), Value::Bool(has_tools));
        let first = m.get("first_ms").and_then(Value::as_i64).unwrap_or(0);
        let last = m.get("last_ms").and_then(Value::as_i64).unwrap_or(0);
        m.insert("duration_ms".into(), json!((last - first).max(0)));
    }
    row
}

async fn rows(db: &D1Database, sql: &str, params: &[JsValue]) -> Result<Vec<Value>, EdgeError> {
    let unavailable = internal("capture index unavailable");
    stmt(db, sql, params)
        .map_err(&unavailable)?
        .all()
        .await
        .map_err(&unavailable)?
        .results()
        .map_err(&unavailable)
}

/// Routes `/internal/v1/{captures,conversations}/...` and
/// `/internal/v1/members/{id}/captures`; `None` when the path is not one of them.
pub async fn route(
    method: &Method,
    segs: &[&str],
    url: &Url,
    body: &[u8],
    env: &Env,
    db: &D1Database,
    now: u64,
) -> Option<Result<(u16, Value), EdgeError>> {
    Some(match (method, segs) {
        (Method::Get, ["captures", "stats"]) => stats(db).await,
        (Method::Get, ["captures", id]) => capture(env, db, id).await,
        (Method::Get, ["conversations"]) => list(db, url, now).await,
        (Method::Post, ["conversations", "review"]) => batch_review(db, body, now).await,
        (Method::Get, ["conversations", id]) => view(env, db, id).await,
        (Method::Post, ["conversations", id, "review"]) => review(db, id, body, now).await,
        (Method::Delete, ["conversations", id]) => delete_one(env, db, id).await,
        (Method::Delete, ["members", id, "captures"]) => delete_member(env, db, id).await,
        _ => return None,
    })
}

async fn stats(db: &D1Database) -> Result<(u16, Value), EdgeError> {
    let r = rows(db, "SELECT name, value FROM capture_stats", &[]).await?;
    let get = |n: &str| {
        r.iter()
            .find(|x| x.get("name").and_then(Value::as_str) == Some(n))
            .and_then(|x| x.get("value").and_then(Value::as_i64))
            .unwrap_or(0)
    };
    let counts = rows(
        db,
        "SELECT (SELECT COUNT(*) FROM captures) AS captures, \
         (SELECT COUNT(*) FROM conversations) AS conversations",
        &[],
    )
    .await?;
    let c = counts.first().cloned().unwrap_or_default();
    ok(json!({
        "written": get("written"),
        "write_failures": get("write_failures"),
        "pruned": get("pruned"),
        "captures": c.get("captures").cloned().unwrap_or(json!(0)),
        "conversations": c.get("conversations").cloned().unwrap_or(json!(0)),
    }))
}

async fn body_of(env: &Env, key: &str) -> Option<Value> {
    let bucket = env.bucket(BUCKET).ok()?;
    let obj = bucket.get(key).execute().await.ok()??;
    let text = obj.body()?.text().await.ok()?;
    serde_json::from_str(&text).ok()
}

async fn capture(env: &Env, db: &D1Database, id: &str) -> Result<(u16, Value), EdgeError> {
    let r = rows(db, "SELECT * FROM captures WHERE id = ?1", &[text(id)]).await?;
    let Some(row) = r.into_iter().next() else {
        return Err(not_found("Unknown capture."));
    };
    let key = row.get("r2_key").and_then(Value::as_str).unwrap_or("");
    let record = body_of(env, key).await;
    ok(json!({ "capture": row, "record": record }))
}

async fn list(db: &D1Database, url: &Url, now: u64) -> Result<(u16, Value), EdgeError> {
    let (filter, cursor, limit) = Filter::from_query(url)?;
    let (mut conds, mut params) = filter.sql(now);
    if let Some(c) = cursor {
        params.push(num(c));
        conds.push(format!("seq < ?{}", params.len()));
    }
    params.push(num(limit));
    let where_sql = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations {where_sql} ORDER BY seq DESC LIMIT ?{}",
        params.len()
    );
    let found = rows(db, &sql, &params).await?;
    let next = if found.len() as u64 == limit {
        found
            .last()
            .and_then(|r| r.get("seq").and_then(Value::as_u64))
            .map(|s| s.to_string())
    } else {
        None
    };
    let conversations: Vec<Value> = found.into_iter().map(present).collect();
    ok(json!({ "conversations": conversations, "next": next }))
}

async fn view(env: &Env, db: &D1Database, id: &str) -> Result<(u16, Value), EdgeError> {
    let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1");
    let Some(conv) = rows(db, &sql, &[text(id)]).await?.into_iter().next() else {
        return Err(not_found("Unknown conversation."));
    };
    let captures = rows(
        db,
        "SELECT id, seq, model, served_model, status, turns, transcript_len, input_tokens, \
         output_tokens, cost_micros, latency_ms, created_at, truncated, ingress \
         FROM captures WHERE conversation_id = ?1 ORDER BY seq",
        &[text(id)],
    )
    .await?;
    let longest_id = conv
        .get("longest_capture_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let member = conv.get("member_id").and_then(Value::as_str).unwrap_or("");
    let longest = body_of(env, &super::store::r2_key(member, &longest_id)).await;
    ok(json!({ "conversation": present(conv), "captures": captures, "longest": longest }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mark {
    review: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    note: Option<String>,
}

impl Mark {
    fn validate(&self) -> Result<(), EdgeError> {
        if !matches!(self.review.as_str(), "pending" | "confirmed" | "rejected") {
            return Err(bad(
                "review must be pending, confirmed or rejected",
                "review",
            ));
        }
        if let Some(t) = &self.tags {
            if t.len() > MAX_TAGS {
                return Err(bad(format!("at most {MAX_TAGS} tags"), "tags"));
            }
            if t.iter()
                .any(|x| x.is_empty() || x.chars().count() > MAX_TAG_CHARS)
            {
                return Err(bad(
                    format!("each tag has 1 to {MAX_TAG_CHARS} characters"),
                    "tags",
                ));
            }
        }
        if self
            .note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
        {
            return Err(bad(
                format!("note must be at most {MAX_NOTE_CHARS} characters"),
                "note",
            ));
        }
        Ok(())
    }

    /// `SET` clause and parameters (numbered from `?1`).
    fn set(&self, now: u64) -> (String, Vec<JsValue>) {
        let mut sets = vec!["review = ?1".to_owned(), "reviewed_at = ?2".to_owned()];
        let mut params = vec![text(&self.review), num(now)];
        if let Some(t) = &self.tags {
            params.push(text(&Value::from(t.clone()).to_string()));
            sets.push(format!("tags = ?{}", params.len()));
        }
        if let Some(n) = &self.note {
            params.push(text(n));
            sets.push(format!("note = ?{}", params.len()));
        }
        (sets.join(", "), params)
    }
}

async fn review(
    db: &D1Database,
    id: &str,
    body: &[u8],
    now: u64,
) -> Result<(u16, Value), EdgeError> {
    let mark: Mark =
        serde_json::from_slice(body).map_err(|e| bad(format!("Invalid review: {e}"), "body"))?;
    mark.validate()?;
    let (set, mut params) = mark.set(now);
    params.push(text(id));
    let sql = format!(
        "UPDATE conversations SET {set} WHERE id = ?{}",
        params.len()
    );
    let unavailable = internal("capture index unavailable");
    let r = stmt(db, &sql, &params)
        .map_err(&unavailable)?
        .run()
        .await
        .map_err(&unavailable)?;
    if crate::ledger::changes(&r) == 0 {
        return Err(not_found("Unknown conversation."));
    }
    ok(json!({ "id": id, "review": mark.review }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchMark {
    #[serde(default)]
    filter: Filter,
    review: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    note: Option<String>,
}

async fn batch_review(db: &D1Database, body: &[u8], now: u64) -> Result<(u16, Value), EdgeError> {
    let b: BatchMark = serde_json::from_slice(body)
        .map_err(|e| bad(format!("Invalid batch review: {e}"), "body"))?;
    b.filter.validate()?;
    let mark = Mark {
        review: b.review,
        tags: b.tags,
        note: b.note,
    };
    mark.validate()?;
    let (set, mut params) = mark.set(now);
    let (conds, fparams) = b.filter.sql(now);
    // Renumber the filter's parameters after the SET's.
    let offset = params.len();
    let mut conds: Vec<String> = conds.into_iter().map(|c| renumber(&c, offset)).collect();
    params.extend(fparams);
    // Only rows not already in the target state, so repeating the call converges and
    // `more` is exact.
    params.push(text(&mark.review));
    conds.push(format!("review != ?{}", params.len()));
    params.push(num(BATCH_LIMIT));
    let sql = format!(
        "UPDATE conversations SET {set} WHERE seq IN (SELECT seq FROM conversations WHERE {} \
         ORDER BY seq DESC LIMIT ?{})",
        conds.join(" AND "),
        params.len()
    );
    let unavailable = internal("capture index unavailable");
    let r = stmt(db, &sql, &params)
        .map_err(&unavailable)?
        .run()
        .await
        .map_err(&unavailable)?;
    let updated = crate::ledger::changes(&r) as u64;
    ok(json!({ "updated": updated, "more": updated == BATCH_LIMIT }))
}

/// `?N` → `?(N + offset)` in one condition.
fn renumber(cond: &str, offset: usize) -> String {
    let mut out = String::with_capacity(cond.len());
    let mut chars = cond.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '?' {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            match digits.parse::<usize>() {
                Ok(n) => out.push_str(&(n + offset).to_string()),
                Err(_) => out.push_str(&digits),
            }
        }
    }
    out
}

/// Deletes conversations with their captures (R2 bodies first, then the rows).
async fn delete_conversations(
    env: &Env,
    db: &D1Database,
    ids: &[String],
) -> Result<u64, EdgeError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let unavailable = internal("capture index unavailable");
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("?{i}")).collect();
    let inlist = placeholders.join(",");
    let params: Vec<JsValue> = ids.iter().map(|i| text(i)).collect();
    let keys = rows(
        db,
        &format!("SELECT r2_key FROM captures WHERE conversation_id IN ({inlist})"),
        &params,
    )
    .await?;
    let keys: Vec<String> = keys
        .iter()
        .filter_map(|r| r.get("r2_key").and_then(Value::as_str).map(str::to_owned))
        .collect();
    if !keys.is_empty() {
        let bucket = env
            .bucket(BUCKET)
            .map_err(internal("capture storage unavailable"))?;
        let results = join_all(keys.iter().map(|k| bucket.delete(k))).await;
        if results.iter().any(Result::is_err) {
            return Err(GatewayError::internal("capture storage unavailable.").into());
        }
    }
    let mut batch = Vec::new();
    for sql in [
        format!("DELETE FROM captures WHERE conversation_id IN ({inlist})"),
        format!("DELETE FROM capture_prefixes WHERE conversation_id IN ({inlist})"),
        format!("DELETE FROM conversations WHERE id IN ({inlist})"),
    ] {
        batch.push(stmt(db, &sql, &params).map_err(&unavailable)?);
    }
    db.batch(batch).await.map_err(&unavailable)?;
    Ok(keys.len() as u64)
}

async fn delete_one(env: &Env, db: &D1Database, id: &str) -> Result<(u16, Value), EdgeError> {
    let found = rows(
        db,
        "SELECT id FROM conversations WHERE id = ?1",
        &[text(id)],
    )
    .await?;
    if found.is_empty() {
        return Err(not_found("Unknown conversation."));
    }
    let n = delete_conversations(env, db, &[id.to_owned()]).await?;
    ok(json!({ "id": id, "deleted": true, "captures": n }))
}

fn ids_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Deletes a member's conversations and captures, [`DELETE_LIMIT`] conversations per
/// call (`more: true` asks the caller to repeat).
async fn delete_member(
    env: &Env,
    db: &D1Database,
    member: &str,
) -> Result<(u16, Value), EdgeError> {
    let mut deleted = 0;
    let mut conversations = 0;
    // Ten rounds of 50 keep each IN list small.
    for _ in 0..(DELETE_LIMIT / 50) {
        let found = rows(
            db,
            "SELECT id FROM conversations WHERE member_id = ?1 LIMIT 50",
            &[text(member)],
        )
        .await?;
        if found.is_empty() {
            break;
        }
        let ids = ids_of(&found);
        conversations += ids.len() as u64;
        deleted += delete_conversations(env, db, &ids).await?;
    }
    let left = rows(
        db,
        "SELECT COUNT(*) AS n FROM conversations WHERE member_id = ?1",
        &[text(member)],
    )
    .await?;
    let more = left
        .first()
        .and_then(|r| r.get("n").and_then(Value::as_i64))
        .unwrap_or(0)
        > 0;
    ok(
        json!({ "member_id": member, "conversations": conversations, "captures": deleted, "more": more }),
    )
}

/// Retention: deletes conversations whose last activity is older than `days` (at most
/// `limit` per run). Returns the captures deleted.
pub async fn prune(
    env: &Env,
    db: &D1Database,
    now: u64,
    days: u64,
    limit: u64,
) -> Result<u64, EdgeError> {
    if days == 0 {
        return Ok(0);
    }
    let cutoff_ms = now
        .saturating_sub(days.saturating_mul(86_400))
        .saturating_mul(1000);
    let mut deleted = 0;
    let mut left = limit;
    while left > 0 {
        let found = rows(
            db,
            "SELECT id FROM conversations WHERE last_ms < ?1 LIMIT ?2",
            &[num(cutoff_ms), num(left.min(50))],
        )
        .await?;
        if found.is_empty() {
            break;
        }
        let ids = ids_of(&found);
        left = left.saturating_sub(ids.len() as u64);
        deleted += delete_conversations(env, db, &ids).await?;
    }
    if deleted > 0 {
        super::store::count(db, "pruned", deleted).await;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_renumber() {
        assert_eq!(
            renumber("a = ?1 AND b LIKE ?12", 3),
            "a = ?4 AND b LIKE ?15"
        );
        assert_eq!(renumber("x", 3), "x");
    }
}
