#!/usr/bin/env bash
# What connection state recovery costs a 3-node cluster when clients connect: a new
# session is stored before its CONNECT is answered (Redis Streams: a write to Redis;
# NATS: a JetStream KV write; the mesh: sent to every peer, answered once one of them
# acknowledged). Connection rate on node 0 and its RSS per idle connection, for
# 5,000 connections (-n), on each adapter with recovery on, and on the mesh without.
# The 3 nodes (and the backends) share CPU 0, the generator has CPU 1. Each run is
# bounded by --timeout-secs; nodes are stopped and keys removed after each.
#
#   bench/recovery-connect.sh [-n CONNS]
#
# Env: SKEIN_BIN, BENCH_TARGET_DIR, REDIS_URL (default redis://127.0.0.1:6379),
#      NATS_URL (default nats://127.0.0.1:4222), PORT (default 3991: 3991-3996 are used).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
PORT="${PORT:-3991}"
N=5000
[ "${1:-}" = "-n" ] && N="$2"
KEY="recovery-connect-$$"
TMP="$(mktemp -d)"
PIDS=()
stop_nodes() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
               for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_nodes; rm -rf "$TMP"' EXIT

# adapter_args NAME I: the adapter flags of node I.
adapter_args() {
    local seeds="127.0.0.1:$((PORT + 3)),127.0.0.1:$((PORT + 4)),127.0.0.1:$((PORT + 5))"
    case "$1" in
        redis-streams) echo --adapter redis-streams --redis-url "$REDIS_URL" --redis-key "$KEY-r" \
                            --redis-stream "$KEY-r-stream" ;;
        nats-jetstream) echo --adapter nats --nats-url "$NATS_URL" --nats-prefix "${KEY//-/_}" \
                             --recovery true ;;
        mesh*) echo --adapter mesh --mesh-port "$((PORT + 3 + $2))" --mesh-seeds "$seeds" \
                    --mesh-data "$TMP/$1-$2" --mesh-secret "$KEY" \
                    --recovery "$([ "$1" = mesh ] && echo true || echo false)" ;;
    esac
}

run() {
    local name=$1
    for i in 0 1 2; do
        # shellcheck disable=SC2046
        taskset -c 0 "$SKEIN_BIN" --bench-handlers --host 127.0.0.1 --port "$((PORT + i))" \
            --log warn --drain-period 100 $(adapter_args "$name" "$i") >"$TMP/$name-$i.log" 2>&1 &
        PIDS+=($!)
    done
    local formed=""
    for _ in $(seq 100); do
        if curl -s "127.0.0.1:$PORT/metrics" | grep -q '^skein_cluster_peers 2$'; then formed=1; break; fi
        sleep 0.2
    done
    if [ -z "$formed" ]; then
        echo "$name: the 3 nodes did not form a cluster in 20 s" >&2
        stop_nodes; return
    fi
    local out
    out=$(taskset -c 1 "$B" connect --url "http://127.0.0.1:$PORT" -n "$N" --timeout-secs 180 2>/dev/null || true)
    stop_nodes
    printf '%-30s conn/s %-8s KiB/conn %-6s ok %s\n' "$name" "$(field conn_per_s "$out")" \
        "$(field mem_per_conn_kib "$out")" "$(grep -o '"ok":[a-z]*' <<<"$out" | cut -d: -f2)"
}

run redis-streams
redis-cli -u "$REDIS_URL" --scan --pattern "$KEY-*" | xargs -r redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
run nats-jetstream
run mesh
run mesh-no-recovery
