"""The gRPC API from another language: Python stubs generated from proto/ at test time
drive a real `skein` process, and a Python Socket.IO client sees the effect."""

import json
import sys
import tempfile

import grpc
import pytest
import socketio
from grpc_health.v1 import health_pb2, health_pb2_grpc

import skein_node
from skein_node import REPO

TOKEN = "py-secret"


@pytest.fixture(scope="module")
def stubs():
    """Generates skein.v1 stubs with grpc_tools (no system protoc) and imports them."""
    out = tempfile.mkdtemp(prefix="skein-py-stubs-")
    from grpc_tools import protoc

    rc = protoc.main(["protoc", f"-I{REPO}/proto", f"--python_out={out}", f"--grpc_python_out={out}",
                      "skein/v1/skein.proto"])
    assert rc == 0, "stub generation failed"
    sys.path.insert(0, out)
    from skein.v1 import skein_pb2, skein_pb2_grpc  # noqa: E402

    return skein_pb2, skein_pb2_grpc


@pytest.fixture(scope="module")
def node():
    n = skein_node.start("--test-handlers", "--grpc-tokens", TOKEN)
    yield n
    skein_node.stop(n)


@pytest.fixture()
def api(stubs, node):
    pb, pb_grpc = stubs
    channel = grpc.insecure_channel(node["grpc"])
    yield pb, pb_grpc.SkeinStub(channel), channel
    channel.close()


AUTH = [("authorization", f"Bearer {TOKEN}")]


def client(node, room):
    c = socketio.SimpleClient()
    c.connect(f"http://{node['http']}", transports=["websocket"])
    assert c.call("join", room, timeout=5) == room
    return c


def test_health_is_serving(api):
    _, _, channel = api
    health = health_pb2_grpc.HealthStub(channel)
    r = health.Check(health_pb2.HealthCheckRequest(service="skein.v1.Skein"), timeout=5)
    assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_calls_without_the_token_are_refused(api):
    pb, stub, _ = api
    with pytest.raises(grpc.RpcError) as e:
        stub.ClusterInfo(pb.ClusterInfoRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_emit_reaches_a_python_socketio_client(api, node):
    pb, stub, _ = api
    c = client(node, "py-room")
    try:
        args = pb.Args(json=json.dumps(["hello from python", {"n": 1}]))
        stub.Emit(pb.EmitRequest(target=pb.Selector(rooms=["py-room"]), event="news", args=args),
                  metadata=AUTH, timeout=5)
        while True:
            event, *data = c.receive(timeout=5)
            if event == "news":
                break
        assert data == ["hello from python", {"n": 1}]
        page = stub.FetchSockets(pb.FetchSocketsRequest(target=pb.Selector(rooms=["py-room"])),
                                 metadata=AUTH, timeout=5)
        assert [s.id for s in page.sockets] == [c.sid]
        assert "py-room" in page.sockets[0].rooms
    finally:
        c.disconnect()


def test_bad_arguments_name_the_field(api):
    pb, stub, _ = api
    with pytest.raises(grpc.RpcError) as e:
        stub.Emit(pb.EmitRequest(event="x", args=pb.Args(json="{oops")), metadata=AUTH, timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("args.json:")
    with pytest.raises(grpc.RpcError) as e:
        stub.Emit(pb.EmitRequest(target=pb.Selector(namespace="/missing"), event="x"), metadata=AUTH,
                  timeout=5)
    assert e.value.details().startswith("target.namespace:")
