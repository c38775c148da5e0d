#!/usr/bin/env bash
# Benchmark Skein beside Node's socket.io and socketioxide: every scenario, every
# server, alternating, medians of --reps runs (default 3). Writes
# bench/results/<date>.json, bench/results/<date>-*.svg and bench/BENCHMARKS.md.
#
#   bench/run.sh                          # full profile (~30-60 min on 2 cores)
#   bench/run.sh --profile quick --reps 1 # a few minutes
#   bench/run.sh --only echo,search-1k    # some cases only
#   bench/run.sh --cluster 2              # add cluster broadcast over 2 instances per server
#
# Env: SKEIN_BIN (default: <repo>/target/release/skein, built if missing),
#      BENCH_TARGET_DIR (cargo target dir for the generator and the socketioxide
#      peer, default bench/target). Other arguments go to `skein-bench suite`
#      (see `skein-bench suite --help`).
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
cargo build --release --manifest-path "$BENCH_DIR/peers/socketioxide/Cargo.toml"
if [ ! -d "$BENCH_DIR/peers/node/node_modules/socket.io" ]; then
    (cd "$BENCH_DIR/peers/node" && npm ci --no-audit --no-fund)
fi

exec "$CARGO_TARGET_DIR/release/skein-bench" suite \
    --bench-dir "$BENCH_DIR" \
    --sioxide-bin "$CARGO_TARGET_DIR/release/socketioxide-peer" \
    "$@"
