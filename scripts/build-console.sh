#!/usr/bin/env bash
# Builds the web console (console/ → console/dist): installs the pinned npm packages from
# package-lock.json, checks that src/api.gen.ts matches lambda-admin/openapi.json, checks
# the message tables, type-checks, bundles with Vite and enforces the 300 KB gzip
# first-load budget. Skipped when dist is newer than every input (TB_CONSOLE_FORCE=1
# rebuilds anyway).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT/console"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  tb_log "installing the console's npm packages (package-lock.json)"
  npm ci --silent --no-audit --no-fund
fi
stamp=dist/index.html
if [ "${TB_CONSOLE_FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ -z "$(find src scripts index.html admin public \
    package.json package-lock.json vite.config.ts tsconfig.json ../lambda-admin/openapi.json \
    -newer "$stamp" -print -quit)" ]; then
  tb_log "the console is up to date (console/dist)"
  exit 0
fi
tb_log "building the console"
npm run --silent build
