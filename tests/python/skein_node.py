"""Starts a `skein` process for the Python tests and waits until it serves."""

import json
import os
import re
import socket
import subprocess
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SKEIN = os.environ.get("SKEIN_BIN", os.path.join(REPO, "target", "debug", "skein"))


def start(*args):
    """`skein` on 127.0.0.1 with free Socket.IO and gRPC ports and `args`; returns
    {"proc", "http", "grpc"} once it printed both addresses."""
    proc = subprocess.Popen(
        [SKEIN, "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    node = {"proc": proc}
    deadline = time.time() + 20
    while len(node) < 3 and time.time() < deadline:
        m = re.match(r"(grpc )?listening on (\S+)", proc.stdout.readline().strip())
        if m:
            node["grpc" if m.group(1) else "http"] = m.group(2)
    assert len(node) == 3, f"skein {' '.join(args)} did not start: {node}"
    return node


def stop(node):
    """SIGTERM, and the node must exit 0."""
    node["proc"].terminate()
    assert node["proc"].wait(timeout=10) == 0


ADAPTERS = {k: v for k, v in json.load(open(os.path.join(REPO, "tests", "adapters.json"))).items()
            if not k.startswith("//")}
REDIS = os.environ.get("SKEIN_TEST_REDIS_URL", "redis://127.0.0.1:6379")
NATS = os.environ.get("SKEIN_TEST_NATS_URL", "nats://127.0.0.1:4222")


def cluster_adapters():
    """The adapters the multi-node tests run on: every one of tests/adapters.json, or
    $SKEIN_TEST_ADAPTERS (comma-separated)."""
    wanted = os.environ.get("SKEIN_TEST_ADAPTERS")
    names = wanted.split(",") if wanted else list(ADAPTERS)
    return [a for a in names if a in ADAPTERS]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapter_flags(adapter, key, n, recovery=True):
    """The flags of `n` nodes of one cluster on `adapter` (tests/adapters.json); with
    `recovery` false, recovery is off where it is on by default (it appends offsets to
    events, which tests comparing payloads exactly do not want)."""
    spec = ADAPTERS[adapter]
    uses = lambda token: any(token in a for a in spec["args"])  # noqa: E731
    ports = [_free_port() for _ in range(n)] if uses("{mesh_") else []
    out = []
    for i in range(n):
        d = tempfile.mkdtemp(prefix=f"skein-{adapter}-") if uses("{dir}") else ""
        fill = {"{key}": key, "{redis}": REDIS, "{nats}": NATS, "{i}": str(i), "{dir}": d,
                "{mesh_port}": str(ports[i]) if ports else "",
                "{mesh_seeds}": ",".join(f"127.0.0.1:{p}" for p in ports)}
        flags = []
        for a in spec["args"]:
            for k, v in fill.items():
                a = a.replace(k, v)
            flags.append(a)
        if not recovery and spec["recovery"]:
            flags += ["--recovery", "false"]
        out.append(flags)
    return out
