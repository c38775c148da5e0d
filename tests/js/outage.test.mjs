// Redis outages in the middle of numbered traffic, on a private redis-server: connections
// killed (CLIENT KILL), Redis frozen (SIGSTOP), Redis killed and restarted. What must hold:
// broadcasts flow again within seconds, local clients keep being served, nothing that
// could be delivered is lost or doubled, a recovery never passes over a gap, and /metrics
// counts exactly what did not cross nodes.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as h from "./harness.mjs";
import { startCluster, startRedis, uniqueKey } from "./cluster-harness.mjs";

const { ask, sleep, until, waitEvent } = h;
const WS = { transports: ["websocket"] };

const redisCli = (redis, ...args) =>
  execFileSync("redis-cli", ["-p", String(redis.port), ...args], { encoding: "utf8" }).trim();

async function metric(node, name) {
  const r = await h.http(node.port, { path: "/metrics" });
  const m = r.body.match(new RegExp(`^${name} (\\d+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

/** Every node knows the others by their heartbeats (what it counts losses against). */
async function peersKnown(cluster) {
  for (const n of cluster.nodes) {
    await until(async () => (await metric(n, "skein_cluster_peers")) === cluster.nodes.length - 1, 10000, `node ${n.name} knows its peers`);
  }
}

/** A client on `node`, in `room`, recording the seq of every `msg`. */
async function member(node, room, opts = {}) {
  const s = h.track(h.io(node.url, { forceNew: true, ...WS, reconnectionDelay: 100, reconnectionDelayMax: 300, ...opts }));
  await waitEvent(s, "connect", 8000);
  await ask(s, "join", room);
  const got = [];
  s.on("msg", (m) => { if (m && m.seq !== undefined) got.push(m.seq); });
  return { s, got };
}

/** Emits `n` numbered `pub`s to `room` from `pub` at about 200/s; `at(seq)` runs before each. */
async function traffic(pub, room, from, n, at = async () => {}) {
  for (let seq = from; seq < from + n; seq++) {
    await at(seq);
    pub.emit("pub", { room, seq });
    if (seq % 2 === 1) await sleep(10);
  }
  await ask(pub, "whoami"); // every pub was handled
}

const range = (from, n) => Array.from({ length: n }, (_, i) => from + i);
const dupes = (list) => list.filter((x, i) => list.indexOf(x) !== i);

describe("Redis Streams: outages in the middle of traffic", () => {
  test("CLIENT KILL of every connection: nothing is lost or doubled, reading resumes, metrics say up", async () => {
    const redis = await startRedis();
    const key = uniqueKey("out");
    const cluster = await startCluster({
      n: 2,
      adapterArgs: ["--adapter", "redis-streams", "--redis-url", redis.url, "--redis-key", key, "--redis-stream", `${key}-s`],
    });
    try {
      const [A, B] = cluster.nodes;
      await peersKnown(cluster);
      const x = await member(A, "r");
      const y = await member(B, "r");
      const pub = h.track(h.io(A.url, { forceNew: true, ...WS, reconnection: false }));
      await waitEvent(pub, "connect", 8000);
      await traffic(pub, "r", 0, 300, async (seq) => {
        if (seq === 100) {
          redisCli(redis, "CLIENT", "KILL", "TYPE", "normal");
          redisCli(redis, "CLIENT", "KILL", "TYPE", "pubsub");
        }
      });
      for (const [name, c] of [["same node", x], ["other node", y]]) {
        await until(() => c.got.length >= 300, 10000, `all 300 on the ${name} (got ${c.got.length})`);
        await sleep(300);
        assert.deepEqual(c.got, range(0, 300), `every event once, in order, on the ${name}`);
      }
      // Later traffic flows too: the reader did not keep a dead connection.
      await traffic(pub, "r", 300, 20);
      await until(() => x.got.length === 320 && y.got.length === 320, 5000, "traffic after the kill");
      for (const n of cluster.nodes) {
        await until(async () => (await metric(n, "skein_cluster_backend_up")) === 1, 10000, `node ${n.name} up`);
      }
      assert.equal(await metric(A, "skein_cluster_undelivered_total"), 0, "nothing was lost, nothing is counted");
      assert.match(A.server.stderr + B.server.stderr, /reading resumed/, "the log says reading resumed");
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
      await redis.stop();
    }
  });

  test("Redis killed and restarted: local clients keep being served, every event after the restart arrives, recovery is correct", async () => {
    const redis = await startRedis();
    const key = uniqueKey("out");
    const cluster = await startCluster({
      n: 2,
      adapterArgs: ["--adapter", "redis-streams", "--redis-url", redis.url, "--redis-key", key, "--redis-stream", `${key}-s`],
    });
    try {
      const [A, B] = cluster.nodes;
      await peersKnown(cluster);
      const x = await member(A, "r");
      const y = await member(B, "r");
      const pub = h.track(h.io(A.url, { forceNew: true, ...WS, reconnection: false }));
      await waitEvent(pub, "connect", 8000);
      let restartedAt = -1;
      await traffic(pub, "r", 0, 600, async (seq) => {
        if (seq === 100) await redis.stop("SIGKILL");
        if (seq === 100) await until(async () => (await metric(A, "skein_cluster_backend_up")) === 0, 5000, "down on /metrics");
        if (seq === 250) await sleep(2000); // an outage well past the writer's grace
        if (seq === 400) {
          await redis.restart();
          restartedAt = seq;
        }
      });
      // Same node: served all along (unlogged during the outage), nothing doubled.
      await until(() => x.got.length >= 600 - 5, 15000, `the same-node client's events (got ${x.got.length})`);
      await sleep(500);
      assert.deepEqual(dupes(x.got), [], "no event twice");
      assert.deepEqual(x.got.filter((s) => s >= 100 && s < 400), range(100, 300), "served during the outage");
      // Both nodes get every event once Redis is back and the nodes have reconnected.
      await until(async () => (await metric(A, "skein_cluster_backend_up")) === 1, 15000, "A up again");
      await until(async () => (await metric(B, "skein_cluster_backend_up")) === 1, 15000, "B up again");
      const after = 600;
      await traffic(pub, "r", after, 50);
      await until(() => x.got.includes(after + 49) && y.got.includes(after + 49), 10000, "events after the restart");
      await sleep(300);
      assert.deepEqual(x.got.filter((s) => s >= after), range(after, 50), "same node after the restart");
      assert.deepEqual(y.got.filter((s) => s >= after), range(after, 50), "other node after the restart");
      assert.deepEqual(dupes(y.got), [], "no event twice on the other node");
      assert.ok(restartedAt === 400);
      // What the other node missed during the outage is what A counts as undelivered.
      const missedOnB = range(0, after).filter((s) => !y.got.includes(s)).length;
      assert.ok(missedOnB >= 250, `B missed the outage's events (${missedOnB})`);
      assert.ok((await metric(A, "skein_cluster_undelivered_total")) >= missedOnB - 5, "A counts what did not cross");
      // Recovery afterwards: a client that leaves and comes back gets what it missed. It
      // leaves more than the delivery margin (5 s) after the last unlogged broadcast,
      // which it received on this node: that gap does not concern it.
      await sleep(5200);
      x.s.io.reconnection(false);
      x.s.io.engine.close();
      await until(() => !x.s.connected, 3000, "x away");
      await traffic(pub, "r", 700, 10);
      x.s.io.reconnection(true);
      const back = waitEvent(x.s, "connect", 8000);
      x.s.connect();
      await back;
      assert.equal(x.s.recovered, true, "recovered after the outage");
      await until(() => x.got.includes(709), 5000, "the missed events");
      assert.deepEqual(x.got.filter((s) => s >= 700), range(700, 10), "missed events once, in order");
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
      await redis.stop();
    }
  });

  test("Redis frozen (SIGSTOP): broadcasts go on locally; a recovery that would pass over the unlogged span is refused", async () => {
    const redis = await startRedis();
    const key = uniqueKey("out");
    const cluster = await startCluster({
      n: 2,
      adapterArgs: ["--adapter", "redis-streams", "--redis-url", redis.url, "--redis-key", key, "--redis-stream", `${key}-s`],
    });
    try {
      const [A, B] = cluster.nodes;
      await peersKnown(cluster);
      const x = await member(A, "r");
      const away = await member(B, "r");
      const pub = h.track(h.io(A.url, { forceNew: true, ...WS, reconnection: false }));
      await waitEvent(pub, "connect", 8000);
      await traffic(pub, "r", 0, 20);
      await until(() => away.got.length === 20, 5000, "the away client's first events");
      const awayId = away.s.id;
      away.s.io.reconnection(false);
      away.s.io.engine.close();
      await until(() => !away.s.connected, 3000, "away");
      await sleep(300); // its session is stored as disconnected
      redis.proc.kill("SIGSTOP");
      try {
        await traffic(pub, "r", 20, 400);
        await until(() => x.got.length >= 420, 10000, `same-node delivery while Redis is frozen (got ${x.got.length})`);
      } finally {
        redis.proc.kill("SIGCONT");
      }
      await until(async () => (await metric(A, "skein_cluster_backend_up")) === 1, 15000, "A up again");
      await traffic(pub, "r", 420, 10);
      await until(() => x.got.includes(429), 5000, "traffic after the freeze");
      await sleep(300);
      assert.deepEqual(dupes(x.got), [], "nothing twice on the same node, though Redis ran the retried writes late");
      assert.deepEqual(x.got, range(0, 430), "the same-node client got everything in order");
      // The away client missed broadcasts that were never logged: it gets a new session.
      away.s.io.reconnection(true);
      const back = waitEvent(away.s, "connect", 8000);
      away.s.connect();
      await back;
      assert.equal(away.s.recovered, false, "no recovery over a gap");
      assert.notEqual(away.s.id, awayId);
      assert.match(B.server.stderr + A.server.stderr, /log no longer covers the offset/, "the reason is logged");
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
      await redis.stop();
    }
  });
});

describe("Redis pub/sub: /metrics counts what really did not cross", () => {
  test("a frozen Redis loses nothing and counts nothing; a killed one counts exactly what the other node missed", async () => {
    const redis = await startRedis();
    const cluster = await startCluster({ n: 2, redisUrl: redis.url });
    try {
      const [A, B] = cluster.nodes;
      await peersKnown(cluster);
      const y = await member(B, "r");
      const pub = h.track(h.io(A.url, { forceNew: true, ...WS, reconnection: false }));
      await waitEvent(pub, "connect", 8000);
      const before = await metric(A, "skein_cluster_undelivered_total");
      redis.proc.kill("SIGSTOP");
      try {
        await traffic(pub, "r", 0, 300);
        await sleep(3000);
      } finally {
        redis.proc.kill("SIGCONT");
      }
      await until(() => y.got.length >= 300, 10000, `every event after the freeze (got ${y.got.length})`);
      assert.deepEqual(y.got, range(0, 300), "nothing lost while Redis was frozen");
      assert.equal(await metric(A, "skein_cluster_undelivered_total"), before, "and nothing counted");

      await redis.stop("SIGKILL");
      await traffic(pub, "r", 300, 200);
      await sleep(1000);
      await redis.restart();
      await traffic(pub, "r", 500, 300);
      await until(() => y.got.includes(799), 15000, "events flow again after the restart");
      await sleep(500);
      const missed = range(0, 800).filter((s) => !y.got.includes(s));
      assert.ok(missed.length >= 200, `B missed at least the outage's events (${missed.length})`);
      const counted = await metric(A, "skein_cluster_undelivered_total") - before;
      assert.equal(counted, missed.length, `counted exactly what B missed: ${JSON.stringify(missed)}`);
      cluster.assertAlive();
    } finally {
      h.closeClients();
      await cluster.stop();
      await redis.stop();
    }
  });
});
