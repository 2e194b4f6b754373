//! Training-data export jobs (`/api/admin/exports`, docs/training-data.md#export).
//!
//! A job takes a review filter (confirmed conversations by default) and a format
//! (ShareGPT or OpenAI fine-tuning JSONL). Creating one only writes its record
//! (`queued`); a runner then claims it, pages through the conversations over the worker's
//! signed internal API (list with cursor, then view each for its longest record),
//! converts them ([`build`]) and writes `valid.jsonl`, `invalid.jsonl` and
//! `manifest.json` to the export bucket ([`files`]). Downloads are presigned GET URLs.
//!
//! Invariants:
//! - The job record (single table, docs/dynamodb.md `EXPORT#`) is changed only by
//!   compare-and-swap on its version: two runners never both own a job.
//! - A running job holds a lease (`lease_until`) that it renews after every page; a job
//!   whose runner died (crash, timeout) is claimed again once the lease has passed and
//!   starts over (its files are rewritten whole), at most `max_attempts` times, then it
//!   is `failed`. So no job stays `running` forever.
//! - The same `idempotency-key` from the same admin returns the same job.
//!
//! Where runners run: on AWS the `export` function serves these routes and, on its
//! own one-minute schedule, sweeps queued and stale jobs ([`sweep`],
//! docs/architecture.md); locally the admin server runs the same sweep in a background
//! task, woken at once when a job is created.

pub mod build;
pub mod files;

use std::sync::Arc;
use std::time::Duration;

use lambda_http::{Body, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::admin::{audit, require_admin};
use crate::app::{json_response, unix_now, AppState, Ctx};
use crate::captures::{list_page, view, Filter};
use crate::error::{ApiError, ApiResult};
use crate::model::{from_item, to_item, ONE};
use crate::store::{Index, Item, ItemStore, Put, Query, StoreError};
use crate::sync::EdgeSync;
use build::{Counts, FileInfo, Format, Output};
use files::ExportFiles;

/// The path prefix these routes own (template.yaml routes it to the export function).
pub const PATH_PREFIX: &str = "/api/admin/exports";

/// Index partition of every job (gsi1, newest first by creation).
const JOBS_PK: &str = "EXPORTS";
/// Index partition of jobs not yet finished (gsi2): what a sweep looks at.
const ACTIVE_PK: &str = "EXPORTQ";
/// How long an idempotency key is remembered.
const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

pub fn job_pk(id: &str) -> String {
    format!("EXPORT#{id}")
}

/// Tunables (`EXPORT_*` variables, docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Key prefix in the bucket: files go to `<prefix><job id>/<name>`.
    pub prefix: String,
    /// Lifetime of a presigned download URL (`EXPORT_URL_TTL_SECS`, default 900).
    pub url_ttl_secs: u64,
    /// Bound on both JSONL files together (`EXPORT_MAX_BYTES`, default 256 MiB).
    pub max_bytes: usize,
    /// A runner's lease, renewed after every page (`EXPORT_LEASE_SECS`, default 120).
    pub lease_secs: u64,
    /// Claims of one job before it is failed (`EXPORT_MAX_ATTEMPTS`, default 3).
    pub max_attempts: u32,
    /// Conversations per list call (1..200).
    pub page_size: usize,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            prefix: "exports/".into(),
            url_ttl_secs: 900,
            max_bytes: 256 * 1024 * 1024,
            lease_secs: 120,
            max_attempts: 3,
            page_size: 100,
        }
    }
}

impl ExportConfig {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let d = ExportConfig::default();
        let num = |k: &str, default: u64| -> Result<u64, String> {
            match get(k).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{k} must be a positive integer")),
            }
        };
        Ok(ExportConfig {
            url_ttl_secs: num("EXPORT_URL_TTL_SECS", d.url_ttl_secs)?.min(7 * 24 * 3600),
            max_bytes: usize::try_from(num("EXPORT_MAX_BYTES", d.max_bytes as u64)?)
                .unwrap_or(d.max_bytes),
            lease_secs: num("EXPORT_LEASE_SECS", d.lease_secs)?,
            max_attempts: u32::try_from(num("EXPORT_MAX_ATTEMPTS", u64::from(d.max_attempts))?)
                .unwrap_or(d.max_attempts),
            page_size: usize::try_from(num("EXPORT_PAGE_SIZE", d.page_size as u64)?)
                .unwrap_or(d.page_size)
                .clamp(1, 200),
            ..d
        })
    }
}

/// The export side of a process: where files go, the tunables, and (locally) how to
/// wake the background runner.
pub struct Exports<F> {
    pub files: F,
    pub config: ExportConfig,
    pub wake: Option<Arc<tokio::sync::Notify>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Conversations read so far in this attempt.
    pub conversations: u64,
    pub pages: u64,
}

/// A job record (`EXPORT#<id>` / `#`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJob {
    pub id: String,
    pub state: JobState,
    pub filter: Filter,
    pub format: Format,
    pub created_by: String,
    pub created_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub progress: Progress,
    #[serde(default)]
    pub counts: Counts,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    /// While running: the claim ends at this time unless renewed.
    #[serde(default)]
    pub lease_until: Option<u64>,
    /// When done: the three files, in order valid, invalid, manifest.
    #[serde(default)]
    pub files: Vec<FileInfo>,
}

impl ExportJob {
    fn item(&self, version: u64) -> ApiResult<Item> {
        let mut it = to_item(job_pk(&self.id), ONE, self)?
            .gsi1(JOBS_PK, format!("{:010}#{}", self.created_at, self.id))
            .version(version);
        if matches!(self.state, JobState::Queued | JobState::Running) {
            it = it.gsi2(ACTIVE_PK, self.id.clone());
        }
        Ok(it)
    }

    fn key(&self, cfg: &ExportConfig, name: &str) -> String {
        format!("{}{}/{}", cfg.prefix, self.id, name)
    }

    /// The API view; `links` are the presigned URLs of a finished job.
    fn public(&self, links: Option<(Vec<String>, u64)>) -> Value {
        let mut v = json!({
            "id": self.id, "state": self.state, "filter": self.filter, "format": self.format,
            "created_by": self.created_by, "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "progress": self.progress, "counts": self.counts, "error": self.error,
            "attempts": self.attempts,
        });
        if let (Some(o), Some((urls, expires_at))) = (v.as_object_mut(), links) {
            let files: Vec<Value> = self
                .files
                .iter()
                .zip(urls)
                .map(|(f, url)| {
                    let mut fv = json!(f);
                    if let Some(fo) = fv.as_object_mut() {
                        fo.insert("url".into(), json!(url));
                    }
                    fv
                })
                .collect();
            o.insert("files".into(), json!(files));
            o.insert("urls_expire_at".into(), json!(expires_at));
        }
        v
    }
}

/// Reads a job and its version.
pub async fn load_job<S: ItemStore>(store: &S, id: &str) -> ApiResult<Option<(ExportJob, u64)>> {
    match store.get(&job_pk(id), ONE).await? {
        Some(it) => Ok(Some((from_item(&it)?, it.version.unwrap_or(0)))),
        None => Ok(None),
    }
}

/// Writes `job` over version `version`; `false` when someone else changed it first.
async fn swap<S: ItemStore>(store: &S, job: &ExportJob, version: u64) -> ApiResult<bool> {
    match store
        .put(job.item(version + 1)?, Put::IfVersion(version))
        .await
    {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

// ---- the API ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewExport {
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    format: Option<Format>,
}

/// The remembered idempotency key: which job it created, for which request.
#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyClaim {
    job_id: String,
    request_sha256: String,
}

/// Routes `/api/admin/exports...`: any admin session reads; creating a job needs the
/// admin role and is audited.
pub async fn route<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    st: &AppState<S, E>,
    ex: &Exports<F>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let rest = ctx
        .path
        .strip_prefix(PATH_PREFIX)
        .unwrap_or_default()
        .trim_matches('/');
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mutating = !matches!(ctx.method.as_str(), "GET" | "HEAD");
    let (admin, _) = require_admin(st, ctx, mutating, false).await?;
    match (ctx.method.as_str(), segs.as_slice()) {
        ("POST", []) => create_job(st, ex, ctx, &admin).await,
        ("GET", []) => {
            let limit = ctx
                .query
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(50)
                .clamp(1, 200);
            let items = st
                .store
                .query(Query::index(Index::Gsi1, JOBS_PK, "").desc().limit(limit))
                .await?;
            let jobs: Vec<Value> = items
                .iter()
                .map(|it| from_item::<ExportJob>(it).map(|j| j.public(None)))
                .collect::<ApiResult<_>>()?;
            Ok(json_response(200, &json!({"data": jobs})))
        }
        ("GET", [id]) => {
            let (job, _) = load_job(&st.store, id)
                .await?
                .ok_or_else(|| ApiError::not_found("export"))?;
            let links = if job.state == JobState::Done {
                let ttl = Duration::from_secs(ex.config.url_ttl_secs);
                let mut urls = Vec::new();
                for f in &job.files {
                    let url = ex
                        .files
                        .presign_get(&job.key(&ex.config, &f.name), ttl)
                        .await
                        .map_err(|e| {
                            log("presign failed", &job.id, &e);
                            ApiError::new(
                                502,
                                "api_error",
                                "storage_failed",
                                "presigning the download URLs failed",
                            )
                        })?;
                    urls.push(url);
                }
                Some((urls, ctx.now.saturating_add(ex.config.url_ttl_secs)))
            } else {
                None
            };
            Ok(json_response(200, &job.public(links)))
        }
        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("Unknown route: {} {}", ctx.method, ctx.path),
        )),
    }
}

async fn create_job<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    st: &AppState<S, E>,
    ex: &Exports<F>,
    ctx: &Ctx,
    admin: &crate::app::Claims,
) -> ApiResult<Response<Body>> {
    let body: NewExport = if ctx.body.is_empty() {
        NewExport {
            filter: None,
            format: None,
        }
    } else {
        ctx.json()?
    };
    let mut filter = body.filter.unwrap_or_default();
    // Confirmed conversations only, unless the filter names a review state.
    if filter.review.is_none() {
        filter.review = Some("confirmed".into());
    }
    filter.validate()?;
    let format = body.format.unwrap_or_default();
    let idem = match ctx.headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "idempotency-key",
                        "the idempotency-key header is 1-255 visible characters",
                    )
                })?;
            Some(k.to_owned())
        }
    };
    let request_sha256 = hex::encode(Sha256::digest(
        json!({"filter": filter, "format": format}).to_string(),
    ));
    let id = format!("exp_{}", crate::crypto::new_id()?);
    let job = ExportJob {
        id: id.clone(),
        state: JobState::Queued,
        filter,
        format,
        created_by: admin.sub.clone(),
        created_at: ctx.now,
        started_at: None,
        finished_at: None,
        progress: Progress::default(),
        counts: Counts::default(),
        error: None,
        attempts: 0,
        lease_until: None,
        files: Vec::new(),
    };
    let mut writes = vec![(job.item(1)?, Put::IfAbsent)];
    let idem_pk = idem.as_ref().map(|k| {
        format!(
            "EXPORTIDEM#{}",
            hex::encode(Sha256::digest(format!("{}\n{k}", admin.sub)))
        )
    });
    if let Some(pk) = &idem_pk {
        let claim = IdempotencyClaim {
            job_id: id.clone(),
            request_sha256: request_sha256.clone(),
        };
        writes.push((
            to_item(pk.clone(), ONE, &claim)?.ttl(ctx.now + IDEMPOTENCY_TTL_SECS),
            Put::IfAbsent,
        ));
    }
    match st.store.put_all(writes).await {
        Ok(()) => {}
        Err(StoreError::Conflict) if idem_pk.is_some() => {
            let pk = idem_pk.unwrap_or_default();
            let claim: IdempotencyClaim = match st.store.get(&pk, ONE).await? {
                Some(it) if !it.expired(ctx.now) => from_item(&it)?,
                _ => return Err(ApiError::conflict("retry the request")),
            };
            if claim.request_sha256 != request_sha256 {
                return Err(ApiError::new(
                    409,
                    "invalid_request_error",
                    "idempotency_key_reused",
                    "this idempotency-key was used for a different export request",
                ));
            }
            let (existing, _) = load_job(&st.store, &claim.job_id)
                .await?
                .ok_or_else(|| ApiError::not_found("export"))?;
            return Ok(json_response(200, &existing.public(None)));
        }
        Err(e) => return Err(e.into()),
    }
    audit(
        st,
        ctx,
        admin,
        "export.create",
        &id,
        json!({"filter": job.filter, "format": job.format}),
    )
    .await?;
    if let Some(w) = &ex.wake {
        w.notify_one();
    }
    Ok(json_response(202, &job.public(None)))
}

/// Whether `path` is one of these routes.
pub fn owns(path: &str) -> bool {
    path == PATH_PREFIX
        || path
            .strip_prefix(PATH_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Serves one request of these routes (the caller checked [`owns`]); `None` exports =
/// not configured (no `EXPORT_BUCKET`): 503.
pub async fn handle<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    st: &AppState<S, E>,
    ex: Option<&Exports<F>>,
    req: lambda_http::Request,
) -> Response<Body> {
    let ctx = Ctx::from_request(req, unix_now());
    handle_ctx(st, ex, ctx).await
}

/// [`handle`] for an already parsed request (unit tests pin the clock).
pub async fn handle_ctx<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    st: &AppState<S, E>,
    ex: Option<&Exports<F>>,
    ctx: Ctx,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let result = match ex {
        Some(ex) => route(st, ex, &ctx).await,
        None => Err(ApiError::new(
            503,
            "api_error",
            "exports_not_configured",
            "exports are not configured here (EXPORT_BUCKET is unset)",
        )),
    };
    let resp = result.unwrap_or_else(ApiError::into_response);
    println!(
        "{}",
        json!({"msg": "request", "plane": "export", "method": ctx.method, "path": ctx.path,
               "status": resp.status().as_u16(), "latency_ms": started.elapsed().as_millis() as u64})
    );
    resp
}

// ---- the runner ------------------------------------------------------------------

fn log(msg: &str, job: &str, detail: &str) {
    eprintln!(
        "{}",
        json!({"msg": msg, "plane": "export", "job": job, "detail": detail})
    );
}

/// Claims `id` when it is queued, or running with a lapsed lease. Returns the job and
/// its new version, or `None` (not claimable, or another runner was first). A job that
/// used up its attempts is failed here.
pub async fn claim<S: ItemStore>(
    store: &S,
    cfg: &ExportConfig,
    id: &str,
    now: u64,
) -> ApiResult<Option<(ExportJob, u64)>> {
    let Some((mut job, v)) = load_job(store, id).await? else {
        return Ok(None);
    };
    let claimable = match job.state {
        JobState::Queued => true,
        JobState::Running => job.lease_until.is_none_or(|t| t <= now),
        JobState::Done | JobState::Failed => false,
    };
    if !claimable {
        return Ok(None);
    }
    if job.attempts >= cfg.max_attempts {
        job.state = JobState::Failed;
        job.finished_at = Some(now);
        job.lease_until = None;
        let last = job
            .error
            .take()
            .unwrap_or_else(|| "the runner stopped without finishing (crash or timeout)".into());
        job.error = Some(format!("gave up after {} attempts: {last}", job.attempts));
        swap(store, &job, v).await?;
        return Ok(None);
    }
    job.state = JobState::Running;
    job.attempts += 1;
    job.started_at = Some(now);
    job.lease_until = Some(now + cfg.lease_secs);
    job.progress = Progress::default();
    job.counts = Counts::default();
    if swap(store, &job, v).await? {
        Ok(Some((job, v + 1)))
    } else {
        Ok(None)
    }
}

/// Why a run stopped early.
enum Stop {
    /// Another runner owns the job now: write nothing more.
    LostLease,
    /// The job cannot finish this time.
    Error(String),
}

/// Runs a claimed job to its end: `done`, `failed`, or back to `queued` for another
/// attempt after a transient error.
pub async fn run_claimed<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    store: &S,
    sync: &E,
    ex: &Exports<F>,
    job: ExportJob,
    version: u64,
) -> ApiResult<JobState> {
    let mut job = job;
    let mut version = version;
    match produce(store, sync, ex, &mut job, &mut version).await {
        Ok(done) => {
            let finished = unix_now();
            let mut meta = Map::new();
            meta.insert("job_id".into(), json!(job.id));
            meta.insert("filter".into(), json!(job.filter));
            meta.insert("format".into(), json!(job.format));
            meta.insert("created_by".into(), json!(job.created_by));
            meta.insert("created_at".into(), json!(job.created_at));
            meta.insert("started_at".into(), json!(job.started_at));
            meta.insert("finished_at".into(), json!(finished));
            let out = done.finish(meta);
            for (info, body) in out.files.iter() {
                let ct = if info.name.ends_with(".json") {
                    "application/json"
                } else {
                    "application/jsonl"
                };
                if let Err(e) = ex
                    .files
                    .put(&job.key(&ex.config, &info.name), body.clone(), ct)
                    .await
                {
                    log("export write failed", &job.id, &e);
                    return give_back(store, &ex.config, job, version, "writing the files failed")
                        .await;
                }
            }
            job.state = JobState::Done;
            job.finished_at = Some(finished);
            job.lease_until = None;
            job.counts = out.counts;
            job.files = out.files.into_iter().map(|(i, _)| i).collect();
            job.error = None;
            swap(store, &job, version).await?;
            Ok(JobState::Done)
        }
        Err(Stop::LostLease) => Ok(JobState::Running),
        Err(Stop::Error(e)) => give_back(store, &ex.config, job, version, &e).await,
    }
}

/// After an error: queued again for another attempt, or failed when none is left.
async fn give_back<S: ItemStore>(
    store: &S,
    cfg: &ExportConfig,
    mut job: ExportJob,
    version: u64,
    error: &str,
) -> ApiResult<JobState> {
    job.lease_until = None;
    if job.attempts >= cfg.max_attempts {
        job.state = JobState::Failed;
        job.finished_at = Some(unix_now());
        job.error = Some(error.to_owned());
    } else {
        job.state = JobState::Queued;
        job.error = Some(format!("attempt {} failed: {error}", job.attempts));
    }
    swap(store, &job, version).await?;
    Ok(job.state)
}

/// Pages through the filter's conversations and converts each longest record,
/// renewing the lease after every page.
async fn produce<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    store: &S,
    sync: &E,
    ex: &Exports<F>,
    job: &mut ExportJob,
    version: &mut u64,
) -> Result<Output, Stop> {
    let cfg = &ex.config;
    let mut out = Output::new(job.format, cfg.max_bytes);
    let mut cursor: Option<String> = None;
    loop {
        let (rows, next) = list_page(sync, &job.filter, cursor.as_deref(), cfg.page_size)
            .await
            .map_err(|e| Stop::Error(format!("listing conversations: {}", e.message)))?;
        for row in &rows {
            let Some(id) = row.get("id").and_then(Value::as_str) else {
                out.skip();
                continue;
            };
            let conv = view(sync, id)
                .await
                .map_err(|e| Stop::Error(format!("reading conversation {id}: {}", e.message)))?;
            match conv
                .as_ref()
                .and_then(|c| c.get("longest"))
                .filter(|l| l.is_object())
            {
                Some(record) => out
                    .add(id, record)
                    .map_err(|e| Stop::Error(e.to_string()))?,
                // Deleted since it was listed, or its body is gone.
                None => out.skip(),
            }
        }
        job.progress.pages += 1;
        job.progress.conversations += rows.len() as u64;
        job.counts = out.counts;
        job.lease_until = Some(unix_now() + cfg.lease_secs);
        match swap(store, job, *version).await {
            Ok(true) => *version += 1,
            Ok(false) => return Err(Stop::LostLease),
            Err(e) => return Err(Stop::Error(format!("saving progress: {}", e.message))),
        }
        match next {
            Some(n) if !rows.is_empty() => cursor = Some(n),
            _ => return Ok(out),
        }
    }
}

/// Runs every claimable job (queued, or running with a lapsed lease), one after the
/// other. Returns the ids it ran.
pub async fn sweep<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    st: &AppState<S, E>,
    ex: &Exports<F>,
) -> ApiResult<Vec<(String, JobState)>> {
    let active = st
        .store
        .query(Query::index(Index::Gsi2, ACTIVE_PK, "").limit(100))
        .await?;
    let mut ran = Vec::new();
    for it in active {
        let Some((_, id)) = it.gsi2.clone() else {
            continue;
        };
        if let Some((job, v)) = claim(&st.store, &ex.config, &id, unix_now()).await? {
            let state = run_claimed(&st.store, &st.sync, ex, job, v).await?;
            println!(
                "{}",
                json!({"msg": "export job", "plane": "export", "job": id, "state": state})
            );
            ran.push((id, state));
        }
    }
    Ok(ran)
}

/// The local runner: sweeps when woken (a job was created) and every `every` anyway
/// (lapsed leases of a crashed run).
pub async fn run_local<S: ItemStore, E: EdgeSync, F: ExportFiles>(
    st: Arc<AppState<S, E>>,
    ex: Arc<Exports<F>>,
    every: Duration,
) {
    let wake = ex.wake.clone().unwrap_or_default();
    loop {
        if let Err(e) = sweep(&*st, &*ex).await {
            log("export sweep failed", "", &e.message);
        }
        let _ = tokio::time::timeout(every, wake.notified()).await;
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
