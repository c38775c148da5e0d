// Three nodes A, B, C of one cluster (tests/CONTRACT.md "Cluster additions"), official
// clients on different nodes; the whole suite runs on every cluster adapter of
// tests/adapters.json (SKEIN_TEST_ADAPTERS picks some). SKEIN_TEST_TARGET=node makes every
// node a reference server (@socket.io/redis-adapter 8.x): that proves the tests themselves.
import { describe, test, before } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as h from "./harness.mjs";
import { withCluster, startCluster, startRedis, catcher, expectExactly, clusterAdapters, ADAPTERS } from "./cluster-harness.mjs";

const { ask, sleep, waitEvent, sorted } = h;
const WS = { transports: ["websocket"] };
const tag = (p = "t") => `${p}-${randomBytes(3).toString("hex")}`;
const ids = (list) => sorted(list.map((s) => s.id));
const SKEIN = h.TARGET === "skein";

/** Connect named clients: spec = {a1: ["A", opts?], ...}; resolves {a1: socket, ...}. */
async function clients(c, spec) {
  const entries = await Promise.all(Object.entries(spec).map(async ([name, [node, opts]]) =>
    [name, (await h.connect(c.cluster.node(node).url, { ...WS, ...opts })).socket]));
  return Object.fromEntries(entries);
}
const join = (s, room) => ask(s, "join", room);

/** The whole suite on one cluster adapter. */
function suite(adapter) {
  describe(`[${adapter}] broadcasts across nodes`, () => {
    const c = withCluster({ adapter, recovery: false });
    let s;
    before(async () => {
      s = await clients(c, { a1: ["A"], a2: ["A"], b1: ["B"], b2: ["B", { transports: ["polling"] }], c1: ["C"], c2: ["C"] });
      await Promise.all([join(s.a1, ["room1", "room2"]), join(s.b1, ["room1", "ex"]), join(s.c1, "room1"), join(s.c2, "room2")]);
    });

    test("a room broadcast from a client on A reaches the members on A, B and C exactly once (text + binary)", async () => {
      const got = catcher(s, "m");
      const t = tag();
      const payload = { n: 1, nested: { list: [1, "two", null] }, buf: Buffer.from([0, 1, 2, 255]) };
      await ask(s.a2, "broadcast", { rooms: ["room1"], event: "m", args: [t, payload, "x"] });
      await expectExactly(got, t, { a1: 1, b1: 1, c1: 1 });
      for (const name of ["a1", "b1", "c1"]) {
        assert.deepEqual(h.toBuffers(got.args(name, t)[0]), [t, payload, "x"], `payload on ${name}`);
      }
    });

    test("several rooms: a member of both gets it once; the whole namespace includes the sender", async () => {
      const got = catcher(s, "m");
      const t1 = tag();
      await ask(s.b2, "broadcast", { rooms: ["room1", "room2"], event: "m", args: [t1] });
      await expectExactly(got, t1, { a1: 1, b1: 1, c1: 1, c2: 1 });
      const t2 = tag();
      await ask(s.c2, "broadcast", { event: "m", args: [t2] });
      await expectExactly(got, t2, { a1: 1, a2: 1, b1: 1, b2: 1, c1: 1, c2: 1 });
    });

    test("except holds across nodes (a room and a socket id)", async () => {
      const got = catcher(s, "m");
      const t1 = tag();
      await ask(s.a2, "broadcast", { rooms: ["room1"], except: ["ex"], event: "m", args: [t1] });
      await expectExactly(got, t1, { a1: 1, c1: 1 });
      const t2 = tag();
      await ask(s.b2, "broadcast", { except: [s.c1.id, s.a2.id], event: "m", args: [t2] });
      await expectExactly(got, t2, { a1: 1, b1: 1, b2: 1, c2: 1 });
    });

    test("volatile is delivered to connected members on every node; local stays on the emitting node", async () => {
      const got = catcher(s, "m");
      const t1 = tag();
      await ask(s.a2, "broadcast", { rooms: ["room1"], volatile: true, event: "m", args: [t1] });
      await expectExactly(got, t1, { a1: 1, b1: 1, c1: 1 });
      const t2 = tag();
      await ask(s.b2, "broadcast", { rooms: ["room1"], local: true, event: "m", args: [t2] });
      await expectExactly(got, t2, { b1: 1 });
    });

    test("socket-broadcast excludes the sender across nodes", async () => {
      const got = catcher(s, "m");
      const t1 = tag();
      await ask(s.b1, "socket-broadcast", { rooms: ["room1"], event: "m", args: [t1] });
      await expectExactly(got, t1, { a1: 1, c1: 1 });
      const t2 = tag();
      await ask(s.c1, "socket-broadcast", { event: "m", args: [t2] });
      await expectExactly(got, t2, { a1: 1, a2: 1, b1: 1, b2: 1, c2: 1 });
    });

    test("namespaces stay apart across nodes", async () => {
      const custom = await clients(c, { cb: ["B", { nsp: "/custom" }], cc: ["C", { nsp: "/custom" }] });
      const all = { ...s, ...custom };
      const got = catcher(all, "m");
      const t1 = tag();
      await ask(s.a1, "broadcast", { event: "m", args: [t1] });
      await expectExactly(got, t1, { a1: 1, a2: 1, b1: 1, b2: 1, c1: 1, c2: 1 });
      const t2 = tag();
      await ask(custom.cc, "broadcast", { event: "m", args: [t2] });
      await expectExactly(got, t2, { cb: 1, cc: 1 });
    });
  });

  /** Every client answers `q` with its own id (the first ack argument). */
  const answerQ = (...sockets) => sockets.forEach((x) => x.on("q", (...args) => args.pop()(x.id)));

  describe(`[${adapter}] broadcast with acks across nodes`, () => {
    const c = withCluster({ adapter, recovery: false });
    let s;
    before(async () => {
      s = await clients(c, { a1: ["A"], a2: ["A"], b1: ["B"], b2: ["B", { transports: ["polling"] }], c1: ["C"] });
      answerQ(s.a1, s.a2, s.b1, s.b2, s.c1);
      await Promise.all([join(s.b1, "ackroom"), join(s.c1, "ackroom")]);
    });

    test("one ack from every client on every node", async () => {
      const r = await ask(s.a1, "broadcast-ack", { event: "q", args: ["all"], timeout: 4000 });
      assert.equal(r.err, null);
      assert.deepEqual(sorted(r.responses), ids(Object.values(s)));
    });

    test("a room spanning B and C, asked from A", async () => {
      const r = await ask(s.a2, "broadcast-ack", { rooms: ["ackroom"], event: "q", args: [], timeout: 4000 });
      assert.deepEqual({ ...r, responses: sorted(r.responses) }, { err: null, responses: ids([s.b1, s.c1]) });
    });

    test("a client that never answers: timeout error with the other clients' acks", async () => {
      const { silent } = await clients(c, { silent: ["C"] });
      await join(silent, "ackroom");
      const t0 = Date.now();
      const r = await ask(s.b2, "broadcast-ack", { rooms: ["ackroom"], event: "q", args: [], timeout: 1500 });
      const elapsed = Date.now() - t0;
      assert.equal(r.err, "operation has timed out");
      assert.deepEqual(sorted(r.responses), ids([s.b1, s.c1]));
      assert.ok(elapsed >= 1400 && elapsed < 4000, `answered after ${elapsed} ms (timeout 1500)`);
      silent.disconnect();
    });
  });

  const view = (x) => ({ id: x.id, rooms: sorted(x.rooms), data: x.data });

  describe(`[${adapter}] socket management across nodes`, () => {
    const c = withCluster({ adapter, recovery: false });
    let s;
    before(async () => {
      s = await clients(c, { a1: ["A"], b1: ["B"], b2: ["B"], c1: ["C"], c2: ["C", { transports: ["polling"] }] });
      await Promise.all([join(s.b1, ["fr", "x"]), join(s.c1, "fr"), join(s.c2, ["fr", "x"])]);
      await ask(s.b1, "set-data", { name: "b1", n: [1, 2, { deep: true }] });
      await ask(s.c1, "set-data", { name: "c1" });
    });

    test("fetch-sockets from A lists the sockets of B and C with their rooms and data", async () => {
      const all = (await ask(s.a1, "fetch-sockets", {})).map(view);
      const auth = { auth: {} };
      assert.deepEqual(all, [
        { id: s.a1.id, rooms: [s.a1.id], data: auth },
        { id: s.b1.id, rooms: sorted([s.b1.id, "fr", "x"]), data: { name: "b1", n: [1, 2, { deep: true }] } },
        { id: s.b2.id, rooms: [s.b2.id], data: auth },
        { id: s.c1.id, rooms: sorted([s.c1.id, "fr"]), data: { name: "c1" } },
        { id: s.c2.id, rooms: sorted([s.c2.id, "fr", "x"]), data: auth },
      ].sort((p, q) => (p.id < q.id ? -1 : 1)));
      const some = await ask(s.a1, "fetch-sockets", { rooms: ["fr"], except: ["x"] });
      assert.deepEqual(some.map((x) => x.id), [s.c1.id]);
      assert.deepEqual((await ask(s.c2, "fetch-sockets", { rooms: ["x"] })).map((x) => x.id), ids([s.b1, s.c2]));
    });

    test("sockets-join from A moves a socket on C into rooms; sockets-leave takes it out", async () => {
      const got = catcher(s, "m");
      await ask(s.a1, "sockets-join", { rooms: [s.c1.id], join: ["moved", "moved2"] });
      await h.until(async () => (await ask(s.c1, "rooms")).includes("moved2"), 5000, "c1 in moved2");
      assert.deepEqual(sorted(await ask(s.c1, "rooms")), sorted([s.c1.id, "fr", "moved", "moved2"]));
      const t1 = tag();
      await ask(s.b2, "broadcast", { rooms: ["moved"], event: "m", args: [t1] });
      await expectExactly(got, t1, { c1: 1 });

      await ask(s.a1, "sockets-leave", { rooms: ["moved"], leave: "moved" });
      await h.until(async () => !(await ask(s.c1, "rooms")).includes("moved"), 5000, "c1 out of moved");
      const t2 = tag();
      await ask(s.b2, "broadcast", { rooms: ["moved", "moved2"], event: "m", args: [t2] });
      await expectExactly(got, t2, { c1: 1 });
      const t3 = tag();
      await ask(s.b2, "broadcast", { rooms: ["moved"], event: "m", args: [t3] });
      await expectExactly(got, t3, {});
    });

    test("sockets-join with except, across B and C", async () => {
      await ask(s.a1, "sockets-join", { rooms: ["fr"], except: [s.c1.id], join: "j2" });
      await h.until(async () => (await ask(s.a1, "fetch-sockets", { rooms: ["j2"] })).length === 2, 5000, "two in j2");
      assert.deepEqual((await ask(s.a1, "fetch-sockets", { rooms: ["j2"] })).map((x) => x.id), ids([s.b1, s.c2]));
    });

    test("remote-emit from A reaches sockets on B and C once each", async () => {
      const got = catcher(s, "remote");
      const t = tag();
      assert.equal(await ask(s.a1, "remote-emit", { rooms: ["x"], event: "remote", args: [t, { k: 1 }] }), 2);
      await expectExactly(got, t, { b1: 1, c2: 1 });
      assert.deepEqual(got.args("c2", t)[0], [t, { k: 1 }]);
    });

    test("disconnect-sockets from A disconnects sockets on A, B and C; observers elsewhere see it", async () => {
      const d = await clients(c, { da: ["A"], db: ["B"], dc: ["C", { transports: ["polling"] }], obs: ["B"] });
      await Promise.all([join(d.da, "doomed"), join(d.db, "doomed"), join(d.dc, "doomed"), join(d.obs, "observers")]);
      const left = catcher({ obs: d.obs }, "left");
      const gone = [d.da, d.db, d.dc].map((x) => waitEvent(x, "disconnect", 6000));
      const doomedIds = ids([d.da, d.db, d.dc]);
      await ask(s.a1, "disconnect-sockets", { rooms: ["doomed"], close: false });
      for (const [reason] of await Promise.all(gone)) assert.equal(reason, "io server disconnect");
      await h.until(() => left.got.obs.length >= 3, 5000, "three left events on the observer");
      assert.deepEqual(sorted(left.got.obs.map(([e]) => e.id)), doomedIds);
      for (const [e] of left.got.obs) assert.deepEqual({ nsp: e.nsp, reason: e.reason }, { nsp: "/", reason: "server namespace disconnect" });
      for (const x of Object.values(s)) await h.assertEchoes(x, "after disconnect-sockets");
    });
  });

  describe(`[${adapter}] server-side emit, rooms and server count across nodes`, () => {
    const c = withCluster({ adapter, recovery: false });
    let s;
    before(async () => {
      s = await clients(c, { a1: ["A"], b1: ["B"], c1: ["C"] });
      await Promise.all([join(s.a1, ["rl", "only-a"]), join(s.b1, ["rl", "only-b"]), join(s.c1, ["rl", "only-c"])]);
    });
    const nodeId = (n) => c.cluster.node(n).nodeId;
    const byNode = (r) => [...r].sort((p, q) => (p.node < q.node ? -1 : 1));

    test("server-side-emit with a timeout: one answer from each other node", async () => {
      const r = await ask(s.a1, "server-side-emit", { event: "ping-servers", args: [1, "x", { y: [2] }], timeout: 3000 });
      assert.equal(r.err, null);
      assert.deepEqual(byNode(r.responses), byNode([
        { node: nodeId("B"), args: [1, "x", { y: [2] }] }, { node: nodeId("C"), args: [1, "x", { y: [2] }] },
      ]));
      const r2 = await ask(s.c1, "server-side-emit", { event: "ping-servers", args: [], timeout: 3000 });
      assert.deepEqual(byNode(r2.responses).map((x) => x.node), sorted([nodeId("A"), nodeId("B")]));
    });

    test("server-side-emit without ack: `relay` makes the other nodes emit to their local room", async () => {
      const got = catcher(s, "relayed");
      const t = tag();
      assert.deepEqual(await h.askAll(s.a1, "server-side-emit", { event: "relay", args: [{ room: "rl", event: "relayed", args: [t, 5] }] }), []);
      await expectExactly(got, t, { b1: 1, c1: 1 });
      assert.deepEqual(got.args("c1", t)[0], [t, 5]);
    });

    test("server-count and all-rooms agree on every node", async () => {
      const everyone = await ask(s.a1, "fetch-sockets", {});
      const union = sorted([...new Set(everyone.flatMap((x) => x.rooms))]);
      assert.ok(["only-a", "only-b", "only-c", "rl"].every((r) => union.includes(r)), union.join());
      for (const x of Object.values(s)) {
        assert.equal(await ask(x, "server-count"), 3);
        assert.deepEqual(await ask(x, "all-rooms"), union);
      }
    });
  });

  /** Elapsed ms of `fn()`; resolves [result, ms]. */
  async function timed(fn) {
    const t0 = Date.now();
    const r = await fn();
    return [r, Date.now() - t0];
  }
  const REQ_TIMEOUT = 1000;
  const within = (ms, bound, what) => assert.ok(ms < bound, `${what} answered after ${ms} ms (bound ${bound} ms)`);
  // Skein learns its peers' ids from a heartbeat every 2 s: a node must have been heard from
  // before it can be named in `missing`. Wait that long after the cluster formed.
  const PEER_SETTLE_MS = Number(process.env.SKEIN_PEER_SETTLE_MS || 2500);

  describe(`[${adapter}] a node dies`, () => {
    test("SIGKILL: requests from the survivors return in time with partial results; broadcasts keep flowing; C restarts", async () => {
      const cluster = await startCluster({ adapter, recovery: false, requestTimeout: REQ_TIMEOUT });
      const c = { cluster };
      try {
        const s = await clients(c, { a1: ["A"], b1: ["B"], c1: ["C"] });
        answerQ(s.a1, s.b1, s.c1);
        await Promise.all(Object.values(s).map((x) => join(x, "k")));
        assert.equal((await ask(s.a1, "cluster-fetch", {})).sockets.length, 3);
        await sleep(PEER_SETTLE_MS);
        const down = waitEvent(s.c1, "disconnect", 5000);
        await cluster.node("C").stop("SIGKILL");
        await down;

        const [f, fMs] = await timed(() => ask(s.a1, "cluster-fetch", {}));
        within(fMs, REQ_TIMEOUT + 1500, "cluster-fetch");
        assert.deepEqual(f.sockets.map((x) => x.id), ids([s.a1, s.b1]), JSON.stringify(f));
        if (SKEIN) assert.deepEqual(f.missing, [cluster.node("C").nodeId], "cluster-fetch names the dead node");
        const [e, eMs] = await timed(() => ask(s.b1, "server-side-emit", { event: "ping-servers", args: [], timeout: REQ_TIMEOUT }));
        within(eMs, REQ_TIMEOUT + 1500, "server-side-emit with ack");
        assert.deepEqual(e.responses.map((x) => x.node), [cluster.node("A").nodeId], JSON.stringify(e));
        const [b, bMs] = await timed(() => ask(s.a1, "broadcast-ack", { rooms: ["k"], event: "q", args: [], timeout: 3000 }));
        within(bMs, 3000 + 1500, "broadcast-ack");
        assert.deepEqual(sorted(b.responses), ids([s.a1, s.b1]), JSON.stringify(b));

        const got = catcher({ a1: s.a1, b1: s.b1 }, "m");
        const t = tag();
        await ask(s.b1, "broadcast", { rooms: ["k"], event: "m", args: [t] });
        await expectExactly(got, t, { a1: 1, b1: 1 });
        await h.until(async () => (await ask(s.a1, "server-count")) === 2, 10000, "server-count 2 on A");

        // C comes back on the same port with the same id: a full member again.
        await cluster.node("C").restart();
        await cluster.waitFormed(3);
        const { c2 } = await clients(c, { c2: ["C"] });
        const back = catcher({ a1: s.a1, b1: s.b1, c2 }, "m");
        const t2 = tag();
        await join(c2, "k");
        await ask(s.a1, "broadcast", { rooms: ["k"], event: "m", args: [t2] });
        await expectExactly(back, t2, { a1: 1, b1: 1, c2: 1 });
        const f2 = await ask(s.b1, "cluster-fetch", {});
        assert.deepEqual({ ids: f2.sockets.map((x) => x.id), missing: f2.missing }, { ids: ids([s.a1, s.b1, c2]), missing: [] });
        cluster.assertAlive();
      } finally {
        h.closeClients();
        await cluster.stop();
      }
    });

    test("SIGSTOP longer than the peer timeout (6 s) during a 7 s request: the hung node is still named", { skip: !SKEIN }, async () => {
      const cluster = await startCluster({ adapter, recovery: false, requestTimeout: 7000 });
      const c = { cluster };
      try {
        const s = await clients(c, { a1: ["A"], b1: ["B"], c1: ["C"] });
        await sleep(PEER_SETTLE_MS);
        await cluster.node("C").stop("SIGSTOP");
        const f = await s.a1.timeout(10000).emitWithAck("cluster-fetch", {});
        assert.deepEqual(f.missing, [cluster.node("C").nodeId], `named, not unknown-node-1: ${JSON.stringify(f.missing)}`);
        assert.deepEqual(f.sockets.map((x) => x.id), ids([s.a1, s.b1]));
        await cluster.node("C").stop("SIGCONT");
      } finally {
        h.closeClients();
        await cluster.stop();
      }
    });

    test("SIGSTOP (a hung node still subscribed): requests end within the request timeout; SIGCONT heals", async () => {
      const cluster = await startCluster({ adapter, recovery: false, requestTimeout: REQ_TIMEOUT });
      const c = { cluster };
      try {
        const s = await clients(c, { a1: ["A"], b1: ["B"], c1: ["C"] });
        answerQ(s.a1, s.b1, s.c1);
        await Promise.all(Object.values(s).map((x) => join(x, "k")));
        await sleep(PEER_SETTLE_MS);
        await cluster.node("C").stop("SIGSTOP");

        const [f, fMs] = await timed(() => ask(s.a1, "cluster-fetch", {}));
        within(fMs, REQ_TIMEOUT + 1500, "cluster-fetch");
        if (SKEIN) {
          assert.deepEqual(f.sockets.map((x) => x.id), ids([s.a1, s.b1]), JSON.stringify(f));
          assert.deepEqual(f.missing, [cluster.node("C").nodeId], "cluster-fetch names the hung node");
        } else {
          assert.match(f.err, /timeout reached/, "the Node adapter rejects fetchSockets instead");
        }
        const [e, eMs] = await timed(() => ask(s.b1, "server-side-emit", { event: "ping-servers", args: [], timeout: REQ_TIMEOUT }));
        within(eMs, REQ_TIMEOUT + 1500, "server-side-emit with ack");
        assert.ok(e.err, `an error names the timeout: ${JSON.stringify(e)}`);
        assert.deepEqual(e.responses.map((x) => x.node), [cluster.node("A").nodeId], JSON.stringify(e));
        const [b, bMs] = await timed(() => ask(s.a1, "broadcast-ack", { rooms: ["k"], event: "q", args: [], timeout: 1500 }));
        within(bMs, 1500 + 1500, "broadcast-ack");
        assert.equal(b.err, "operation has timed out");
        assert.deepEqual(sorted(b.responses), ids([s.a1, s.b1]), JSON.stringify(b));
        const got = catcher({ a1: s.a1, b1: s.b1 }, "m");
        const t = tag();
        await ask(s.b1, "broadcast", { rooms: ["k"], event: "m", args: [t] });
        await expectExactly(got, t, { a1: 1, b1: 1 });

        await cluster.node("C").stop("SIGCONT");
        await h.until(async () => {
          const r = await ask(s.a1, "cluster-fetch", {});
          return r.sockets.length === 3 && r.missing.length === 0;
        }, 10000, "C answers again after SIGCONT");
        assert.ok(s.c1.connected, "c1 survived the freeze");
        cluster.assertAlive();
      } finally {
        h.closeClients();
        await cluster.stop();
      }
    });
  });

  if (ADAPTERS[adapter].backend === "redis") describe(`[${adapter}] Redis restart`, () => {
    test("after a private redis-server restarts, broadcasts between nodes flow again", async () => {
      const redis = await startRedis();
      const cluster = await startCluster({ adapter, recovery: false, redisUrl: redis.url, requestTimeout: REQ_TIMEOUT });
      try {
        const s = await clients({ cluster }, { a1: ["A"], a2: ["A"], b1: ["B"], c1: ["C", { transports: ["polling"] }] });
        await Promise.all(Object.values(s).map((x) => join(x, "rr")));
        const drops = [];
        for (const [k, x] of Object.entries(s)) x.on("disconnect", (r) => drops.push(`${k}: ${r}`));
        const got = catcher(s, "m");
        const t0 = tag();
        await ask(s.a1, "broadcast", { rooms: ["rr"], event: "m", args: [t0] });
        await expectExactly(got, t0, { a1: 1, a2: 1, b1: 1, c1: 1 });

        await redis.stop("SIGKILL");
        // Without Redis, a node still serves its own clients: local members get the broadcast.
        const t1 = tag();
        await h.withTimeout(ask(s.a1, "broadcast", { rooms: ["rr"], event: "m", args: [t1] }), 4000, "broadcast while Redis is down");
        await h.until(() => got.count(t1).a2 === 1, 4000, "local delivery while Redis is down");
        const metric = async (name) => {
          const r = await h.http(cluster.node("A").port, { path: "/metrics" });
          const m = r.body.match(new RegExp(`^${name} (\\d+)$`, "m"));
          return m ? Number(m[1]) : NaN;
        };
        if (SKEIN) {
          // Operators see the outage and what could not cross nodes during it.
          await h.until(async () => (await metric("skein_cluster_undelivered_total")) >= 1, 10000, "undelivered counted");
          await h.until(async () => (await metric("skein_cluster_backend_up")) === 0, 10000, "backend reported down");
        }
        await sleep(500);
        await redis.restart();

        for (const [from, to] of [["a1", ["b1", "c1"]], ["c1", ["a2", "b1"]], ["b1", ["a1", "c1"]]]) {
          const sent = new Set();
          await h.until(async () => {
            const t = tag("after");
            sent.add(t);
            s[from].emit("broadcast", { rooms: ["rr"], event: "m", args: [t] });
            await sleep(250);
            return to.every((k) => got.got[k].some(([x]) => sent.has(x)));
          }, 20000, `${from} -> ${to.join(", ")} after the Redis restart`);
        }
        for (const x of Object.values(s)) {
          await h.until(async () => (await ask(x, "server-count")) === 3, 10000, "server-count 3 again");
        }
        const t2 = tag();
        await ask(s.b1, "broadcast", { rooms: ["rr"], event: "m", args: [t2] });
        await expectExactly(got, t2, { a1: 1, a2: 1, b1: 1, c1: 1 }, "exactly once after the restart");
        assert.deepEqual(drops, [], "no client was disconnected by the Redis outage");
        if (SKEIN) assert.equal(await metric("skein_cluster_backend_up"), 1, "backend reported up again");
        cluster.assertAlive();
      } finally {
        h.closeClients();
        await cluster.stop();
        await redis.stop();
      }
    });
  });
}

for (const adapter of clusterAdapters()) suite(adapter);
