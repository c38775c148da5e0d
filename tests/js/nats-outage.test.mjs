// NATS outages in the middle of numbered traffic, on private nats-servers (free loopback
// ports): one server killed and restarted, and one server of a 3-server NATS cluster
// killed for good. What must hold: no node panics or drops a client, local clients keep
// being served, what could not cross nodes is counted on /metrics, and broadcasts flow
// between every pair of nodes again within seconds.
import { describe, test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import * as h from "./harness.mjs";
import { startCluster, uniqueKey, freePort } from "./cluster-harness.mjs";

const { ask, sleep, until, waitEvent } = h;
const WS = { transports: ["websocket"] };
const NATS_BIN = process.env.NATS_SERVER_BIN || "nats-server";

/**
 * A nats-server of this test on 127.0.0.1 (with `cluster`: {port, routes:[ports], name}),
 * JetStream in a fresh directory. Returns {port, url, stop(), restart()}.
 */
async function startNats({ cluster } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "skein-nats-"));
  let proc = null;
  let log = "";
  async function launch() {
    const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir];
    if (cluster) {
      args.push("-n", cluster.name, "--cluster_name", "skt", "--cluster", `nats://127.0.0.1:${cluster.port}`,
        "--routes", cluster.routes.map((p) => `nats://127.0.0.1:${p}`).join(","));
    }
    const p = spawn(NATS_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    h.trackProcess(p);
    p.exited = new Promise((resolve) => p.once("exit", resolve));
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nats-server not ready:\n${log}`)), 10000);
      const on = (d) => {
        log += d;
        if (/Server is ready/.test(log.slice(-4000))) { clearTimeout(timer); resolve(); }
      };
      p.stdout.setEncoding("utf8").on("data", on);
      p.stderr.setEncoding("utf8").on("data", on);
      p.exited.then(() => { clearTimeout(timer); reject(new Error(`nats-server exited:\n${log}`)); });
    });
    proc = p;
  }
  const nats = {
    port,
    url: `nats://127.0.0.1:${port}`,
    get log() { return log; },
    async stop(signal = "SIGKILL") {
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      await Promise.race([proc.exited, delay(5000)]);
    },
    async restart() {
      await nats.stop();
      log = "";
      for (let i = 0; ; i++) {
        try { return await launch(); } catch (e) {
          if (i >= 20) throw e;
          await delay(200);
        }
      }
    },
  };
  await launch();
  return nats;
}

async function metric(node, name) {
  const r = await h.http(node.port, { path: "/metrics" });
  const m = r.body.match(new RegExp(`^${name} (\\d+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

/** A client on `node` in `room`, recording the seq of every `msg`. */
async function member(node, room) {
  const s = h.track(h.io(node.url, { forceNew: true, ...WS }));
  await waitEvent(s, "connect", 8000);
  await ask(s, "join", room);
  const got = [];
  s.on("msg", (m) => { if (m && m.seq !== undefined) got.push(m.seq); });
  const drops = [];
  s.on("disconnect", (r) => drops.push(r));
  return { s, got, drops };
}

/**
 * Until a `pub` from each client reaches the members of every other node: seqs from
 * `base` up, one every 200 ms, for at most `ms`.
 */
async function flowsEverywhere(members, room, base, ms = 20000) {
  let seq = base;
  for (const [from, m] of members.entries()) {
    const sent = new Set();
    await until(async () => {
      sent.add(seq);
      m.s.emit("pub", { room, seq: seq++ });
      await sleep(200);
      return members.every((o, i) => i === from || o.got.some((x) => sent.has(x)));
    }, ms, `broadcasts from node ${from} reach the others again`);
  }
  return seq;
}

describe("NATS outages in the middle of traffic", () => {
  const servers = [];
  after(async () => { h.closeClients(); for (const s of servers) await s.stop(); });

  test("a NATS restart: local clients served meanwhile, losses counted, broadcasts resume, no panic", async () => {
    const nats = await startNats();
    servers.push(nats);
    const cluster = await startCluster({ n: 3, adapter: "nats", natsUrl: nats.url, key: uniqueKey("nout") });
    try {
      const [a, b, c] = await Promise.all(cluster.nodes.map((n) => member(n, "r")));
      const a2 = await member(cluster.nodes[0], "r");
      for (const n of cluster.nodes) {
        await until(async () => (await metric(n, "skein_cluster_peers")) === 2, 10000, `node ${n.name} knows its peers`);
      }
      // 100 numbered pubs from A at about 200/s, NATS killed at 50.
      for (let seq = 0; seq < 100; seq++) {
        if (seq === 50) await nats.stop("SIGKILL");
        a.s.emit("pub", { room: "r", seq });
        if (seq % 2) await sleep(10);
      }
      await ask(a.s, "whoami");
      await until(() => a2.got.length === 100, 5000, "A's other client got all 100 (local delivery never stops)");
      assert.deepEqual(a2.got, Array.from({ length: 100 }, (_, i) => i), "in order, once");
      assert.ok(b.got.length < 100 && c.got.length < 100, "the others missed the outage's share");
      const A = cluster.nodes[0];
      await until(async () => (await metric(A, "skein_cluster_backend_up")) === 0, 10000, "A reports NATS down");
      const lost = await metric(A, "skein_cluster_undelivered_total");
      assert.ok(lost >= 2, `undelivered counted on A: ${lost}`);

      await sleep(500);
      await nats.restart();
      await until(async () => (await metric(A, "skein_cluster_backend_up")) === 1, 15000, "A reports NATS up again");
      await flowsEverywhere([a, b, c], "r", 1000);
      for (const m of [a, b, c, a2]) assert.deepEqual(m.drops, [], "no client was disconnected by the outage");
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
    }
  });

  test("a 3-server NATS cluster loses one server: its node moves to the others, broadcasts keep flowing", async () => {
    const routes = await Promise.all([0, 1, 2].map(() => freePort()));
    const nats = [];
    for (const [i, port] of routes.entries()) {
      nats.push(await startNats({ cluster: { port, name: `n${i}`, routes: routes.filter((p) => p !== port) } }));
    }
    servers.push(...nats);
    // Each node is given its own server only: it learns the others from the cluster.
    const key = uniqueKey("ncl");
    const cluster = await startCluster({
      n: 3,
      adapterArgs: (i) => ["--adapter", "nats", "--nats-url", nats[i].url, "--nats-prefix", key],
    });
    try {
      const members = await Promise.all(cluster.nodes.map((n) => member(n, "q")));
      let seq = await flowsEverywhere(members, "q", 0);
      await nats[0].stop("SIGKILL");
      // Node A's server is gone: A reconnects to another server of the cluster.
      const A = cluster.nodes[0];
      await until(async () => (await metric(A, "skein_cluster_backend_up")) === 1
        && (await ask(members[0].s, "server-count")) === 3, 20000, "A back in the cluster through another server");
      seq = await flowsEverywhere(members, "q", seq);
      // And a steady stream reaches every member once, in order.
      const from = seq;
      for (let i = 0; i < 50; i++) members[1].s.emit("pub", { room: "q", seq: seq++ });
      await ask(members[1].s, "whoami");
      for (const m of members) {
        await until(() => m.got.filter((x) => x >= from).length >= 50, 8000, "50 from B everywhere");
        assert.deepEqual(m.got.filter((x) => x >= from), Array.from({ length: 50 }, (_, i) => from + i));
      }
      for (const m of members) assert.deepEqual(m.drops, [], "no client was disconnected");
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
    }
  });
});
