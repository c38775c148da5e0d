#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this):
#   services → lints → Rust tests (unit, fuzz, cross-process) → official-client tests
#   (Node, raw protocol, headless Chromium) → a tiny run of every bench scenario.
# Every step is bounded in time; the first failure stops the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n=== %s ===\n' "$*"; }

step "services"
bash tests/services.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build"
cargo build --workspace --all-targets --quiet

step "Rust tests"
SKEIN_FUZZ_SECS=${SKEIN_FUZZ_SECS:-5} timeout 900 cargo test --workspace

step "official client, raw protocol, browser and example app server tests"
# The example app server (examples/chat-app-server) is Python: its deps come first.
python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
(cd node/demo && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/js && SKEIN_BIN="$PWD/../../target/debug/skein" SKEIN_REQUIRE_BROWSER=1 SKEIN_REQUIRE_PYTHON=1 timeout 1200 npm test)

step "deploy: manifests (kustomize, kubernetes-validate --strict, invariants, skein --check-config)"
# kubernetes-validate is pinned: its version fixes the Kubernetes version (1.37) the
# manifests are validated against. The Gateway API route is checked against the
# schemas of @kubernetes-models/gateway-api (tests/js, installed above).
python3 -m pip install -q --disable-pip-version-check -r tests/deploy/requirements.txt
SKEIN_BIN="$PWD/target/debug/skein" timeout 300 python3 -m pytest -q tests/deploy

step "deploy: the local rehearsal command (redis-streams, rolling restart)"
# The rolling-restart test on both adapters ran in the npm suite above
# (deploy-rehearsal.test.mjs); this runs the command people use, end to end.
(cd deploy/local && npm ci --no-audit --no-fund --loglevel=error)
SKEIN_BIN="$PWD/target/debug/skein" timeout 300 deploy/local/rehearse.sh redis-streams --drain-period 3000

step "gRPC API from Python (stubs generated from proto/ at test time)"
SKEIN_BIN="$PWD/target/debug/skein" timeout 300 python3 -m pytest -q tests/python

if [ -x bench/ci-smoke.sh ]; then
  step "bench smoke (tiny sizes, no speed asserted)"
  (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)
  SKEIN_BIN="$PWD/target/debug/skein" timeout 600 bash bench/ci-smoke.sh
fi
