#!/usr/bin/env bash
# `make bench`: the direct mock, a bare pass-through worker (bench/passthrough) and
# Tollbooth, plus opt-in peer gateways, side by side in one run on the same mock and load
# (see tests/src/bin/bench.rs and docs/benchmarks.md). Loopback only; every phase is
# bounded in count and time.
#
#   make bench                                   # direct, bare worker, Tollbooth
#   PEERS="tensorzero portkey litellm" make bench
#   scripts/bench.sh --peers tensorzero,portkey --n 2000
#
# Peers are installed (pinned, once) into ~/.cache/tollbooth/peers only when named.
# Extra arguments go to the driver. TB_BENCH_METERING=1 also runs the metering on/off
# comparison (a debug-build e2e test, appended to the report).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT"

args=("$@")
peers="${PEERS:-}"
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[$i]}" = "--peers" ] && [ $((i + 1)) -lt ${#args[@]} ]; then
    peers="$peers ${args[$((i + 1))]}"
  fi
done
peers="$(printf '%s' "$peers" | tr ',' ' ' | xargs -n1 2>/dev/null | sort -u | xargs || true)"
if [ -n "$peers" ]; then
  # shellcheck disable=SC2086
  bash bench/install-peers.sh $peers
  if [ -n "${PEERS:-}" ]; then
    args+=(--peers "$(printf '%s' "$peers" | tr ' ' ',')")
  fi
fi

bash scripts/build-worker.sh
cargo build --release -p tollbooth-tests --bin bench --bin mock-upstream
mkdir -p .data
TB_MOCK_BIN="$CARGO_TARGET_DIR/release/mock-upstream" \
  "$CARGO_TARGET_DIR/release/bench" --out .data/bench-latest.md "${args[@]}"
echo "report: .data/bench-latest.md" >&2

# Metering's cost on the request path: the same chat request against a worker with the
# D1 ledger on and one with METERING=off, interleaved in one run (debug test build).
if [ "${TB_BENCH_METERING:-0}" = 1 ]; then
  cargo build --bins --quiet
  {
    echo
    echo "## Metering on vs off (sequential, interleaved, 300 requests each)"
    echo
    cargo test --quiet -p tollbooth-tests --test e2e_ledger bench_metering_on_vs_off -- --ignored --nocapture 2>/dev/null \
      | grep '^|'
  } | tee -a .data/bench-latest.md
fi
