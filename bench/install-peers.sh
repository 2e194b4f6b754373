#!/usr/bin/env bash
# Installs the opt-in peer gateways for `make bench` into $TB_TOOLS/peers (outside the
# clone), each pinned, each skipped when already present at that version.
#   bench/install-peers.sh tensorzero portkey litellm
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
PEERS="$TB_TOOLS/peers"
# Pinned peer versions (the ones TOOLCHAIN.md verified offline on this kind of machine).
TB_PEER_TENSORZERO_VERSION=2026.6.0
TB_PEER_LITELLM_VERSION=1.91.1
TB_PEER_PORTKEY_VERSION=1.15.2
mkdir -p "$PEERS"
stamp_ok() { [ -f "$PEERS/$1.stamp" ] && [ "$(cat "$PEERS/$1.stamp")" = "$2" ]; }
stamp_set() { printf '%s' "$2" >"$PEERS/$1.stamp"; }

for peer in "$@"; do
  case "$peer" in
    tensorzero)
      spec="tensorzero==$TB_PEER_TENSORZERO_VERSION"
      if ! stamp_ok tensorzero "$spec" || ! [ -x "$PEERS/tensorzero/bin/python" ]; then
        tb_log "installing peer $spec (PyPI)"
        python3 -m venv "$PEERS/tensorzero"
        "$PEERS/tensorzero/bin/pip" install --quiet --disable-pip-version-check "$spec"
        stamp_set tensorzero "$spec"
      fi
      ;;
    litellm)
      spec="litellm[proxy]==$TB_PEER_LITELLM_VERSION"
      if ! stamp_ok litellm "$spec" || ! [ -x "$PEERS/litellm/bin/litellm" ]; then
        tb_log "installing peer $spec (PyPI)"
        python3 -m venv "$PEERS/litellm"
        "$PEERS/litellm/bin/pip" install --quiet --disable-pip-version-check "$spec"
        stamp_set litellm "$spec"
      fi
      ;;
    portkey)
      spec="@portkey-ai/gateway@$TB_PEER_PORTKEY_VERSION"
      if ! stamp_ok portkey "$spec" || ! [ -f "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
        tb_log "installing peer $spec (npm)"
        mkdir -p "$PEERS/portkey"
        # Portkey's declared @hono/node-server does not install; 1.14.2 does (TOOLCHAIN.md).
        cat >"$PEERS/portkey/package.json" <<JSON
{"name": "tollbooth-bench-portkey", "private": true,
 "dependencies": {"@portkey-ai/gateway": "$TB_PEER_PORTKEY_VERSION"},
 "overrides": {"@hono/node-server": "1.14.2"}}
JSON
        npm install --silent --no-audit --no-fund --prefix "$PEERS/portkey"
        stamp_set portkey "$spec"
      fi
      ;;
    *)
      echo "unknown peer $peer (tensorzero, portkey, litellm)" >&2
      exit 2
      ;;
  esac
done
