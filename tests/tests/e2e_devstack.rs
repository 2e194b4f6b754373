//! The run command itself (`scripts/dev.sh`, what `make dev` runs): started on free
//! ports with a scratch data folder, it must come up, bootstrap a demo member and key,
//! serve streaming and non-streaming calls through the official `openai` Python SDK,
//! stop cleanly on SIGTERM (no process left in any group it started), and on a second
//! run keep the same member, key and usage.
//!
//! Needs what `make test` prepares: the built worker and binaries (dev.sh runs with
//! TB_DEV_SKIP_BUILD=1), the tools from scripts/env.sh and `$TB_PYTHON` with `openai`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollbooth_tests::harness::{free_port, repo_root, BoxError, Proc, ScratchDir};

struct Ports {
    worker: u16,
    admin: u16,
    dynamo: u16,
    mock: u16,
    inspector: u16,
    epay: u16,
    s3: u16,
}

fn start_devstack(data: &Path, p: &Ports, run: u32) -> Result<Proc, BoxError> {
    let _ = std::fs::remove_file(data.join("dev.json"));
    let mut cmd = Command::new("bash");
    cmd.arg("scripts/dev.sh")
        .current_dir(repo_root())
        .env("TB_DATA_DIR", data)
        .env("TB_WORKER_PORT", p.worker.to_string())
        .env("TB_ADMIN_PORT", p.admin.to_string())
        .env("TB_DYNAMO_PORT", p.dynamo.to_string())
        .env("TB_MOCK_PORT", p.mock.to_string())
        .env("TB_INSPECTOR_PORT", p.inspector.to_string())
        .env("TB_EPAY_PORT", p.epay.to_string())
        .env("TB_S3_PORT", p.s3.to_string())
        .env("TB_DEV_SKIP_BUILD", "1");
    // The mock upstream, whatever the developer's shell holds.
    for var in [
        "OPENAI_API_KEY",
        "DEEPSEEK_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
    ] {
        cmd.env_remove(var);
    }
    Proc::spawn(&format!("devstack-run{run}"), cmd)
}

/// Waits for dev.json (written once the bootstrap is done).
async fn wait_dev_json(data: &Path, proc: &mut Proc) -> Result<Value, BoxError> {
    let path = data.join("dev.json");
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return Ok(v);
            }
        }
        if proc.exited() {
            return Err(format!("dev.sh exited early; see {}", proc.log.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("no dev.json after 240 s; see {}", proc.log.display()).into())
}

/// One non-streaming and one streaming call through the official SDK.
fn openai_sdk_calls(dev: &Value) -> Value {
    let python = std::env::var("TB_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, sys
from openai import OpenAI
base, key, model = sys.argv[1:4]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
chunks, text = 0, ""
for c in client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "hi"}]):
    chunks += 1
    if c.choices and c.choices[0].delta.content:
        text += c.choices[0].delta.content
print(json.dumps({"text": r.choices[0].message.content, "usage": r.usage.total_tokens,
                  "chunks": chunks, "stream_text": text}))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dev["base_url"].as_str().unwrap())
        .arg(dev["demo_key"].as_str().unwrap())
        .arg(dev["demo_model"].as_str().unwrap())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "openai SDK calls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("SDK script output")
}

/// The member's usage as the edge reports it: (member id, requests in the last 30 days).
async fn usage(http: &reqwest::Client, dev: &Value) -> (String, u64) {
    let r = http
        .get(format!("{}/api/usage", dev["base_url"].as_str().unwrap()))
        .bearer_auth(dev["demo_key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let requests = b["daily"]
        .as_array()
        .map(|d| d.iter().map(|x| x["requests"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    (
        b["member_id"].as_str().unwrap_or_default().to_owned(),
        requests,
    )
}

/// Waits until the edge has metered at least `n` requests (metering is off the path).
async fn wait_usage(http: &reqwest::Client, dev: &Value, n: u64) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let u = usage(http, dev).await;
        if u.1 >= n || Instant::now() > deadline {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: killpg with signal 0 only checks for existence.
    pgid > 1 && unsafe { libc::killpg(pgid, 0) } == 0
}

/// Stops dev.sh with SIGTERM to its group and checks every group it started is gone.
fn stop_and_check(mut proc: Proc, data: &Path) {
    let pgids: Vec<i32> = std::fs::read_to_string(data.join("pgids"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(
        pgids.len(),
        7,
        "dynamodb, s3, mock, epay simulator, worker, admin, jobs: {pgids:?}"
    );
    let leader = i32::try_from(proc.pid()).unwrap();
    // SAFETY: signals only the group the harness created for dev.sh.
    unsafe {
        libc::killpg(leader, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && (!proc.exited() || pgids.iter().any(|g| group_alive(*g))) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<i32> = pgids.iter().copied().filter(|g| group_alive(*g)).collect();
    assert!(proc.exited(), "dev.sh did not exit on SIGTERM");
    assert!(
        left.is_empty(),
        "process groups still alive after SIGTERM: {left:?}"
    );
    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
    assert!(log.contains("stopping"), "{log}");
    assert!(!data.join("dev.json").exists(), "dev.json removed on stop");
    drop(proc);
}

#[tokio::test]
async fn test_make_dev_runs_stops_and_keeps_data() {
    let scratch = ScratchDir::new("devstack").unwrap();
    let data = scratch.path().join("data");
    let ports = Ports {
        worker: free_port(),
        admin: free_port(),
        dynamo: free_port(),
        mock: free_port(),
        inspector: free_port(),
        epay: free_port(),
        s3: free_port(),
    };
    let http = reqwest::Client::new();

    // First run: everything is created.
    let mut proc = start_devstack(&data, &ports, 1).unwrap();
    let started = Instant::now();
    let dev = wait_dev_json(&data, &mut proc).await.unwrap();
    eprintln!("first run ready in {:?}", started.elapsed());
    for field in [
        "base_url",
        "admin_email",
        "admin_password",
        "demo_key",
        "demo_model",
    ] {
        assert!(
            dev[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {dev}"
        );
    }
    assert_eq!(
        dev["base_url"],
        format!("http://127.0.0.1:{}", ports.worker)
    );
    let calls = openai_sdk_calls(&dev);
    assert!(
        calls["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{calls}"
    );
    assert!(calls["usage"].as_u64().unwrap_or(0) > 0, "{calls}");
    assert!(calls["chunks"].as_u64().unwrap_or(0) > 1, "{calls}");
    assert!(
        calls["stream_text"].as_str().is_some_and(|t| !t.is_empty()),
        "{calls}"
    );
    let (member, used) = wait_usage(&http, &dev, 2).await;
    assert!(!member.is_empty());
    assert!(used >= 2, "two requests metered, got {used}");

    // The admin summary (from the edge rollups) sees them, through the front door.
    let base = dev["base_url"].as_str().unwrap();
    let login: Value = http
        .post(format!("{base}/api/admin/login"))
        .json(&json!({"email": dev["admin_email"], "password": dev["admin_password"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = login["token"].as_str().expect("admin token").to_owned();
    let r = http
        .get(format!("{base}/api/admin/summary?hours=2"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The worker's request id crosses the front door: the admin server logs it.
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let summary: Value = r.json().await.unwrap();
    let admin_log = std::fs::read_to_string(data.join("logs/admin.log")).unwrap();
    let line = admin_log
        .lines()
        .find(|l| l.contains(&request_id))
        .unwrap_or_else(|| panic!("{request_id} not in the admin log"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["path"], "/api/admin/summary");
    assert_eq!(line["status"], 200);
    let secrets = std::fs::read_to_string(data.join("secrets.env")).unwrap();
    let worker_log = std::fs::read_to_string(data.join("logs/worker.log")).unwrap();
    let console = std::fs::read_to_string(&proc.log).unwrap();
    for (name, value) in secrets.lines().filter_map(|l| l.split_once('=')) {
        if name != "ADMIN_EMAIL" {
            assert!(
                !admin_log.contains(value),
                "{name} appears in the admin log"
            );
            assert!(
                !worker_log.contains(value),
                "{name} appears in the worker log"
            );
        }
        // The console shows the admin login on purpose, never the planes' secrets.
        if ["SYNC_SECRET", "JWT_KEYS", "MASTER_KEY"].contains(&name) {
            assert!(!console.contains(value), "{name} appears on the console");
        }
    }
    assert!(summary["requests"].as_u64().unwrap_or(0) >= 2, "{summary}");
    assert!(
        summary["tokens"]["total"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(summary["latency_ms_mean"].is_number(), "{summary}");

    // `make export` against this stack: a job through the front door, the three files
    // downloaded through their presigned URLs (moto's S3) into the chosen folder. The
    // demo member's traffic is not captured, so both JSONL files are empty.
    let out = data.join("export-out");
    let run = Command::new(std::env::var("TB_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo_root().join("scripts/export.py"))
        .env("TB_DATA_DIR", &data)
        .env("EXPORT_DIR", &out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "make export: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.starts_with("valid 0  invalid 0  total 0"),
        "{stdout}"
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["filter"], json!({"review": "confirmed"}));
    assert_eq!(manifest["counts"]["total"], 0);
    for f in ["valid.jsonl", "invalid.jsonl"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap().len(), 0, "{f}");
    }

    stop_and_check(proc, &data);

    // Second run on the same data: same admin, member, key and usage; nothing recreated.
    let mut proc = start_devstack(&data, &ports, 2).unwrap();
    let started = Instant::now();
    let http = reqwest::Client::new(); // no pooled connection from the first run
    let dev2 = wait_dev_json(&data, &mut proc).await.unwrap();
    eprintln!("second run ready in {:?}", started.elapsed());
    assert_eq!(dev2["demo_key"], dev["demo_key"]);
    assert_eq!(dev2["admin_password"], dev["admin_password"]);
    let (member2, used2) = usage(&http, &dev2).await;
    assert_eq!(member2, member, "same member");
    assert!(used2 >= used, "usage kept: {used2} < {used}");
    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
    assert!(log.contains("reusing the demo member and key"), "{log}");
    let calls = openai_sdk_calls(&dev2);
    assert!(
        calls["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{calls}"
    );
    let (_, used3) = wait_usage(&http, &dev2, used + 2).await;
    assert!(used3 >= used + 2, "new requests metered on top: {used3}");
    stop_and_check(proc, &data);
}
