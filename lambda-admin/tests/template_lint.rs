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
    ] {
        assert!(t.contains(needle), "template.yaml lacks {needle}");
    }
}
