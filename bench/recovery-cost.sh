#!/usr/bin/env bash
# What connection state recovery costs Skein: idle memory per connection (10k) and
# broadcast latency (1k members, 200 msg/s, 10 s) with recovery off, on in memory, over
# Redis pub/sub and over Redis Streams (one node each; Redis at $REDIS_URL). Server on
# CPU 0, generator on CPU 1. Prints one line per case; each run is bounded by
# --timeout-secs and the script cleans its Redis keys.
#
#   bench/recovery-cost.sh
#
# Env: SKEIN_BIN (default <repo>/target/release/skein, built if missing), BENCH_TARGET_DIR,
#      REDIS_URL (default redis://127.0.0.1:6379), PORT (default 3999).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
PORT="${PORT:-3999}"
KEY="recovery-cost-$$"

run() {
    local name=$1; shift
    taskset -c 0 "$SKEIN_BIN" --bench-handlers --host 127.0.0.1 --port "$PORT" --log warn \
        --drain-period 100 "$@" >/dev/null 2>&1 &
    local pid=$!
    sleep 1
    local mem bc
    mem=$(taskset -c 1 "$B" connect --url "http://127.0.0.1:$PORT" -n 10000 --timeout-secs 120 2>/dev/null || true)
    bc=$(taskset -c 1 "$B" broadcast --url "http://127.0.0.1:$PORT" -m 1000 -r 200 -d 10 --timeout-secs 60 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    printf '%-22s KiB/conn %-6s delivered %-8s lost %-4s p50 %-6s p99 %-6s min %s (µs)\n' "$name" \
        "$(field mem_per_conn_kib "$mem")" "$(field delivered "$bc")" "$(field lost "$bc")" \
        "$(field p50_us "${bc#*\"latency\"}")" "$(field p99_us "${bc#*\"latency\"}")" \
        "$(grep -o '"dist":\[\[0.0,[0-9]*' <<<"${bc#*\"latency\"}" | grep -o '[0-9]*$')"
}

run "memory, recovery off"
run "memory, --recovery" --recovery
run "redis pub/sub" --adapter redis --redis-url "$REDIS_URL" --redis-key "$KEY-a"
run "redis-streams" --adapter redis-streams --redis-url "$REDIS_URL" --redis-key "$KEY-b" --redis-stream "$KEY-s"
redis-cli -u "$REDIS_URL" DEL "$KEY-s" >/dev/null 2>&1 || true
