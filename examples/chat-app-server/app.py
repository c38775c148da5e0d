#!/usr/bin/env python3
"""The chat demo's logic (rooms, messages, typing indicator) as an app server outside
the node, using only Skein's gRPC API (`skein.v1`).

It subscribes to the events `join room`, `chat message`, `typing` and `stop typing` of
namespace "/" and answers them as `node/src/apps/demo.rs` does:

- `join room` (room name): SocketsJoin of the sender's socket, then the ack with the room;
- `chat message` `{room, message}`: if the sender is in the room, Emit `chat message`
  `{user, message, timestamp}` to the room;
- `typing` / `stop typing` `{room}`: Emit `{user}` to the room except the sender.

The user name is the client's `auth.username` (read with FetchSockets, so the app
server keeps no state and several instances can share the events); `user-<5 chars of
the socket id>` without one.

    python3 app.py --grpc 127.0.0.1:50051 --token s3cret

Stubs are generated from proto/ at start (grpcio-tools: no system protoc).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
EVENTS = ["join room", "chat message", "typing", "stop typing"]


def load_stubs(proto_dir):
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="skein-chat-stubs-")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}",
                      f"--grpc_python_out={out}", "skein/v1/skein.proto"])
    if rc != 0:
        sys.exit("chat-app-server: stub generation failed")
    sys.path.insert(0, out)
    from skein.v1 import skein_pb2, skein_pb2_grpc

    return skein_pb2, skein_pb2_grpc


def room_of(args):
    """The room named by the first argument: a string, or `{room}`."""
    if not args:
        return None
    v = args[0]
    r = v if isinstance(v, str) else v.get("room") if isinstance(v, dict) else None
    if not isinstance(r, str):
        return None
    r = r.strip()
    return r if 0 < len(r.encode()) <= 64 else None


class Chat:
    def __init__(self, pb, stub, token):
        self.pb, self.stub = pb, stub
        self.meta = [("authorization", f"Bearer {token}")]

    def call(self, method, req):
        return getattr(self.stub, method)(req, metadata=self.meta, timeout=10)

    def socket(self, sid):
        """The sender as FetchSockets reports it (its rooms and handshake), on any node."""
        page = self.call("FetchSockets", self.pb.FetchSocketsRequest(
            target=self.pb.Selector(rooms=[sid])))
        return next((s for s in page.sockets if s.id == sid), None)

    @staticmethod
    def user_of(info, sid):
        auth = json.loads(info.handshake_json or "{}").get("auth") if info else None
        name = auth.get("username") if isinstance(auth, dict) else None
        if isinstance(name, str) and name.strip():
            return name.strip()[:32]
        return f"user-{sid[:5]}"

    def emit(self, rooms, event, value, except_=()):
        target = self.pb.Selector(rooms=rooms)
        getattr(target, "except").extend(except_)  # `except` is a Python keyword
        self.call("Emit", self.pb.EmitRequest(
            target=target, event=event, args=self.pb.Args(json=json.dumps([value]))))

    def handle(self, ev):
        args = json.loads(ev.args.json or "[]")
        room = room_of(args)
        if room is None:
            return
        sid = ev.socket_id
        if ev.event == "join room":
            self.call("SocketsJoin", self.pb.RoomsRequest(
                target=self.pb.Selector(rooms=[sid]), rooms=[room]))
            if ev.wants_ack:
                self.call("AckClientEvent", self.pb.AckClientEventRequest(
                    delivery_id=ev.delivery_id, args=self.pb.Args(json=json.dumps([room]))))
            return
        info = self.socket(sid)
        if info is None:
            return  # gone meanwhile
        user = self.user_of(info, sid)
        if ev.event == "chat message":
            if room not in info.rooms:
                return
            message = args[0].get("message") if isinstance(args[0], dict) else None
            message = message[:2000] if isinstance(message, str) else ""
            self.emit([room], "chat message",
                      {"user": user, "message": message, "timestamp": int(time.time() * 1000)})
        else:  # typing, stop typing: to the others in the room
            self.emit([room], ev.event, {"user": user}, except_=[sid])

    def run(self):
        """Subscribes, handles events in order, and subscribes again if the stream ends."""
        backoff = 0.5
        while True:
            stream = self.stub.Subscribe(self.pb.SubscribeRequest(namespace="/", events=EVENTS),
                                         metadata=self.meta)
            try:
                stream.initial_metadata()  # the node has taken the subscription
                print(f"subscribed to {', '.join(EVENTS)}", flush=True)
                backoff = 0.5
                for ev in stream:
                    try:
                        self.handle(ev)
                    except grpc.RpcError as e:
                        print(f"{ev.event} from {ev.socket_id}: {e.code().name} {e.details()}",
                              file=sys.stderr, flush=True)
            except grpc.RpcError as e:
                if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
                    sys.exit(f"chat-app-server: {e.code().name}: {e.details()}")
                print(f"stream ended ({e.code().name}); subscribing again", file=sys.stderr,
                      flush=True)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grpc", default=os.environ.get("SKEIN_GRPC", "127.0.0.1:50051"),
                   help="address of a node's gRPC API")
    p.add_argument("--token", default=os.environ.get("SKEIN_GRPC_TOKEN"),
                   help="bearer token (or SKEIN_GRPC_TOKEN)")
    p.add_argument("--proto", default=os.path.join(HERE, "..", "..", "proto"),
                   help="directory of skein/v1/skein.proto")
    a = p.parse_args()
    if not a.token:
        sys.exit("chat-app-server: --token (or SKEIN_GRPC_TOKEN) is required")
    pb, pb_grpc = load_stubs(a.proto)
    Chat(pb, pb_grpc.SkeinStub(grpc.insecure_channel(a.grpc)), a.token).run()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
