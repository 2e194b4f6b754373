//! `make bench`: the gateway's added latency, time to first byte and throughput, measured
//! side by side in one run against calling the mock upstream directly.
//!
//! Starts the mock upstream and the release-built worker under `wrangler dev --local`
//! (workerd), publishes a one-model catalogue and a key, then for each target (direct,
//! gateway):
//!
//! 1. **latency** — open loop at a fixed rate (`--rps`, default 100) for `--secs`
//!    (default 15) of non-stream chat requests; latency is measured from the *scheduled*
//!    send time, so a stalled target cannot hide its queueing (no coordinated omission);
//! 2. **TTFB** — streaming requests at a fixed rate: time to the first body bytes and to
//!    the end of the stream;
//! 3. **throughput** — closed loop with `--concurrency` (default 16) workers for `--tput-secs`.
//!
//! Loopback only; every phase is bounded in time. Prints a Markdown report (and writes
//! it to `--out` when given).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;
use tollbooth_tests::harness::{BoxError, EdgeWorker, MockUpstream, WorkerOptions};

struct Opts {
    rps: u32,
    secs: u64,
    stream_rps: u32,
    stream_secs: u64,
    concurrency: usize,
    tput_secs: u64,
    out: Option<String>,
}

fn parse_opts() -> Result<Opts, BoxError> {
    let mut o = Opts {
        rps: 100,
        secs: 15,
        stream_rps: 20,
        stream_secs: 10,
        concurrency: 16,
        tput_secs: 10,
        out: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rps" => o.rps = val()?.parse()?,
            "--secs" => o.secs = val()?.parse()?,
            "--stream-rps" => o.stream_rps = val()?.parse()?,
            "--stream-secs" => o.stream_secs = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse()?,
            "--tput-secs" => o.tput_secs = val()?.parse()?,
            "--out" => o.out = Some(val()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    // Bounded: never a flood, never an endless run.
    o.rps = o.rps.clamp(1, 1000);
    o.secs = o.secs.clamp(1, 120);
    o.stream_rps = o.stream_rps.clamp(1, 200);
    o.stream_secs = o.stream_secs.clamp(1, 60);
    o.concurrency = o.concurrency.clamp(1, 128);
    o.tput_secs = o.tput_secs.clamp(1, 60);
    Ok(o)
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    key: String,
    model: String,
}

impl Target {
    fn request(&self, client: &reqwest::Client, stream: bool) -> reqwest::RequestBuilder {
        client.post(&self.url).bearer_auth(&self.key).json(&json!({
            "model": self.model,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say something short."}],
        }))
    }
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
    fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Open loop: one request every 1/rps, latency from the scheduled time.
async fn open_loop(
    client: &reqwest::Client,
    t: &Target,
    rps: u32,
    secs: u64,
    stream: bool,
) -> (Stats, Stats, Stats) {
    let first = Arc::new(Mutex::new(Stats::default()));
    let total = Arc::new(Mutex::new(Stats::default()));
    let overhead = Arc::new(Mutex::new(Stats::default()));
    let interval = Duration::from_secs_f64(1.0 / f64::from(rps));
    let n = u64::from(rps) * secs;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let req = t.request(client, stream).timeout(Duration::from_secs(30));
        let (first, total, overhead) = (first.clone(), total.clone(), overhead.clone());
        handles.push(tokio::spawn(async move {
            let outcome = async {
                let mut resp = req.send().await?;
                if !resp.status().is_success() {
                    return Ok::<_, reqwest::Error>(None);
                }
                // The worker's own account of time not spent waiting on the upstream.
                if let Some(v) = resp
                    .headers()
                    .get("x-tollbooth-overhead-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    overhead.lock().await.samples.push(v);
                }
                let mut ttfb = None;
                while let Some(chunk) = resp.chunk().await? {
                    if ttfb.is_none() && !chunk.is_empty() {
                        ttfb = Some(scheduled.elapsed());
                    }
                }
                Ok(Some((
                    ttfb.unwrap_or_else(|| scheduled.elapsed()),
                    scheduled.elapsed(),
                )))
            }
            .await;
            match outcome {
                Ok(Some((f, d))) => {
                    first.lock().await.samples.push(ms(f));
                    total.lock().await.samples.push(ms(d));
                }
                _ => {
                    total.lock().await.errors += 1;
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let f = first.lock().await.clone();
    let t = total.lock().await.clone();
    let o = overhead.lock().await.clone();
    (f, t, o)
}

/// Closed loop: `concurrency` workers back to back for `secs`; completed requests/s.
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
                match t
                    .request(&client, false)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                {
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
    std::process::Command::new("bash")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = parse_opts()?;
    let load_before = sh("cut -d' ' -f1-3 /proc/loadavg");
    let mock = MockUpstream::start(&[]).await?;
    let worker = EdgeWorker::start(WorkerOptions {
        vars: vec![("ALLOW_LOOPBACK_UPSTREAMS".into(), "true".into())],
    })
    .await?;

    let key = tollbooth_core::auth::ApiKey::generate(&[42u8; 32]);
    let record = json!({"public_id": key.public_id(), "secret_hash": key.secret_hash(),
        "member_id": "bench", "plan_id": "bench"});
    let snapshot = json!({
        "version": "bench1",
        "providers": [{"id": "mock", "kind": "openai", "base_url": format!("{}/v1", mock.base_url),
            "credentials": [{"id": "mock-1", "secret": "sk-bench-upstream"}]}],
        "models": [{"name": "bench", "deployments": [{"provider": "mock", "model": "m"}]},
                   {"name": "bench-stream", "deployments": [{"provider": "mock", "model": "m@chunks=20"}]}],
        "plans": [{"id": "bench", "allowed_models": ["*"]}]
    });
    let dir = worker
        .persist
        .parent()
        .ok_or("no scratch dir")?
        .to_path_buf();
    let kf = dir.join("bench-keys.json");
    let cf = dir.join("bench-config.json");
    std::fs::write(
        &kf,
        json!([{"key": format!("key:{}", key.public_id()), "value": record.to_string()}])
            .to_string(),
    )?;
    std::fs::write(
        &cf,
        json!([{"key": "catalogue:v:bench1", "value": snapshot.to_string()},
               {"key": "catalogue:current", "value": "bench1"}])
        .to_string(),
    )?;
    let kf_s = kf.to_string_lossy().into_owned();
    let cf_s = cf.to_string_lossy().into_owned();
    worker.wrangler_local(&["kv", "bulk", "put", &kf_s, "--binding", "KEYS"])?;
    worker.wrangler_local(&["kv", "bulk", "put", &cf_s, "--binding", "CONFIG"])?;

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()?;
    let direct = Target {
        name: "direct (mock)",
        url: format!("{}/v1/chat/completions", mock.base_url),
        key: "sk-bench-upstream".into(),
        model: "m".into(),
    };
    let gateway = Target {
        name: "gateway (workerd)",
        url: format!("{}/v1/chat/completions", worker.base_url),
        key: key.expose(),
        model: "bench".into(),
    };
    // Warm up both (isolate, caches, connection pools).
    for t in [&direct, &gateway] {
        let (_, s, _) = open_loop(&client, t, 20, 2, false).await;
        if s.samples.is_empty() {
            return Err(format!("{} answers nothing: {} errors", t.name, s.errors).into());
        }
    }

    let mut lat = Vec::new();
    let mut overheads = Vec::new();
    for t in [&direct, &gateway] {
        eprintln!("latency: {} at {} rps for {} s", t.name, o.rps, o.secs);
        let (_, total, overhead) = open_loop(&client, t, o.rps, o.secs, false).await;
        lat.push(total);
        overheads.push(overhead);
    }
    let mut ttfb = Vec::new();
    for t in [&direct, &gateway] {
        let t = Target {
            model: if t.name.starts_with("direct") {
                "m@chunks=20".into()
            } else {
                "bench-stream".into()
            },
            ..t.clone()
        };
        eprintln!(
            "ttfb: {} at {} rps for {} s",
            t.name, o.stream_rps, o.stream_secs
        );
        ttfb.push(open_loop(&client, &t, o.stream_rps, o.stream_secs, true).await);
    }
    let mut tput = Vec::new();
    for t in [&direct, &gateway] {
        eprintln!(
            "throughput: {} with {} workers for {} s",
            t.name, o.concurrency, o.tput_secs
        );
        tput.push(closed_loop(&client, t, o.concurrency, o.tput_secs).await);
    }

    let mut r = String::new();
    r.push_str(&format!(
        "Machine: {} cores, {}; {}; load average before the run {}; wrangler {}; run at {}\n\n",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("uname -sr"),
        load_before,
        sh("wrangler --version 2>/dev/null | tail -n1"),
        sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    ));
    r.push_str(&format!(
        "### Non-stream latency, open loop at {} rps for {} s (ms, from scheduled send)\n\n",
        o.rps, o.secs
    ));
    r.push_str("| target | n | errors | p50 | p90 | p99 | max | mean |\n|---|---|---|---|---|---|---|---|\n");
    for (t, s) in [&direct, &gateway].iter().zip(&lat) {
        r.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            t.name,
            s.samples.len(),
            s.errors,
            s.pct(50.0),
            s.pct(90.0),
            s.pct(99.0),
            s.pct(100.0),
            s.mean()
        ));
    }
    if let [d, g] = lat.as_slice() {
        r.push_str(&format!(
            "\nAdded by the gateway: p50 **{:.2} ms**, p99 **{:.2} ms** (ratio gateway/direct: p50 {:.1}x, p99 {:.1}x)\n",
            g.pct(50.0) - d.pct(50.0),
            g.pct(99.0) - d.pct(99.0),
            g.pct(50.0) / d.pct(50.0),
            g.pct(99.0) / d.pct(99.0),
        ));
    }
    if let Some(ov) = overheads.get(1).filter(|o| !o.samples.is_empty()) {
        r.push_str(&format!(
            "\nThe worker's own overhead header (`x-tollbooth-overhead-ms`, whole ms: time in the \
             worker not spent waiting on the upstream): p50 {:.0} ms, p99 {:.0} ms, mean {:.2} ms\n",
            ov.pct(50.0),
            ov.pct(99.0),
            ov.mean()
        ));
    }
    r.push_str(&format!(
        "\n### Streams (20 chunks), open loop at {} rps for {} s (ms)\n\n",
        o.stream_rps, o.stream_secs
    ));
    r.push_str("| target | n | errors | TTFB p50 | TTFB p99 | full stream p50 | full stream p99 |\n|---|---|---|---|---|---|---|\n");
    for (t, (f, s, _)) in [&direct, &gateway].iter().zip(&ttfb) {
        r.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            t.name,
            f.samples.len(),
            s.errors,
            f.pct(50.0),
            f.pct(99.0),
            s.pct(50.0),
            s.pct(99.0)
        ));
    }
    r.push_str(&format!(
        "\n### Throughput, closed loop with {} concurrent clients for {} s\n\n| target | req/s | errors |\n|---|---|---|\n",
        o.concurrency, o.tput_secs
    ));
    for (t, (rps, err)) in [&direct, &gateway].iter().zip(&tput) {
        r.push_str(&format!("| {} | {:.0} | {} |\n", t.name, rps, err));
    }
    if let [(d, _), (g, _)] = tput.as_slice() {
        r.push_str(&format!(
            "\nRatio gateway/direct throughput: {:.3}\n",
            g / d
        ));
    }
    println!("{r}");
    if let Some(path) = o.out {
        std::fs::write(path, &r)?;
    }
    Ok(())
}
