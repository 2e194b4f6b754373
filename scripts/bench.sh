#!/usr/bin/env bash
# `make bench`: gateway vs direct, side by side in one run (see tests/src/bin/bench.rs).
# Builds the release worker and the bench driver, then runs it; extra arguments go to
# the driver (e.g. `--rps 150 --secs 20`). Loopback only; every phase is time-bounded.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT"
bash scripts/build-worker.sh
cargo build --release -p tollbooth-tests --bin bench --bin mock-upstream
mkdir -p .data
TB_MOCK_BIN="$CARGO_TARGET_DIR/release/mock-upstream" \
  "$CARGO_TARGET_DIR/release/bench" --out .data/bench-latest.md "$@"
echo "report: .data/bench-latest.md" >&2
