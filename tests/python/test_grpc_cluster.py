"""The gRPC API across a 3-node cluster, on every cluster adapter (tests/adapters.json): a
call to one node has cluster-wide effect."""

import json
import os
import time
import uuid

import grpc
import pytest
import socketio

import skein_node
from test_grpc_api import AUTH, TOKEN, stubs  # noqa: F401  (fixture)

def start_node(flags, name):
    n = skein_node.start("--test-handlers", "--grpc-tokens", TOKEN, *flags, "--node-id", name)
    n["name"] = name
    return n


@pytest.fixture(scope="module", params=skein_node.cluster_adapters())
def cluster(request):
    key = f"skein-py-{uuid.uuid4().hex[:8]}"
    flags = skein_node.adapter_flags(request.param, key, 3, recovery=False)
    nodes = {n: start_node(flags[i], n) for i, n in enumerate(["A", "B", "C"])}
    # Formed when every node counts three servers.
    probe = socketio.SimpleClient()
    probe.connect(f"http://{nodes['A']['http']}", transports=["websocket"])
    deadline = time.time() + 10
    while probe.call("server-count", timeout=5) != 3:
        assert time.time() < deadline, "cluster did not form"
        time.sleep(0.1)
    probe.disconnect()
    yield nodes
    for n in nodes.values():
        n["proc"].terminate()
        assert n["proc"].wait(timeout=10) == 0


def clients(cluster, spec):
    out = {}
    for name, node in spec.items():
        c = socketio.SimpleClient()
        c.connect(f"http://{cluster[node]['http']}", transports=["websocket"])
        out[name] = c
    return out


def receive(c, event, timeout=5):
    deadline = time.time() + timeout
    while True:
        got, *data = c.receive(timeout=max(0.1, deadline - time.time()))
        if got == event:
            return data


def test_calls_through_one_node_act_on_every_node(stubs, cluster):  # noqa: F811
    pb, pb_grpc = stubs
    a = pb_grpc.SkeinStub(grpc.insecure_channel(cluster["A"]["grpc"]))
    b = pb_grpc.SkeinStub(grpc.insecure_channel(cluster["B"]["grpc"]))
    cs = clients(cluster, {"b1": "B", "c1": "C"})
    try:
        for c in cs.values():
            assert c.call("join", "grpc-room", timeout=5) == "grpc-room"
        # Emit through A reaches the clients on B and C.
        args = pb.Args(json=json.dumps(["to all", 1]))
        a.Emit(pb.EmitRequest(target=pb.Selector(rooms=["grpc-room"]), event="news", args=args),
               metadata=AUTH, timeout=5)
        for c in cs.values():
            assert receive(c, "news") == ["to all", 1]
        # SocketsJoin through B moves the socket on C into a room.
        c1 = cs["c1"].sid
        b.SocketsJoin(pb.RoomsRequest(target=pb.Selector(rooms=[c1]), rooms=["moved"]),
                      metadata=AUTH, timeout=5)
        deadline = time.time() + 5
        while "moved" not in cs["c1"].call("rooms", timeout=5):
            assert time.time() < deadline, "the socket on C never joined"
            time.sleep(0.05)
        a.Emit(pb.EmitRequest(target=pb.Selector(rooms=["moved"]), event="only-c"), metadata=AUTH,
               timeout=5)
        assert receive(cs["c1"], "only-c") == []
        # FetchSockets through A lists the sockets of B and C with their node.
        page = a.FetchSockets(pb.FetchSocketsRequest(target=pb.Selector(rooms=["grpc-room"])),
                              metadata=AUTH, timeout=5)
        assert sorted((s.id, s.node) for s in page.sockets) == sorted(
            [(cs["b1"].sid, "B"), (c1, "C")])
        # EmitWithAck streams the acks of the clients on every node, then a summary.
        for c in cs.values():
            c.client.on("q", lambda x, name=c.sid: f"ack-{x}")
        stream = a.EmitWithAck(pb.EmitWithAckRequest(target=pb.Selector(rooms=["grpc-room"]),
                                                     event="q", args=pb.Args(json="[5]"),
                                                     timeout_ms=3000), metadata=AUTH, timeout=10)
        acks, summary = [], None
        for ev in stream:
            if ev.HasField("ack"):
                acks.append(json.loads(ev.ack.args.json))
            else:
                summary = ev.summary
        assert acks == [["ack-5"], ["ack-5"]]
        assert (summary.expected, summary.received, summary.timed_out) == (2, 2, False)
        info = a.ClusterInfo(pb.ClusterInfoRequest(), metadata=AUTH, timeout=5)
        assert info.node_id == "A" and info.server_count == 3
    finally:
        for c in cs.values():
            c.disconnect()
