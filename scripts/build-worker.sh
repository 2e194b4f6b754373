#!/usr/bin/env bash
# Builds the edge worker to wasm with worker-build: edge-worker/build/worker/shim.mjs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT/edge-worker"
if [ -x "$WASM_OPT_BIN" ]; then
  worker-build --release
else
  worker-build --release --no-opt
fi
# The web console, served by the same worker as static assets (wrangler.toml [assets]).
bash "$TB_ROOT/scripts/build-console.sh"
