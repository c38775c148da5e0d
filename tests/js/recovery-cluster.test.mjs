// Connection state recovery across a cluster, on every adapter that recovers sessions
// across nodes (tests/adapters.json: Redis Streams, NATS JetStream, the mesh): 3 skein
// nodes behind a real HAProxy that drops a dead backend; the official client 4.8 over
// WebSocket. A node is killed (SIGKILL) or drained (SIGTERM) while 1,000 numbered events
// go to the client's room; two reconnects with one pid on two nodes, one wins; a
// connection that died unnoticed resumes on another node.
// Also: sessions moving between a Node.js socket.io server with
// @socket.io/redis-streams-adapter and a skein node.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import path from "node:path";
import * as h from "./harness.mjs";
import { startCluster, startRedis, uniqueKey, clusterAdapters, REDIS_URL } from "./cluster-harness.mjs";
import { startHaproxy, streamsArgs } from "./deploy.mjs";

const { ask, sleep, waitEvent, until } = h;
const WS = { transports: ["websocket"] };
const EVENTS = 1000;

/** The scenario of both acceptance tests: kill or drain the client's node mid-stream. */
async function survive(adapter, signal) {
  const cluster = await startCluster({ adapter, key: uniqueKey("csr"), args: ["--drain-period", "1000"] });
  const lb = await startHaproxy(cluster.nodes);
  try {
    const client = h.track(h.io(lb.url, { forceNew: true, ...WS, reconnectionDelay: 200, reconnectionDelayMax: 500 }));
    await waitEvent(client, "connect", 8000);
    const { node: victimId } = await ask(client, "whoami");
    const victim = cluster.nodes.find((n) => n.nodeId === victimId);
    assert.ok(victim, `the client's node ${victimId}`);
    const id = client.id;
    await ask(client, "join", "R");
    await ask(client, "set-data", { user: "carol", since: 1 });
    const got = [];
    client.on("msg", (m) => { if (m && m.seq !== undefined) got.push(m.seq); });
    const disconnects = [];
    client.on("disconnect", (r) => disconnects.push(r));

    const other = cluster.nodes.find((n) => n !== victim);
    const pub = h.track(h.io(other.url, { forceNew: true, reconnection: false, ...WS }));
    await waitEvent(pub, "connect", 8000);
    // 1,000 numbered events at a steady rate (about 2.5 s); the node goes down at 30%.
    for (let seq = 0; seq < EVENTS; seq++) {
      pub.emit("pub", { room: "R", seq });
      if (seq === Math.floor(EVENTS * 0.3)) {
        if (signal === "SIGKILL") victim.server.proc.kill("SIGKILL");
        else victim.server.proc.kill("SIGTERM");
      }
      if (seq % 4 === 3) await sleep(10);
    }
    await ask(pub, "whoami"); // every pub was handled by its node
    await until(() => got.length >= EVENTS && client.connected, 30000, `all ${EVENTS} events (got ${got.length})`).catch((e) => {
      throw new Error(`${e.message}; disconnects ${JSON.stringify(disconnects)}; haproxy:\n${lb.log.slice(-1500)}`);
    });
    await sleep(300); // duplicates would show up here
    assert.ok(disconnects.length >= 1, "the client did lose its node");
    assert.equal(client.recovered, true, "socket.recovered");
    assert.equal(client.id, id, "same socket id");
    const { node: now } = await ask(client, "whoami");
    assert.notEqual(now, victimId, "now on another node");
    assert.deepEqual((await ask(client, "rooms")).sort(), [id, "R"].sort(), "still in R");
    const fetched = await ask(client, "cluster-fetch", { rooms: [id] });
    assert.deepEqual(fetched.sockets.map((s) => s.data), [{ user: "carol", since: 1 }], "socket.data intact");
    assert.equal(got.length, EVENTS, "no duplicates");
    assert.deepEqual(got, Array.from({ length: EVENTS }, (_, i) => i), "every event exactly once, in order");
    if (signal === "SIGTERM") {
      const exit = await victim.server.waitExit(8000);
      assert.ok(exit && exit.code === 0, `the drained node exits cleanly: ${JSON.stringify(exit)}`);
    }
    victim.stopped = true;
    cluster.assertAlive();
  } finally {
    lb.stop();
    await cluster.stop();
  }
}

for (const adapter of clusterAdapters({ recovery: true })) {
  describe(`[${adapter}] recovery across nodes behind a load balancer`, () => {
    test("SIGKILL: the client resumes on another node with its id, room, data and all 1,000 events once, in order", async () => {
      await survive(adapter, "SIGKILL");
    });

    test("SIGTERM: the drained node's client resumes the same way", async () => {
      await survive(adapter, "SIGTERM");
    });
  });
}

for (const adapter of clusterAdapters({ recovery: true })) {
  describe(`[${adapter}] one session, two nodes`, () => {
    const ctx = {};
    before(async () => { ctx.cluster = await startCluster({ adapter, key: uniqueKey("two") }); });
    after(async () => { h.closeClients(); await ctx.cluster?.stop(); });

    test("two clients presenting one pid on two nodes: exactly one resumes it", async () => {
      const [A, B, C] = ctx.cluster.nodes;
      const a = h.track(h.io(A.url, { forceNew: true, reconnection: false, ...WS }));
      await waitEvent(a, "connect", 8000);
      const { id, _pid: pid } = a;
      await ask(a, "join", "T");
      a.io.engine.close();
      await sleep(300);
      const auth = { pid, offset: a._lastOffset };
      const twins = [B, C].map((n) => h.track(h.io(n.url, { forceNew: true, reconnection: false, ...WS, auth })));
      await Promise.all(twins.map((t) => waitEvent(t, "connect", 8000)));
      const got = twins.map((t) => t.id);
      assert.equal(got.filter((x) => x === id).length, 1, `exactly one resumed ${id}: ${got}`);
      // A third one, later, finds the session in use by a live socket.
      const third = h.track(h.io(A.url, { forceNew: true, reconnection: false, ...WS, auth }));
      await waitEvent(third, "connect", 8000);
      assert.notEqual(third.id, id);
    });

    test("a connection that died unnoticed on one node: the session resumes on another", async () => {
      const [A, B] = ctx.cluster.nodes;
      const a = h.track(h.io(A.url, { forceNew: true, reconnection: false, ...WS }));
      await waitEvent(a, "connect", 8000);
      const id = a.id;
      await ask(a, "join", "U");
      a.io.engine.transport.ws._socket.pause(); // deaf: node A still thinks it is connected
      const b = h.track(h.io(B.url, { forceNew: true, reconnection: false, ...WS, auth: { pid: a._pid, offset: a._lastOffset } }));
      await waitEvent(b, "connect", 10000);
      assert.equal(b.id, id, "node B asked node A, whose probe found the old connection dead");
      assert.deepEqual((await ask(b, "rooms")).sort(), [id, "U"].sort());
      const { node } = await ask(b, "whoami");
      assert.equal(node, B.nodeId);
      a.close();
    });
  });
}

describe("Redis Streams mode as a cluster adapter", () => {
  const ctx = {};
  before(async () => { ctx.cluster = await startCluster({ adapterArgs: streamsArgs(uniqueKey("str")) }); });
  after(async () => { h.closeClients(); await ctx.cluster?.stop(); });

  test("binary and volatile broadcasts reach every node once; logged ones carry a stream offset", async () => {
    const [a, b, c] = await Promise.all(ctx.cluster.nodes.map(async (n) => {
      const s = h.track(h.io(n.url, { forceNew: true, reconnection: false, ...WS }));
      await waitEvent(s, "connect", 8000);
      await ask(s, "join", "B");
      return s;
    }));
    const got = new Map([[b, []], [c, []]]);
    for (const [s, list] of got) s.on("bin", (...args) => list.push(args));
    await ask(a, "broadcast", { rooms: ["B"], except: [a.id], event: "bin", args: ["x", Buffer.from([1, 2, 255])] });
    await ask(a, "broadcast", { rooms: ["B"], except: [a.id], event: "bin", args: ["v"], volatile: true });
    await until(() => [...got.values()].every((l) => l.length === 2), 5000, "both broadcasts on B and C");
    await sleep(300);
    for (const list of got.values()) {
      assert.equal(list.length, 2, "exactly once");
      const [[x, buf, offset], [v, ...rest]] = list;
      assert.equal(x, "x");
      assert.deepEqual([...buf], [1, 2, 255], "binary intact");
      assert.match(offset, /^\d+-\d+$/, "a stream id as offset");
      assert.equal(v, "v");
      assert.deepEqual(rest, [], "a volatile broadcast is not logged: no offset");
    }
    const fetched = await ask(a, "cluster-fetch", { rooms: ["B"] });
    assert.equal(fetched.sockets.length, 3, "fetch_sockets still spans the cluster");
    ctx.cluster.assertAlive();
  });
});

// ---------------------------------------------------------------- stored before told
describe("a change the client is told about is stored first (Redis Streams)", () => {
  const ctx = {};
  before(async () => {
    ctx.redis = await startRedis();
    ctx.srv = await h.startServer({ args: ["--adapter", "redis-streams", "--redis-url", ctx.redis.url] });
  });
  after(async () => { h.closeClients(); await ctx.srv?.stop("SIGKILL"); await ctx.redis?.stop(); });

  const cli = (...args) => execFileSync("redis-cli", ["-p", String(ctx.redis.port), ...args], { encoding: "utf8" }).trim();
  /** The stored session of `pid` (base64 msgpack), as raw bytes; null when absent. */
  const stored = (pid) => {
    const out = cli("GET", `sio:session:${pid}`);
    return out === "" ? null : Buffer.from(out, "base64");
  };
  // Writes are held back by CLIENT PAUSE WRITE (reads still answer), so a node that told
  // the client before its session write landed is caught reading the old session.
  const paused = (fn) => { cli("CLIENT", "PAUSE", "300", "WRITE"); return fn(); };

  test("when the CONNECT reply, a join's ack or a set-data's ack arrives, the session in Redis already has it", async () => {
    for (let round = 0; round < 5; round++) {
      const a = h.track(h.io(ctx.srv.url, { forceNew: true, reconnection: false, ...WS }));
      await paused(() => waitEvent(a, "connect", 8000));
      assert.ok(stored(a._pid), `round ${round}: stored when the client got its pid`);
      const room = `told-${round}-${Math.random().toString(36).slice(2, 8)}`;
      await paused(() => ask(a, "join", room));
      assert.ok(stored(a._pid)?.includes(Buffer.from(room)), `round ${round}: the room is stored when the join is acked`);
      const mark = `mark-${round}-${Math.random().toString(36).slice(2, 8)}`;
      await paused(() => ask(a, "set-data", { mark }));
      assert.ok(stored(a._pid)?.includes(Buffer.from(mark)), `round ${round}: the data is stored when set-data is acked`);
      a.close();
    }
  });
});

// ---------------------------------------------------------------- mixed cluster
const NODE_SERVER = `
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createClient } from "redis";
import { createAdapter } from "@socket.io/redis-streams-adapter";
const [url, key, stream] = process.argv.slice(2);
const redis = createClient({ url });
await redis.connect();
const http = createServer();
const io = new Server(http, {
  connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true },
  adapter: createAdapter(redis, { streamName: stream, channelPrefix: key }),
});
io.on("connection", (s) => {
  s.on("join", (room, ack) => { s.join(room); ack?.(room); });
  s.on("set-data", (d, ack) => { s.data = d; ack?.(); });
  s.on("rooms", (ack) => ack([...s.rooms]));
  s.on("whoami", (ack) => ack({ node: "node-js", recovered: s.recovered, data: s.data }));
  s.on("pub", (o) => io.to(o.room).emit("msg", o));
  s.on("sockets-join", (o, ack) => { io.in(o.rooms).socketsJoin(o.join); ack?.(); });
});
http.listen(0, "127.0.0.1", () => console.log("listening on 127.0.0.1:" + http.address().port));
`;

async function startNodeStreamsServer(key) {
  const dir = mkdtempSync(path.join(h.REPO, "tests/js/.tmp-"));
  const file = path.join(dir, "streams-server.mjs");
  writeFileSync(file, NODE_SERVER);
  const proc = h.trackProcess(spawn(process.execPath, [file, REDIS_URL, key, `${key}-stream`], { stdio: ["ignore", "pipe", "pipe"] }));
  let out = "";
  proc.stderr.on("data", (d) => { out += d; });
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`node streams server did not start: ${out}`)), 15000);
    proc.stdout.on("data", (d) => {
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(String(d));
      if (m) { clearTimeout(t); resolve(Number(m[1])); }
    });
  });
  return { url: `http://127.0.0.1:${port}`, proc, dir, stop: () => proc.kill("SIGKILL") };
}

describe("mixed cluster: Node.js @socket.io/redis-streams-adapter and skein", () => {
  const ctx = {};
  before(async () => {
    ctx.key = uniqueKey("mix");
    ctx.skein = await h.startServer({ args: streamsArgs(ctx.key) });
    ctx.node = await startNodeStreamsServer(ctx.key);
  });
  after(async () => {
    h.closeClients();
    ctx.node?.stop();
    if (ctx.node) execFileSync("rm", ["-rf", ctx.node.dir]);
    await ctx.skein?.stop("SIGKILL");
  });

  test("socketsJoin crosses server kinds through the stream, both ways", async () => {
    const a = h.track(h.io(ctx.skein.url, { forceNew: true, reconnection: false, ...WS }));
    const b = h.track(h.io(ctx.node.url, { forceNew: true, reconnection: false, ...WS }));
    await Promise.all([waitEvent(a, "connect", 8000), waitEvent(b, "connect", 8000)]);
    // Node's streams adapter reads from "$" once its own duplicate Redis client has
    // connected, which may be after its server listens, and it re-reads from "$" after
    // each empty 5 s block until it has seen an entry: an entry written in those windows
    // is never read. So first make it read one of Skein's entries (1 of 20 loaded runs
    // lost the sockets-join below otherwise).
    await ask(b, "join", "ready");
    let ready = false;
    b.once("msg", () => { ready = true; });
    await until(() => { if (!ready) a.emit("pub", { room: "ready" }); return ready; }, 5000, "node reads skein's stream");
    await ask(a, "sockets-join", { rooms: [b.id], join: "J1" });
    await until(async () => (await ask(b, "rooms")).includes("J1"), 5000, "skein → node socketsJoin");
    await ask(b, "sockets-join", { rooms: [a.id], join: "J2" });
    await until(async () => (await ask(a, "rooms")).includes("J2"), 5000, "node → skein socketsJoin");
  });

  for (const [from, to] of [["skein", "node"], ["node", "skein"]]) {
    test(`a session started on ${from} resumes on ${to}, with the events it missed`, async () => {
      const urls = { skein: ctx.skein.url, node: ctx.node.url };
      const a = h.track(h.io(urls[from], { forceNew: true, reconnection: false, ...WS }));
      await waitEvent(a, "connect", 8000);
      await ask(a, "join", "M");
      await ask(a, "set-data", { who: "mixed" });
      const got = [];
      a.on("msg", (m) => got.push(m.n));
      const pub = h.track(h.io(urls[to], { forceNew: true, reconnection: false, ...WS }));
      await waitEvent(pub, "connect", 8000);
      pub.emit("pub", { room: "M", n: 0 });
      await until(() => got.length === 1, 5000, "an event before the drop (gives the client an offset)");
      const { id, _pid: pid, _lastOffset: offset } = a;
      assert.match(offset, /^\d+-\d+$/, "offsets are stream ids");
      a.io.engine.close(); // transport close: the Node server persists its session now
      await sleep(300);
      for (let n = 1; n <= 5; n++) pub.emit("pub", { room: "M", n });
      await sleep(300);
      const b = h.track(h.io(urls[to], { forceNew: true, reconnection: false, ...WS, auth: { pid, offset } }));
      const missed = [];
      b.on("msg", (m) => missed.push(m.n));
      await waitEvent(b, "connect", 8000);
      assert.equal(b.id, id, `the ${from} session resumed on ${to}`);
      await until(() => missed.length === 5, 5000, "the missed events");
      assert.deepEqual(missed, [1, 2, 3, 4, 5]);
      assert.deepEqual((await ask(b, "rooms")).sort(), [id, "M"].sort());
    });
  }
});
