//! The coding agents themselves against the gateway (issue 15 §6): Claude Code
//! (`claude -p`, Anthropic Messages), Codex CLI (`codex exec`, a custom provider with
//! `wire_api = "responses"`) and Gemini CLI (`gemini -p`, `GOOGLE_GEMINI_BASE_URL`), each
//! pinned and installed by `scripts/install.sh` under `$TB_TOOLS/agents`, each set up only
//! through its documented settings in a scratch HOME (telemetry, update checks and
//! auto-update off), each answering one headless prompt with the mock upstream's text.
//! Then one turn per agent in which the model calls a tool (mock `tools=once`) and gets
//! the tool's result back before it answers.
//!
//! Each agent reaches a model whose upstream speaks another protocol for its tool turn,
//! so the translators run under real agents too. Every agent run is bounded by a
//! timeout; its process group is killed afterwards, whatever happened. A missing agent
//! fails the test (install it with `scripts/install.sh`): it never skips.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollbooth_core::keyrecord::KeyRole;
use tollbooth_tests::gateway::Gateway;
use tollbooth_tests::harness::ScratchDir;

/// The mock's answer text with the default 3 chunks.
const TEXT: &str = "tok0 tok1 tok2";

/// One agent run's bound.
const AGENT_TIMEOUT: Duration = Duration::from_secs(180);

fn price() -> Value {
    json!({"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000})
}

fn catalogue(mock: &str) -> Value {
    let provider = |kind: &str| {
        let base = if kind == "gemini" {
            format!("{mock}/v1beta")
        } else {
            format!("{mock}/v1")
        };
        json!({"id": format!("p-{kind}"), "kind": kind, "base_url": base,
               "credentials": [{"id": format!("{kind}-1"), "secret": format!("sk-upstream-{kind}")}]})
    };
    let model = |name: &str, kind: &str, upstream: &str| {
        json!({"name": name, "price": price(), "max_output_tokens": 8192,
               "deployments": [{"provider": format!("p-{kind}"), "model": upstream}]})
    };
    let providers = ["openai", "anthropic", "gemini", "responses"].map(provider);
    json!({
        "version": "agents-1",
        "providers": providers,
        "models": [
            model("claude-mock", "anthropic", "up-claude"),
            model("claude-mock-tools", "openai", "up-claude@tools=once"),
            model("codex-mock", "responses", "up-codex"),
            model("codex-mock-tools", "anthropic", "up-codex@tools=once"),
            model("gemini-mock", "gemini", "up-gemini"),
            model("gemini-mock-tools", "responses", "up-gemini@tools=once"),
        ],
        "plans": [{"id": "all", "allowed_models": ["*"]}],
    })
}

/// An agent binary from `$TB_AGENTS_BIN` (scripts/env.sh), or fail loudly.
fn agent_bin(name: &str) -> PathBuf {
    let dir = std::env::var("TB_AGENTS_BIN").unwrap_or_else(|_| {
        let tools = std::env::var("TB_TOOLS").unwrap_or_else(|_| {
            format!(
                "{}/.cache/tollbooth",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        format!("{tools}/agents/node_modules/.bin")
    });
    let path = Path::new(&dir).join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install.sh (it installs the pinned agents)",
        path.display()
    );
    path
}

/// The PATH the agents get: Node 22 (scripts/env.sh puts it first) and the system.
fn agent_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
}

struct Run {
    stdout: String,
    stderr: String,
}

/// Runs `cmd` in its own process group with a clean environment plus `env`, stdin
/// closed, bounded by [`AGENT_TIMEOUT`]; the group is killed afterwards in every case.
fn run_agent(name: &str, mut cmd: Command, home: &Path, env: &[(&str, String)]) -> Run {
    use std::os::unix::process::CommandExt;
    let out_path = home.join(format!("{name}.stdout"));
    let err_path = home.join(format!("{name}.stderr"));
    let out = fs::File::create(&out_path).expect("stdout file");
    let err = fs::File::create(&err_path).expect("stderr file");
    let work = home.join("work");
    fs::create_dir_all(&work).expect("workdir");
    cmd.env_clear()
        .env("PATH", agent_path())
        .env("HOME", home)
        .env("TMPDIR", home.join("tmp"))
        .env("LANG", "C.UTF-8")
        .env("TERM", "dumb")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    fs::create_dir_all(home.join("tmp")).expect("tmp");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let pgid = libc::pid_t::try_from(child.id()).expect("pid");
    let deadline = Instant::now() + AGENT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => break None,
        }
    };
    // The agent's own children (sandbox helpers, MCP servers) go with it.
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions; the group is the one this
        // function created (a stale id only yields ESRCH).
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
    let run = Run {
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    };
    match status {
        None => panic!(
            "{name} did not finish within {AGENT_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        ),
        Some(s) if !s.success() => panic!(
            "{name} failed ({s})\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        ),
        Some(_) => run,
    }
}

fn claude(gw: &Gateway, key: &str, model: &str, prompt: &str) -> Run {
    let scratch = ScratchDir::new("agent-claude").expect("scratch");
    let home = scratch.path();
    let mut cmd = Command::new(agent_bin("claude"));
    cmd.args(["-p", prompt, "--model", model]);
    run_agent(
        &format!("claude-{model}"),
        cmd,
        home,
        &[
            ("ANTHROPIC_BASE_URL", gw.worker.base_url.clone()),
            ("ANTHROPIC_API_KEY", key.to_owned()),
            ("ANTHROPIC_DEFAULT_HAIKU_MODEL", model.to_owned()),
            (
                "CLAUDE_CONFIG_DIR",
                home.join(".claude").display().to_string(),
            ),
            ("DISABLE_AUTOUPDATER", "1".into()),
            ("DISABLE_TELEMETRY", "1".into()),
            ("DISABLE_ERROR_REPORTING", "1".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ],
    )
}

fn codex(gw: &Gateway, key: &str, model: &str, prompt: &str) -> Run {
    let scratch = ScratchDir::new("agent-codex").expect("scratch");
    let home = scratch.path();
    let codex_home = home.join(".codex");
    fs::create_dir_all(&codex_home).expect("codex home");
    let config = format!(
        r#"model = "{model}"
model_provider = "tollbooth"
check_for_update_on_startup = false

[model_providers.tollbooth]
name = "Tollbooth"
base_url = "{base}/v1"
env_key = "TOLLBOOTH_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[otel]
exporter = "none"
"#,
        base = gw.worker.base_url
    );
    fs::write(codex_home.join("config.toml"), config).expect("config.toml");
    let mut cmd = Command::new(agent_bin("codex"));
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "--sandbox",
        "read-only",
        prompt,
    ]);
    run_agent(
        &format!("codex-{model}"),
        cmd,
        home,
        &[
            ("CODEX_HOME", codex_home.display().to_string()),
            ("TOLLBOOTH_API_KEY", key.to_owned()),
        ],
    )
}

fn gemini(gw: &Gateway, key: &str, model: &str, prompt: &str) -> Run {
    let scratch = ScratchDir::new("agent-gemini").expect("scratch");
    let home = scratch.path();
    fs::create_dir_all(home.join(".gemini")).expect(".gemini");
    let settings = json!({
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
        "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
        "security": {"auth": {"selectedType": "gemini-api-key"}},
    });
    fs::write(home.join(".gemini/settings.json"), settings.to_string()).expect("settings");
    let mut cmd = Command::new(agent_bin("gemini"));
    cmd.args(["-p", prompt, "-m", model]);
    run_agent(
        &format!("gemini-{model}"),
        cmd,
        home,
        &[
            ("GOOGLE_GEMINI_BASE_URL", gw.worker.base_url.clone()),
            ("GEMINI_API_KEY", key.to_owned()),
            ("GEMINI_CLI_TRUST_WORKSPACE", "true".into()),
        ],
    )
}

/// Usage events of `member` for `model`.
async fn events_for(gw: &Gateway, member: &str, model: &str) -> Vec<Value> {
    gw.events(member)
        .await
        .into_iter()
        .filter(|e| e["model"] == model)
        .collect()
}

/// The upstream requests for an upstream model (directives included).
async fn upstream_bodies(gw: &Gateway, model_prefix: &str) -> Vec<String> {
    gw.upstream_requests()
        .await
        .into_iter()
        .filter(|r| {
            r["model"]
                .as_str()
                .is_some_and(|m| m.starts_with(model_prefix))
                || r["path"].as_str().is_some_and(|p| p.contains(model_prefix))
        })
        .map(|r| r["body"].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_claude_code_codex_and_gemini_cli_through_the_gateway() {
    let gw = Gateway::start(&[], catalogue).await;
    let member = "m-agents";
    let key = gw.key(member, "all", KeyRole::Member).await;
    gw.credit(member, 100_000_000).await;

    type Agent = fn(&Gateway, &str, &str, &str) -> Run;
    let agents: [(&str, Agent, &str); 3] = [
        ("claude", claude, "up-claude"),
        ("codex", codex, "up-codex"),
        ("gemini", gemini, "up-gemini"),
    ];
    for (name, agent, upstream) in agents {
        // One headless prompt: the mock's answer comes back as the agent's answer.
        let model = format!("{name}-mock");
        let run = tokio::task::block_in_place(|| agent(&gw, &key, &model, "Say hello."));
        eprintln!("{name} answered: {}", run.stdout.trim());
        assert!(
            run.stdout.contains(TEXT),
            "{name}: the answer is not the mock's text\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        assert!(
            !events_for(&gw, member, &model).await.is_empty(),
            "{name}: no usage event"
        );

        // One turn with a tool call and its result: `tools=once` calls the agent's first
        // tool, the agent runs it (or refuses it) and sends the result back, then the
        // model answers with text.
        let tools_model = format!("{name}-mock-tools");
        let run = tokio::task::block_in_place(|| {
            agent(&gw, &key, &tools_model, "Use a tool, then say hello.")
        });
        eprintln!("{name} tool turn answered: {}", run.stdout.trim());
        assert!(
            run.stdout.contains(TEXT),
            "{name} tool turn: the answer is not the mock's text\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        let events = events_for(&gw, member, &tools_model).await;
        eprintln!("{name}: {} model calls in the tool turn", events.len());
        assert!(
            events.len() >= 2,
            "{name}: a tool turn is at least two model calls, got {}",
            events.len()
        );
        let bodies = upstream_bodies(&gw, &format!("{upstream}@tools=once")).await;
        let answered = bodies.iter().any(|b| {
            b.contains("tool_result")
                || b.contains("\"role\":\"tool\"")
                || b.contains("function_call_output")
                || b.contains("functionResponse")
        });
        assert!(
            answered,
            "{name}: no upstream request carried the tool's result ({} requests)",
            bodies.len()
        );
    }
    let audit = gw.settled(member).await;
    assert!(audit.events >= 9, "{audit:?}");
}
