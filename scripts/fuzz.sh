#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (nightly): every target in fuzz/ (the SSE decoder, every stream
# translator, the request parsers and translators of all four ingress formats, upstream
# answers). Seeds are the committed fixtures in fuzz/seeds/<target>.
#
#   scripts/fuzz.sh          each target for FUZZ_SECONDS (default 300) with a corpus kept
#                            in .data/fuzz/corpus/<target> (`make fuzz`)
#   scripts/fuzz.sh smoke    each target for FUZZ_SMOKE_SECONDS (default 6) with a fresh
#                            corpus (`make test`)
#
# Skips with a message (exit 0) when the nightly toolchain or cargo-fuzz is missing.
# A crash stops the run (exit non-zero); libFuzzer writes the input to
# fuzz/artifacts/<target>/ and prints how to reproduce it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mode="${1:-long}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  tb_log "fuzz: SKIPPED: the nightly toolchain is not installed (rustup toolchain install nightly)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  tb_log "fuzz: SKIPPED: cargo-fuzz is not installed (scripts/install.sh installs it into $TB_TOOLS/cargo-fuzz)"
  exit 0
fi

cd "$TB_ROOT/fuzz"
# Sanitizer builds never share a target dir with the normal ones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR}-fuzz"
start=$(date +%s)
cargo +nightly fuzz build -O
tb_log "fuzz: targets built in $(( $(date +%s) - start ))s"

case "$mode" in
  smoke)
    secs="${FUZZ_SMOKE_SECONDS:-6}"
    corpus_root="$(mktemp -d)"
    trap 'rm -rf "$corpus_root"' EXIT
    ;;
  *)
    secs="${FUZZ_SECONDS:-300}"
    corpus_root="$TB_ROOT/.data/fuzz/corpus"
    ;;
esac

for t in $(cargo +nightly fuzz list); do
  mkdir -p "$corpus_root/$t"
  t0=$(date +%s)
  cargo +nightly fuzz run -O "$t" "$corpus_root/$t" "seeds/$t" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$corpus_root/$t.log" 2>&1 || {
      tail -n 60 "$corpus_root/$t.log" >&2
      tb_log "fuzz: $t FAILED (input saved under fuzz/artifacts/$t/)"
      exit 1
    }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$corpus_root/$t.log" | tail -n 1)
  tb_log "fuzz: $t ok, ${runs:-?} runs in $(( $(date +%s) - t0 ))s"
done
tb_log "fuzz: all targets passed in $(( $(date +%s) - start ))s"
