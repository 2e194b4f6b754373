#!/usr/bin/env bash
# Fails if tollbooth-core's normal dependency tree pulls in I/O: tokio, an HTTP
# client or server, the worker SDK, or any AWS crate. core must stay pure.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$TB_ROOT"
tree=$(cargo tree -p tollbooth-core -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
bad=$(printf '%s\n' "$tree" | grep -E '^(tokio|hyper|reqwest|ureq|isahc|surf|curl|worker|worker-sys|web-sys|lambda_http|lambda_runtime|aws-.*|mio)$' || true)
if [ -n "$bad" ]; then
  echo "tollbooth-core must stay free of I/O, but depends on:" >&2
  printf '  %s\n' $bad >&2
  exit 1
fi
echo "core dependency tree is I/O-free ($(printf '%s\n' "$tree" | wc -l) crates)"
