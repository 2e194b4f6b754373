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

# Metering's cost on the request path: the same chat request against a worker with the
# D1 ledger on and one with METERING=off, interleaved in one run (debug test build).
if [ "${TB_BENCH_METERING:-1}" = 1 ]; then
  cargo build --bins --quiet
  {
    echo
    echo "## Metering on vs off (sequential, interleaved, 300 requests each)"
    echo
    cargo test --quiet -p tollbooth-tests --test e2e_ledger bench_metering_on_vs_off -- --ignored --nocapture 2>/dev/null \
      | grep '^|'
  } | tee -a .data/bench-latest.md
fi
