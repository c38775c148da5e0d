#!/usr/bin/env bash
# CI smoke test of the benchmark instrument: every scenario once at a tiny size
# (50 connections, ~2 s) against skein, the ceiling (bench/peers/raw, cheap: it shares
# the generator's dependency builds) and the Node peer when its node_modules is
# installed; the cluster cases on 3 nodes each over a private redis-server (Skein also
# on nats/mesh when its binary accepts them). socketioxide is left out (its build is
# the expensive one). Asserts no speed: only that each scenario completed and printed
# its result line with "ok": true. Exits non-zero otherwise.
#
# Env: SKEIN_BIN (default ../target/release/skein, relative to bench/; the caller
#      builds skein first), BENCH_TARGET_DIR (default bench/target).
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$BENCH_DIR"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SKEIN_BIN="${SKEIN_BIN:-../target/release/skein}"
if [ ! -x "$SKEIN_BIN" ]; then
    echo "ci-smoke: no skein binary at $SKEIN_BIN (build it first or set SKEIN_BIN)" >&2
    exit 1
fi
export SKEIN_BIN="$(cd "$(dirname "$SKEIN_BIN")" && pwd)/$(basename "$SKEIN_BIN")"

export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH_DIR/target}"
# Release mode at opt-level 1: about half the build time of opt-level 3 from
# scratch, and speed does not matter at these sizes.
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-1}"
cargo build --release --quiet --manifest-path "$BENCH_DIR/Cargo.toml"
TARGETS=skein
if cargo build --release --quiet --manifest-path "$BENCH_DIR/peers/raw/Cargo.toml"; then
    TARGETS=$TARGETS,raw
fi
if [ -d peers/node/node_modules/socket.io ] && command -v node >/dev/null; then
    TARGETS=$TARGETS,node
fi
echo "ci-smoke: targets $TARGETS" >&2
timeout 420 "$CARGO_TARGET_DIR/release/skein-bench" suite \
    --profile smoke --reps 1 --cluster 3 \
    --targets "$TARGETS" \
    --bench-dir "$BENCH_DIR" \
    --raw-bin "$CARGO_TARGET_DIR/release/raw-peer" \
    --out-dir "$BENCH_DIR/results" \
    --no-report --check
