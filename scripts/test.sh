#!/usr/bin/env bash
# The one test command (`make test`): installs what is missing, checks formatting and
# lints, builds core for wasm32 and the worker with worker-build, then runs every test
# (unit, contract and end-to-end against workerd, DynamoDB Local and the mock upstream).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT"
start=$(date +%s)
step() { tb_log "[$(( $(date +%s) - start ))s] $*"; }

step "install tools"
bash scripts/install.sh
source scripts/env.sh  # again: paths of freshly installed tools

step "format and lints"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check  # its own workspace
cargo clippy --all-targets -- -D warnings
cargo clippy -p tollbooth-edge --target wasm32-unknown-unknown -- -D warnings

step "core: wasm32 build and I/O-free dependency tree"
cargo build -p tollbooth-core --target wasm32-unknown-unknown
bash scripts/check-core-deps.sh

step "build the worker (worker-build), the console and the native binaries"
bash scripts/build-worker.sh
bash scripts/check-wasm-size.sh
cargo build --bins

step "tests"
# The worker's pure parts also build natively: its unit tests run here.
cargo test -p tollbooth-edge --lib
cargo test --no-fail-fast -- --test-threads="${TB_TEST_THREADS:-2}"

step "console: API types fresh, message tables equal, first load within 300 KB gzip"
(cd console && node scripts/gen-api.mjs --check && node scripts/check-i18n.mjs && node scripts/size-budget.mjs)

step "console: browser tests in Chromium against the whole local stack"
bash tests/browser/run.sh

step "fuzz: a short bounded slice of every target (make fuzz runs them longer)"
bash scripts/fuzz.sh smoke

step "all green"
