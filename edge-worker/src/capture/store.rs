//! The capture write path (in `ctx.wait_until`, after the response):
//!
//! 1. build the record in core (redaction, system prompt and tools, size cap);
//! 2. find its conversation: the longest registered prefix hash of its request
//!    (`capture_prefixes`, one `IN` query of at most 64 hashes);
//! 3. put the body in R2 (`CAPTURES`, `captures/<member>/<id>.json`);
//! 4. one D1 batch: the index row, the new conversation or the update of an existing
//!    one (stats added; the longest form replaced when this transcript is longer, in the
//!    same conditional statement), the prefix hashes, the `written` counter.
//!
//! Any failure is logged (ids only, never bodies) and counted in `capture_stats`
//! (`write_failures`); it never reaches the response, which was sent before this runs.

use serde::Deserialize;
use serde_json::{json, Value};
use tollbooth_core::capture::record::{build_record, CaptureMeta};
use tollbooth_core::capture::thread::{self, Decision};
use tollbooth_core::capture::CaptureSettings;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, Env};

use crate::config::Config;
use crate::context::{log_error, log_event};
use crate::ledger::{self, num, opt_text, stmt, text};

/// The R2 binding of capture bodies.
pub const BUCKET: &str = "CAPTURES";

/// One exchange to capture.
pub struct Input<'a> {
    pub request_id: &'a str,
    pub member_id: &'a str,
    pub key_id: &'a str,
    pub app_id: Option<&'a str>,
    pub ingress: &'a str,
    pub model: &'a str,
    pub served: Option<&'a str>,
    pub status: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    pub latency_ms: u64,
    /// Unix seconds (ledger clock).
    pub finished_at: u64,
    pub request: Value,
    pub response: Option<Value>,
    pub settings: &'a CaptureSettings,
}

/// The R2 key of a capture body.
pub fn r2_key(member_id: &str, id: &str) -> String {
    format!("captures/{member_id}/{id}.json")
}

/// Adds `n` to a counter (best effort).
pub async fn count(db: &D1Database, name: &str, n: u64) {
    if let Ok(s) = stmt(
        db,
        "INSERT INTO capture_stats (name, value) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        &[text(name), num(n)],
    ) {
        let _ = s.run().await;
    }
}

async fn failed(db: Option<&D1Database>, id: &str, step: &str, error: String) {
    log_error(
        "capture write failed; the response was not affected",
        json!({ "request_id": id, "step": step, "error": error }),
    );
    if let Some(db) = db {
        count(db, "write_failures", 1).await;
    }
}

#[derive(Deserialize)]
struct PrefixRow {
    hash: String,
    conversation_id: String,
    longest_len: i64,
}

/// Writes one capture (see the module docs). Never fails outward.
pub async fn write(env: &Env, config: &Config, input: Input<'_>) {
    let db = ledger::db(env).ok();
    let id = input.request_id.to_owned();
    let meta = CaptureMeta {
        id: id.clone(),
        request_id: id.clone(),
        member_id: input.member_id.to_owned(),
        key_id: input.key_id.to_owned(),
        app_id: input.app_id.map(str::to_owned),
        ingress: input.ingress.to_owned(),
        model_requested: input.model.to_owned(),
        model_served: input.served.map(str::to_owned),
        status: input.status.clone(),
        input_tokens: input.input_tokens,
        output_tokens: input.output_tokens,
        cost_micros: input.cost_micros,
        latency_ms: input.latency_ms,
        created_at: input.finished_at,
    };
    let built = build_record(meta, input.request, input.response, input.settings);
    let Some(db) = db else {
        failed(None, &id, "d1", "ledger binding unavailable".into()).await;
        return;
    };

    // 2. the conversation.
    let hashes = thread::prefix_hashes(input.member_id, &built.transcript);
    let lookup = thread::lookup_hashes(&hashes, built.request_len);
    let mut found = None;
    if !lookup.is_empty() {
        let placeholders: Vec<String> = (1..=lookup.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "SELECT p.hash, p.conversation_id, c.longest_len FROM capture_prefixes p \
             JOIN conversations c ON c.id = p.conversation_id WHERE p.hash IN ({})",
            placeholders.join(",")
        );
        let params: Vec<JsValue> = lookup.iter().map(|(h, _)| text(h)).collect();
        let rows: Vec<PrefixRow> = match stmt(&db, &sql, &params) {
            Ok(s) => match s.all().await.and_then(|r| r.results()) {
                Ok(r) => r,
                Err(e) => return failed(Some(&db), &id, "lookup", e.to_string()).await,
            },
            Err(e) => return failed(Some(&db), &id, "lookup", e.to_string()).await,
        };
        // Longest prefix first.
        found = lookup.iter().find_map(|(h, _)| {
            rows.iter().find(|r| &r.hash == h).map(|r| {
                (
                    r.conversation_id.clone(),
                    usize::try_from(r.longest_len).unwrap_or(0),
                )
            })
        });
    }
    let decision = thread::decide(found, built.facts.transcript_len);
    let conversation_id = match &decision {
        Decision::New => format!("conv_{id}"),
        Decision::Join { conversation, .. } => conversation.clone(),
    };

    // 3. the body.
    let key = r2_key(input.member_id, &id);
    let injected = config
        .hooks
        .fail_capture
        .as_deref()
        .is_some_and(|m| m == "*" || m == input.member_id);
    let put = if injected {
        Err("injected capture failure (TEST_FAIL_CAPTURE)".to_owned())
    } else {
        match env.bucket(BUCKET) {
            Ok(b) => b
                .put(&key, built.json.clone().into_bytes())
                .execute()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Err(e) = put {
        return failed(Some(&db), &id, "r2", e).await;
    }

    // 4. the index, in one batch.
    let turns = thread::turn_count(&built.transcript) as u64;
    let len = built.facts.transcript_len as u64;
    let end_ms = input.finished_at.saturating_mul(1000);
    let start_ms = end_ms.saturating_sub(input.latency_ms);
    let has_tools = u64::from(built.facts.has_tools);
    let status = input.status.as_str();
    let mut batch = Vec::new();
    let insert_capture = stmt(
        &db,
        "INSERT INTO captures (id, conversation_id, member_id, key_id, app_id, ingress, model, \
         served_model, status, has_tools, turns, transcript_len, input_tokens, output_tokens, \
         cost_micros, latency_ms, created_at, truncated, bytes, r2_key) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) \
         ON CONFLICT (id) DO NOTHING",
        &[
            text(&id),
            text(&conversation_id),
            text(input.member_id),
            text(input.key_id),
            opt_text(input.app_id),
            text(input.ingress),
            text(input.model),
            opt_text(input.served),
            text(status),
            num(has_tools),
            num(turns),
            num(len),
            num(input.input_tokens),
            num(input.output_tokens),
            num(input.cost_micros),
            num(input.latency_ms),
            num(input.finished_at),
            num(u64::from(built.record.truncated)),
            num(built.facts.bytes as u64),
            text(&key),
        ],
    );
    let conversation = match &decision {
        Decision::New => stmt(
            &db,
            "INSERT INTO conversations (id, member_id, key_id, app_id, model, status, has_tools, \
             longest_capture_id, longest_len, turns, captures, input_tokens, output_tokens, \
             cost_micros, first_ms, last_ms, search_text) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT (id) DO NOTHING",
            &[
                text(&conversation_id),
                text(input.member_id),
                text(input.key_id),
                opt_text(input.app_id),
                text(input.model),
                text(status),
                num(has_tools),
                text(&id),
                num(len),
                num(turns),
                num(input.input_tokens),
                num(input.output_tokens),
                num(input.cost_micros),
                num(start_ms),
                num(end_ms),
                text(&built.facts.search_text),
            ],
        ),
        // SQLite evaluates every SET expression on the old row, so `?2 > longest_len`
        // means the same thing in each of them. `?9` is this capture's id.
        Decision::Join { .. } => stmt(
            &db,
            "UPDATE conversations SET captures = captures + 1, \
             input_tokens = input_tokens + ?3, output_tokens = output_tokens + ?4, \
             cost_micros = cost_micros + ?5, first_ms = MIN(first_ms, ?6), \
             last_ms = MAX(last_ms, ?7), has_tools = MAX(has_tools, ?8), \
             longest_capture_id = CASE WHEN ?2 > longest_len THEN ?9 ELSE longest_capture_id END, \
             turns = CASE WHEN ?2 > longest_len THEN ?10 ELSE turns END, \
             status = CASE WHEN ?2 > longest_len THEN ?11 ELSE status END, \
             model = CASE WHEN ?2 > longest_len THEN ?12 ELSE model END, \
             search_text = CASE WHEN ?2 > longest_len THEN ?13 ELSE search_text END, \
             longest_len = MAX(longest_len, ?2) \
             WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM captures WHERE id = ?9)",
            &[
                text(&conversation_id),
                num(len),
                num(input.input_tokens),
                num(input.output_tokens),
                num(input.cost_micros),
                num(start_ms),
                num(end_ms),
                num(has_tools),
                text(&id),
                num(turns),
                text(status),
                text(input.model),
                text(&built.facts.search_text),
            ],
        ),
    };
    // The conversation first: its update is guarded by "this capture is not indexed
    // yet" (a new conversation's id is derived from the capture's), so writing the same
    // capture twice changes nothing.
    for s in [conversation, insert_capture] {
        match s {
            Ok(s) => batch.push(s),
            Err(e) => return failed(Some(&db), &id, "d1", e.to_string()).await,
        }
    }
    for h in thread::to_register(&hashes, built.request_len) {
        match stmt(
            &db,
            "INSERT INTO capture_prefixes (hash, conversation_id, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (hash) DO NOTHING",
            &[text(&h), text(&conversation_id), num(input.finished_at)],
        ) {
            Ok(s) => batch.push(s),
            Err(e) => return failed(Some(&db), &id, "d1", e.to_string()).await,
        }
    }
    if let Ok(s) = stmt(
        &db,
        "INSERT INTO capture_stats (name, value) VALUES ('written', 1) \
         ON CONFLICT (name) DO UPDATE SET value = value + 1",
        &[],
    ) {
        batch.push(s);
    }
    if let Err(e) = db.batch(batch).await {
        // The body without an index row would be unreachable: remove it.
        if let Ok(b) = env.bucket(BUCKET) {
            let _ = b.delete(&key).await;
        }
        return failed(Some(&db), &id, "d1", e.to_string()).await;
    }
    log_event(
        "captured",
        json!({ "request_id": id, "conversation_id": conversation_id,
                "truncated": built.record.truncated, "bytes": built.facts.bytes }),
    );
}
