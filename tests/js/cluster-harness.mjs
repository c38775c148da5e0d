// Multi-node harness: N server processes (skein or the reference, mixed at will) sharing
// one cluster adapter, plus a private redis-server that a test may stop and restart.
// The adapters are described once, in tests/adapters.json (shared with the Python tests):
// a suite runs on each of `clusterAdapters()`, and startCluster({adapter}) builds its flags.
import { spawn } from "node:child_process";
import { readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createServer } from "node:net";
import { randomBytes } from "node:crypto";
import { before, after } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";

/** The shared Redis of the suite (tests that stop Redis start their own with startRedis). */
export const REDIS_URL = process.env.SKEIN_TEST_REDIS_URL || "redis://127.0.0.1:6379";

/** The NATS server of the suite (tests that break NATS start their own). */
export const NATS_URL = process.env.SKEIN_TEST_NATS_URL || "nats://127.0.0.1:4222";

/** Every cluster adapter, as tests/adapters.json describes it. */
export const ADAPTERS = Object.fromEntries(
  Object.entries(JSON.parse(readFileSync(path.join(h.REPO, "tests/adapters.json"), "utf8"))).filter(([k]) => !k.startsWith("//")),
);

/**
 * The adapters a multi-node suite runs on: every one (or $SKEIN_TEST_ADAPTERS, comma-separated),
 * those with `recovery` only when asked; the reference server speaks Redis pub/sub only.
 */
export function clusterAdapters({ recovery = false } = {}) {
  if (h.TARGET === "node") return ["redis"];
  const wanted = process.env.SKEIN_TEST_ADAPTERS ? process.env.SKEIN_TEST_ADAPTERS.split(",") : Object.keys(ADAPTERS);
  return wanted.filter((a) => ADAPTERS[a] && (!recovery || ADAPTERS[a].recovery));
}

/**
 * The flags of `n` nodes of one cluster on `adapter`: one array per node (fresh ports and
 * directories where the adapter needs them).
 */
export async function adapterFlags(adapter, { n = 3, key = uniqueKey(), redisUrl = REDIS_URL, natsUrl = NATS_URL, requestTimeout, recovery = true } = {}) {
  const spec = ADAPTERS[adapter];
  if (!spec) throw new Error(`unknown adapter ${adapter}`);
  const uses = (token) => spec.args.some((a) => a.includes(token));
  const ports = uses("{mesh_") ? await Promise.all(Array.from({ length: n }, () => freePort())) : [];
  return Array.from({ length: n }, (_, i) => {
    const dir = uses("{dir}") ? mkdtempSync(path.join(tmpdir(), `skein-${adapter}-`)) : "";
    const fill = (a) => a
      .replaceAll("{key}", key).replaceAll("{redis}", redisUrl).replaceAll("{nats}", natsUrl)
      .replaceAll("{i}", String(i)).replaceAll("{dir}", dir)
      .replaceAll("{mesh_port}", String(ports[i] ?? "")).replaceAll("{mesh_seeds}", ports.map((p) => `127.0.0.1:${p}`).join(","));
    const flags = spec.args.map(fill);
    if (requestTimeout !== undefined) flags.push(spec.request_timeout, String(requestTimeout));
    // Suites that compare payloads exactly turn recovery off: it appends an offset.
    if (!recovery && spec.recovery) flags.push("--recovery", "false");
    return flags;
  });
}

/** A fresh prefix, e.g. `skt-1a2b3c4d`: one per cluster, so tests never see each other's traffic. */
export const uniqueKey = (prefix = "skt") => `${prefix}-${randomBytes(4).toString("hex")}`;

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- private redis-server
/**
 * Start `redis-server` on a free 127.0.0.1 port, without persistence. Returns
 * {url, port, stop(signal), restart(), get log}; restart() reuses the same port.
 */
export async function startRedis({ bin = process.env.REDIS_SERVER_BIN || "redis-server", timeoutMs = 10000 } = {}) {
  const port = await freePort();
  let proc = null;
  let log = "";
  async function launch() {
    const p = spawn(bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    h.trackProcess(p);
    const exited = new Promise((resolve) => p.once("exit", (code, signal) => resolve({ code, signal })));
    p.exited = exited;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server not ready within ${timeoutMs} ms:\n${log}`)), timeoutMs);
      const on = (d) => {
        log += d;
        if (/Ready to accept connections/.test(log.slice(-4000))) { clearTimeout(timer); resolve(); }
      };
      p.stdout.setEncoding("utf8").on("data", on);
      p.stderr.setEncoding("utf8").on("data", on);
      p.once("error", (e) => { clearTimeout(timer); reject(e); });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (code ${code}, signal ${signal}):\n${log}`));
      });
    });
    proc = p;
  }
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get log() { return log; },
    get proc() { return proc; },
    /** Stop (default SIGKILL: no goodbye to the subscribers); resolves once it exited. */
    async stop(signal = "SIGKILL") {
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      await Promise.race([proc.exited, delay(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) { proc.kill("SIGKILL"); await proc.exited; }
    },
    /** Start again on the same port (retries while the port is not free yet). */
    async restart() {
      await redis.stop();
      for (let i = 0; ; i++) {
        try { return await launch(); } catch (e) {
          if (i >= 20) throw e;
          await delay(200);
        }
      }
    },
  };
  await launch();
  return redis;
}

// ---------------------------------------------------------------- cluster of server processes
/** Flags of the Redis adapter (skein and the reference take the same). */
export function redisArgs({ url = REDIS_URL, key, requestTimeout } = {}) {
  const a = ["--adapter", "redis", "--redis-url", url];
  if (key) a.push("--redis-key", key);
  if (requestTimeout !== undefined) a.push("--redis-request-timeout", String(requestTimeout));
  return a;
}

const NAMES = "ABCDEFGHIJ";

/**
 * Start `n` nodes of one cluster and wait until it is formed (waitFormed).
 * - kinds: per node "skein" | "node" (default: $SKEIN_TEST_TARGET for all);
 * - adapterArgs: flags of the adapter, an array or `(i, name) => array`; by default built from
 *   `adapter` (a key of tests/adapters.json, default "redis"), `redisUrl`, `natsUrl`, `key`
 *   (default: uniqueKey()), `requestTimeout` and `recovery` (false: off on an adapter where
 *   it is on by default, for suites that compare payloads exactly);
 * - args: more flags for every node; nodeIds: default `<name>-<random>`.
 * Returns {key, nodes, node(name), stop(), assertAlive(), waitFormed(expected)}; every node is
 * {name, kind, nodeId, url, port, server, stop(signal), restart(), alive}.
 */
export async function startCluster({
  n = 3, kinds, adapter = "redis", redisUrl = REDIS_URL, natsUrl = NATS_URL, key = uniqueKey(),
  requestTimeout, recovery = true, adapterArgs, args = [], nodeIds, formTimeoutMs = 20000, form = true,
} = {}) {
  kinds = kinds || Array.from({ length: n }, () => h.TARGET);
  n = kinds.length;
  if (!adapterArgs) {
    const perNode = await adapterFlags(adapter, { n, key, redisUrl, natsUrl, requestTimeout, recovery });
    adapterArgs = (i) => perNode[i];
  }
  const flagsOf = (i, name) => (typeof adapterArgs === "function" ? adapterArgs(i, name) : adapterArgs);
  const rand = randomBytes(3).toString("hex");

  const nodes = await Promise.all(kinds.map(async (kind, i) => {
    const name = NAMES[i];
    const nodeId = nodeIds?.[i] ?? `${name}-${rand}`;
    const nodeArgs = [...flagsOf(i, name), "--node-id", nodeId, ...args];
    const node = {
      name, kind, nodeId, args: nodeArgs, server: null, stopped: false,
      get url() { return node.server.url; },
      get port() { return node.server.port; },
      get alive() { return !node.stopped && node.server.proc.exitCode === null && node.server.proc.signalCode === null; },
      /** Signal the process (SIGKILL, SIGTERM...); SIGSTOP/SIGCONT just freeze/thaw it. */
      async stop(signal = "SIGTERM") {
        if (signal === "SIGSTOP" || signal === "SIGCONT") {
          node.server.proc.kill(signal);
          // A signal is delivered when the process next runs: wait until it is stopped (or
          // running again), so that what the test does next meets the state it expects.
          const want = signal === "SIGSTOP" ? "T" : "[^T]";
          await h.until(() => new RegExp(`^\\d+ \\(.*\\) (${want})`).test(readFileSync(`/proc/${node.server.proc.pid}/stat`, "utf8")), 2000, `${signal} took effect`);
          return null;
        }
        node.stopped = true;
        return node.server.stop(signal);
      },
      /** Start again with the same flags, node id and port. */
      async restart() {
        if (!node.stopped) await node.stop("SIGKILL");
        node.server = await h.startServer({ kind, args: [...nodeArgs, "--port", String(node.port)], retries: 20 });
        node.stopped = false;
        return node;
      },
    };
    node.server = await h.startServer({ kind, args: nodeArgs });
    return node;
  }));

  const cluster = {
    key,
    adapter,
    nodes,
    node: (name) => nodes.find((x) => x.name === name),
    waitFormed: (expected = nodes.filter((x) => x.alive).length, ms = formTimeoutMs) =>
      waitFormed(nodes.filter((x) => x.alive), expected, ms),
    assertAlive() {
      for (const x of nodes) if (!x.stopped) h.assertAlive(x.server, `(node ${x.name} ${x.kind})`);
    },
    async stop() {
      await Promise.all(nodes.map((x) => {
        if (x.stopped) return null;
        x.stopped = true;
        return x.server.stop("SIGKILL");
      }));
    },
  };
  try {
    if (form) await cluster.waitFormed(n);
  } catch (e) {
    const logs = nodes.map((x) => `--- ${x.name} (${x.kind} ${x.nodeId}) stderr:\n${x.server.stderr.slice(-3000)}`).join("\n");
    await cluster.stop();
    throw new Error(`${e.message}\n${logs}`);
  }
  return cluster;
}

/**
 * The cluster is formed when every node reports `server-count` === expected, `whoami` is its
 * id, and a broadcast from a client of every node reaches a client of every other node.
 */
export async function waitFormed(nodes, expected, ms = 20000) {
  const end = Date.now() + ms;
  const left = () => Math.max(100, end - Date.now());
  const probes = await Promise.all(nodes.map((x) => h.connect(x.url, { transports: ["websocket"] })));
  const sockets = probes.map((p) => p.socket);
  try {
    for (const [i, x] of nodes.entries()) {
      const who = await h.ask(sockets[i], "whoami");
      if (who?.node !== x.nodeId) throw new Error(`node ${x.name}: whoami ${JSON.stringify(who)}, expected ${x.nodeId}`);
    }
    let counts = [];
    await h.until(async () => {
      counts = await Promise.all(sockets.map((s) => h.ask(s, "server-count")));
      return counts.every((c) => c === expected);
    }, left(), `server-count ${expected} on every node`).catch((e) => {
      throw new Error(`${e.message}; last counts: ${JSON.stringify(counts)}`);
    });
    const tag = randomBytes(4).toString("hex");
    const seen = sockets.map(() => new Set());
    sockets.forEach((s, i) => s.on("__formed", (t, from) => { if (t === tag) seen[i].add(from); }));
    await h.until(async () => {
      for (const [i, s] of sockets.entries()) {
        if (seen.some((set) => !set.has(i))) s.emit("broadcast", { event: "__formed", args: [tag, i] });
      }
      await delay(100);
      return seen.every((set) => set.size === sockets.length);
    }, left(), "a broadcast from every node reaching every node").catch((e) => {
      throw new Error(`${e.message}; seen: ${JSON.stringify(seen.map((x) => [...x]))}`);
    });
  } finally {
    for (const s of sockets) s.disconnect();
  }
}

/** A describe block with its own cluster (options of startCluster); clients closed afterwards. */
export function withCluster(opts = {}) {
  const ctx = {};
  before(async () => {
    ctx.cluster = await startCluster(typeof opts === "function" ? await opts() : opts);
    ctx.nodes = ctx.cluster.nodes;
  });
  after(async () => {
    h.closeClients();
    if (!ctx.cluster) return;
    try {
      ctx.cluster.assertAlive();
    } finally {
      await ctx.cluster.stop();
    }
  });
  return ctx;
}

// ---------------------------------------------------------------- counting deliveries
/** How long to wait for duplicates after the expected deliveries arrived (ms). */
export const SETTLE = Number(process.env.SKEIN_CLUSTER_SETTLE || 400);

/**
 * Records `event` on named sockets ({a1: socket, ...}). count(tag) = {name: receipts whose
 * first argument is tag}; args(name, tag) = the args arrays of those receipts.
 */
export function catcher(named, event) {
  const got = Object.fromEntries(Object.keys(named).map((k) => [k, []]));
  for (const [k, s] of Object.entries(named)) s.on(event, (...args) => got[k].push(args));
  return {
    got,
    count: (tag) => Object.fromEntries(Object.entries(got).map(([k, l]) => [k, l.filter((a) => a[0] === tag).length])),
    args: (name, tag) => got[name].filter((a) => a[0] === tag),
  };
}

/**
 * Wait until each socket named in `expected` ({name: n}) got `tag` n times, wait SETTLE ms
 * for duplicates or strays, then every socket of the catcher must have exactly its count
 * (0 for the names not in `expected`).
 */
export async function expectExactly(c, tag, expected, label = tag, ms = 6000) {
  const want = Object.fromEntries(Object.keys(c.got).map((k) => [k, expected[k] ?? 0]));
  await h.until(() => Object.entries(want).every(([k, n]) => c.count(tag)[k] >= n), ms, label)
    .catch((e) => { throw new Error(`${e.message}: got ${JSON.stringify(c.count(tag))}, want ${JSON.stringify(want)}`); });
  await delay(SETTLE);
  assert.deepEqual(c.count(tag), want, label);
}
