#!/usr/bin/env bash
# The one run command (`make dev`): installs what is missing, builds, starts the whole
# system locally with embedded defaults, and bootstraps an admin, a provider, the demo
# model and plan, and a demo member with a key (scripts/dev_bootstrap.py). State
# persists under the data folder (TB_DATA_DIR, default .data/) so a second run keeps
# it. Ctrl-C (or SIGTERM) stops everything.
#
# Overrides: TB_WORKER_PORT (8787), TB_ADMIN_PORT (8788), TB_DYNAMO_PORT (8789),
# TB_MOCK_PORT (8790), TB_EPAY_PORT (8791, the local EPay payment simulator),
# TB_S3_PORT (8792, moto's S3 for the export bucket), TB_INSPECTOR_PORT (9229),
# TB_DATA_DIR (.data),
# TB_DEV_SKIP_BUILD=1 (use what is built; the tests set it).
# A real provider key in the environment (OPENAI_API_KEY, DEEPSEEK_API_KEY,
# ANTHROPIC_API_KEY, GEMINI_API_KEY) replaces the mock upstream.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT"

WORKER_PORT="${TB_WORKER_PORT:-8787}"
ADMIN_PORT="${TB_ADMIN_PORT:-8788}"
DYNAMO_PORT="${TB_DYNAMO_PORT:-8789}"
MOCK_PORT="${TB_MOCK_PORT:-8790}"
EPAY_PORT="${TB_EPAY_PORT:-8791}"
S3_PORT="${TB_S3_PORT:-8792}"
EXPORT_BUCKET="${EXPORT_BUCKET:-tollbooth-exports}"
INSPECTOR_PORT="${TB_INSPECTOR_PORT:-9229}"
DATA="$(mkdir -p "${TB_DATA_DIR:-$TB_ROOT/.data}" && cd "${TB_DATA_DIR:-$TB_ROOT/.data}" && pwd)"
mkdir -p "$DATA/dynamodb" "$DATA/wrangler" "$DATA/logs"
rm -f "$DATA/dev.json"
started=$(date +%s)

if [ "${TB_DEV_SKIP_BUILD:-0}" != 1 ]; then
  bash scripts/install.sh
  source scripts/env.sh  # again: paths of freshly installed tools
  # worker-build re-runs wasm-bindgen and wasm-opt (tens of seconds) even when nothing
  # changed: skip it while the built worker is newer than every input.
  wasm=edge-worker/build/index_bg.wasm
  if [ -f "$wasm" ] && [ -f edge-worker/build/index.js ] && [ -z "$(find edge-worker/src \
      edge-worker/Cargo.toml core/src core/Cargo.toml Cargo.lock -newer "$wasm" -print -quit)" ]; then
    tb_log "the worker is up to date (edge-worker/build)"
  else
    tb_log "building the worker"
    bash scripts/build-worker.sh
  fi
  bash scripts/build-console.sh  # quick when console/dist is up to date
  tb_log "building the native binaries"
  cargo build --bins --quiet
fi
BIN="$CARGO_TARGET_DIR/debug"
for f in "$BIN/admin-api" "$BIN/jobs" "$BIN/mock-upstream" edge-worker/build/index.js "$TB_MOTO_SERVER"; do
  [ -e "$f" ] || { echo "missing $f: run without TB_DEV_SKIP_BUILD" >&2; exit 1; }
done

# Local-dev secrets: generated once, kept (mode 600) in the data folder and reused, so
# sessions, sealed credentials and the admin login survive restarts. Never printed
# except the admin and demo logins at the end.
SECRETS="$DATA/secrets.env"
if [ ! -s "$SECRETS" ]; then
  tb_log "generating local secrets in ${SECRETS#"$TB_ROOT"/}"
  (umask 077 && "$TB_PYTHON" - >"$SECRETS" <<'PY'
import secrets
h = secrets.token_hex
print(f"SYNC_SECRET={h(32)}")
print(f"JWT_KEYS=dev:{h(32)}")
print(f"MASTER_KEY={h(32)}")
print("ADMIN_EMAIL=admin@tollbooth.local")
print(f"ADMIN_PASSWORD=admin-{h(8)}-A1")
print(f"DEMO_PASSWORD=demo-{h(8)}-D1")
PY
  )
fi
# The local EPay merchant key (added to data folders made before the simulator existed).
if ! grep -q '^EPAY_KEY=' "$SECRETS"; then
  "$TB_PYTHON" -c 'import secrets; print(f"EPAY_KEY={secrets.token_hex(16)}")' >>"$SECRETS"
fi
set -a; source "$SECRETS"; set +a

pids=()
cleanup() {
  trap "" INT TERM  # a second Ctrl-C (or make forwarding SIGTERM) must not cut the cleanup short
  trap - EXIT
  tb_log "stopping"
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -f "$DATA/dev.json"  # it describes a running stack
}
trap cleanup EXIT
trap 'exit 0' INT TERM  # stopping is the normal way to end

# start NAME LOG CMD...: runs CMD in its own process group, output to LOG.
start() {
  local name=$1 log=$2; shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  pids+=($!)
  echo "${pids[*]}" >"$DATA/pgids"  # process groups, for tests that check a clean stop
  tb_log "started $name (pid $!, log ${log#"$TB_ROOT"/})"
}
wait_http() {
  local url=$1 name=$2 log=$3
  for _ in $(seq 1 450); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$name did not come up at $url; last lines of $log:" >&2; tail -n 20 "$log" >&2; exit 1
}
wait_tcp() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listening on $1" >&2; exit 1
}

for port in "$DYNAMO_PORT" "$MOCK_PORT" "$WORKER_PORT" "$ADMIN_PORT" "$INSPECTOR_PORT" "$EPAY_PORT" "$S3_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (another make dev?); set TB_*_PORT to other ports" >&2
    exit 1
  fi
done

start dynamodb-local "$DATA/logs/dynamodb.log" env -C "$DYNAMODB_LOCAL_DIR" \
  java "-Djava.library.path=./DynamoDBLocal_lib" -jar DynamoDBLocal.jar -sharedDb -dbPath "$DATA/dynamodb" -port "$DYNAMO_PORT"
# The export bucket's S3 (moto's server mode, in memory: exported files last as long as
# this run; the admin server creates the bucket at start).
start s3 "$DATA/logs/s3.log" "$TB_MOTO_SERVER" -H 127.0.0.1 -p "$S3_PORT"
s3_url="http://127.0.0.1:$S3_PORT"
start mock-upstream "$DATA/logs/mock.log" "$BIN/mock-upstream" --addr 127.0.0.1 --port "$MOCK_PORT"
# The payment simulator stands in for the EPay gateway (local only; docs/console.md). It
# reads EPAY_KEY from the environment (secrets.env is exported).
EPAY_PID=1001
start epay-simulator "$DATA/logs/epay.log" env ENVIRONMENT=local EPAY_PID="$EPAY_PID" \
  "$TB_PYTHON" scripts/epay_simulator.py "$EPAY_PORT"

# The worker: a generated config with the prebuilt shim (no build step), the same
# bindings as wrangler.toml, short cache TTLs; SYNC_SECRET goes to .dev.vars beside it
# (wrangler reads it from the config's folder), not to the command line.
base="http://127.0.0.1:$WORKER_PORT"
admin_url="http://127.0.0.1:$ADMIN_PORT"
cfg="$DATA/wrangler.dev.toml"
cat >"$cfg" <<TOML
name = "tollbooth-dev"
main = "$TB_ROOT/edge-worker/build/index.js"
compatibility_date = "2025-09-01"

[[kv_namespaces]]
binding = "KEYS"
id = "tollbooth-keys"

[[kv_namespaces]]
binding = "CONFIG"
id = "tollbooth-config"

[[d1_databases]]
binding = "LEDGER"
database_name = "tollbooth-ledger"
database_id = "00000000-0000-0000-0000-000000000000"
migrations_dir = "$TB_ROOT/migrations"

[[r2_buckets]]
binding = "CAPTURES"
bucket_name = "tollbooth-captures"

[vars]
ENVIRONMENT = "local"
ADMIN_ORIGIN = "$admin_url"
ALLOW_LOOPBACK_UPSTREAMS = "true"
CATALOGUE_TTL_MS = "1000"
KEY_CACHE_TTL_MS = "1000"
TOML
# The web console as static assets, as in wrangler.toml (when it is built).
if [ -f "$TB_ROOT/console/dist/index.html" ]; then
  cat >>"$cfg" <<TOML

[assets]
directory = "$TB_ROOT/console/dist"
binding = "ASSETS"
html_handling = "auto-trailing-slash"
not_found_handling = "none"
run_worker_first = ["/v1/*", "/api/*", "/internal/*", "/webhooks/*", "/authorization", "/health", "/chat/*", "/v1beta/*"]
TOML
fi
(umask 077 && printf 'SYNC_SECRET=%s\n' "$SYNC_SECRET" >"$DATA/.dev.vars")
wrangler d1 migrations apply LEDGER --local --persist-to "$DATA/wrangler" -c "$cfg" >"$DATA/logs/migrations.log" 2>&1 \
  || { echo "D1 migrations failed; see $DATA/logs/migrations.log" >&2; exit 1; }
start wrangler-dev "$DATA/logs/worker.log" wrangler dev -c "$cfg" --local --ip 127.0.0.1 --port "$WORKER_PORT" \
  --inspector-port "$INSPECTOR_PORT" --persist-to "$DATA/wrangler" --show-interactive-dev-session=false

wait_tcp "$DYNAMO_PORT"
wait_tcp "$S3_PORT"
start admin-api "$DATA/logs/admin.log" env LOCAL_HTTP_ADDR="127.0.0.1:$ADMIN_PORT" TABLE_NAME=tollbooth \
  CREATE_TABLE=1 AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DYNAMO_PORT" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_EC2_METADATA_DISABLED=true \
  ENVIRONMENT=local ALLOW_LOOPBACK_UPSTREAMS=1 EDGE_ORIGIN="$base" PAYMENTS_PUBLIC_URL="$base" EPAY_API_BASE="http://127.0.0.1:$EPAY_PORT" \
  EPAY_PID="$EPAY_PID" EXPORT_BUCKET="$EXPORT_BUCKET" S3_ENDPOINT="$s3_url" "$BIN/admin-api"
wait_http "$admin_url/health" admin-api "$DATA/logs/admin.log"
# The scheduled job (EventBridge in AWS): the same handler on a 30 s timer.
start jobs "$DATA/logs/jobs.log" env TABLE_NAME=tollbooth JOBS_INTERVAL_SECS=30 \
  AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DYNAMO_PORT" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_EC2_METADATA_DISABLED=true \
  EDGE_ORIGIN="$base" "$BIN/jobs"
wait_http "http://127.0.0.1:$MOCK_PORT/_mock/health" mock-upstream "$DATA/logs/mock.log"
wait_http "http://127.0.0.1:$EPAY_PORT/health" epay-simulator "$DATA/logs/epay.log"
wait_http "$base/health" worker "$DATA/logs/worker.log"

tb_log "bootstrapping through the front door ($base)"
TB_S3_URL="$s3_url" TB_EXPORT_BUCKET="$EXPORT_BUCKET" "$TB_PYTHON" scripts/dev_bootstrap.py "$DATA" "$base" "$admin_url" "http://127.0.0.1:$MOCK_PORT" \
  "http://127.0.0.1:$DYNAMO_PORT"
field() { "$TB_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DATA/dev.json" "$1"; }
demo_key=$(field demo_key)
demo_model=$(field demo_model)
# The bootstrap password is changed at the first login (dev_bootstrap.py keeps the new one).
admin_password=$(field admin_password)

cat <<MSG

  Tollbooth is running (ready in $(( $(date +%s) - started ))s). Ctrl-C stops everything; data stays in $DATA.

    base URL        $base          (OpenAI-compatible: $base/v1)
    member portal   $base/
    admin console   $base/admin/
    pay simulator   http://127.0.0.1:$EPAY_PORT   (EPay stand-in: orders paid with EPay land here)
    admin login     $ADMIN_EMAIL / $admin_password   (POST $base/api/admin/login)
    demo key        $demo_key
    demo model      $demo_model
    logs            $DATA/logs/     details: $DATA/dev.json
    export          make export   (confirmed conversations to $DATA/exports/<job id>/)

  curl $base/v1/chat/completions \\
    -H "Authorization: Bearer $demo_key" -H "Content-Type: application/json" \\
    -d '{"model": "$demo_model", "messages": [{"role": "user", "content": "Hello!"}]}'

  $TB_PYTHON - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="$base/v1", api_key="$demo_key")
r = client.chat.completions.create(model="$demo_model", messages=[{"role": "user", "content": "Hello!"}])
print(r.choices[0].message.content)
PY

MSG
# Stay up until a component exits (then stop the rest) or a signal arrives.
wait -n || true
tb_log "a component exited; see $DATA/logs/"
