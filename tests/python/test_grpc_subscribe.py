"""Subscribe and AckClientEvent against real `skein` processes: a Python app server
receives the events that Socket.IO clients emit and answers their acks, on one node
and across a 3-node Redis cluster."""

import json
import os
import queue
import re
import threading
import time
import urllib.request
import uuid

import grpc
import pytest
import socketio

import skein_node
from test_grpc_api import TOKEN, stubs  # noqa: F401  (fixture)

AUTH = [("authorization", f"Bearer {TOKEN}")]


def start_node(*extra):
    """A bare node (no application: every client event goes to the API)."""
    return skein_node.start("--grpc-tokens", TOKEN, *extra)


stop_node = skein_node.stop


class Subscriber:
    """A Subscribe stream read by a thread into a queue."""

    def __init__(self, pb, stub, namespace="/", events=()):
        self.events = queue.Queue()
        self.call = stub.Subscribe(pb.SubscribeRequest(namespace=namespace, events=list(events)),
                                   metadata=AUTH)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for ev in self.call:
                self.events.put(ev)
        except grpc.RpcError:
            pass

    def next(self, timeout=5):
        return self.events.get(timeout=timeout)

    def close(self):
        self.call.cancel()
        self.thread.join(timeout=5)


def client(node):
    c = socketio.SimpleClient()
    c.connect(f"http://{node['http']}", transports=["websocket"])
    return c


def metric(node, name):
    text = urllib.request.urlopen(f"http://{node['http']}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


@pytest.fixture(scope="module")
def node():
    n = start_node()
    yield n
    stop_node(n)


@pytest.fixture()
def api(stubs, node):  # noqa: F811
    pb, pb_grpc = stubs
    channel = grpc.insecure_channel(node["grpc"])
    yield pb, pb_grpc.SkeinStub(channel)
    channel.close()


def test_subscriber_receives_an_event_and_answers_its_ack(api, node):
    pb, stub = api
    sub = Subscriber(pb, stub, events=["question"])
    c = client(node)
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(r=c.call("question", {"q": 1}, timeout=5)))
        t.start()
        ev = sub.next()
        assert (ev.namespace, ev.socket_id, ev.event, ev.wants_ack) == ("/", c.sid, "question", True)
        assert json.loads(ev.args.json) == [{"q": 1}]
        stub.AckClientEvent(pb.AckClientEventRequest(
            delivery_id=ev.delivery_id, args=pb.Args(json=json.dumps([{"answer": 42}]))),
            metadata=AUTH, timeout=5)
        t.join(timeout=6)
        assert result["r"] == {"answer": 42}
        # Answered once only.
        with pytest.raises(grpc.RpcError) as e:
            stub.AckClientEvent(pb.AckClientEventRequest(delivery_id=ev.delivery_id),
                                metadata=AUTH, timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        c.disconnect()
        sub.close()


def test_two_subscribers_share_the_events_exactly_once(api, node):
    pb, stub = api
    subs = [Subscriber(pb, stub, events=["tick"]) for _ in range(2)]
    c = client(node)
    try:
        for i in range(20):
            c.emit("tick", i)
        got = [[], []]
        deadline = time.time() + 10
        while len(got[0]) + len(got[1]) < 20 and time.time() < deadline:
            for k, s in enumerate(subs):
                try:
                    got[k].append(json.loads(s.next(timeout=0.1).args.json)[0])
                except queue.Empty:
                    pass
        time.sleep(0.3)
        for k, s in enumerate(subs):
            while not s.events.empty():
                got[k].append(json.loads(s.next().args.json)[0])
        assert got[0] and got[1], got
        assert not set(got[0]) & set(got[1]), got
        assert sorted(got[0] + got[1]) == list(range(20))
    finally:
        c.disconnect()
        for s in subs:
            s.close()


def test_an_event_nobody_takes_is_refused_or_counted(api, node):
    pb, stub = api
    c = client(node)
    try:
        assert c.call("unheard", 1, timeout=5) == {"error": "no subscriber", "event": "unheard"}
        before = metric(node, "skein_grpc_events_unrouted_total")
        c.emit("unheard", 2)
        deadline = time.time() + 5
        while metric(node, "skein_grpc_events_unrouted_total") != before + 1:
            assert time.time() < deadline, "the unrouted event was not counted"
            time.sleep(0.05)
        assert metric(node, "skein_grpc_events_refused_total") >= 1
    finally:
        c.disconnect()
    with pytest.raises(grpc.RpcError) as e:
        stub.Subscribe(pb.SubscribeRequest(namespace="/nope"), metadata=AUTH, timeout=5).next()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("namespace:")


@pytest.fixture(scope="module", params=skein_node.cluster_adapters())
def cluster(request):
    key = f"skein-py-sub-{uuid.uuid4().hex[:8]}"
    flags = skein_node.adapter_flags(request.param, key, 3, recovery=False)
    nodes = {n: start_node(*flags[i], "--node-id", n) for i, n in enumerate(["A", "B", "C"])}
    yield nodes
    for n in nodes.values():
        stop_node(n)


def test_cluster_event_of_a_client_on_c_reaches_a_subscriber_on_a(stubs, cluster):  # noqa: F811
    pb, pb_grpc = stubs
    a = pb_grpc.SkeinStub(grpc.insecure_channel(cluster["A"]["grpc"]))
    b = pb_grpc.SkeinStub(grpc.insecure_channel(cluster["B"]["grpc"]))
    deadline = time.time() + 10
    while a.ClusterInfo(pb.ClusterInfoRequest(), metadata=AUTH, timeout=5).server_count != 3:
        assert time.time() < deadline, "cluster did not form"
        time.sleep(0.1)
    sub = Subscriber(pb, a, events=["cluster-q"])
    seen = []

    def answer():
        # The app server answers through B: the ack travels B → C (the client's node).
        while True:
            try:
                ev = sub.next(timeout=15)
            except queue.Empty:
                return
            seen.append((ev.node, ev.socket_id, json.loads(ev.args.json)))
            b.AckClientEvent(pb.AckClientEventRequest(
                delivery_id=ev.delivery_id, args=pb.Args(json=json.dumps([{"via": "B"}]))),
                metadata=AUTH, timeout=5)

    threading.Thread(target=answer, daemon=True).start()
    c = client(cluster["C"])
    try:
        # Until A's advert reaches C, C has no subscriber to send the event to.
        deadline = time.time() + 15
        while True:
            r = c.call("cluster-q", "hello", timeout=8)
            if r != {"error": "no subscriber", "event": "cluster-q"}:
                break
            assert time.time() < deadline, "C never learned of A's subscriber"
            time.sleep(0.2)
        assert r == {"via": "B"}
        assert seen[-1] == ("C", c.sid, ["hello"])
        assert metric(cluster["A"], "skein_grpc_events_delivered_total") >= 1
    finally:
        c.disconnect()
        sub.close()
