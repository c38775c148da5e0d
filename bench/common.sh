# Shared by the Skein-only bench scripts (recovery-cost.sh, recovery-connect.sh):
# the release binaries and the generator's JSON. Source it; it sets SKEIN_BIN and B.
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$BENCH_DIR")"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SKEIN_BIN="${SKEIN_BIN:-$REPO/target/release/skein}"
[ -x "$SKEIN_BIN" ] || (cd "$REPO" && cargo build --release -p skein-node)
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH_DIR/target}"
cargo build --release --manifest-path "$BENCH_DIR/Cargo.toml" >&2
B="$CARGO_TARGET_DIR/release/skein-bench"

# field NAME JSON: a numeric field of the generator's JSON report.
field() { grep -o "\"$1\":[0-9.]*" <<<"$2" | head -1 | cut -d: -f2; }
