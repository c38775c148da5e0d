#!/usr/bin/env bash
# Benchmark Skein beside Node's socket.io, socketioxide and the ceiling (bench/peers/raw,
# a frame-level server with no Socket.IO behind it): every scenario, every server,
# alternating, medians of --reps runs (default 3). The cluster cases run 3 nodes of
# each server on a private Redis (Skein also on nats and mesh when its binary has them).
# Writes bench/results/<date>.json, bench/results/<date>-*.svg and bench/BENCHMARKS.md.
#
#   bench/run.sh                          # full profile (~2 h on 2 cores; ~1 h with --reps 1)
#   bench/run.sh --profile quick --reps 1 # ~10 minutes
#   bench/run.sh --only echo,search-1k    # some cases only
#   bench/run.sh --cluster 0              # without the cluster cases
#   bench/run.sh --skein-adapters redis   # Skein's cluster adapters (default redis,nats,mesh)
#
# Env: SKEIN_BIN (default: <repo>/target/release/skein, built if missing),
#      BENCH_TARGET_DIR (cargo target dir for the generator and the socketioxide and raw
#      peers, default bench/target), BENCH_REDIS_URL / BENCH_NATS_URL (use these instead
#      of a private redis-server / nats-server). Other arguments go to
#      `skein-bench suite` (see `skein-bench suite --help`).
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$BENCH_DIR")"

# Tens of thousands of sockets: raise the open-file limit as far as allowed.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "run.sh: open-file limit $(ulimit -n)" >&2

if [ -z "${SKEIN_BIN:-}" ]; then
    SKEIN_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/skein"
    if [ ! -x "$SKEIN_BIN" ]; then
        echo "run.sh: building skein (cargo build --release -p skein-node)" >&2
        (cd "$REPO" && cargo build --release -p skein-node) || echo "run.sh: skein build failed; measuring the peers only" >&2
    fi
fi
export SKEIN_BIN

export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH_DIR/target}"
cargo build --release --manifest-path "$BENCH_DIR/Cargo.toml"
cargo build --release --manifest-path "$BENCH_DIR/peers/raw/Cargo.toml"
cargo build --release --manifest-path "$BENCH_DIR/peers/socketioxide/Cargo.toml"
if [ ! -d "$BENCH_DIR/peers/node/node_modules/socket.io" ] ||
    [ ! -d "$BENCH_DIR/peers/node/node_modules/@socket.io/redis-adapter" ]; then
    (cd "$BENCH_DIR/peers/node" && npm ci --no-audit --no-fund)
fi

exec "$CARGO_TARGET_DIR/release/skein-bench" suite \
    --bench-dir "$BENCH_DIR" \
    --sioxide-bin "$CARGO_TARGET_DIR/release/socketioxide-peer" \
    --raw-bin "$CARGO_TARGET_DIR/release/raw-peer" \
    "$@"
