// One cluster, two kinds of node: a real Node socket.io 4.8 server with @socket.io/redis-adapter
// 8.x (node A) beside two skein nodes (B, C) on the same Redis and key, plus a
// @socket.io/redis-emitter 5.x publisher. INTEROP_ALL_NODE=1 makes B and C reference
// servers too (so does SKEIN_TEST_TARGET=node): that proves the test logic without skein.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";
import * as h from "./harness.mjs";
import { withCluster, catcher, expectExactly, REDIS_URL } from "./cluster-harness.mjs";

const { ask, waitEvent, sorted } = h;
const ALL_NODE = process.env.INTEROP_ALL_NODE === "1" || h.TARGET === "node";
const KINDS = ALL_NODE ? ["node", "node", "node"] : ["node", "skein", "skein"];
const WS = { transports: ["websocket"] };
const tag = (p = "t") => `${p}-${randomBytes(3).toString("hex")}`;
const ids = (list) => sorted(list.map((x) => x.id));
const byId = (p, q) => (p.id < q.id ? -1 : 1);
const view = (x) => ({ id: x.id, rooms: sorted(x.rooms), data: x.data });
const join = (x, room) => ask(x, "join", room);

describe(`interop: Node socket.io + redis-adapter (A) beside ${KINDS[1]} nodes (B, C)`, () => {
  const c = withCluster({ kinds: KINDS });
  let s; // n1, n2 on the Node server; s1 on B; s2, s3 (polling) on C
  before(async () => {
    const spec = { n1: ["A"], n2: ["A", { transports: ["polling"] }], s1: ["B"], s2: ["C"], s3: ["C", { transports: ["polling"] }] };
    s = Object.fromEntries(await Promise.all(Object.entries(spec).map(async ([k, [node, o]]) =>
      [k, (await h.connect(c.cluster.node(node).url, { ...WS, ...o })).socket])));
    for (const x of Object.values(s)) {
      x.on("q", (...a) => a.pop()(x.id));
      x.on("qb", (...a) => a.pop()({ id: x.id, buf: Buffer.from(x.id) }));
    }
    await Promise.all([join(s.n1, ["room", "room#with#hash"]), join(s.s1, ["room", "salle-é"]), join(s.s2, ["room", "ex", "room#with#hash"])]);
  });
  const nodeId = (n) => c.cluster.node(n).nodeId;

  test("room broadcasts cross both ways, binary included (single-room channel)", async () => {
    const got = catcher(s, "m");
    const payload = { text: "héllo", n: [1.5, -2, null, true], buf: Buffer.from([9, 8, 7, 0, 255]) };
    const t1 = tag();
    await ask(s.n2, "broadcast", { rooms: ["room"], event: "m", args: [t1, payload] });
    await expectExactly(got, t1, { n1: 1, s1: 1, s2: 1 }, "Node client -> room");
    assert.deepEqual(h.toBuffers(got.args("s2", t1)[0]), [t1, payload], "payload from Node on skein");
    const t2 = tag();
    await ask(s.s3, "broadcast", { rooms: ["room"], event: "m", args: [t2, payload] });
    await expectExactly(got, t2, { n1: 1, s1: 1, s2: 1 }, "skein client -> room");
    assert.deepEqual(h.toBuffers(got.args("n1", t2)[0]), [t2, payload], "payload from skein on Node");
  });

  test("several rooms, odd room names, the whole namespace, except, socket-broadcast, local", async () => {
    const got = catcher(s, "m");
    const cases = [
      [s.n2, "broadcast", { rooms: ["room#with#hash", "salle-é"] }, { n1: 1, s1: 1, s2: 1 }],
      [s.s3, "broadcast", { rooms: ["room#with#hash"] }, { n1: 1, s2: 1 }],
      [s.n2, "broadcast", { rooms: ["salle-é"] }, { s1: 1 }],
      [s.s1, "broadcast", {}, { n1: 1, n2: 1, s1: 1, s2: 1, s3: 1 }],
      [s.n2, "broadcast", { rooms: ["room"], except: ["ex"] }, { n1: 1, s1: 1 }],
      [s.s1, "broadcast", { except: [s.n1.id, "ex"] }, { n2: 1, s1: 1, s3: 1 }],
      [s.n1, "socket-broadcast", { rooms: ["room"] }, { s1: 1, s2: 1 }],
      [s.s2, "socket-broadcast", {}, { n1: 1, n2: 1, s1: 1, s3: 1 }],
      [s.n2, "broadcast", { rooms: ["room"], volatile: true }, { n1: 1, s1: 1, s2: 1 }],
      [s.s3, "broadcast", { rooms: ["room"], local: true }, { s2: 1 }],
    ];
    for (const [from, event, o, want] of cases) {
      const t = tag();
      await ask(from, event, { ...o, event: "m", args: [t] });
      await expectExactly(got, t, want, `${event} ${JSON.stringify(o)} from ${Object.keys(s).find((k) => s[k] === from)}`);
    }
  });

  test("broadcast with acks spanning both kinds, asked from either kind", async () => {
    for (const from of [s.n1, s.s1, s.s3]) {
      const all = await ask(from, "broadcast-ack", { event: "q", args: [], timeout: 4000 });
      assert.equal(all.err, null);
      assert.deepEqual(sorted(all.responses), ids(Object.values(s)));
      const room = await ask(from, "broadcast-ack", { rooms: ["room"], event: "q", args: [], timeout: 4000 });
      assert.deepEqual({ ...room, responses: sorted(room.responses) }, { err: null, responses: ids([s.n1, s.s1, s.s2]) });
    }
  });

  test("binary acks cross both kinds (broadcast-ack asked from either kind)", async () => {
    for (const from of [s.n2, s.s2]) {
      const r = await ask(from, "broadcast-ack", { rooms: ["room"], event: "qb", args: [], timeout: 4000 });
      assert.equal(r.err, null);
      assert.deepEqual(h.toBuffers(r.responses).sort(byId), [s.n1, s.s1, s.s2].map((x) => ({ id: x.id, buf: Buffer.from(x.id) })).sort(byId));
    }
  });

  test("a 300 KB payload (binary + text) crosses both kinds", async () => {
    const big = { buf: randomBytes(300 * 1024), text: "x".repeat(100 * 1024) };
    const got = catcher(s, "big");
    for (const from of [s.n1, s.s1]) {
      const t = tag();
      await ask(from, "broadcast", { rooms: ["room"], event: "big", args: [t, big] });
      await expectExactly(got, t, { n1: 1, s1: 1, s2: 1 }, "300 KB broadcast", 10000);
      for (const k of ["n1", "s1", "s2"]) assert.deepEqual(h.toBuffers(got.args(k, t)[0]), [t, big], `300 KB on ${k}`);
    }
  });

  test("a node without matching sockets still answers at once (acks, fetch, empty rooms)", async () => {
    await join(s.n2, "only-a");
    await join(s.s3, "only-c");
    for (const [from, room, who] of [[s.n1, "only-a", s.n2], [s.s1, "only-c", s.s3], [s.n1, "only-c", s.s3]]) {
      const t0 = Date.now();
      const r = await ask(from, "broadcast-ack", { rooms: [room], event: "q", args: [], timeout: 4000 });
      assert.deepEqual(r, { err: null, responses: [who.id] });
      assert.ok(Date.now() - t0 < 2000, `broadcast-ack to ${room} took ${Date.now() - t0} ms`);
      const t1 = Date.now();
      assert.deepEqual(await ask(from, "fetch-sockets", { rooms: ["nobody-here"] }), []);
      assert.ok(Date.now() - t1 < 2000, `fetch-sockets took ${Date.now() - t1} ms`);
    }
    await Promise.all([ask(s.n2, "leave", "only-a"), ask(s.s3, "leave", "only-c")]);
  });

  test("dynamic namespaces (/dyn-*) cross kinds once created on each node", async () => {
    const nsp = `/dyn-${randomBytes(3).toString("hex")}`;
    const d = Object.fromEntries(await Promise.all([["da", "A"], ["db", "B"], ["dc", "C"]].map(async ([k, n]) =>
      [k, (await h.connect(c.cluster.node(n).url, { ...WS, nsp })).socket])));
    const got = catcher({ ...d, n1: s.n1 }, "m");
    // A node subscribes to a new namespace's channels when its first client connects, without
    // waiting for Redis (the reference neither): poll until the three subscriptions are live.
    const warm = new Set();
    await h.until(async () => {
      const t = tag("warm");
      warm.add(t);
      await ask(d.da, "broadcast", { event: "m", args: [t] });
      await h.sleep(100);
      return ["db", "dc"].every((k) => got.got[k].some(([x]) => warm.has(x)));
    }, 5000, `subscriptions to ${nsp} on B and C`);
    for (const from of [d.da, d.db]) {
      const t = tag();
      await ask(from, "broadcast", { event: "m", args: [t] });
      await expectExactly(got, t, { da: 1, db: 1, dc: 1 }, `broadcast on ${nsp}`);
    }
  });

  test("fetch-sockets: the Node server lists skein sockets and skein lists Node sockets", async () => {
    await ask(s.s1, "set-data", { who: "s1", nested: { a: [1, "two", null] }, uni: "ünï" });
    await ask(s.n1, "set-data", { who: "n1", n: 42 });
    const auth = { auth: {} };
    const expected = [
      { id: s.n1.id, rooms: sorted([s.n1.id, "room", "room#with#hash"]), data: { who: "n1", n: 42 } },
      { id: s.n2.id, rooms: [s.n2.id], data: auth },
      { id: s.s1.id, rooms: sorted([s.s1.id, "room", "salle-é"]), data: { who: "s1", nested: { a: [1, "two", null] }, uni: "ünï" } },
      { id: s.s2.id, rooms: sorted([s.s2.id, "room", "ex", "room#with#hash"]), data: auth },
      { id: s.s3.id, rooms: [s.s3.id], data: auth },
    ].sort(byId);
    for (const from of ["n2", "s1", "s3"]) {
      assert.deepEqual((await ask(s[from], "fetch-sockets", {})).map(view), expected, `fetch-sockets from ${from}`);
      const r = await ask(s[from], "fetch-sockets", { rooms: ["room"], except: ["ex"] });
      assert.deepEqual(r.map((x) => x.id), ids([s.n1, s.s1]), `filtered, from ${from}`);
      const cf = await ask(s[from], "cluster-fetch", {});
      assert.deepEqual({ sockets: cf.sockets.map(view), missing: cf.missing }, { sockets: expected, missing: [] }, `cluster-fetch from ${from}`);
    }
  });

  test("on the wire, every node answers REMOTE_FETCH with a Node-shaped handshake", async () => {
    const sub = createClient({ url: REDIS_URL });
    sub.on("error", () => {});
    await sub.connect();
    const answers = [];
    try {
      await sub.subscribe(`${c.cluster.key}-response#/#`, (m) => { if (m[0] === 0x7b) answers.push(JSON.parse(m.toString())); }, true);
      await ask(s.n1, "fetch-sockets", {});
      await h.until(() => answers.filter((a) => a.sockets).length >= 2, 5000, "two REMOTE_FETCH answers");
    } finally {
      await sub.disconnect().catch(() => {});
    }
    const remote = answers.filter((a) => a.sockets).flatMap((a) => a.sockets);
    assert.deepEqual(ids(remote), ids([s.s1, s.s2, s.s3]));
    const shape = (hs) => Object.fromEntries(Object.entries(hs).map(([k, v]) => [k, typeof v]));
    const want = { headers: "object", time: "string", address: "string", xdomain: "boolean", secure: "boolean", issued: "number", url: "string", query: "object", auth: "object" };
    for (const x of remote) {
      assert.deepEqual(shape(x.handshake), want, `handshake of ${x.id}: ${JSON.stringify(x.handshake)}`);
      assert.equal(x.handshake.query.EIO, "4");
      assert.deepEqual(x.handshake.auth, {});
      assert.match(x.handshake.headers.host, /^127\.0\.0\.1:\d+$/);
      assert.ok(Math.abs(Date.now() - x.handshake.issued) < 120000, `issued ${x.handshake.issued}`);
    }
  });

  test("sockets-join / sockets-leave / disconnect-sockets across kinds", async () => {
    await ask(s.n2, "sockets-join", { rooms: [s.s2.id], join: ["from-node"] });
    await ask(s.s3, "sockets-join", { rooms: [s.n1.id], join: "from-skein" });
    await h.until(async () => (await ask(s.s2, "rooms")).includes("from-node"), 5000, "skein socket joined by Node");
    await h.until(async () => (await ask(s.n1, "rooms")).includes("from-skein"), 5000, "Node socket joined by skein");
    const got = catcher(s, "m");
    const t = tag();
    await ask(s.s1, "broadcast", { rooms: ["from-node", "from-skein"], event: "m", args: [t] });
    await expectExactly(got, t, { n1: 1, s2: 1 });
    await ask(s.s1, "sockets-leave", { rooms: ["from-skein"], leave: "from-skein" });
    await ask(s.n1, "sockets-leave", { rooms: ["from-node"], leave: "from-node" });
    await h.until(async () => !(await ask(s.s2, "rooms")).includes("from-node"), 5000, "skein socket left");
    await h.until(async () => !(await ask(s.n1, "rooms")).includes("from-skein"), 5000, "Node socket left");

    const d = Object.fromEntries(await Promise.all([["dn", "A"], ["ds", "B"]].map(async ([k, n]) =>
      [k, (await h.connect(c.cluster.node(n).url, WS)).socket])));
    const goneN = waitEvent(d.dn, "disconnect", 6000);
    const goneS = waitEvent(d.ds, "disconnect", 6000);
    await ask(s.s2, "disconnect-sockets", { rooms: [d.dn.id], close: false });
    assert.equal((await goneN)[0], "io server disconnect", "skein disconnects a Node socket");
    await ask(s.n1, "disconnect-sockets", { rooms: [d.ds.id], close: true });
    assert.equal((await goneS)[0], "io server disconnect", "Node disconnects a skein socket");
    for (const x of Object.values(s)) await h.assertEchoes(x, "after disconnect-sockets");
  });

  test("remote-emit across kinds", async () => {
    const got = catcher(s, "remote");
    const t1 = tag();
    assert.equal(await ask(s.n2, "remote-emit", { rooms: ["room"], except: [s.n1.id], event: "remote", args: [t1] }), 2);
    await expectExactly(got, t1, { s1: 1, s2: 1 });
    const t2 = tag();
    assert.equal(await ask(s.s3, "remote-emit", { rooms: [s.n1.id, s.n2.id], event: "remote", args: [t2, { k: [1] }] }), 2);
    await expectExactly(got, t2, { n1: 1, n2: 1 });
    assert.deepEqual(got.args("n2", t2)[0], [t2, { k: [1] }]);
  });

  test("server-side-emit with ack both ways; relay without ack", async () => {
    const nodesOf = (r) => sorted(r.responses.map((x) => x.node));
    const fromNode = await ask(s.n1, "server-side-emit", { event: "ping-servers", args: ["hi", 2], timeout: 3000 });
    assert.equal(fromNode.err, null);
    assert.deepEqual(nodesOf(fromNode), sorted([nodeId("B"), nodeId("C")]));
    for (const r of fromNode.responses) assert.deepEqual(r.args, ["hi", 2]);
    const fromSkein = await ask(s.s1, "server-side-emit", { event: "ping-servers", args: [{ x: 1 }], timeout: 3000 });
    assert.equal(fromSkein.err, null);
    assert.deepEqual(nodesOf(fromSkein), sorted([nodeId("A"), nodeId("C")]));
    for (const r of fromSkein.responses) assert.deepEqual(r.args, [{ x: 1 }]);

    const got = catcher(s, "relayed");
    const t1 = tag();
    await ask(s.n1, "server-side-emit", { event: "relay", args: [{ room: "room", event: "relayed", args: [t1] }] });
    await expectExactly(got, t1, { s1: 1, s2: 1 }, "relay from the Node server");
    const t2 = tag();
    await ask(s.s2, "server-side-emit", { event: "relay", args: [{ room: "room", event: "relayed", args: [t2] }] });
    await expectExactly(got, t2, { n1: 1, s1: 1 }, "relay from skein C");
  });

  test("server-count and all-rooms agree on every node", async () => {
    const union = sorted([...new Set((await ask(s.n1, "fetch-sockets", {})).flatMap((x) => x.rooms))]);
    for (const x of [s.n1, s.s1, s.s2]) {
      assert.equal(await ask(x, "server-count"), 3);
      assert.deepEqual(await ask(x, "all-rooms"), union);
    }
  });

  describe("@socket.io/redis-emitter 5.x", () => {
    let redis, emitter;
    before(async () => {
      redis = createClient({ url: REDIS_URL });
      redis.on("error", () => {});
      await redis.connect();
      emitter = new Emitter(redis, { key: c.cluster.key });
    });
    after(async () => { await redis?.disconnect().catch(() => {}); });

    test("to(room).emit, emit to all, except, binary: both kinds deliver once", async () => {
      const got = catcher(s, "em");
      const buf = Buffer.from([1, 2, 3, 250]);
      const t1 = tag();
      emitter.to("room").emit("em", t1, { buf, s: "é" });
      await expectExactly(got, t1, { n1: 1, s1: 1, s2: 1 }, "emitter.to(room)");
      assert.deepEqual(h.toBuffers(got.args("s1", t1)[0]), [t1, { buf, s: "é" }]);
      const t2 = tag();
      emitter.emit("em", t2);
      await expectExactly(got, t2, { n1: 1, n2: 1, s1: 1, s2: 1, s3: 1 }, "emitter.emit to all");
      const t3 = tag();
      emitter.to("room").to("salle-é").except("ex").emit("em", t3);
      await expectExactly(got, t3, { n1: 1, s1: 1 }, "emitter two rooms except");
      const t4 = tag();
      emitter.to(s.s2.id).emit("em", t4);
      emitter.to(s.n2.id).emit("em", t4);
      await expectExactly(got, t4, { s2: 1, n2: 1 }, "emitter.to(socket id)");
    });

    test("of('/custom'), socketsJoin / socketsLeave / disconnectSockets, serverSideEmit", async () => {
      const cs = (await h.connect(c.cluster.node("C").url, { ...WS, nsp: "/custom" })).socket;
      const got = catcher({ ...s, cs }, "em");
      const t1 = tag();
      emitter.of("/custom").emit("em", t1);
      await expectExactly(got, t1, { cs: 1 }, "emitter.of('/custom')");

      emitter.in("room").socketsJoin(["ej", "ej2"]);
      for (const k of ["n1", "s1", "s2"]) {
        await h.until(async () => (await ask(s[k], "rooms")).includes("ej2"), 5000, `${k} joined ej2 by the emitter`);
      }
      assert.deepEqual((await ask(s.s3, "fetch-sockets", { rooms: ["ej"] })).map((x) => x.id), ids([s.n1, s.s1, s.s2]));
      emitter.in("ej").socketsLeave("ej");
      await h.until(async () => (await ask(s.n2, "fetch-sockets", { rooms: ["ej"] })).length === 0, 5000, "ej emptied");

      const relayed = catcher(s, "relayed");
      const t2 = tag();
      emitter.serverSideEmit("relay", { room: "room", event: "relayed", args: [t2] });
      await expectExactly(relayed, t2, { n1: 1, s1: 1, s2: 1 }, "emitter.serverSideEmit reaches every node");

      const gone = waitEvent(cs, "disconnect", 6000);
      emitter.of("/custom").disconnectSockets(true);
      assert.equal((await gone)[0], "io server disconnect");
    });
  });
});
