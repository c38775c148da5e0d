#!/usr/bin/env bash
# Rehearse a Kubernetes deployment of Skein on this machine, without a cluster:
#   deploy/local/rehearse.sh redis-streams        # or redis, memory; --help for options
# Starts the topology of deploy/overlays/<adapter> as processes on 127.0.0.1 (Redis,
# 3 nodes configured from deploy/base/skein.toml, HAProxy as Service and ingress),
# checks each node's configuration with `skein --check-config` first, chats through a
# rolling restart, reports, and cleans up. Needs redis-server, haproxy and Node.js.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if [ -z "${SKEIN_BIN:-}" ]; then
  target="${CARGO_TARGET_DIR:-$repo/target}"
  for b in "$target/release/skein" "$target/debug/skein"; do
    if [ -x "$b" ]; then export SKEIN_BIN="$b"; break; fi
  done
  if [ -z "${SKEIN_BIN:-}" ]; then
    cargo build --release -p skein-node
    export SKEIN_BIN="$target/release/skein"
  fi
fi
if [ ! -d "$here/node_modules/socket.io-client" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
exec node "$here/rehearse.mjs" "$@"
