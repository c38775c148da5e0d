"""SIGTERM drains: gRPC health turns NOT_SERVING at once while the API keeps serving, the
Socket.IO listener stops accepting, connections close over the drain period, then exit 0."""

import signal
import socket
import time

import grpc
import socketio
from grpc_health.v1 import health_pb2, health_pb2_grpc

import skein_node


def start():
    n = skein_node.start("--test-handlers", "--grpc-tokens", "t", "--recovery",
                         "--drain-period", "2500")
    return n["proc"], n


def status(health):
    return health.Check(health_pb2.HealthCheckRequest(service="skein.v1.Skein"), timeout=2).status


def test_sigterm_reports_not_serving_then_drains_and_exits():
    proc, addrs = start()
    try:
        channel = grpc.insecure_channel(addrs["grpc"])
        health = health_pb2_grpc.HealthStub(channel)
        assert status(health) == health_pb2.HealthCheckResponse.SERVING
        clients = []
        for _ in range(5):
            c = socketio.SimpleClient()
            c.connect(f"http://{addrs['http']}", transports=["websocket"])
            clients.append(c)
        proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 1.5
        while status(health) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.time() < deadline, "health still SERVING after SIGTERM"
            time.sleep(0.05)
        # Not accepting new connections any more, while the drain is still going on.
        host, port = addrs["http"].rsplit(":", 1)
        refused = False
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            refused = True
        assert refused, "the Socket.IO port still accepts during the drain"
        assert proc.poll() is None, "the node is still draining"
        assert proc.wait(timeout=15) == 0
        channel.close()
        for c in clients:
            c.disconnect()
    finally:
        if proc.poll() is None:
            proc.kill()
