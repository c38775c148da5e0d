// Connection state recovery with the official client 4.8, each case on two deployments:
// one node (the in-memory store), and 3 nodes in Redis Streams mode behind HAProxy (the
// client reconnects through the load balancer, to any node). Node crashes and drains, and
// the mixed Node.js/skein cluster, are in recovery-cluster.test.mjs.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";

import { DEPLOYMENTS, withDeployment } from "./deploy.mjs";

const { connect, ask, sleep, waitEvent, until } = h;
const WS = { transports: ["websocket"] };

/** A client that reconnects (recovery needs the client's reconnection). */
async function recoverable(url, { nsp = "/", ...opts } = {}) {
  const socket = h.track(h.io(url + (nsp === "/" ? "" : nsp), {
    forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200, randomizationFactor: 0, ...WS, ...opts,
  }));
  await waitEvent(socket, "connect", 8000);
  return socket;
}

/** Drops the client's transport (a "transport close", as on a network loss) and keeps it
 * from reconnecting until `comeBack`. */
async function dropAway(s) {
  s.io.reconnection(false);
  s.io.engine.close();
  await until(() => !s.connected, 3000, "disconnect");
}

/** The client reconnects, as its Manager would after a drop. */
async function comeBack(s) {
  s.io.reconnection(true);
  const back = waitEvent(s, "connect", 8000);
  s.connect();
  await back;
}

/** Records `msg` events: [payload, offset]. */
function collect(socket, event = "msg") {
  const got = [];
  socket.on(event, (...args) => got.push(args));
  return got;
}

for (const kind of DEPLOYMENTS) {
  describe(`connection state recovery (${kind})`, () => {
    const c = withDeployment(kind, ["--recovery"]);

    test("CONNECT carries pid and events carry an offset; a dropped client resumes id, rooms, data and missed events in order", async () => {
      const a = await recoverable(c.url);
      assert.equal(a.recovered, false);
      assert.equal(typeof a._pid, "string", "CONNECT reply carries a pid");
      const id = a.id;
      await ask(a, "join", "R");
      await ask(a, "set-data", { name: "alice", n: 7 });
      const got = collect(a);
      const { socket: pub } = await connect(c.url, WS);
      pub.emit("pub", { room: "R", n: 0 });
      await until(() => got.length === 1, 3000, "first event");
      assert.equal(typeof got[0][1], "string", "offset appended as the last argument");

      // Away: the transport drops, and events keep coming while the client is gone.
      await dropAway(a);
      for (let n = 1; n <= 20; n++) pub.emit("pub", { room: "R", n });
      await ask(pub, "rooms"); // the publisher's events are all processed
      await comeBack(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id, "same socket id");
      assert.deepEqual((await ask(a, "rooms")).sort(), [id, "R"].sort());
      const [sockets] = [await ask(pub, "fetch-sockets", { rooms: ["R"] })];
      assert.deepEqual(sockets.map((s) => s.data), [{ name: "alice", n: 7 }], "socket.data intact");
      await until(() => got.length === 21, 3000, "missed events");
      assert.deepEqual(got.map(([m]) => m.n), Array.from({ length: 21 }, (_, i) => i), "every event once, in order");
      // Live delivery goes on after the replay.
      pub.emit("pub", { room: "R", n: 21 });
      await until(() => got.length === 22, 3000, "live event");
      assert.equal(got[21][0].n, 21);
    });

    test("socket.emit to one socket is logged: an event lost in flight is replayed", async () => {
      const a = await recoverable(c.url);
      await until(() => a._lastOffset !== undefined, 3000, "the hello event");
      const before = a._lastOffset; // the offset of `hello`
      assert.equal(typeof before, "string");
      const echoed = waitEvent(a, "echo");
      a.emit("echo", "x", 1); // no ack: the server answers with socket.emit("echo", ...)
      const [x, one, offset] = await echoed;
      assert.deepEqual([x, one], ["x", 1]);
      assert.equal(typeof offset, "string", "socket.emit carries an offset");
      assert.notEqual(offset, before);
      const id = a.id;
      await dropAway(a);
      await sleep(200); // the server sees the close (a real client waits reconnectionDelay)
      // The client reconnects as if the echo had been lost in flight: from the offset before.
      const again = h.track(h.io(c.url, { forceNew: true, reconnection: false, ...WS, auth: { pid: a._pid, offset: before } }));
      const replay = waitEvent(again, "echo", 5000);
      await waitEvent(again, "connect", 8000);
      assert.equal(again.id, id, "the session resumed");
      assert.deepEqual(await replay, ["x", 1, offset], "the socket.emit event replayed with its offset");
    });

    test("a session that never received an event recovers (socket.io#5538)", async () => {
      const a = await recoverable(c.url, { nsp: "/quiet" });
      const id = a.id;
      assert.equal(a._lastOffset, undefined, "no event received: the client has no offset");
      await ask(a, "join", "Q");
      const got = collect(a);
      const { socket: pub } = await connect(c.url, { nsp: "/", ...WS });
      const q = h.track(h.io(c.url + "/quiet", { forceNew: true, reconnection: false, ...WS }));
      await waitEvent(q, "connect");
      await dropAway(a);
      q.emit("pub", { room: "Q", n: 1 });
      await ask(q, "rooms");
      await comeBack(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      await until(() => got.length === 1, 3000, "the missed event");
      assert.equal(got[0][0].n, 1);
      pub.close();
    });

    test("recovery works several times in a row (socket.io#4880)", async () => {
      const a = await recoverable(c.url);
      const id = a.id;
      await ask(a, "join", "T");
      const got = collect(a);
      const { socket: pub } = await connect(c.url, WS);
      for (let round = 0; round < 3; round++) {
        await dropAway(a);
        pub.emit("pub", { room: "T", n: round });
        await ask(pub, "rooms");
        await comeBack(a);
        assert.equal(a.recovered, true, `round ${round}`);
        assert.equal(a.id, id, `round ${round}`);
        await until(() => got.length === round + 1, 3000, `event of round ${round}`);
      }
      assert.deepEqual(got.map(([m]) => m.n), [0, 1, 2]);
    });

    test("two reconnects presenting the same pid at once: exactly one resumes the session", async () => {
      const a = await recoverable(c.url);
      const { _pid: pid, _lastOffset: offset, id } = a;
      a.io.reconnection(false);
      a.disconnect(); // a client namespace disconnect: this session is not recoverable
      const b = await recoverable(c.url);
      const pid2 = b._pid;
      const off2 = b._lastOffset;
      const id2 = b.id;
      await dropAway(b);
      // Two fresh clients present b's pid; `auth` overrides the client's own pid/offset.
      const twins = [0, 1].map(() => h.track(h.io(c.url, { forceNew: true, reconnection: false, ...WS, auth: { pid: pid2, offset: off2 } })));
      await Promise.all(twins.map((t) => waitEvent(t, "connect", 8000)));
      const ids = twins.map((t) => t.id);
      assert.equal(ids.filter((x) => x === id2).length, 1, `exactly one twin resumed ${id2}: ${ids}`);
      assert.notEqual(ids[0], ids[1]);
      // a's session ended with a client namespace disconnect: not recoverable.
      const late = h.track(h.io(c.url, { forceNew: true, reconnection: false, ...WS, auth: { pid, offset } }));
      await waitEvent(late, "connect", 8000);
      assert.notEqual(late.id, id, "a session closed by the client is not resumed");
    });

    test("a connection that died unnoticed: the new one probes it, closes it and resumes its session", async () => {
      const a = await recoverable(c.url, { reconnection: false });
      const id = a.id;
      await ask(a, "join", "D");
      // The old connection goes deaf (as after a network change): the server still sees it
      // connected, but it no longer answers pings.
      a.io.engine.transport.ws._socket.pause();
      const t0 = Date.now();
      const b = h.track(h.io(c.url, { forceNew: true, reconnection: false, ...WS, auth: { pid: a._pid, offset: a._lastOffset } }));
      await waitEvent(b, "connect", 8000);
      assert.equal(b.id, id, "the session moved to the new connection");
      assert.ok(Date.now() - t0 < 4000, "within the probe's 2 s");
      assert.deepEqual((await ask(b, "rooms")).sort(), [id, "D"].sort());
      a.close();
    });

    test("a forged pid gets a new session, never another client's", async () => {
      const victim = await recoverable(c.url);
      const forged = h.track(h.io(c.url, { forceNew: true, reconnection: false, ...WS, auth: { pid: "AAAAAAAAAAAAAAAAAAAA", offset: "1" } }));
      await waitEvent(forged, "connect", 8000);
      assert.notEqual(forged.id, victim.id);
      assert.equal(typeof forged._pid, "string");
      assert.notEqual(forged._pid, victim._pid);
      const junk = h.track(h.io(c.url, { forceNew: true, reconnection: false, ...WS, auth: { pid: victim._pid, offset: "not-an-offset" } }));
      await waitEvent(junk, "connect", 8000);
      assert.notEqual(junk.id, victim.id, "a bad offset does not recover");
      for (const auth of [{ pid: 42 }, { pid: "x".repeat(5000) }, { pid: victim._pid, offset: { $gt: "" } }, { pid: null, offset: 1 }]) {
        const odd = h.track(h.io(c.url, { forceNew: true, reconnection: false, ...WS, auth }));
        await waitEvent(odd, "connect", 8000);
        assert.notEqual(odd.id, victim.id, `auth ${JSON.stringify(auth).slice(0, 40)} gets a new session`);
      }
      assert.ok(victim.connected, "the victim is not affected");
      c.assertAlive();
    });
  });

  describe(`connection state recovery with skip_middlewares = false (${kind})`, () => {
    const c = withDeployment(kind, ["--recovery", "--recovery-skip-middlewares", "false"]);

    test("a recovering socket passes the connect middlewares again", async () => {
      const a = await recoverable(c.url, { nsp: "/private", auth: { token: "secret" } });
      const id = a.id;
      await ask(a, "join", "P");
      await dropAway(a);
      await sleep(200);
      // Same session, but the credentials are no longer accepted: refused, not resumed.
      const refused = h.track(h.io(c.url + "/private", { forceNew: true, reconnection: false, ...WS, auth: { token: "stolen?", pid: a._pid, offset: a._lastOffset } }));
      const [err] = await waitEvent(refused, "connect_error", 8000);
      assert.equal(err.message, "unauthorized");
      // The refusal consumed the session: even good credentials now get a new one.
      const again = h.track(h.io(c.url + "/private", { forceNew: true, reconnection: false, ...WS, auth: { token: "secret", pid: a._pid, offset: a._lastOffset } }));
      await waitEvent(again, "connect", 8000);
      assert.notEqual(again.id, id);
    });

    test("with valid credentials it resumes", async () => {
      const a = await recoverable(c.url, { nsp: "/private", auth: { token: "secret" } });
      const id = a.id;
      await dropAway(a);
      await sleep(200);
      await comeBack(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
    });
  });

  describe(`connection state recovery: expiry and log limits (${kind})`, () => {
    const c = withDeployment(kind, ["--recovery", "--recovery-max-disconnection", "1000", "--recovery-log-max-len", "5"]);

    test("a session away longer than max_disconnection_duration gets a new one", async () => {
      const a = await recoverable(c.url);
      const id = a.id;
      await dropAway(a);
      await sleep(1600);
      await comeBack(a);
      assert.equal(a.recovered, false);
      assert.notEqual(a.id, id);
    });

    test("a session whose missed events were trimmed from the log gets a new one", async () => {
      const a = await recoverable(c.url);
      const id = a.id;
      await ask(a, "join", "L");
      const { socket: pub } = await connect(c.url, WS);
      await dropAway(a);
      // The log keeps 5 (in memory exactly; a stream trims whole nodes of 100 entries).
      const count = kind === "one node" ? 12 : 300;
      for (let n = 0; n < count; n++) pub.emit("pub", { room: "L", n });
      await ask(pub, "rooms");
      if (kind !== "one node") await sleep(500); // the XADDs landed and the stream trimmed
      await comeBack(a);
      assert.equal(a.recovered, false, "missed events are gone: no partial recovery");
      assert.notEqual(a.id, id);
    });
  });

  describe(`connection state recovery: quiet long-lived connections, socket.io#5282 (${kind})`, () => {
    const c = withDeployment(kind, ["--recovery", "--recovery-max-disconnection", "1000", "--recovery-log-max-age", "1000"]);

    test("connected longer than max_disconnection_duration + margin without events, it still recovers", async () => {
      const a = await recoverable(c.url);
      const id = a.id;
      await ask(a, "join", "Z");
      const got = collect(a);
      const { socket: pub } = await connect(c.url, WS);
      pub.emit("pub", { room: "elsewhere", n: 0 }); // logged after a's offset, for another room
      // Quiet for longer than the log's age plus the delivery margin (5 s); then a new
      // entry makes the log drop everything up to and past a's offset.
      await sleep(6500);
      pub.emit("pub", { room: "elsewhere", n: 1 });
      await ask(pub, "rooms");
      await dropAway(a);
      pub.emit("pub", { room: "Z", n: 2 });
      await ask(pub, "rooms");
      await comeBack(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      await until(() => got.length === 1, 3000, "the missed event");
      assert.equal(got[0][0].n, 2);
    });
  });
}

describe("graceful drain on SIGTERM", () => {
  test("not ready, then connections closed over the drain period as a transport close, then exit", async () => {
    const srv = await h.startServer({ args: ["--recovery", "--drain-period", "1500"] });
    try {
      const port = new URL(srv.url).port;
      assert.equal((await h.http(port, { path: "/health/ready" })).status, 200);
      const clients = await Promise.all(Array.from({ length: 12 }, () => recoverable(srv.url, { reconnection: false })));
      const closed = clients.map((s) => waitEvent(s, "disconnect", 8000).then(([reason]) => ({ reason, at: Date.now() })));
      const t0 = Date.now();
      srv.proc.kill("SIGTERM");
      const results = await Promise.all(closed);
      for (const r of results) assert.equal(r.reason, "transport close", "a reconnectable close, not an io server disconnect");
      const spread = Math.max(...results.map((r) => r.at)) - Math.min(...results.map((r) => r.at));
      assert.ok(spread >= 700, `closes are spread over the drain period (spread ${spread} ms)`);
      assert.ok(Math.max(...results.map((r) => r.at)) - t0 < 4000);
      const exit = await srv.waitExit(8000);
      assert.ok(exit, "the node exits after draining");
      assert.equal(exit.code, 0);
      assert.ok(!/panicked/.test(srv.stderr));
    } finally {
      await srv.stop("SIGKILL");
    }
  });
});
