//! template.yaml is checked offline with cfn-lint and `sam validate --lint`, both
//! installed into the project venv by scripts/install.sh.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn venv_bin(name: &str) -> PathBuf {
    let tools = std::env::var_os("TB_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tollbooth")))
        .expect("TB_TOOLS or HOME");
    let bin = tools.join("venv/bin").join(name);
    assert!(
        bin.exists(),
        "{} missing: run scripts/install.sh",
        bin.display()
    );
    bin
}

fn template() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
}

#[test]
fn test_template_passes_cfn_lint() {
    let out = Command::new(venv_bin("cfn-lint"))
        .arg(template())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_template_passes_sam_validate_lint() {
    let out = Command::new(venv_bin("sam"))
        .args(["validate", "--lint", "--region", "us-east-1", "-t"])
        .arg(template())
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sam validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_template_declares_the_table_of_ensure_table() {
    let t = std::fs::read_to_string(template()).unwrap();
    for needle in [
        "IndexName: gsi1",
        "IndexName: gsi2",
        "AttributeName: ttl",
        "NoEcho: true",
        "Binary: admin-api",
        "Binary: member-auth",
        "Binary: export",
    ] {
        assert!(t.contains(needle), "template.yaml lacks {needle}");
    }
}

/// Every function runs with `ENVIRONMENT: production` (set once in Globals, overridden
/// nowhere) and none sets a development flag: the admin plane refuses those flags only
/// when it knows it is in production.
#[test]
fn test_every_function_runs_in_production_without_dev_flags() {
    let t = std::fs::read_to_string(template()).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    let globals = lines
        .iter()
        .position(|l| l.trim_end() == "Globals:")
        .expect("template.yaml has Globals");
    let resources = lines
        .iter()
        .position(|l| l.trim_end() == "Resources:")
        .expect("template.yaml has Resources");
    assert!(globals < resources);
    let global_env: Vec<&str> = lines[globals..resources]
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("ENVIRONMENT:"))
        .collect();
    assert_eq!(
        global_env,
        ["ENVIRONMENT: production"],
        "Globals.Function.Environment must set ENVIRONMENT: production"
    );
    for (n, l) in lines.iter().enumerate() {
        let key = l.trim().split(':').next().unwrap_or_default();
        assert!(
            !matches!(key, "DEV_DEFAULTS" | "ALLOW_LOOPBACK_UPSTREAMS"),
            "template.yaml:{} sets a development flag: {l}",
            n + 1
        );
        if key == "ENVIRONMENT" {
            assert!(
                (globals..resources).contains(&n),
                "template.yaml:{} overrides ENVIRONMENT in a function: {l}",
                n + 1
            );
        }
    }
    let functions = t.matches("Type: AWS::Serverless::Function").count();
    assert!(functions >= 3, "functions: {functions}");
}
