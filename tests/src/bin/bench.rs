//! `make bench`: what each gateway adds, side by side in one run, on the same mock
//! upstream and the same load (issue 11 §8).
//!
//! Targets, each started here on loopback:
//!
//! - **direct** — the mock upstream itself (Rust, `TCP_NODELAY`);
//! - **bare worker** — `bench/passthrough/worker.js`, a few lines of JavaScript that
//!   forward the request, under `wrangler dev --local` (workerd): the floor;
//! - **Tollbooth** — the release-built worker under `wrangler dev --local` with its local
//!   KV and D1 (auth, catalogue, the D1 ledger and settlement all on);
//! - opt-in peers (`--peers tensorzero,portkey,litellm`), installed by
//!   `bench/install-peers.sh` into `~/.cache/tollbooth/peers`.
//!
//! Scenarios (the goals of issue 11), run scenario by scenario across all targets so that
//! a change in the machine's load hits every target alike:
//!
//! 1. **instant** — the upstream answers at once; `--n` (1,000) sequential keep-alive
//!    non-stream requests: latency p50/p99, added over direct;
//! 2. **ttft 200 ms** — the upstream waits 200 ms before its first byte; `--slow-n` (100)
//!    requests each, non-stream and stream, paced at `--slow-rps` (10/s, open loop, time
//!    from the scheduled send): latency and stream time to first byte, added over the
//!    bare worker;
//! 3. **200 chunks 10 ms apart** — `--streams` (10) streams paced at 2/s: the gap between
//!    successive SSE events as the client receives them, added over the bare worker;
//! 4. **throughput** — `--concurrency` (16) closed-loop clients for `--tput-secs` (10 s)
//!    of instant non-stream requests: requests/s, as a ratio of the bare worker.
//!
//! Loopback only; every phase is bounded in count and in time (each request times out
//! after 30 s, each sequential phase after `--phase-secs`). Prints one Markdown table of
//! absolute figures and what each target adds, plus issue 11's goals for Tollbooth; with
//! `--out` also writes it to a file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tollbooth_core::auth::ApiKey;
use tollbooth_core::keyrecord::{KeyRecord, KeyRole};
use tollbooth_tests::harness::{
    free_port, repo_root, wait_ok, wait_tcp, BoxError, EdgeWorker, MockUpstream, Proc, ScratchDir,
    WorkerOptions,
};
use tollbooth_tests::sync_client::{SyncClient, SyncResponse};

/// Mock directives of each scenario (tests/src/mock: `model@k=v,...`).
const INSTANT: &str = "m";
const TTFT: &str = "m@ttft=200";
const CHUNKS: &str = "m@chunks=200,delay=10";
const UPSTREAM_KEY: &str = "sk-bench-upstream";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    TensorZero,
    Portkey,
    LiteLlm,
}

struct Opts {
    n: usize,
    slow_n: usize,
    slow_rps: u32,
    streams: usize,
    concurrency: usize,
    tput_secs: u64,
    phase_secs: u64,
    peers: Vec<Peer>,
    out: Option<String>,
}

fn parse_opts() -> Result<Opts, BoxError> {
    let mut o = Opts {
        n: 1000,
        slow_n: 100,
        slow_rps: 10,
        streams: 10,
        concurrency: 16,
        tput_secs: 10,
        phase_secs: 60,
        peers: Vec::new(),
        out: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--n" => o.n = val()?.parse()?,
            "--slow-n" => o.slow_n = val()?.parse()?,
            "--slow-rps" => o.slow_rps = val()?.parse()?,
            "--streams" => o.streams = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse()?,
            "--tput-secs" => o.tput_secs = val()?.parse()?,
            "--phase-secs" => o.phase_secs = val()?.parse()?,
            "--peers" => {
                for p in val()?.split([',', ' ']).filter(|p| !p.is_empty()) {
                    o.peers.push(match p {
                        "tensorzero" => Peer::TensorZero,
                        "portkey" => Peer::Portkey,
                        "litellm" => Peer::LiteLlm,
                        other => return Err(format!("unknown peer {other}").into()),
                    });
                }
            }
            "--out" => o.out = Some(val()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    // Bounded: never a flood, never an endless run.
    o.n = o.n.clamp(10, 20_000);
    o.slow_n = o.slow_n.clamp(5, 2_000);
    o.slow_rps = o.slow_rps.clamp(1, 100);
    o.streams = o.streams.clamp(1, 100);
    o.concurrency = o.concurrency.clamp(1, 128);
    o.tput_secs = o.tput_secs.clamp(1, 60);
    o.phase_secs = o.phase_secs.clamp(5, 600);
    let mut peers = Vec::new();
    for p in o.peers.drain(..) {
        if !peers.contains(&p) {
            peers.push(p);
        }
    }
    o.peers = peers;
    Ok(o)
}

/// One gateway (or the mock itself) as the client sees it.
#[derive(Clone)]
struct Target {
    name: String,
    /// The chat completions URL.
    url: String,
    key: String,
    headers: Vec<(String, String)>,
    /// The model name this target needs for each scenario's upstream directive.
    model: fn(&str) -> String,
}

impl Target {
    fn request(
        &self,
        client: &reqwest::Client,
        upstream: &str,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let mut body = json!({
            "model": (self.model)(upstream),
            "messages": [{"role": "user", "content": "Say something short."}],
        });
        if stream {
            body["stream"] = json!(true);
        }
        let mut r = client
            .post(&self.url)
            .bearer_auth(&self.key)
            .timeout(REQUEST_TIMEOUT)
            .json(&body);
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        r
    }
}

fn raw_model(upstream: &str) -> String {
    upstream.to_owned()
}

/// Tollbooth's catalogue names (see `tollbooth_snapshot`).
fn tollbooth_model(upstream: &str) -> String {
    match upstream {
        TTFT => "bench-ttft",
        CHUNKS => "bench-chunks",
        _ => "bench",
    }
    .to_owned()
}

fn tensorzero_model(upstream: &str) -> String {
    format!("tensorzero::model_name::{}", tollbooth_model(upstream))
}

#[derive(Default, Clone)]
struct Stats {
    samples: Vec<f64>,
    errors: u64,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        let idx = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v.get(idx.min(v.len() - 1)).copied().unwrap_or(f64::NAN)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Counts SSE event ends (`\n\n`) across network reads.
#[derive(Default)]
struct EventEnds {
    newline: bool,
}

impl EventEnds {
    fn count(&mut self, bytes: &[u8]) -> usize {
        let mut n = 0;
        for &b in bytes {
            match b {
                b'\n' if self.newline => {
                    n += 1;
                    self.newline = false;
                }
                b'\n' => self.newline = true,
                b'\r' => {}
                _ => self.newline = false,
            }
        }
        n
    }
}

/// What one request saw: time to the first body bytes, to the end, and the arrival
/// time of each SSE event (streams), all from `start`.
struct Seen {
    first: Duration,
    total: Duration,
    events: Vec<Duration>,
    overhead_ms: Option<f64>,
}

async fn one(req: reqwest::RequestBuilder, start: Instant) -> Option<Seen> {
    let mut resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let overhead_ms = resp
        .headers()
        .get("x-tollbooth-overhead-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok());
    let mut first = None;
    let mut ends = EventEnds::default();
    let mut events = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        let now = start.elapsed();
        if first.is_none() && !chunk.is_empty() {
            first = Some(now);
        }
        for _ in 0..ends.count(&chunk) {
            events.push(now);
        }
    }
    let total = start.elapsed();
    Some(Seen {
        first: first.unwrap_or(total),
        total,
        events,
        overhead_ms,
    })
}

/// `n` sequential non-stream requests on one keep-alive connection, at most `secs`.
async fn sequential(
    client: &reqwest::Client,
    t: &Target,
    upstream: &str,
    n: usize,
    secs: u64,
) -> (Stats, Stats) {
    let mut lat = Stats::default();
    let mut overhead = Stats::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    for _ in 0..n {
        if Instant::now() > deadline {
            break;
        }
        let start = Instant::now();
        match one(t.request(client, upstream, false), start).await {
            Some(s) => {
                lat.samples.push(ms(s.total));
                if let Some(o) = s.overhead_ms {
                    overhead.samples.push(o);
                }
            }
            None => lat.errors += 1,
        }
    }
    (lat, overhead)
}

/// What a paced phase measured.
#[derive(Default, Clone)]
struct Paced {
    /// Time to the first body bytes (streams) from the scheduled send.
    first: Stats,
    /// Time to the end of the body from the scheduled send.
    total: Stats,
    /// Gaps between successive SSE events within each stream.
    gaps: Stats,
}

/// Open loop: `n` requests, one every 1/`rps` s; times count from the scheduled send,
/// so a target that stalls cannot hide its queue.
async fn paced(
    client: &reqwest::Client,
    t: &Target,
    upstream: &str,
    stream: bool,
    n: usize,
    rps: f64,
) -> Paced {
    let out = Arc::new(Mutex::new(Paced::default()));
    let interval = Duration::from_secs_f64(1.0 / rps);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let req = t.request(client, upstream, stream);
        let out = out.clone();
        handles.push(tokio::spawn(async move {
            let seen = one(req, scheduled).await;
            let Ok(mut o) = out.lock() else { return };
            match seen {
                Some(s) => {
                    o.first.samples.push(ms(s.first));
                    o.total.samples.push(ms(s.total));
                    for w in s.events.windows(2) {
                        if let [a, b] = w {
                            o.gaps.samples.push(ms(b.saturating_sub(*a)));
                        }
                    }
                }
                None => o.total.errors += 1,
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let snapshot = out.lock().map(|o| o.clone()).unwrap_or_default();
    snapshot
}

/// Closed loop: `concurrency` clients back to back for `secs`; completed requests/s.
async fn closed_loop(
    client: &reqwest::Client,
    t: &Target,
    concurrency: usize,
    secs: u64,
) -> (f64, u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (client, t) = (client.clone(), t.clone());
        handles.push(tokio::spawn(async move {
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < deadline {
                match t.request(&client, INSTANT, false).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                    }
                    _ => err += 1,
                }
            }
            (ok, err)
        }));
    }
    let (mut ok, mut err) = (0, 0);
    for h in handles {
        if let Ok((o, e)) = h.await {
            ok += o;
            err += e;
        }
    }
    (ok as f64 / started.elapsed().as_secs_f64(), err)
}

fn sh(cmd: &str) -> String {
    Command::new("bash")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn peers_dir() -> PathBuf {
    std::env::var_os("TB_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/tollbooth")))
        .unwrap_or_else(|| PathBuf::from(".cache/tollbooth"))
        .join("peers")
}

/// The bare pass-through worker under its own `wrangler dev --local`.
async fn start_bare(scratch: &Path, upstream: &str) -> Result<(Proc, String), BoxError> {
    let root = repo_root();
    let worker = root.join("bench/passthrough/worker.js");
    let config = scratch.join("bare-wrangler.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"bench-passthrough\"\nmain = {}\ncompatibility_date = \"2025-09-01\"\n\n[vars]\nUPSTREAM = {}\n",
            json!(worker.display().to_string()),
            json!(upstream),
        ),
    )?;
    let port = free_port();
    let mut cmd = Command::new("wrangler");
    cmd.arg("-c")
        .arg(&config)
        .current_dir(&root)
        .args(["dev", "--local", "--ip", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--inspector-port")
        .arg(free_port().to_string())
        .arg("--persist-to")
        .arg(scratch.join("bare-state"))
        .args([
            "--show-interactive-dev-session=false",
            "--log-level",
            "warn",
        ]);
    let mut proc = Proc::spawn("bench-bare-worker", cmd)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(
        &format!("{base}/_mock/health"),
        Duration::from_secs(90),
        &mut proc,
    )
    .await?;
    Ok((proc, base))
}

/// The `SYNC_SECRET` of the bench's Tollbooth (loopback only).
const SYNC_SECRET: &str = "bench-sync-secret-0123456789abcdef";

/// Publishes, through the signed internal API as the control plane does, the catalogue
/// Tollbooth serves the bench models from (priced, so the ledger meters every request),
/// a key, and a wallet credit that the whole run cannot use up.
async fn publish_tollbooth(worker: &EdgeWorker, mock: &str) -> Result<String, BoxError> {
    let sync = SyncClient::new(&worker.base_url, SYNC_SECRET);
    let model = |upstream: &str| {
        json!({"name": tollbooth_model(upstream),
               "deployments": [{"provider": "mock", "model": upstream}],
               "price": {"input_per_mtok": 150_000, "output_per_mtok": 600_000},
               "max_output_tokens": 1000})
    };
    let snapshot = json!({
        "version": "bench1",
        "providers": [{"id": "mock", "kind": "openai", "base_url": format!("{mock}/v1"),
            "credentials": [{"id": "mock-1", "secret": UPSTREAM_KEY}]}],
        "models": [model(INSTANT), model(TTFT), model(CHUNKS)],
        "plans": [{"id": "bench", "allowed_models": ["*"]}]
    });
    let ok = |what: &str, r: SyncResponse| -> Result<(), BoxError> {
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{what}: {} {}", r.status, r.body).into())
        }
    };
    ok(
        "catalogue",
        sync.put_catalogue(&serde_json::from_value(snapshot)?)
            .await?,
    )?;
    let key = ApiKey::generate(&[42u8; 32]);
    let record = KeyRecord {
        public_id: key.public_id().to_string(),
        secret_hash: key.secret_hash(),
        member_id: "bench".into(),
        plan_id: "bench".into(),
        status: Default::default(),
        role: KeyRole::Member,
        expires_at: None,
        allowed_models: None,
        rpm: None,
        tpm: None,
        capture: false,
        app_id: None,
        byok: false,
        name: None,
        version: 1,
    };
    ok("key", sync.put_key(&record).await?)?;
    ok(
        "wallet credit",
        sync.credit_wallet("bench", "bench-credit", 1_000_000_000_000, "bench")
            .await?,
    )?;
    Ok(key.expose())
}

/// Starts a peer gateway against the mock; returns its process and its target.
async fn start_peer(peer: Peer, scratch: &Path, mock: &str) -> Result<(Proc, Target), BoxError> {
    let dir = peers_dir();
    let missing = |p: &Path| -> Result<(), BoxError> {
        if p.exists() {
            Ok(())
        } else {
            Err(format!(
                "{} missing: install the peer with bench/install-peers.sh (scripts/bench.sh does)",
                p.display()
            )
            .into())
        }
    };
    match peer {
        Peer::TensorZero => {
            let python = dir.join("tensorzero/bin/python");
            missing(&python)?;
            let config = scratch.join("tensorzero.toml");
            let mut toml = String::from("[gateway.observability]\nenabled = false\n\n");
            for upstream in [INSTANT, TTFT, CHUNKS] {
                let name = tollbooth_model(upstream);
                toml.push_str(&format!(
                    "[models.{name}]\nrouting = [\"mock\"]\n\n[models.{name}.providers.mock]\n\
                     type = \"openai\"\nmodel_name = {}\napi_base = {}\n\
                     api_key_location = \"env::BENCH_MOCK_KEY\"\n\n",
                    json!(upstream),
                    json!(format!("{mock}/v1/")),
                ));
            }
            std::fs::write(&config, toml)?;
            let mut cmd = Command::new(python);
            cmd.arg(repo_root().join("bench/peers/tensorzero_gateway.py"))
                .arg(&config)
                .env("BENCH_MOCK_KEY", UPSTREAM_KEY)
                .env("RUST_LOG", "warn");
            let (proc, base) = Proc::spawn_listening("bench-tensorzero", cmd)?;
            Ok((
                proc,
                Target {
                    name: "TensorZero".into(),
                    url: format!("{base}/chat/completions"),
                    key: "unused".into(),
                    headers: Vec::new(),
                    model: tensorzero_model,
                },
            ))
        }
        Peer::Portkey => {
            let server = dir.join("portkey/node_modules/@portkey-ai/gateway/build/start-server.js");
            missing(&server)?;
            let port = free_port();
            let mut cmd = Command::new("node");
            cmd.arg(server)
                .arg(format!("--port={port}"))
                .arg("--headless");
            let mut proc = Proc::spawn("bench-portkey", cmd)?;
            wait_tcp(port, Duration::from_secs(60), &mut proc).await?;
            Ok((
                proc,
                Target {
                    name: "Portkey".into(),
                    url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
                    key: UPSTREAM_KEY.into(),
                    headers: vec![
                        ("x-portkey-provider".into(), "openai".into()),
                        ("x-portkey-custom-host".into(), format!("{mock}/v1")),
                    ],
                    model: raw_model,
                },
            ))
        }
        Peer::LiteLlm => {
            let bin = dir.join("litellm/bin/litellm");
            missing(&bin)?;
            let config = scratch.join("litellm.yaml");
            let mut yaml = String::from("model_list:\n");
            for upstream in [INSTANT, TTFT, CHUNKS] {
                yaml.push_str(&format!(
                    "  - model_name: {}\n    litellm_params:\n      model: {}\n      api_base: {}\n      api_key: {}\n",
                    json!(tollbooth_model(upstream)),
                    json!(format!("openai/{upstream}")),
                    json!(format!("{mock}/v1")),
                    json!(UPSTREAM_KEY),
                ));
            }
            yaml.push_str("litellm_settings:\n  telemetry: false\n  drop_params: true\n");
            std::fs::write(&config, yaml)?;
            let port = free_port();
            let mut cmd = Command::new(bin);
            cmd.arg("--config")
                .arg(&config)
                .args(["--host", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .arg("--telemetry")
                .arg("False")
                // Offline: the bundled price map, no download at start.
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .env("LITELLM_LOG", "ERROR");
            let mut proc = Proc::spawn("bench-litellm", cmd)?;
            let base = format!("http://127.0.0.1:{port}");
            wait_ok(
                &format!("{base}/health/liveliness"),
                Duration::from_secs(180),
                &mut proc,
            )
            .await?;
            Ok((
                proc,
                Target {
                    name: "LiteLLM".into(),
                    url: format!("{base}/v1/chat/completions"),
                    key: "unused".into(),
                    headers: Vec::new(),
                    model: tollbooth_model,
                },
            ))
        }
    }
}

/// Everything measured for one target.
#[derive(Default)]
struct Result1 {
    instant: Stats,
    overhead: Stats,
    ttft: Paced,
    ttft_stream: Paced,
    chunks: Paced,
    tput: (f64, u64),
}

fn f2(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.2}")
    }
}

/// `abs (+added)` where `reference` is the figure of the baseline column.
fn cell(v: f64, reference: Option<f64>) -> String {
    match reference {
        Some(r) if !v.is_nan() && !r.is_nan() => format!("{} ({:+.2})", f2(v), v - r),
        _ => f2(v),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = parse_opts()?;
    let load_before = sh("cut -d' ' -f1-3 /proc/loadavg");
    let scratch = ScratchDir::new("bench")?;
    let mock = MockUpstream::start(&[]).await?;
    let (_bare_proc, bare_base) = start_bare(scratch.path(), &mock.base_url).await?;
    // Production settings otherwise (isolate caches, breakers, metering on).
    let worker = EdgeWorker::start(WorkerOptions {
        vars: vec![
            ("ALLOW_LOOPBACK_UPSTREAMS".into(), "true".into()),
            ("SYNC_SECRET".into(), SYNC_SECRET.into()),
        ],
    })
    .await?;
    let tollbooth_key = publish_tollbooth(&worker, &mock.base_url).await?;

    let mut targets = vec![
        Target {
            name: "direct (mock)".into(),
            url: format!("{}/v1/chat/completions", mock.base_url),
            key: UPSTREAM_KEY.into(),
            headers: Vec::new(),
            model: raw_model,
        },
        Target {
            name: "bare worker".into(),
            url: format!("{bare_base}/v1/chat/completions"),
            key: UPSTREAM_KEY.into(),
            headers: Vec::new(),
            model: raw_model,
        },
        Target {
            name: "Tollbooth".into(),
            url: format!("{}/v1/chat/completions", worker.base_url),
            key: tollbooth_key,
            headers: Vec::new(),
            model: tollbooth_model,
        },
    ];
    let mut peer_procs = Vec::new();
    for p in &o.peers {
        eprintln!("starting peer {p:?}");
        let (proc, t) = start_peer(*p, scratch.path(), &mock.base_url).await?;
        peer_procs.push(proc);
        targets.push(t);
    }

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()?;

    // Warm up every target and scenario (isolates, caches, connection pools) and check
    // that each answers at all before measuring anything. A peer that cannot serve a
    // scenario is measured anyway (its errors show in the table) and named in the notes.
    let mut notes = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        for (upstream, stream) in [(INSTANT, false), (INSTANT, true), (TTFT, false)] {
            let w = paced(&client, t, upstream, stream, 10, 20.0).await;
            if w.total.samples.is_empty() {
                let why = match t.request(&client, upstream, stream).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        format!("{status}: {}", body.chars().take(200).collect::<String>())
                    }
                    Err(e) => e.to_string(),
                };
                let what = format!(
                    "{} answers nothing for `{upstream}` ({}): {why}",
                    t.name,
                    if stream { "stream" } else { "non-stream" }
                );
                if i < 3 {
                    return Err(what.into());
                }
                eprintln!("warning: {what}");
                notes.push(what);
            }
        }
        let (_, _) = sequential(&client, t, INSTANT, 50, 30).await;
    }

    let mut res: Vec<Result1> = targets.iter().map(|_| Result1::default()).collect();
    for (t, r) in targets.iter().zip(res.iter_mut()) {
        eprintln!("instant: {} x{} sequential", t.name, o.n);
        let (lat, ov) = sequential(&client, t, INSTANT, o.n, o.phase_secs).await;
        r.instant = lat;
        r.overhead = ov;
    }
    let slow_rps = f64::from(o.slow_rps);
    for (t, r) in targets.iter().zip(res.iter_mut()) {
        eprintln!(
            "ttft 200 ms non-stream: {} x{} at {slow_rps}/s",
            t.name, o.slow_n
        );
        r.ttft = paced(&client, t, TTFT, false, o.slow_n, slow_rps).await;
    }
    for (t, r) in targets.iter().zip(res.iter_mut()) {
        eprintln!(
            "ttft 200 ms stream: {} x{} at {slow_rps}/s",
            t.name, o.slow_n
        );
        r.ttft_stream = paced(&client, t, TTFT, true, o.slow_n, slow_rps).await;
    }
    for (t, r) in targets.iter().zip(res.iter_mut()) {
        eprintln!("200 chunks 10 ms apart: {} x{} at 2/s", t.name, o.streams);
        r.chunks = paced(&client, t, CHUNKS, true, o.streams, 2.0).await;
    }
    for (t, r) in targets.iter().zip(res.iter_mut()) {
        eprintln!(
            "throughput: {} with {} clients for {} s",
            t.name, o.concurrency, o.tput_secs
        );
        r.tput = closed_loop(&client, t, o.concurrency, o.tput_secs).await;
    }
    let load_after = sh("cut -d' ' -f1-3 /proc/loadavg");

    let mut report = render(&o, &targets, &res, &load_before, &load_after);
    for n in &notes {
        report.push_str(&format!("\nNote: {n}\n"));
    }
    println!("{report}");
    if let Some(path) = &o.out {
        std::fs::write(path, &report)?;
    }
    drop(peer_procs);
    Ok(())
}

fn render(
    o: &Opts,
    targets: &[Target],
    res: &[Result1],
    load_before: &str,
    load_after: &str,
) -> String {
    let mut r = String::new();
    r.push_str(&format!(
        "Machine: {} cores, {}; {}; load average before {load_before}, after {load_after}; \
         wrangler {}; run at {}\n\n",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("uname -sr"),
        sh("wrangler --version 2>/dev/null | tail -n1"),
        sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    ));
    let direct = res.first();
    let bare = res.get(1);
    r.push_str(
        "All times in ms. In brackets: added over the **direct** mock (instant rows) or over \
         the **bare worker** (every other row); throughput in brackets: ratio to the bare worker.\n\n",
    );
    r.push_str("| scenario |");
    for t in targets {
        r.push_str(&format!(" {} |", t.name));
    }
    r.push_str("\n|---|");
    for _ in targets {
        r.push_str("---|");
    }
    r.push('\n');
    type Row<'a> = (String, Box<dyn Fn(&Result1) -> f64 + 'a>, bool);
    let rows: Vec<Row> = vec![
        (
            format!("instant, non-stream p50 ({} sequential)", o.n),
            Box::new(|x: &Result1| x.instant.pct(50.0)),
            false,
        ),
        (
            "instant, non-stream p99".into(),
            Box::new(|x: &Result1| x.instant.pct(99.0)),
            false,
        ),
        (
            format!(
                "ttft 200 ms, non-stream p50 ({} at {}/s)",
                o.slow_n, o.slow_rps
            ),
            Box::new(|x: &Result1| x.ttft.total.pct(50.0)),
            true,
        ),
        (
            "ttft 200 ms, non-stream p99".into(),
            Box::new(|x: &Result1| x.ttft.total.pct(99.0)),
            true,
        ),
        (
            "ttft 200 ms, stream TTFB p50".into(),
            Box::new(|x: &Result1| x.ttft_stream.first.pct(50.0)),
            true,
        ),
        (
            "ttft 200 ms, stream TTFB p99".into(),
            Box::new(|x: &Result1| x.ttft_stream.first.pct(99.0)),
            true,
        ),
        (
            format!(
                "200 chunks 10 ms apart, inter-event gap p50 ({} streams)",
                o.streams
            ),
            Box::new(|x: &Result1| x.chunks.gaps.pct(50.0)),
            true,
        ),
        (
            "200 chunks 10 ms apart, inter-event gap p99".into(),
            Box::new(|x: &Result1| x.chunks.gaps.pct(99.0)),
            true,
        ),
        (
            "200 chunks 10 ms apart, inter-event gap max".into(),
            Box::new(|x: &Result1| x.chunks.gaps.pct(100.0)),
            true,
        ),
    ];
    for (label, f, vs_bare) in &rows {
        r.push_str(&format!("| {label} |"));
        let reference = if *vs_bare { bare } else { direct }.map(f);
        for (i, x) in res.iter().enumerate() {
            // The reference column, and the direct mock in rows measured against the
            // bare worker, show the plain figure.
            let plain = i == 0 || (*vs_bare && i == 1);
            let v = f(x);
            r.push_str(&format!(
                " {} |",
                if plain { f2(v) } else { cell(v, reference) }
            ));
        }
        r.push('\n');
    }
    r.push_str(&format!(
        "| throughput, {} closed-loop clients, {} s (req/s) |",
        o.concurrency, o.tput_secs
    ));
    let bare_tput = bare.map(|b| b.tput.0).unwrap_or(f64::NAN);
    for (i, x) in res.iter().enumerate() {
        if i == 1 {
            r.push_str(&format!(" {:.0} |", x.tput.0));
        } else {
            r.push_str(&format!(
                " {:.0} ({:.2}x) |",
                x.tput.0,
                x.tput.0 / bare_tput
            ));
        }
    }
    r.push_str("\n| errors (all phases) |");
    for x in res {
        let e = x.instant.errors
            + x.ttft.total.errors
            + x.ttft_stream.total.errors
            + x.chunks.total.errors
            + x.tput.1;
        r.push_str(&format!(" {e} |"));
    }
    r.push('\n');

    if let Some(ov) = res
        .get(2)
        .map(|t| &t.overhead)
        .filter(|o| !o.samples.is_empty())
    {
        r.push_str(&format!(
            "\nTollbooth's own `x-tollbooth-overhead-ms` header (instant phase; whole ms of \
             worker time not spent waiting on the upstream): p50 {}, p99 {}\n",
            f2(ov.pct(50.0)),
            f2(ov.pct(99.0)),
        ));
    }

    // Issue 11's goals, Tollbooth against the bare worker in this run.
    if let (Some(b), Some(t)) = (bare, res.get(2)) {
        let add = |f: &dyn Fn(&Result1) -> f64| f(t) - f(b);
        let ns50 = add(&|x| x.ttft.total.pct(50.0));
        let ns99 = add(&|x| x.ttft.total.pct(99.0));
        let s50 = add(&|x| x.ttft_stream.first.pct(50.0));
        let s99 = add(&|x| x.ttft_stream.first.pct(99.0));
        let i50 = add(&|x| x.instant.pct(50.0));
        let g99 = add(&|x| x.chunks.gaps.pct(99.0));
        let ratio = t.tput.0 / b.tput.0;
        r.push_str("\n| issue 11 goal (Tollbooth vs bare worker) | measured | |\n|---|---|---|\n");
        r.push_str(&format!(
            "| ttft 200 ms non-stream: ≤ +1 ms p50, ≤ +3 ms p99 | {ns50:+.2} / {ns99:+.2} | {} |\n",
            verdict(ns50 <= 1.0 && ns99 <= 3.0)
        ));
        r.push_str(&format!(
            "| ttft 200 ms stream TTFB: ≤ +1 ms p50, ≤ +3 ms p99 | {s50:+.2} / {s99:+.2} | {} |\n",
            verdict(s50 <= 1.0 && s99 <= 3.0)
        ));
        r.push_str(&format!(
            "| instant upstream: ≤ +3 ms p50 | {i50:+.2} | {} |\n",
            verdict(i50 <= 3.0)
        ));
        r.push_str(&format!(
            "| 200 chunks 10 ms apart: ≤ +1 ms inter-chunk p99 | {g99:+.2} | {} |\n",
            verdict(g99 <= 1.0)
        ));
        r.push_str(&format!(
            "| throughput, {} clients: ≥ 70% of the bare worker | {:.0}% | {} |\n",
            o.concurrency,
            ratio * 100.0,
            verdict(ratio >= 0.7)
        ));
        if let Some(d) = direct {
            r.push_str(&format!(
                "\nFor reference, the bare worker itself adds p50 {:+.2} ms, p99 {:+.2} ms over \
                 the direct mock (instant): the local runtime's own cost.\n",
                b.instant.pct(50.0) - d.instant.pct(50.0),
                b.instant.pct(99.0) - d.instant.pct(99.0),
            ));
        }
    }
    r
}
