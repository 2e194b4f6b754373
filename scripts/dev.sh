#!/usr/bin/env bash
# The one run command (`make dev`): installs what is missing, builds, and starts the
# whole system locally with embedded defaults. State persists under .data/ so a second
# run keeps it. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT"

WORKER_PORT="${TB_WORKER_PORT:-8787}"
ADMIN_PORT="${TB_ADMIN_PORT:-8788}"
DYNAMO_PORT="${TB_DYNAMO_PORT:-8789}"
MOCK_PORT="${TB_MOCK_PORT:-8790}"
DATA="$TB_ROOT/.data"
mkdir -p "$DATA/dynamodb" "$DATA/wrangler" "$DATA/logs"

bash scripts/install.sh
source scripts/env.sh  # again: paths of freshly installed tools
tb_log "building the worker and the native binaries"
bash scripts/build-worker.sh
cargo build --bins --quiet
BIN="$CARGO_TARGET_DIR/debug"

pids=()
cleanup() {
  trap - INT TERM EXIT
  tb_log "stopping"
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

# start NAME LOG CMD...: runs CMD in its own process group, output to LOG.
start() {
  local name=$1 log=$2; shift 2
  setsid "$@" >"$log" 2>&1 &
  pids+=($!)
  tb_log "started $name (pid $!, log ${log#"$TB_ROOT"/})"
}
wait_http() {
  local url=$1 name=$2
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$name did not come up at $url" >&2; exit 1
}
wait_tcp() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listening on $1" >&2; exit 1
}

start dynamodb-local "$DATA/logs/dynamodb.log" env -C "$DYNAMODB_LOCAL_DIR" \
  java "-Djava.library.path=./DynamoDBLocal_lib" -jar DynamoDBLocal.jar -sharedDb -dbPath "$DATA/dynamodb" -port "$DYNAMO_PORT"
wait_tcp "$DYNAMO_PORT"

start admin-api "$DATA/logs/admin.log" env LOCAL_HTTP_ADDR="127.0.0.1:$ADMIN_PORT" TABLE_NAME=tollbooth \
  CREATE_TABLE=1 AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DYNAMO_PORT" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_EC2_METADATA_DISABLED=true "$BIN/admin-api"
wait_http "http://127.0.0.1:$ADMIN_PORT/health" admin-api

start mock-upstream "$DATA/logs/mock.log" "$BIN/mock-upstream" --addr 127.0.0.1 --port "$MOCK_PORT"
wait_http "http://127.0.0.1:$MOCK_PORT/_mock/health" mock-upstream

cfg="$DATA/wrangler.dev.toml"
sed -e "s#^main = .*#main = \"$TB_ROOT/edge-worker/build/index.js\"#" \
    -e "s#^migrations_dir = .*#migrations_dir = \"$TB_ROOT/migrations\"#" \
    -e '/^\[build\]/,/^$/d' \
    -e 's#^ENVIRONMENT = .*#ENVIRONMENT = "local"#' wrangler.toml >"$cfg"
printf 'ADMIN_ORIGIN = "http://127.0.0.1:%s"\n' "$ADMIN_PORT" >>"$cfg"
wrangler d1 migrations apply LEDGER --local --persist-to "$DATA/wrangler" -c "$cfg" >"$DATA/logs/migrations.log" 2>&1
start wrangler-dev "$DATA/logs/worker.log" wrangler dev -c "$cfg" --local --ip 127.0.0.1 --port "$WORKER_PORT" \
  --persist-to "$DATA/wrangler" --show-interactive-dev-session=false
wait_http "http://127.0.0.1:$WORKER_PORT/health" worker

base="http://127.0.0.1:$WORKER_PORT"
cat >"$DATA/dev.json" <<JSON
{"base_url": "$base", "admin_url": "http://127.0.0.1:$ADMIN_PORT", "mock_url": "http://127.0.0.1:$MOCK_PORT", "dynamodb_url": "http://127.0.0.1:$DYNAMO_PORT"}
JSON
cat <<MSG

  Tollbooth is running.
    gateway (worker)  $base          try: curl $base/health
    admin API         http://127.0.0.1:$ADMIN_PORT
    mock upstream     http://127.0.0.1:$MOCK_PORT
    DynamoDB Local    http://127.0.0.1:$DYNAMO_PORT   (data in .data/dynamodb)
  Details in .data/dev.json. Ctrl-C stops everything.

MSG
wait -n || true
