//! The HTTP server: accept loop, routing, authentication, directives, introspection.
//!
//! Request pipeline, in order: read body → record (log + stats) → route → authenticate →
//! validate JSON → `hang` → `fail_first` / `status` (after `ttft`) → protocol answer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::behavior::Behavior;
use super::body::{shape_steps, ConnCtx, MockBody, Step};
use super::protocol::{self, anthropic, gemini, openai, responses, ChatFacts, Protocol};
use super::text;

/// Requests kept by `/_mock/requests`.
const LOG_CAPACITY: usize = 200;
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long shutdown waits for in-flight answers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Configuration of a mock server.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Address to bind; port 0 picks a free port. Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Accepted keys; empty accepts any non-empty key.
    pub require_keys: Vec<String>,
    /// Ids listed by `GET /v1/models`.
    pub models: Vec<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            require_keys: Vec::new(),
            models: [
                "gpt-4o-mini",
                "gpt-4o",
                "text-embedding-3-small",
                "jina-reranker-v2-base-multilingual",
                "claude-3-5-haiku-latest",
                "gemini-2.0-flash",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

impl MockConfig {
    /// Adds an accepted key (turns key enforcement on).
    pub fn require_key(mut self, key: impl Into<String>) -> Self {
        self.require_keys.push(key.into());
        self
    }
}

/// A running mock server. Dropping it stops the server.
#[derive(Debug)]
pub struct MockHandle {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockHandle {
    /// `http://IP:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight answers finish (up to 5 s) and waits for the server.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `config.addr` and serves in a background task of the current Tokio runtime.
pub async fn spawn(config: MockConfig) -> io::Result<MockHandle> {
    let listener = TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let state = Arc::new(State::new(config));
    let task = tokio::spawn(serve(listener, state, stopped));
    Ok(MockHandle {
        addr,
        stop,
        task: Some(task),
    })
}

async fn wait_down(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await;
}

async fn serve(listener: TcpListener, state: Arc<State>, shutdown: watch::Receiver<bool>) {
    let mut stop = shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(stream, state.clone(), shutdown.clone()));
                }
                // e.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = wait_down(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(stream: TcpStream, state: Arc<State>, shutdown: watch::Receiver<bool>) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResetOnDrop {
        stream,
        reset: reset.clone(),
    });
    let ctx = ConnCtx {
        reset,
        shutdown: shutdown.clone(),
        on_end: None,
    };
    let service = service_fn(move |req| {
        let state = state.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, state, ctx).await) }
    });
    let conn = http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut stop = shutdown;
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = wait_down(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The accepted socket; closes with a RST (zero linger) when `reset` is set.
struct ResetOnDrop {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct State {
    require_keys: HashSet<String>,
    models: Vec<String>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    log: VecDeque<Value>,
    total: u64,
    per_model: BTreeMap<String, u64>,
    fail_counters: HashMap<String, u64>,
}

impl State {
    fn new(config: MockConfig) -> State {
        State {
            require_keys: config.require_keys.into_iter().collect(),
            models: config.models,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs a request and counts its model; returns its sequence number.
    fn record(&self, mut entry: Value, model: Option<&str>) -> u64 {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(obj) = entry.as_object_mut() {
            obj.insert("seq".into(), json!(seq));
        }
        if inner.log.len() >= LOG_CAPACITY {
            inner.log.pop_front();
        }
        inner.log.push_back(entry);
        inner.total += 1;
        if let Some(m) = model {
            *inner.per_model.entry(m.to_string()).or_default() += 1;
        }
        seq
    }

    /// Records how a request's played body ended (`stream_end` in its log entry).
    fn mark_end(&self, seq: u64, ending: &'static str) {
        let mut inner = self.lock();
        if let Some(obj) = inner
            .log
            .iter_mut()
            .rev()
            .find(|e| e["seq"] == seq)
            .and_then(Value::as_object_mut)
        {
            obj.insert("stream_end".into(), json!(ending));
        }
    }

    /// Counts a `fail_first` request; returns its 1-based number for this key.
    fn bump_failure_counter(&self, key: &str) -> u64 {
        let mut inner = self.lock();
        let n = inner.fail_counters.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

enum Route {
    Chat,
    Embeddings,
    Rerank,
    Models,
    Messages,
    /// OpenAI Responses; authentication and errors as OpenAI.
    Responses,
    Gemini {
        model: String,
        stream: bool,
        sse: bool,
    },
    NotFound,
}

impl Route {
    fn parse(method: &Method, path: &str, query: &[(String, String)]) -> Route {
        match (method, path) {
            (&Method::POST, "/v1/chat/completions") => Route::Chat,
            (&Method::POST, "/v1/embeddings") => Route::Embeddings,
            (&Method::POST, "/v1/rerank") => Route::Rerank,
            (&Method::GET, "/v1/models") => Route::Models,
            (&Method::POST, "/v1/messages") => Route::Messages,
            (&Method::POST, "/v1/responses") => Route::Responses,
            (&Method::POST, p) => {
                let Some(rest) = p.strip_prefix("/v1beta/models/") else {
                    return Route::NotFound;
                };
                let Some((model, action)) = rest.rsplit_once(':') else {
                    return Route::NotFound;
                };
                let stream = match action {
                    "generateContent" => false,
                    "streamGenerateContent" => true,
                    _ => return Route::NotFound,
                };
                let sse = query.iter().any(|(k, v)| k == "alt" && v == "sse");
                Route::Gemini {
                    model: text::percent_decode(model, false),
                    stream,
                    sse,
                }
            }
            _ => Route::NotFound,
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Route::Messages => Protocol::Anthropic,
            Route::Gemini { .. } => Protocol::Gemini,
            _ => Protocol::OpenAi,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

fn json_response(status: u16, v: &Value) -> Response<MockBody> {
    bytes_response(status, "application/json", protocol::to_bytes(v))
}

fn bytes_response(status: u16, content_type: &'static str, body: Bytes) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn error_response(p: Protocol, status: u16, message: &str) -> Response<MockBody> {
    let mut resp = json_response(status, &p.error_body(status, message));
    if status == 429 {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    resp
}

/// A non-stream success, with `malformed`, `hang_after` and `reset_after` applied.
fn finish_json(v: &Value, b: &Behavior, ctx: ConnCtx) -> Response<MockBody> {
    if b.malformed {
        return bytes_response(200, "application/json", protocol::malformed_json(v));
    }
    let ending = match (b.reset_after, b.hang_after) {
        (Some(_), _) => Step::Reset,
        (None, Some(_)) => Step::Hang,
        (None, None) => return json_response(200, v),
    };
    let bytes = protocol::to_bytes(v);
    let len = bytes.len() as u64;
    let steps = vec![Step::Event(bytes.slice(..bytes.len() / 2)), ending];
    let mut resp = Response::new(MockBody::played(steps, 0, 0, Some(len), ctx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn stream_response(
    content_type: &'static str,
    steps: Vec<Step>,
    b: &Behavior,
    ctx: ConnCtx,
) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::played(steps, b.ttft_ms, b.delay_ms, None, ctx));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

fn with_seq(mut resp: Response<MockBody>, seq: u64) -> Response<MockBody> {
    if let Ok(v) = HeaderValue::from_str(&seq.to_string()) {
        resp.headers_mut().insert("x-mock-seq", v);
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// Handling

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in h {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    json!(out)
}

/// The caller's key in the protocol's auth style.
fn credential(p: Protocol, h: &HeaderMap, query: &[(String, String)]) -> Option<String> {
    let key = match p {
        Protocol::OpenAi => header(h, "authorization").and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        }),
        Protocol::Anthropic => header(h, "x-api-key").map(|v| v.trim().to_string()),
        Protocol::Gemini => header(h, "x-goog-api-key")
            .map(|v| v.trim().to_string())
            .or_else(|| {
                query
                    .iter()
                    .find(|(k, _)| k == "key")
                    .map(|(_, v)| v.trim().to_string())
            }),
    };
    key.filter(|k| !k.is_empty())
}

async fn handle(
    req: hyper::Request<Incoming>,
    state: Arc<State>,
    mut ctx: ConnCtx,
) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let raw = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return error_response(Protocol::OpenAi, 400, "could not read the request body"),
    };
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    if let Some(what) = path.strip_prefix("/_mock/") {
        return introspect(&parts.method, what, &state);
    }
    let query = text::parse_query(&raw_query);
    let route = Route::parse(&parts.method, &path, &query);
    let p = route.protocol();
    let parsed: Result<Value, String> = serde_json::from_slice(&raw).map_err(|e| e.to_string());
    let model: Option<String> = match &route {
        Route::Gemini { model, .. } => Some(model.clone()),
        _ => parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("model"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };

    let mut entry = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": raw_query,
        "headers": headers_json(&parts.headers),
        "model": model,
        "body": parsed.as_ref().ok(),
        "received_at_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    });
    if parsed.is_err() && !raw.is_empty() {
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(
                "body_text".into(),
                json!(String::from_utf8_lossy(&raw).into_owned()),
            );
        }
    }
    let seq = state.record(entry, model.as_deref());
    let ended = state.clone();
    ctx.on_end = Some(Arc::new(move |e| ended.mark_end(seq, e)));

    if let Route::NotFound = route {
        let msg = format!("mock upstream: no route for {} {}", parts.method, path);
        return with_seq(error_response(p, 404, &msg), seq);
    }
    let resp = answer(
        &route,
        &parts.headers,
        &query,
        parsed,
        model,
        seq,
        &state,
        &mut ctx,
    )
    .await;
    with_seq(resp, seq)
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    route: &Route,
    headers: &HeaderMap,
    query: &[(String, String)],
    parsed: Result<Value, String>,
    model: Option<String>,
    seq: u64,
    state: &State,
    ctx: &mut ConnCtx,
) -> Response<MockBody> {
    // `GET /v1/models` is served to every protocol's callers: Anthropic's is called with
    // `x-api-key` (and `anthropic-version`), like its real counterpart.
    let p = match route {
        Route::Models if header(headers, "x-api-key").is_some() => Protocol::Anthropic,
        _ => route.protocol(),
    };

    // Authentication.
    let Some(key) = credential(p, headers, query) else {
        let msg = match p {
            Protocol::OpenAi => "You didn't provide an API key (Authorization: Bearer).",
            Protocol::Anthropic => "x-api-key header is required",
            Protocol::Gemini => "API key missing (x-goog-api-key header or key= parameter).",
        };
        return error_response(p, 401, msg);
    };
    if !state.require_keys.is_empty() && !state.require_keys.contains(&key) {
        return error_response(p, 401, "Incorrect API key provided.");
    }
    if p == Protocol::Anthropic && header(headers, "anthropic-version").is_none_or(str::is_empty) {
        return error_response(p, 400, "anthropic-version: header is required");
    }

    // Body validation.
    let body = if let Route::Models = route {
        Value::Null
    } else {
        match parsed {
            Ok(v) if v.is_object() => v,
            Ok(_) => return error_response(p, 400, "request body must be a JSON object"),
            Err(e) => return error_response(p, 400, &format!("invalid JSON body: {e}")),
        }
    };
    if let Route::Gemini { .. } = route {
        if let Some(msg) = gemini::missing_thought_signature(&body) {
            return error_response(p, 400, &msg);
        }
    }
    let needs_model = !matches!(route, Route::Models | Route::Gemini { .. });
    let model = match model {
        Some(m) if !m.is_empty() => m,
        _ if needs_model => return error_response(p, 400, "'model' is required"),
        _ => String::new(),
    };

    // Directives.
    let mock_header = header(headers, "x-mock");
    let b = Behavior::from_request(&model, mock_header);
    if b.hang {
        wait_down(&mut ctx.shutdown).await;
        return error_response(p, 503, "mock upstream shutting down");
    }
    let failure = match b.fail_first {
        Some(n) => {
            let key = match mock_header {
                Some(h) => format!("{model}#{h}"),
                None => model.clone(),
            };
            let count = state.bump_failure_counter(&key);
            (count <= n).then(|| (500, format!("mock fail_first: failure {count} of {n}")))
        }
        None => None,
    };
    let failure = failure.or_else(|| b.status.map(|s| (s, format!("mock status={s}"))));
    let stream = match route {
        Route::Chat | Route::Messages | Route::Responses => {
            body.get("stream").and_then(Value::as_bool) == Some(true)
        }
        Route::Gemini { stream, .. } => *stream,
        _ => false,
    };
    if failure.is_some() || !stream {
        tokio::time::sleep(Duration::from_millis(b.ttft_ms)).await;
    }
    if let Some((status, msg)) = failure {
        return error_response(p, status, &msg);
    }

    let ctx = ctx.clone();
    match route {
        Route::Chat => {
            let mut facts = openai::chat_facts(&body);
            facts.words = b.prompt_tokens(facts.words, &body);
            let a = protocol::plan(&facts, &b);
            let id = format!("chatcmpl-mock-{seq}");
            if stream {
                let steps = openai::chat_stream(&a, &facts, &model, &id, now_secs());
                let steps = shape_steps(steps, &b, openai::malformed_event(&id));
                stream_response("text/event-stream; charset=utf-8", steps, &b, ctx)
            } else {
                finish_json(&openai::chat_json(&a, &model, &id, now_secs()), &b, ctx)
            }
        }
        Route::Messages => {
            let mut facts: ChatFacts = anthropic::chat_facts(&body);
            facts.words = b.prompt_tokens(facts.words, &body);
            let a = protocol::plan(&facts, &b);
            let id = format!("msg_mock_{seq}");
            if stream {
                let steps = anthropic::chat_stream(&a, &model, &id);
                let steps = shape_steps(steps, &b, anthropic::malformed_event());
                stream_response("text/event-stream; charset=utf-8", steps, &b, ctx)
            } else {
                finish_json(&anthropic::chat_json(&a, &model, &id), &b, ctx)
            }
        }
        Route::Responses => {
            let facts = responses::chat_facts(&body);
            let a = protocol::plan(&facts, &b);
            let id = format!("resp_mock_{seq}");
            if stream {
                let steps = responses::chat_stream(&a, &body, &model, &id, seq, now_secs());
                let steps = shape_steps(steps, &b, responses::malformed_event());
                stream_response("text/event-stream; charset=utf-8", steps, &b, ctx)
            } else {
                let v = responses::chat_json(&a, &body, &model, &id, seq, now_secs());
                finish_json(&v, &b, ctx)
            }
        }
        Route::Gemini { sse, .. } => {
            let mut facts = gemini::chat_facts(&body);
            facts.words = b.prompt_tokens(facts.words, &body);
            let a = protocol::plan(&facts, &b);
            let id = format!("mock-{seq}");
            if stream {
                let steps = gemini::chat_stream(&a, &model, &id, *sse);
                let steps = shape_steps(steps, &b, gemini::malformed_event(*sse));
                let ct = if *sse {
                    "text/event-stream"
                } else {
                    "application/json; charset=UTF-8"
                };
                stream_response(ct, steps, &b, ctx)
            } else {
                finish_json(&gemini::chat_json(&a, &model, &id), &b, ctx)
            }
        }
        Route::Embeddings => match openai::embeddings(&body, &model, &b) {
            Ok(v) => finish_json(&v, &b, ctx),
            Err(msg) => error_response(p, 400, &msg),
        },
        Route::Rerank => match openai::rerank(&body, &model, &format!("rerank-mock-{seq}"), &b) {
            Ok(v) => finish_json(&v, &b, ctx),
            Err(msg) => error_response(p, 400, &msg),
        },
        Route::Models => finish_json(&openai::models(&state.models), &b, ctx),
        Route::NotFound => error_response(p, 404, "no route"),
    }
}

fn introspect(method: &Method, what: &str, state: &State) -> Response<MockBody> {
    match (method, what) {
        (&Method::GET, "health") => json_response(200, &json!({ "status": "ok" })),
        (&Method::GET, "requests") => {
            let inner = state.lock();
            json_response(200, &Value::Array(inner.log.iter().cloned().collect()))
        }
        (&Method::DELETE, "requests") => {
            let mut inner = state.lock();
            let cleared = inner.log.len();
            inner.log.clear();
            json_response(200, &json!({ "cleared": cleared }))
        }
        (&Method::GET, "stats") => {
            let inner = state.lock();
            json_response(
                200,
                &json!({ "total": inner.total, "models": inner.per_model }),
            )
        }
        (&Method::DELETE, "stats") => {
            let mut inner = state.lock();
            inner.total = 0;
            inner.per_model.clear();
            inner.fail_counters.clear();
            json_response(200, &json!({ "reset": true }))
        }
        _ => error_response(Protocol::OpenAi, 404, "unknown /_mock endpoint"),
    }
}
