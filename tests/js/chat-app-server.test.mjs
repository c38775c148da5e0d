// The chat demo run by an app server outside the node (examples/chat-app-server, Python,
// gRPC API only): `skein --demo --demo-logic api` serves the page and the sockets, the
// app server subscribes to the chat's events and answers them through the API. The same
// checks run against the built-in logic (`--demo-logic builtin`): both must behave alike.
// Needs python3 with grpcio and grpcio-tools (tests/python/requirements.txt); skipped
// without them unless SKEIN_REQUIRE_PYTHON is set.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";
import { TOKEN, startApp, pythonSkipReason as skipReason } from "./chat-app.mjs";

function client(url, username) {
  const s = h.io(url, { forceNew: true, reconnection: false, transports: ["websocket"], auth: { username } });
  h.track(s);
  return s;
}

const joinRoom = (s, room) => s.timeout(5000).emitWithAck("join room", room);

for (const logic of ["api", "builtin"]) describe(`chat demo, --demo-logic ${logic}`, () => {
  const reason = logic === "api" ? skipReason() : h.TARGET !== "skein" ? "skein only" : null;
  let srv, app;

  before(async () => {
    if (reason) return;
    srv = await h.startServer({
      kind: "skein", args: ["--demo", "--demo-logic", logic, "--grpc-port", "0", "--grpc-tokens", TOKEN],
    });
    if (logic !== "api") return;
    await h.until(() => /grpc listening on \S+/.test(srv.stdout), 10000, "gRPC port printed");
    const grpcAddr = /grpc listening on (\S+)/.exec(srv.stdout)[1];
    app = await startApp(grpcAddr);
  });

  after(async () => {
    h.closeClients();
    if (app) app.proc.kill("SIGKILL");
    if (srv) {
      try {
        h.assertAlive(srv, "after the app-server chat");
      } finally {
        await srv.stop("SIGKILL");
      }
    }
  });

  test("two clients chat in a room, with typing and the join ack",
    { skip: reason ?? false, timeout: 60000 }, async () => {
      const page = await h.http(srv.port, { path: "/" });
      assert.equal(page.status, 200, "the node serves the demo page");
      const alice = client(srv.url, "alice");
      const bob = client(srv.url, "bob");
      const carol = client(srv.url, "carol");
      const got = { alice: [], bob: [], carol: [] };
      for (const [name, s] of Object.entries({ alice, bob, carol })) {
        for (const ev of ["chat message", "typing", "stop typing"]) s.on(ev, (m) => got[name].push([ev, m]));
      }
      // The ack of `join room` is answered by the app server (AckClientEvent).
      assert.equal(await joinRoom(alice, "r1"), "r1");
      assert.equal(await joinRoom(bob, "r1"), "r1");
      assert.equal(await joinRoom(carol, "r2"), "r2");

      alice.emit("chat message", { room: "r1", message: "hello from alice" });
      await h.until(() => got.bob.some(([e]) => e === "chat message") && got.alice.some(([e]) => e === "chat message"),
        5000, "message in r1");
      const [, msg] = got.bob.find(([e]) => e === "chat message");
      assert.equal(msg.user, "alice", "the user name comes from the handshake auth");
      assert.equal(msg.message, "hello from alice");
      assert.ok(Math.abs(msg.timestamp - Date.now()) < 60000, "a timestamp in ms");

      bob.emit("typing", { room: "r1" });
      await h.until(() => got.alice.some(([e, m]) => e === "typing" && m.user === "bob"), 5000, "alice sees bob typing");
      bob.emit("stop typing", { room: "r1" });
      await h.until(() => got.alice.some(([e, m]) => e === "stop typing" && m.user === "bob"), 5000, "stop typing");

      // Not in r1: carol's message is ignored, as the built-in demo does.
      carol.emit("chat message", { room: "r1", message: "intruder" });
      alice.emit("chat message", { room: "r1", message: "second" });
      await h.until(() => got.bob.filter(([e]) => e === "chat message").length === 2, 5000, "second message");
      await h.sleep(300);
      assert.ok(!got.bob.some(([, m]) => m?.message === "intruder"), "a message to a room one is not in is dropped");
      assert.ok(!got.bob.some(([e]) => e === "typing"), "no typing indicator for yourself");
      assert.deepEqual(got.carol, [], "room r2 gets nothing of r1");
    });

  test("without the app server, the join ack is an error", { skip: logic !== "api" || (reason ?? false), timeout: 30000 }, async () => {
    app.proc.kill("SIGKILL");
    await h.until(() => app.proc.exitCode !== null || app.proc.signalCode !== null, 5000, "app server gone");
    const dave = client(srv.url, "dave");
    let r;
    await h.until(async () => {
      // An event queued to the dying stream times out: ask again.
      r = await dave.timeout(1000).emitWithAck("join room", "r3").catch(() => null);
      return r?.error === "no subscriber";
    }, 15000, "the node notices the subscriber is gone");
    assert.deepEqual(r, { error: "no subscriber", event: "join room" });
  });
});
