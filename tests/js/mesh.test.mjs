// The mesh adapter (--adapter mesh) as real node processes on loopback, with official
// clients: the join promise, a leader killed with SIGKILL, a partition through TCP
// proxies the test cuts (both ways, whichever node leads), and a rolling restart. Skipped when SKEIN_TEST_ADAPTERS does not
// name the mesh.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import net from "node:net";
import * as h from "./harness.mjs";
import { startCluster, catcher, expectExactly } from "./cluster-harness.mjs";

const { ask, sleep } = h;
const WS = { transports: ["websocket"] };
const SKIP = h.TARGET !== "skein" || (process.env.SKEIN_TEST_ADAPTERS && !process.env.SKEIN_TEST_ADAPTERS.split(",").includes("mesh"));
const tag = (p = "t") => `${p}-${randomBytes(3).toString("hex")}`;
const GONE_AFTER = 3000;

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Whether the TCP socket bound to 127.0.0.1:`port` belongs to process `pid` (Linux /proc). */
function socketOwnedBy(pid, port) {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try { text = readFileSync(f, "utf8"); } catch { continue; }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1].endsWith(`:${hex}`)) inodes.add(cols[9]);
    }
  }
  if (!inodes.size) return false;
  let fds = [];
  try { fds = readdirSync(`/proc/${pid}/fd`); } catch { return false; }
  return fds.some((fd) => {
    try {
      const m = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      return m && inodes.has(m[1]);
    } catch { return false; }
  });
}

/**
 * The nodes' mesh traffic through TCP proxies on 127.0.0.1, one per node (each node
 * advertises its proxy's address). isolate(i, pid) cuts node i off both ways: every
 * connection to its proxy, and every connection its process (pid) opened through the
 * others' proxies, closed and refused until heal().
 */
async function meshNet(targets) {
  const conns = new Set();
  let isolated = null; // {i, pid}
  const blocked = (c) => isolated && (c.to === isolated.i || socketOwnedBy(isolated.pid, c.srcPort));
  const proxies = await Promise.all(targets.map(async (target, i) => {
    const srv = net.createServer((down) => {
      const c = { to: i, srcPort: down.remotePort, down, up: null };
      if (blocked(c)) return down.destroy();
      c.up = net.connect(target, "127.0.0.1");
      conns.add(c);
      const close = () => { down.destroy(); c.up.destroy(); conns.delete(c); };
      down.on("error", close).on("close", close);
      c.up.on("error", close).on("close", close);
      down.pipe(c.up);
      c.up.pipe(down);
    });
    await new Promise((r) => srv.listen(0, "127.0.0.1", r));
    return { srv, addr: `127.0.0.1:${srv.address().port}` };
  }));
  return {
    addrs: proxies.map((p) => p.addr),
    isolate(i, pid) {
      isolated = { i, pid };
      for (const c of [...conns]) if (blocked(c)) { c.down.destroy(); c.up?.destroy(); conns.delete(c); }
    },
    heal() { isolated = null; },
    close() {
      for (const c of conns) { c.down.destroy(); c.up?.destroy(); }
      for (const p of proxies) p.srv.close();
    },
  };
}

/**
 * The flags of `n` mesh nodes; with `proxies`, each node advertises (and is seeded as)
 * its proxy's address, so every node-to-node connection to it goes through that proxy.
 */
async function meshFlags(n, { proxies = false, key = tag("k") } = {}) {
  const ports = await Promise.all(Array.from({ length: n }, freePort));
  const px = proxies ? await meshNet(ports) : null;
  const addrs = px ? px.addrs : ports.map((p) => `127.0.0.1:${p}`);
  const flags = ports.map((port, i) => [
    "--adapter", "mesh", "--mesh-port", String(port), "--mesh-seeds", addrs.join(","),
    "--mesh-data", mkdtempSync(path.join(tmpdir(), "skein-mesh-")), "--mesh-secret", key,
    "--mesh-gone-after", String(GONE_AFTER),
    ...(px ? ["--mesh-advertise", px.addrs[i]] : []),
  ]);
  return { flags, net: px };
}

async function metrics(node) {
  const res = await fetch(`${node.url}/metrics`);
  const text = await res.text();
  const get = (name) => {
    const m = text.match(new RegExp(`^${name} (\\d+)$`, "m"));
    return m ? Number(m[1]) : undefined;
  };
  return { text, get };
}

async function connect(node) {
  return (await h.connect(node.url, WS)).socket;
}

const join = (s, room) => ask(s, "join", room);

describe("mesh", { skip: SKIP }, () => {
  test("the join promise: a client joins on B, gets the ack, a client on A broadcasts at once; 10,000 rounds, none missed", async () => {
    const { flags } = await meshFlags(3);
    const cluster = await startCluster({ adapter: "mesh", adapterArgs: (i) => flags[i], recovery: false });
    const LANES = Number(process.env.SKEIN_MESH_JOIN_LANES || 20);
    const ROUNDS = Number(process.env.SKEIN_MESH_JOIN_ROUNDS || 10000);
    try {
      const t0 = Date.now();
      let missed = 0;
      let done = 0;
      const lane = async (l) => {
        const a = await connect(cluster.node("A"));
        const b = await connect(cluster.node("B"));
        const waiting = new Map();
        b.on("m", (room, i) => {
          const w = waiting.get(`${room}/${i}`);
          if (w) w();
        });
        // Bounded in time when the promise is broken: stop after a few misses.
        for (let i = l; i < ROUNDS && missed < 20; i += LANES) {
          // A fresh room each round: the join is an index change every time; the
          // previous one is left, so the index shrinks as well as grows.
          const room = `j${l}-${i}`;
          await join(b, room);
          const got = new Promise((resolve) => {
            const timer = setTimeout(() => resolve(false), 2000);
            waiting.set(`${room}/${i}`, () => { clearTimeout(timer); resolve(true); });
          });
          a.emit("broadcast", { rooms: [room], event: "m", args: [room, i] });
          if (!(await got)) missed += 1;
          waiting.delete(`${room}/${i}`);
          b.emit("leave", room);
          done += 1;
        }
        a.disconnect();
        b.disconnect();
      };
      await Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)));
      const secs = (Date.now() - t0) / 1000;
      console.log(`join promise: ${done} rounds in ${secs.toFixed(1)} s, ${missed} missed`);
      assert.equal(done, ROUNDS);
      assert.equal(missed, 0, `${missed} of ${ROUNDS} broadcasts started after the join's ack missed the member`);
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
    }
  });

  test("leader SIGKILL: a new leader within seconds; broadcasts and joins continue", async () => {
    const { flags } = await meshFlags(3);
    const cluster = await startCluster({ adapter: "mesh", adapterArgs: (i) => flags[i], recovery: false });
    try {
      let leader;
      await h.until(async () => {
        for (const x of cluster.nodes) if ((await metrics(x)).get("skein_mesh_is_leader") === 1) leader = x;
        return leader !== undefined;
      }, 10000, "a leader");
      const [x, y] = cluster.nodes.filter((n) => n !== leader);
      const x1 = await connect(x);
      const y1 = await connect(y);
      await join(y1, "before");
      const t0 = Date.now();
      await leader.stop("SIGKILL");
      // Broadcasts do not wait for Raft: one sent at once still arrives.
      const got = catcher({ y1 }, "m");
      const t1 = tag();
      await ask(x1, "broadcast", { rooms: ["before"], event: "m", args: [t1] });
      await expectExactly(got, t1, { y1: 1 });
      let next;
      await h.until(async () => {
        for (const n of [x, y]) if ((await metrics(n)).get("skein_mesh_is_leader") === 1) next = n;
        return next !== undefined;
      }, 10000, "a new leader");
      const elected = Date.now() - t0;
      console.log(`new leader ${next.name} after ${elected} ms`);
      assert.ok(elected < 8000, `new leader after ${elected} ms`);
      // A join needs a commit: it goes through the new leader.
      const t2 = tag();
      const j0 = Date.now();
      await join(y1, "after");
      console.log(`a join after the election took ${Date.now() - j0} ms`);
      assert.ok(Date.now() - j0 < 5000);
      await ask(x1, "broadcast", { rooms: ["after"], event: "m", args: [t2] });
      await expectExactly(got, t2, { y1: 1 });
      // The dead node leaves the index: the survivors' live members drop to 2.
      await h.until(async () => (await metrics(x)).get("skein_mesh_live_members") === 2, GONE_AFTER + 8000, "the dead leader declared gone");
    } finally {
      h.closeClients();
      await cluster.stop();
    }
  });

  test("partition through TCP proxies: the leader cut off keeps serving its clients; after the heal the indexes agree with the real members", async () => {
    const { flags, net: meshNet } = await meshFlags(3, { proxies: true });
    const cluster = await startCluster({ adapter: "mesh", adapterArgs: (i) => flags[i], recovery: false });
    try {
      // The node cut off is the leader: the majority must elect another one.
      let L;
      await h.until(async () => {
        for (const x of cluster.nodes) if ((await metrics(x)).get("skein_mesh_is_leader") === 1) L = x;
        return L !== undefined;
      }, 10000, "a leader");
      const [X, Y] = cluster.nodes.filter((n) => n !== L);
      const a1 = await connect(X);
      const b1 = await connect(Y);
      const c1 = await connect(L);
      const c2 = await connect(L);
      await Promise.all([join(a1, "p1"), join(c1, "p1")]);
      const got = catcher({ a1, b1, c1, c2 }, "m");
      const t1 = tag();
      await ask(b1, "broadcast", { rooms: ["p1"], event: "m", args: [t1] });
      await expectExactly(got, t1, { a1: 1, c1: 1 });
      const entries = async () => Promise.all(cluster.nodes.map(async (n) => (await metrics(n)).get("skein_mesh_index_entries")));
      assert.deepEqual(await entries(), [2, 2, 2]);

      // Cut the leader off, both ways.
      meshNet.isolate(cluster.nodes.indexOf(L), L.server.proc.pid);
      await h.until(async () => (await metrics(X)).get("skein_mesh_live_members") === 2, GONE_AFTER + 10000, "the cut leader declared gone by the majority");
      await h.until(async () => {
        const m = await Promise.all([X, Y].map(async (n) => (await metrics(n)).get("skein_mesh_is_leader")));
        return m.includes(1);
      }, 10000, "a new leader on the majority side");
      // C keeps serving its clients: its members change rooms, and a broadcast between
      // two clients of C still arrives.
      c1.emit("leave", "p1");
      c1.emit("join", "p2");
      c2.emit("join", "p2");
      await sleep(300);
      const t2 = tag();
      await ask(c1, "broadcast", { rooms: ["p2"], event: "m", args: [t2] });
      await expectExactly(got, t2, { c1: 1, c2: 1 });
      // The majority side still works without C.
      const t3 = tag();
      await ask(b1, "broadcast", { rooms: ["p1"], event: "m", args: [t3] });
      await expectExactly(got, t3, { a1: 1 });

      meshNet.heal();
      // Real members now: p1 on A; p2 on C. Every node's index must say so.
      await h.until(async () => {
        const e = await entries();
        const live = await Promise.all(cluster.nodes.map(async (n) => (await metrics(n)).get("skein_mesh_live_members")));
        return e.every((x) => x === 2) && live.every((x) => x === 3);
      }, 20000, "indexes agree after the heal").catch(async (e) => {
        throw new Error(`${e.message}: entries ${JSON.stringify(await entries())}`);
      });
      const t4 = tag();
      await ask(b1, "broadcast", { rooms: ["p2"], event: "m", args: [t4] });
      await expectExactly(got, t4, { c1: 1, c2: 1 });
      const t5 = tag();
      await ask(b1, "broadcast", { rooms: ["p1"], event: "m", args: [t5] });
      await expectExactly(got, t5, { a1: 1 });
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
      meshNet.close();
    }
  });

  test("rolling restart of the 3 nodes: the cluster re-forms after each, and the broadcasts between the others lose nothing", async () => {
    const { flags } = await meshFlags(3);
    const cluster = await startCluster({ adapter: "mesh", adapterArgs: (i) => flags[i], recovery: false, args: ["--drain-period", "200", "--shutdown-grace", "1000"] });
    try {
      for (const node of cluster.nodes) {
        const [y, z] = cluster.nodes.filter((n) => n !== node);
        const sender = await connect(y);
        const member = await connect(z);
        const room = tag("roll");
        await join(member, room);
        const seen = [];
        member.on("seq", (r, i) => { if (r === room) seen.push(i); });
        const N = 300;
        const sending = (async () => {
          for (let i = 0; i < N; i++) {
            sender.emit("broadcast", { rooms: [room], event: "seq", args: [room, i] });
            await sleep(10);
          }
        })();
        await node.stop("SIGTERM");
        await node.restart();
        await sending;
        await h.until(() => seen.length >= N, 5000, `all ${N} broadcasts on ${z.name}`).catch(() => {});
        assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i), `node ${node.name} restarting: ${seen.length}/${N} in order`);
        await cluster.waitFormed(3);
        // The restarted node is a full member again: a client there joins and receives.
        const back = await connect(node);
        await join(back, room);
        const got = catcher({ back, member }, "m");
        const t = tag();
        await ask(sender, "broadcast", { rooms: [room], event: "m", args: [t] });
        await expectExactly(got, t, { back: 1, member: 1 });
        sender.disconnect();
        member.disconnect();
        back.disconnect();
      }
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
    }
  });
  test("rolling restart with recovery on: each node restarts in place; its client resumes there with its id and every event once, in order", async () => {
    const { flags } = await meshFlags(3);
    const cluster = await startCluster({
      adapter: "mesh", adapterArgs: (i) => [...flags[i], "--recovery", "true"],
      args: ["--drain-period", "200", "--shutdown-grace", "1000"],
    });
    try {
      for (const node of cluster.nodes) {
        const other = cluster.nodes.find((n) => n !== node);
        const client = h.track(h.io(node.url, { forceNew: true, ...WS, reconnectionDelay: 200, reconnectionDelayMax: 500 }));
        await h.waitEvent(client, "connect", 8000);
        const id = client.id;
        const room = tag("roll");
        await join(client, room);
        const seen = [];
        client.on("seq", (r, i) => { if (r === room) seen.push(i); });
        const sender = await connect(other);
        const N = 300;
        const sending = (async () => {
          for (let i = 0; i < N; i++) {
            sender.emit("broadcast", { rooms: [room], event: "seq", args: [room, i] });
            await sleep(10);
          }
        })();
        await sleep(500);
        await node.stop("SIGTERM");
        await node.restart();
        await sending;
        await h.until(() => seen.length >= N && client.connected, 15000, `all ${N} events on ${node.name} (got ${seen.length})`);
        await sleep(300); // duplicates would show up here
        assert.equal(client.recovered, true, `socket.recovered after ${node.name} restarted`);
        assert.equal(client.id, id, "same socket id");
        assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i), `every event once, in order (${node.name})`);
        await cluster.waitFormed(3);
        client.disconnect();
        sender.disconnect();
      }
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
    }
  });
});
