#!/usr/bin/env bash
# Builds the edge worker to wasm with worker-build (edge-worker/build/index.js and
# index_bg.wasm), optimised for size, then the web console it serves.
#
# Size (issue 11 §5, docs/benchmarks.md): this build alone uses opt-level "z" (the native
# release builds, e.g. the bench driver and the mock, keep the workspace's "s"), and
# wasm-opt runs here rather than inside worker-build so that it can use -Oz and drop the
# names section that worker-build keeps (`--debuginfo`). Without wasm-opt the build
# fails: a silently unoptimised bundle must never be deployed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if ! [ -x "$WASM_OPT_BIN" ]; then
  echo "wasm-opt not found at $WASM_OPT_BIN (binaryen $BINARYEN_VERSION): run scripts/install.sh" >&2
  exit 1
fi
cd "$TB_ROOT/edge-worker"
CARGO_PROFILE_RELEASE_OPT_LEVEL="${TB_WORKER_OPT_LEVEL:-z}" worker-build --release --no-opt
# The features workerd supports, named one by one (as worker-build does) so that newer
# binaryen encodings are never emitted before workerd understands them.
"$WASM_OPT_BIN" build/index_bg.wasm -o build/index_bg.opt.wasm -Oz \
  --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-bulk-memory --enable-multivalue --enable-reference-types \
  --enable-exception-handling --strip-debug --strip-producers
mv build/index_bg.opt.wasm build/index_bg.wasm
echo "worker wasm: $(wc -c <build/index_bg.wasm) bytes raw, $(gzip -9 -c build/index_bg.wasm | wc -c) bytes gzip -9" >&2
# The web console, served by the same worker as static assets (wrangler.toml [assets]).
bash "$TB_ROOT/scripts/build-console.sh"
