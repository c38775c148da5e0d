"""Starts a `skein` process for the Python tests and waits until it serves."""

import os
import re
import subprocess
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
