//! Export jobs on in-memory fakes: the store, an edge that serves conversations from a
//! list (paged like the worker's internal API), and files in memory.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tollbooth_core::auth::{JwtKey, JwtKeySet};

use super::files::MemoryFiles;
use super::*;
use crate::app::{issue_session, Policy};
use crate::model::{admin_pk, session_pk, Role, Session};
use crate::store::MemoryStore;
use crate::sync::{SyncCall, SyncError};

const NOW: u64 = 1_800_000_000;

/// A conversation as the worker would list it: `(row, longest record)`.
type Listed = (Value, Option<Value>);

#[derive(Clone, Default)]
struct FakeEdge {
    convs: Arc<Mutex<Vec<Listed>>>,
    calls: Arc<Mutex<Vec<String>>>,
    down: bool,
}

impl EdgeSync for FakeEdge {
    async fn send(&self, call: SyncCall) -> Result<Value, SyncError> {
        if self.down {
            return Err(SyncError::Unreachable("fake edge is down".into()));
        }
        self.calls.lock().unwrap().push(call.path.clone());
        let (path, query) = call.path.split_once('?').unwrap_or((&call.path, ""));
        let q: std::collections::HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let convs = self.convs.lock().unwrap().clone();
        if path == "/internal/v1/conversations" {
            let matching: Vec<Value> = convs
                .iter()
                .map(|(row, _)| row.clone())
                .filter(|row| q.get("review").is_none_or(|r| row["review"] == r.as_str()))
                .collect();
            let start: usize = q.get("cursor").map_or(0, |c| c.parse().unwrap());
            let limit: usize = q["limit"].parse().unwrap();
            let page: Vec<Value> = matching.iter().skip(start).take(limit).cloned().collect();
            let next = (start + limit < matching.len()).then(|| (start + limit).to_string());
            return Ok(json!({"conversations": page, "next": next}));
        }
        if let Some(id) = path.strip_prefix("/internal/v1/conversations/") {
            return match convs.iter().find(|(row, _)| row["id"] == id) {
                Some((row, longest)) => Ok(json!({"conversation": row, "captures": [],
                                                  "longest": longest})),
                None => Err(SyncError::Refused {
                    path: path.into(),
                    status: 404,
                }),
            };
        }
        Err(SyncError::Refused {
            path: path.into(),
            status: 404,
        })
    }
}

type St = AppState<MemoryStore, FakeEdge>;

fn state(edge: FakeEdge) -> St {
    AppState {
        store: MemoryStore::default(),
        sync: edge,
        jwt: JwtKeySet::new(JwtKey::new(
            "k1",
            b"0123456789abcdef0123456789abcdef".to_vec(),
        )),
        master_key: [7u8; 32],
        policy: Policy::default(),
        payments: Default::default(),
    }
}

fn exports(files: MemoryFiles, page_size: usize) -> Exports<MemoryFiles> {
    Exports {
        files,
        config: ExportConfig {
            page_size,
            ..ExportConfig::default()
        },
        wake: None,
    }
}

/// A session token for an admin account of `role`, written straight to the store.
async fn token(st: &St, email: &str, role: Role) -> String {
    token_at(st, email, role, NOW).await
}

/// [`token`] issued at `at` (requests that read the real clock need a real time).
async fn token_at(st: &St, email: &str, role: Role, at: u64) -> String {
    // Written as JSON, not as `Admin`, so fields the account gains later keep defaults.
    let admin = json!({"email": email, "role": role, "password_hash": "unused",
                       "created_at": NOW});
    st.store
        .put(
            to_item(admin_pk(email), ONE, &admin)
                .unwrap()
                .gsi1("ADMINS", email),
            Put::Upsert,
        )
        .await
        .unwrap();
    let sid = format!("sid-{email}");
    let (t, exp) = issue_session(st, email, &sid, "admin", Some(role), at).unwrap();
    let s = Session {
        member_id: email.into(),
        expires_at: exp,
    };
    st.store
        .put(to_item(session_pk(&sid), ONE, &s).unwrap(), Put::Upsert)
        .await
        .unwrap();
    assert!(st.store.get(&admin_pk(email), ONE).await.unwrap().is_some());
    t
}

async fn call(
    st: &St,
    ex: &Exports<MemoryFiles>,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    idem: Option<&str>,
) -> (u16, Value) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    if let Some(k) = idem {
        headers.insert("idempotency-key", k.parse().unwrap());
    }
    let ctx = Ctx {
        method: method.into(),
        path: path.into(),
        query: Default::default(),
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        now: NOW,
        source_ip: None,
    };
    let r = handle_ctx(st, Some(ex), ctx).await;
    let status = r.status().as_u16();
    let body: Value = serde_json::from_slice(r.body().as_ref()).unwrap_or(Value::Null);
    (status, body)
}

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/../core/tests/fixtures/sharegpt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn conv(id: &str, review: &str, record: Option<Value>) -> Listed {
    (json!({"id": id, "review": review}), record)
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Five confirmed conversations over three pages (valid ones from the golden fixtures,
/// an invalid one, one whose record is gone) and a pending one that must be left out.
fn sample_edge() -> FakeEdge {
    let edge = FakeEdge::default();
    *edge.convs.lock().unwrap() = vec![
        conv(
            "c1",
            "confirmed",
            Some(fixture("openai_tool_calls.record.json")),
        ),
        conv(
            "c2",
            "pending",
            Some(fixture("legacy_function_call.record.json")),
        ),
        conv(
            "c3",
            "confirmed",
            Some(fixture("anthropic_tool_use.record.json")),
        ),
        conv(
            "c4",
            "confirmed",
            Some(fixture("invalid_cut_short.record.json")),
        ),
        conv("c5", "confirmed", None),
        conv(
            "c6",
            "confirmed",
            Some(fixture("parallel_calls.record.json")),
        ),
    ];
    edge
}

#[tokio::test]
async fn test_export_job_pages_converts_and_writes_three_files() {
    let st = state(sample_edge());
    let files = MemoryFiles::default();
    let ex = exports(files.clone(), 2);
    let t = token(&st, "ops@example.com", Role::Admin).await;
    let (s, job) = call(&st, &ex, "POST", PATH_PREFIX, &t, Some(json!({})), None).await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["filter"], json!({"review": "confirmed"}));
    assert_eq!(job["format"], "sharegpt");
    let id = job["id"].as_str().unwrap().to_owned();

    let ran = sweep(&st, &ex).await.unwrap();
    assert_eq!(ran, vec![(id.clone(), JobState::Done)]);
    let (s, done) = call(
        &st,
        &ex,
        "GET",
        &format!("{PATH_PREFIX}/{id}"),
        &t,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["state"], "done");
    assert_eq!(
        done["counts"],
        json!({"valid": 3, "invalid": 1, "total": 4, "skipped": 1})
    );
    assert_eq!(done["progress"], json!({"conversations": 5, "pages": 3}));
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["urls_expire_at"], NOW + 900);
    let names: Vec<&str> = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["valid.jsonl", "invalid.jsonl", "manifest.json"]);
    assert_eq!(
        done["files"][0]["url"],
        format!("mem://exports/{id}/valid.jsonl?expires=900")
    );

    // valid.jsonl: the golden ShareGPT records, in list order.
    let valid = files.get(&format!("exports/{id}/valid.jsonl")).unwrap();
    let got = lines(&valid);
    let want: Vec<Value> = ["openai_tool_calls", "anthropic_tool_use", "parallel_calls"]
        .iter()
        .map(|c| fixture(&format!("{c}.expected.json"))["sharegpt"].clone())
        .collect();
    assert_eq!(got, want);
    // invalid.jsonl: id, the record, and its reasons.
    let invalid = lines(&files.get(&format!("exports/{id}/invalid.jsonl")).unwrap());
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0]["id"], "c4");
    let exp = fixture("invalid_cut_short.expected.json");
    assert_eq!(
        invalid[0]["conversations"],
        exp["sharegpt"]["conversations"]
    );
    let codes: Vec<Value> = invalid[0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].clone())
        .collect();
    assert_eq!(json!(codes), exp["reasons"]);
    // The manifest: counts, sizes and hashes of the files as stored.
    let manifest: Value =
        serde_json::from_slice(&files.get(&format!("exports/{id}/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["job_id"], id.as_str());
    assert_eq!(manifest["counts"], done["counts"]);
    assert_eq!(manifest["format"], "sharegpt");
    assert_eq!(manifest["files"][0]["bytes"], valid.len());
    assert_eq!(
        manifest["files"][0]["sha256"],
        hex::encode(Sha256::digest(&valid))
    );
    assert_eq!(
        manifest["conversation_ids"]["valid"],
        json!(["c1", "c3", "c6"])
    );
    assert_eq!(manifest["conversation_ids"]["invalid"], json!(["c4"]));
    // The pending conversation was never read.
    assert!(!st
        .sync
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.ends_with("/c2")));
    // Listed, newest first.
    let (s, list) = call(&st, &ex, "GET", PATH_PREFIX, &t, None, None).await;
    assert_eq!(s, 200);
    assert_eq!(list["data"][0]["id"], id.as_str());
    // A second sweep finds nothing to do.
    assert!(sweep(&st, &ex).await.unwrap().is_empty());
}

#[tokio::test]
async fn test_openai_format_lines_match_golden() {
    let st = state(sample_edge());
    let files = MemoryFiles::default();
    let ex = exports(files.clone(), 50);
    let t = token(&st, "ops@example.com", Role::Admin).await;
    let (s, job) = call(
        &st,
        &ex,
        "POST",
        PATH_PREFIX,
        &t,
        Some(json!({"format": "openai", "filter": {"review": "confirmed"}})),
        None,
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    sweep(&st, &ex).await.unwrap();
    let got = lines(&files.get(&format!("exports/{id}/valid.jsonl")).unwrap());
    let want: Vec<Value> = ["openai_tool_calls", "anthropic_tool_use", "parallel_calls"]
        .iter()
        .map(|c| fixture(&format!("{c}.expected.json"))["openai"].clone())
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn test_idempotency_key_returns_the_same_job() {
    let st = state(sample_edge());
    let ex = exports(MemoryFiles::default(), 10);
    let t = token(&st, "ops@example.com", Role::Admin).await;
    let body = json!({"format": "openai"});
    let (s1, a) = call(
        &st,
        &ex,
        "POST",
        PATH_PREFIX,
        &t,
        Some(body.clone()),
        Some("k-1"),
    )
    .await;
    let (s2, b) = call(&st, &ex, "POST", PATH_PREFIX, &t, Some(body), Some("k-1")).await;
    assert_eq!((s1, s2), (202, 200), "{a} {b}");
    assert_eq!(a["id"], b["id"]);
    // The same key for another request is refused; another key makes another job.
    let (s, e) = call(
        &st,
        &ex,
        "POST",
        PATH_PREFIX,
        &t,
        Some(json!({})),
        Some("k-1"),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
    let (s, c) = call(
        &st,
        &ex,
        "POST",
        PATH_PREFIX,
        &t,
        Some(json!({})),
        Some("k-2"),
    )
    .await;
    assert_eq!(s, 202);
    assert_ne!(c["id"], a["id"]);
    // Another admin's identical key is another job.
    let t2 = token(&st, "ops2@example.com", Role::Admin).await;
    let (s, d) = call(
        &st,
        &ex,
        "POST",
        PATH_PREFIX,
        &t2,
        Some(json!({"format": "openai"})),
        Some("k-1"),
    )
    .await;
    assert_eq!(s, 202);
    assert_ne!(d["id"], a["id"]);
}

#[tokio::test]
async fn test_viewer_reads_but_cannot_create_and_bad_input_is_named() {
    let st = state(sample_edge());
    let ex = exports(MemoryFiles::default(), 10);
    let admin = token(&st, "ops@example.com", Role::Admin).await;
    let viewer = token(&st, "view@example.com", Role::Viewer).await;
    let (s, e) = call(
        &st,
        &ex,
        "POST",
        PATH_PREFIX,
        &viewer,
        Some(json!({})),
        None,
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let (s, _) = call(&st, &ex, "GET", PATH_PREFIX, &viewer, None, None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&st, &ex, "GET", PATH_PREFIX, "not-a-token", None, None).await;
    assert_eq!(s, 401);
    for (body, param) in [
        (json!({"format": "csv"}), None),
        (json!({"filter": {"review": "good"}}), Some("review")),
        (json!({"filter": {"colour": "red"}}), None),
        (json!({"extra": 1}), None),
    ] {
        let (s, e) = call(
            &st,
            &ex,
            "POST",
            PATH_PREFIX,
            &admin,
            Some(body.clone()),
            None,
        )
        .await;
        assert_eq!(s, 400, "{body}: {e}");
        if let Some(p) = param {
            assert_eq!(e["error"]["param"], p);
        }
    }
    let (s, _) = call(
        &st,
        &ex,
        "GET",
        &format!("{PATH_PREFIX}/exp_nope"),
        &admin,
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
    // Nothing was queued by the refused requests.
    assert!(sweep(&st, &ex).await.unwrap().is_empty());
}

#[tokio::test]
async fn test_a_crashed_run_is_resumed_after_its_lease_then_failed_after_max_attempts() {
    let st = state(sample_edge());
    let files = MemoryFiles::default();
    let ex = exports(files.clone(), 2);
    let t = token(&st, "ops@example.com", Role::Admin).await;
    let (_, job) = call(&st, &ex, "POST", PATH_PREFIX, &t, None, None).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let now = unix_now();
    // A runner claims the job and dies without a word.
    let (claimed, _) = claim(&st.store, &ex.config, &id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.state, JobState::Running);
    // While its lease holds, nobody else may take it.
    assert!(claim(&st.store, &ex.config, &id, now + 1)
        .await
        .unwrap()
        .is_none());
    assert!(sweep(&st, &ex).await.unwrap().is_empty());
    // Once it lapsed, the job is claimed again and finishes.
    let later = now + ex.config.lease_secs + 1;
    let (job2, v) = claim(&st.store, &ex.config, &id, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job2.attempts, 2);
    let end = run_claimed(&st.store, &st.sync, &ex, job2, v)
        .await
        .unwrap();
    assert_eq!(end, JobState::Done);

    // A job whose runners keep dying fails after max_attempts instead of running forever.
    let (_, job) = call(&st, &ex, "POST", PATH_PREFIX, &t, None, None).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let mut at = now;
    for _ in 0..ex.config.max_attempts {
        assert!(claim(&st.store, &ex.config, &id, at)
            .await
            .unwrap()
            .is_some());
        at += ex.config.lease_secs + 1;
    }
    assert!(claim(&st.store, &ex.config, &id, at)
        .await
        .unwrap()
        .is_none());
    let (j, _) = load_job(&st.store, &id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert!(j.error.unwrap().starts_with("gave up after 3 attempts"));
}

#[tokio::test]
async fn test_a_runner_that_lost_its_lease_writes_nothing() {
    let st = state(sample_edge());
    let files = MemoryFiles::default();
    let ex = exports(files.clone(), 2);
    let t = token(&st, "ops@example.com", Role::Admin).await;
    let (_, job) = call(&st, &ex, "POST", PATH_PREFIX, &t, None, None).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let now = unix_now();
    let (old, old_v) = claim(&st.store, &ex.config, &id, now)
        .await
        .unwrap()
        .unwrap();
    // Its lease lapses (a long pause) and another runner takes over.
    let (_new, _) = claim(&st.store, &ex.config, &id, now + ex.config.lease_secs + 1)
        .await
        .unwrap()
        .unwrap();
    let end = run_claimed(&st.store, &st.sync, &ex, old, old_v)
        .await
        .unwrap();
    assert_eq!(end, JobState::Running, "the old runner must stop");
    assert!(files.objects.lock().unwrap().is_empty());
    let (j, _) = load_job(&st.store, &id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Running);
    assert_eq!(j.attempts, 2);
}

#[tokio::test]
async fn test_errors_retry_then_fail_and_the_size_bound_holds() {
    // The edge is down: each attempt goes back to the queue, the last one fails.
    let st = state(FakeEdge {
        down: true,
        ..sample_edge()
    });
    let ex = exports(MemoryFiles::default(), 2);
    let t = token(&st, "ops@example.com", Role::Admin).await;
    let (_, job) = call(&st, &ex, "POST", PATH_PREFIX, &t, None, None).await;
    let id = job["id"].as_str().unwrap().to_owned();
    for expected in [JobState::Queued, JobState::Queued, JobState::Failed] {
        let ran = sweep(&st, &ex).await.unwrap();
        assert_eq!(ran, vec![(id.clone(), expected)]);
    }
    let (_, j) = call(
        &st,
        &ex,
        "GET",
        &format!("{PATH_PREFIX}/{id}"),
        &t,
        None,
        None,
    )
    .await;
    assert_eq!(j["state"], "failed");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("listing conversations"),
        "{j}"
    );
    assert!(j.get("files").is_none() || j["files"].as_array().unwrap().is_empty());

    // Larger than EXPORT_MAX_BYTES: failed with the reason, nothing written.
    let st = state(sample_edge());
    let files = MemoryFiles::default();
    let mut ex = exports(files.clone(), 2);
    ex.config.max_bytes = 600;
    ex.config.max_attempts = 1;
    let t = token(&st, "ops@example.com", Role::Admin).await;
    let (_, job) = call(&st, &ex, "POST", PATH_PREFIX, &t, None, None).await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sweep(&st, &ex).await.unwrap(),
        vec![(id.clone(), JobState::Failed)]
    );
    let (j, _) = load_job(&st.store, &id).await.unwrap().unwrap();
    assert!(j.error.unwrap().contains("EXPORT_MAX_BYTES"));
    assert!(files.objects.lock().unwrap().is_empty());
}

/// The `export` function's two kinds of invocation: an HTTP API event is served (and
/// answered in the payload 2.0 shape), the schedule's event runs a sweep.
#[tokio::test]
async fn test_export_function_events_http_and_schedule() {
    let st = state(sample_edge());
    let files = MemoryFiles::default();
    let ex = exports(files.clone(), 10);
    let t = token_at(&st, "ops@example.com", Role::Admin, unix_now()).await;
    let http_event = |method: &str, path: &str, body: Option<&str>| {
        json!({"version": "2.0", "routeKey": format!("{method} {path}"), "rawPath": path,
               "rawQueryString": "", "cookies": [],
               "headers": {"authorization": format!("Bearer {t}"),
                           "content-type": "application/json",
                           "idempotency-key": "event-1"},
               "requestContext": {"accountId": "1", "apiId": "api", "domainName": "x",
                   "domainPrefix": "x", "requestId": "r1", "routeKey": "$default",
                   "stage": "$default", "time": "02/Dec/2026:00:00:00 +0000",
                   "timeEpoch": 1_800_000_000_000u64,
                   "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                            "sourceIp": "203.0.113.9", "userAgent": "test"}},
               "body": body, "isBase64Encoded": false})
    };
    let r = crate::runtime::export_event(&st, &ex, http_event("POST", PATH_PREFIX, Some("{}")))
        .await
        .unwrap();
    assert_eq!(r["statusCode"], 202, "{r}");
    let job: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    // The schedule's event: the queued job runs.
    let sched = json!({"version": "0", "source": "aws.events",
                       "detail-type": "Scheduled Event", "detail": {}});
    let r = crate::runtime::export_event(&st, &ex, sched).await.unwrap();
    assert_eq!(r["ran"], json!([[id, "done"]]), "{r}");
    let r = crate::runtime::export_event(
        &st,
        &ex,
        http_event("GET", &format!("{PATH_PREFIX}/{id}"), None),
    )
    .await
    .unwrap();
    assert_eq!(r["statusCode"], 200, "{r}");
    let job: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(job["state"], "done");
    // Other paths reaching this function go to the main router.
    let r = crate::runtime::export_event(&st, &ex, http_event("GET", "/api/admin/me", None))
        .await
        .unwrap();
    assert_eq!(r["statusCode"], 200, "{r}");
}
