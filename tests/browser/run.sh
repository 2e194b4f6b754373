#!/usr/bin/env bash
# The console's browser tests: starts the whole local stack with scripts/dev.sh (workerd
# serving the console's static assets and the API, DynamoDB Local, the admin server, the
# mock upstream, the EPay simulator) on free ports in its own data folder, runs the specs
# in tests/browser/*.spec.mjs in headless Chromium (Playwright, system browser), and stops
# the stack by process group. Screenshots land in .data/browser/screenshots.
# Needs what `make test` builds (worker, binaries); builds the console when stale.
set -euo pipefail
source "$(dirname "$0")/../../scripts/env.sh"
cd "$TB_ROOT"
bash scripts/build-console.sh

DATA="$TB_ROOT/.data/browser"
rm -rf "$DATA"
mkdir -p "$DATA/screenshots"
read -r W A D M I E S < <("$TB_PYTHON" - <<'PY'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
PY
)
setsid env TB_DATA_DIR="$DATA" TB_WORKER_PORT="$W" TB_ADMIN_PORT="$A" TB_DYNAMO_PORT="$D" \
  TB_MOCK_PORT="$M" TB_INSPECTOR_PORT="$I" TB_EPAY_PORT="$E" TB_S3_PORT="$S" TB_DEV_SKIP_BUILD=1 \
  OPENAI_API_KEY= DEEPSEEK_API_KEY= ANTHROPIC_API_KEY= GEMINI_API_KEY= \
  bash scripts/dev.sh >"$DATA/dev.log" 2>&1 </dev/null &
stack=$!
stop() {
  kill -TERM -- "-$stack" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 -- "-$stack" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$stack" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 1 600); do
  [ -s "$DATA/dev.json" ] && break
  kill -0 "$stack" 2>/dev/null || { echo "the stack did not start; see $DATA/dev.log" >&2; tail -n 30 "$DATA/dev.log" >&2; exit 1; }
  sleep 0.2
done
[ -s "$DATA/dev.json" ] || { echo "the stack did not start in time; see $DATA/dev.log" >&2; exit 1; }

export TB_DEV_JSON="$DATA/dev.json" TB_ARTIFACTS="$DATA/screenshots" TB_EPAY_URL="http://127.0.0.1:$E"
started=$(date +%s)
node --test --test-concurrency=1 --test-reporter=spec tests/browser/*.spec.mjs
tb_log "browser tests passed in $(( $(date +%s) - started ))s; screenshots in ${DATA#"$TB_ROOT"/}/screenshots"
