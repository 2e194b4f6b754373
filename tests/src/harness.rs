//! Starts the real components for end-to-end tests on free loopback ports: DynamoDB
//! Local, the admin server, `wrangler dev --local` (workerd with local D1/KV) and the
//! mock upstream. Each runs in its own process group and is stopped with SIGTERM to
//! that group when its handle drops (SIGKILL after a grace period).
//!
//! Tools are found through the variables `scripts/env.sh` exports (PATH with Node 22
//! and wrangler, `DYNAMODB_LOCAL_DIR`); `make test` sources it before running tests.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A fresh scratch directory under the ignored `.data/test-runs`, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> Result<Self, BoxError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = repo_root().join(".data/test-runs").join(format!(
            "{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process in its own process group, stopped with its whole group on drop.
pub struct Proc {
    name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` in a new process group with stdout+stderr appended to a log file
    /// under `.data/test-logs`.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self, BoxError> {
        let logs = repo_root().join(".data/test-logs");
        fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}-{}.log", std::process::id()));
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Spawns `cmd` with stdout piped and waits for a line `LISTENING <url>`; returns
    /// the process and the URL.
    pub fn spawn_listening(name: &str, mut cmd: Command) -> Result<(Self, String), BoxError> {
        let logs = repo_root().join(".data/test-logs");
        fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}-{}.log", std::process::id()));
        let err = File::options().create(true).append(true).open(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(url) = line.strip_prefix("LISTENING ") {
                        let _ = tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let mut proc = Self {
            name: name.to_owned(),
            child,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok((proc, url)),
            Err(_) => {
                proc.stop();
                Err(format!("{name} did not print LISTENING; see {}", proc.log.display()).into())
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL to the process group at once (a crash, not a shutdown).
    pub fn kill(&mut self) {
        signal_group(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM to the process group, then SIGKILL if it has not exited in 10 s.
    pub fn stop(&mut self) {
        if self.exited() {
            signal_group(self.pid(), libc::SIGTERM);
            return;
        }
        signal_group(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited() {
                // Children of the leader (node's workerd) may outlive it briefly.
                std::thread::sleep(Duration::from_millis(100));
                signal_group(self.pid(), libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing its group", self.name);
        signal_group(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Sends `sig` to the process group `pgid` with killpg(2).
///
/// Not through the `kill` binary: procps-ng 4's `kill -TERM -<pgid>` (no `--`) signals
/// every process the user may signal, which takes down the whole session.
fn signal_group(pgid: u32, sig: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // Never 0 (our own group) or 1 (init): only groups this harness created.
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions; a stale group id only
        // yields ESRCH.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_ok(url: &str, timeout: Duration, proc: &mut Proc) -> Result<(), BoxError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if proc.exited() {
            return Err(format!(
                "{} exited before it was ready; see {}",
                proc.name,
                proc.log.display()
            )
            .into());
        }
        match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{} not ready at {url} ({last}); see {}",
        proc.name,
        proc.log.display()
    )
    .into())
}

/// Polls `url` until it answers anything (any status) or `timeout` passes.
pub async fn wait_answer(url: &str, timeout: Duration, proc: &mut Proc) -> Result<(), BoxError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if proc.exited() {
            return Err(format!("{} exited; see {}", proc.name, proc.log.display()).into());
        }
        if client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{} not answering at {url}", proc.name).into())
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_tcp(port: u16, timeout: Duration, proc: &mut Proc) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if proc.exited() {
            return Err(format!("{} exited; see {}", proc.name, proc.log.display()).into());
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{} not listening on {port}", proc.name).into())
}

fn env_path(var: &str) -> Result<PathBuf, BoxError> {
    std::env::var_os(var).map(PathBuf::from).ok_or_else(|| {
        format!("{var} is not set: run tests through `make test` (it sources scripts/env.sh)")
            .into()
    })
}

/// A binary of this workspace, found next to the running test executable
/// (`target/debug/deps/<test>` -> `target/debug/<name>`), or through `env_override`.
pub fn workspace_bin(name: &str, env_override: &str) -> Result<PathBuf, BoxError> {
    if let Some(p) = std::env::var_os(env_override) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?;
    let bin = dir.join(name);
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not built: run `cargo build --workspace --bins` (make test does)",
            bin.display()
        )
        .into())
    }
}

/// AWS's DynamoDB Local, in memory.
pub struct DynamoLocal {
    pub endpoint: String,
    pub proc: Proc,
}

impl DynamoLocal {
    pub async fn start() -> Result<Self, BoxError> {
        let dir = env_path("DYNAMODB_LOCAL_DIR")?;
        let port = free_port();
        let mut cmd = Command::new("java");
        cmd.current_dir(&dir)
            .arg(format!(
                "-Djava.library.path={}",
                dir.join("DynamoDBLocal_lib").display()
            ))
            .args(["-jar", "DynamoDBLocal.jar", "-inMemory", "-port"])
            .arg(port.to_string());
        let mut proc = Proc::spawn("dynamodb-local", cmd)?;
        wait_tcp(port, Duration::from_secs(60), &mut proc).await?;
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            proc,
        })
    }
}

/// A local S3 (moto's server mode, `TB_MOTO_SERVER` from scripts/env.sh) for the export
/// bucket. The admin server creates its bucket at start.
pub struct LocalS3 {
    pub endpoint: String,
    pub proc: Proc,
}

impl LocalS3 {
    pub async fn start() -> Result<Self, BoxError> {
        let bin = env_path("TB_MOTO_SERVER")?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p"]).arg(port.to_string());
        let mut proc = Proc::spawn("moto-s3", cmd)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_answer(&format!("{endpoint}/"), Duration::from_secs(60), &mut proc).await?;
        Ok(Self { endpoint, proc })
    }
}

/// The mock upstream binary.
pub struct MockUpstream {
    pub base_url: String,
    pub proc: Proc,
}

impl MockUpstream {
    pub async fn start(extra_args: &[&str]) -> Result<Self, BoxError> {
        let mut cmd = Command::new(workspace_bin("mock-upstream", "TB_MOCK_BIN")?);
        cmd.args(["--addr", "127.0.0.1", "--port", "0"])
            .args(extra_args);
        let (proc, base_url) = Proc::spawn_listening("mock-upstream", cmd)?;
        Ok(Self { base_url, proc })
    }
}

/// The admin API served locally (same handler as the Lambda function).
pub struct AdminServer {
    pub base_url: String,
    pub table: String,
    pub proc: Proc,
}

impl AdminServer {
    pub async fn start(
        dynamo_endpoint: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<Self, BoxError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let port = free_port();
        let table = format!(
            "tollbooth-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = Command::new(workspace_bin("admin-api", "TB_ADMIN_BIN")?);
        cmd.env("LOCAL_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("TABLE_NAME", &table)
            .env("CREATE_TABLE", "1")
            .env("AWS_ENDPOINT_URL_DYNAMODB", dynamo_endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // Local test runs: the public development secrets and loopback upstreams (the
            // mock) are explicit opt-ins of the admin plane; a test can override both.
            // (allowed only with an explicit development ENVIRONMENT).
            .env("ENVIRONMENT", "test")
            .env("DEV_DEFAULTS", "1")
            .env("ALLOW_LOOPBACK_UPSTREAMS", "1");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("admin-api", cmd)?;
        let base_url = format!("http://127.0.0.1:{port}");
        wait_ok(
            &format!("{base_url}/health"),
            Duration::from_secs(60),
            &mut proc,
        )
        .await?;
        Ok(Self {
            base_url,
            table,
            proc,
        })
    }
}

/// Options for one `wrangler dev --local` instance.
#[derive(Default, Clone)]
pub struct WorkerOptions {
    /// `[vars]` for the worker (e.g. `ADMIN_ORIGIN`).
    pub vars: Vec<(String, String)>,
}

/// The edge worker under `wrangler dev --local`: real workerd, local D1 and KV
/// persisted in a scratch directory of its own.
pub struct EdgeWorker {
    pub base_url: String,
    pub config: PathBuf,
    pub persist: PathBuf,
    // Field order matters: the process stops before its directory is removed.
    pub proc: Proc,
    _scratch: ScratchDir,
}

impl EdgeWorker {
    pub async fn start(opts: WorkerOptions) -> Result<Self, BoxError> {
        Self::start_on(free_port(), opts).await
    }

    /// Like [`EdgeWorker::start`] on a given port: for a peer that must know the
    /// worker's URL before it starts (the admin server's `EDGE_ORIGIN`).
    pub async fn start_on(port: u16, opts: WorkerOptions) -> Result<Self, BoxError> {
        Self::start_inner(port, opts, false).await
    }

    /// Like [`EdgeWorker::start`], ready as soon as `/health` answers at all (for
    /// workers that are meant to be misconfigured).
    pub async fn start_unchecked(opts: WorkerOptions) -> Result<Self, BoxError> {
        Self::start_inner(free_port(), opts, true).await
    }

    async fn start_inner(
        port: u16,
        opts: WorkerOptions,
        any_status: bool,
    ) -> Result<Self, BoxError> {
        let root = repo_root();
        let shim = root.join("edge-worker/build/index.js");
        if !shim.exists() {
            return Err(format!(
                "{} missing: build the worker first (scripts/build-worker.sh; make test does)",
                shim.display()
            )
            .into());
        }
        let scratch = ScratchDir::new("worker")?;
        let persist = scratch.path().join("state");
        let config = scratch.path().join("wrangler.toml");
        fs::write(&config, wrangler_config(&root, &shim, &opts))?;

        let status = wrangler(&config)
            .args([
                "d1",
                "migrations",
                "apply",
                "LEDGER",
                "--local",
                "--persist-to",
            ])
            .arg(&persist)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !status.status.success() {
            return Err(format!(
                "wrangler d1 migrations apply failed: {}",
                String::from_utf8_lossy(&status.stderr)
            )
            .into());
        }

        let proc = spawn_dev(&config, &persist, port, any_status).await?;
        Ok(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            config,
            persist,
            proc,
            _scratch: scratch,
        })
    }

    /// Kills the worker (SIGKILL: in-flight requests die with it, as when an isolate is
    /// evicted) and starts it again on the same port with the same local D1/KV state.
    pub async fn crash_and_restart(&mut self) -> Result<(), BoxError> {
        self.proc.kill();
        let port = self
            .base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or("no port in the base URL")?;
        // workerd's children may hold the port for a moment after the kill.
        for _ in 0..50 {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.proc = spawn_dev(&self.config, &self.persist, port, false).await?;
        Ok(())
    }
}

/// `wrangler dev --local` on `port` with this config and state; ready when `/health`
/// answers 200.
async fn spawn_dev(
    config: &Path,
    persist: &Path,
    port: u16,
    any_status: bool,
) -> Result<Proc, BoxError> {
    {
        let inspector = free_port();
        // `TB_WORKER_LOG_LEVEL=log` shows the worker's own console.log lines in the log file.
        let log_level = std::env::var("TB_WORKER_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
        let mut cmd = wrangler(config);
        cmd.args(["dev", "--local", "--ip", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--inspector-port")
            .arg(inspector.to_string())
            .arg("--persist-to")
            .arg(persist)
            // Exposes `/__scheduled?cron=...` so tests can fire the Cron Trigger.
            .arg("--test-scheduled")
            .args([
                "--show-interactive-dev-session=false",
                "--log-level",
                &log_level,
            ]);
        let mut proc = Proc::spawn("wrangler-dev", cmd)?;
        let base_url = format!("http://127.0.0.1:{port}");
        if any_status {
            wait_answer(
                &format!("{base_url}/health"),
                Duration::from_secs(90),
                &mut proc,
            )
            .await?;
        } else {
            wait_ok(
                &format!("{base_url}/health"),
                Duration::from_secs(90),
                &mut proc,
            )
            .await?;
        }
        Ok(proc)
    }
}

impl EdgeWorker {
    /// Runs a wrangler command against this instance's config and local state, e.g.
    /// `["kv", "key", "put", "--binding", "CONFIG", "k", "v"]`.
    pub fn wrangler_local(&self, args: &[&str]) -> Result<String, BoxError> {
        let out = wrangler(&self.config)
            .args(args)
            .args(["--local", "--persist-to"])
            .arg(&self.persist)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "wrangler {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn wrangler(config: &Path) -> Command {
    let mut cmd = Command::new("wrangler");
    cmd.arg("-c").arg(config).current_dir(repo_root());
    cmd
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Paths the worker answers before any console file (wrangler.toml `[assets]`).
const ASSETS_RUN_WORKER_FIRST: &str = r#"["/v1/*", "/api/*", "/internal/*", "/webhooks/*", "/authorization", "/health", "/chat/*", "/v1beta/*"]"#;

/// A wrangler config for tests: the prebuilt worker, no build step, same bindings as
/// the repository's wrangler.toml.
fn wrangler_config(root: &Path, shim: &Path, opts: &WorkerOptions) -> String {
    let mut s = format!(
        "name = \"tollbooth-test\"\nmain = {}\ncompatibility_date = \"2025-09-01\"\n\n\
         [[kv_namespaces]]\nbinding = \"KEYS\"\nid = \"tollbooth-keys\"\n\n\
         [[kv_namespaces]]\nbinding = \"CONFIG\"\nid = \"tollbooth-config\"\n\n\
         [[d1_databases]]\nbinding = \"LEDGER\"\ndatabase_name = \"tollbooth-ledger\"\n\
         database_id = \"00000000-0000-0000-0000-000000000000\"\nmigrations_dir = {}\n\n\
         [[r2_buckets]]\nbinding = \"CAPTURES\"\nbucket_name = \"tollbooth-captures\"\n\n",
        toml_str(&shim.display().to_string()),
        toml_str(&root.join("migrations").display().to_string()),
    );
    // The web console as static assets, as in wrangler.toml, once it is built.
    let console = root.join("console/dist");
    if console.join("index.html").is_file() {
        s.push_str(&format!(
            "[assets]\ndirectory = {}\nbinding = \"ASSETS\"\nhtml_handling = \"auto-trailing-slash\"\n\
             not_found_handling = \"none\"\nrun_worker_first = {}\n\n",
            toml_str(&console.display().to_string()),
            ASSETS_RUN_WORKER_FIRST
        ));
    }
    s.push_str("[vars]\n");
    if !opts.vars.iter().any(|(k, _)| k == "ENVIRONMENT") {
        s.push_str("ENVIRONMENT = \"test\"\n");
    }
    for (k, v) in &opts.vars {
        s.push_str(&format!("{k} = {}\n", toml_str(v)));
    }
    s
}
