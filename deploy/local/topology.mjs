// The Kubernetes topology of deploy/overlays/<adapter> as local processes on
// 127.0.0.1: a private redis-server (the overlay's StatefulSet), 3 skein nodes started
// with deploy/base/skein.toml (the ConfigMap) plus per-node flags for what Kubernetes
// sets per pod (ports, node id, the token file of the Secret, the adapter of the
// skein-adapter ConfigMap), and HAProxy in front (the Service and the ingress).
// rollingRestart() replaces the nodes one by one as a Deployment rollout does.
import { existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as delay } from "node:timers/promises";
import { run, freePort, httpGet, until } from "./procs.mjs";
import { startHaproxy } from "./haproxy.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, "../..");
export const BASE_TOML = path.join(REPO, "deploy/base/skein.toml");
/** The adapters this rehearsal knows how to back; nats and mesh add theirs here. */
export const ADAPTERS = ["memory", "redis", "redis-streams", "nats"];

export function skeinBin() {
  if (process.env.SKEIN_BIN) return process.env.SKEIN_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(REPO, "target");
  for (const p of ["release/skein", "debug/skein"].map((x) => path.join(target, x))) if (existsSync(p)) return p;
  throw new Error(`no skein binary under ${target}: cargo build -p skein-node, or set SKEIN_BIN`);
}

async function startRedis(dir) {
  const port = await freePort();
  const p = run(process.env.REDIS_SERVER_BIN || "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]);
  await p.waitFor(/Ready to accept connections/, 10000, "redis-server");
  return { url: `redis://127.0.0.1:${port}`, port, stop: () => p.stop("SIGKILL") };
}

/** A private nats-server with JetStream (the nats overlay's StatefulSet, one server here). */
async function startNats(dir) {
  const port = await freePort();
  const p = run(process.env.NATS_SERVER_BIN || "nats-server",
    ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", path.join(dir, "nats")]);
  await p.waitFor(/Server is ready/, 10000, "nats-server");
  return { url: `nats://127.0.0.1:${port}`, port, stop: () => p.stop("SIGKILL") };
}

/**
 * Start the topology. `adapter`: memory (1 node, like the single overlay), redis,
 * redis-streams or nats (3 nodes; nats with JetStream recovery, as its overlay); `args`: more flags for every node (an application such as
 * --demo, or --drain-period); `sticky`: cookie affinity at the load balancer.
 * Returns {adapter, url, lb, redis, nodes, tokens, metrics(node), clusterPeers(),
 * rollingRestart(opts), stop()}.
 */
export async function startTopology({ adapter = "redis-streams", n, args = [], sticky = true, log = () => {} } = {}) {
  if (!ADAPTERS.includes(adapter)) throw new Error(`unknown adapter ${adapter} (expected ${ADAPTERS.join(", ")})`);
  n = n ?? (adapter === "memory" ? 1 : 3);
  const bin = skeinBin();
  const dir = mkdtempSync(path.join(tmpdir(), "skein-rehearsal-"));
  // The Secret of the gRPC tokens, as Kubernetes mounts it: a file, one token a line.
  const tokens = [randomBytes(16).toString("hex")];
  const tokenFile = path.join(dir, "grpc-tokens");
  writeFileSync(tokenFile, `${tokens.join("\n")}\n`, { mode: 0o600 });
  const t = { adapter, dir, tokens, nodes: [], redis: null, lb: null };
  try {
    const adapterArgs = ["--adapter", adapter];
    if (adapter === "nats") {
      // t.redis: the backend process, redis-server or nats-server.
      t.redis = await startNats(dir);
      log(`nats-server on ${t.redis.url}`);
      const key = `rehearsal-${randomBytes(3).toString("hex")}`;
      adapterArgs.push("--nats-url", t.redis.url, "--nats-prefix", key, "--recovery", "true");
    } else if (adapter !== "memory") {
      t.redis = await startRedis(dir);
      log(`redis-server on ${t.redis.url}`);
      const key = `rehearsal-${randomBytes(3).toString("hex")}`;
      adapterArgs.push("--redis-url", t.redis.url, "--redis-key", key, "--redis-stream", `${key}-stream`);
    }
    // Two load-balancer slots per node, on ports taken now: a replacement starts on
    // the free one of its pair while the old node still serves (maxSurge 1).
    const slots = await Promise.all(Array.from({ length: n }, async (_, i) => {
      const name = "ABCDEFGHIJ"[i];
      return [{ name: `${name}0`, port: await freePort() }, { name: `${name}1`, port: await freePort() }];
    }));
    let generation = 0;
    const nodeArgs = (slot, nodeId) => [
      "--config", BASE_TOML,
      // Per pod in Kubernetes: bound to the pod IP there, loopback here.
      "--host", "127.0.0.1", "--port", String(slot.port), "--grpc-port", "0",
      "--node-id", nodeId, "--grpc-tokens-file", tokenFile,
      ...adapterArgs, ...args,
    ];
    // What a pod would run, checked before anything starts (as the deploy tests check
    // the rendered ConfigMaps).
    const check = run(bin, ["--check-config", ...nodeArgs(slots[0][0], "check")], { cwd: REPO });
    const checked = await check.exited;
    if (checked.code !== 0) throw new Error(`skein --check-config failed:\n${check.stderr}`);
    t.effective = check.stdout;
    const startNode = async (pair, which) => {
      const slot = pair[which];
      const nodeId = `local-${slot.name}-${++generation}`;
      const p = run(bin, nodeArgs(slot, nodeId), { cwd: REPO });
      await p.waitFor(/grpc listening on 127\.0\.0\.1:(\d+)/, 20000, `node ${nodeId}`);
      const node = { id: nodeId, slot: slot.name, port: slot.port, pair, which, p, url: `http://127.0.0.1:${slot.port}` };
      await until(async () => (await httpGet(slot.port, "/health/ready").catch(() => ({}))).status === 200, 10000, `${nodeId} ready`);
      log(`node ${nodeId} ready on ${node.url}`);
      return node;
    };
    t.nodes = await Promise.all(slots.map((pair) => startNode(pair, 0)));
    t.lb = await startHaproxy(slots.flat(), { sticky });
    t.url = t.lb.url;
    log(`HAProxy on ${t.url} (${sticky ? "cookie affinity" : "round-robin"})`);

    /** The node's /metrics as {name: value} (labels kept in the name). */
    t.metrics = async (node) => {
      const { body } = await httpGet(node.port, "/metrics");
      return Object.fromEntries(body.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => {
        const i = l.lastIndexOf(" ");
        return [l.slice(0, i), Number(l.slice(i + 1))];
      }));
    };
    /** Each live node's count of the other nodes it hears (skein_cluster_peers). */
    t.clusterPeers = async () => Promise.all(t.nodes.map(async (x) => (await t.metrics(x)).skein_cluster_peers ?? 0));
    t.waitFormed = async (ms = 15000) => {
      if (adapter === "memory") return;
      await until(async () => (await t.clusterPeers()).every((c) => c === t.nodes.length - 1), ms,
        `every node hearing the ${t.nodes.length - 1} others`);
    };
    await t.waitFormed();

    /**
     * A Deployment rollout: for each node, start its replacement and wait until the
     * load balancer sends it traffic (maxSurge 1, maxUnavailable 0), take the old one
     * out of the load balancer and wait `preStopMs` (the endpoint removal and the
     * preStop sleep), SIGTERM it and wait for it to drain and exit. Returns the exits.
     */
    t.rollingRestart = async ({ preStopMs = 1000, exitMs = 60000, settleMs = 1000, onStep = () => {} } = {}) => {
      const exits = [];
      for (let i = 0; i < t.nodes.length; i++) {
        const old = t.nodes[i];
        const fresh = await startNode(old.pair, 1 - old.which);
        await until(async () => (await t.lb.state())[fresh.slot] === "UP", 10000, `${fresh.id} UP in HAProxy`);
        await t.lb.disable(old.slot);
        await delay(preStopMs);
        onStep({ phase: "sigterm", old: old.id, fresh: fresh.id });
        const t0 = Date.now();
        old.p.proc.kill("SIGTERM");
        const exit = await Promise.race([old.p.exited, delay(exitMs, null, { ref: false })]);
        exits.push({ node: old.id, exit, ms: Date.now() - t0, stderr: old.p.stderr });
        if (!exit) await old.p.stop("SIGKILL");
        t.nodes[i] = fresh;
        await t.lb.cmd(`enable server skein/${old.slot}`); // the slot is free again
        // minReadySeconds: the drained clients settle before the next pod goes.
        await delay(settleMs);
        onStep({ phase: "replaced", old: old.id, fresh: fresh.id, exit });
      }
      return exits;
    };
    t.stop = async () => {
      await Promise.all(t.nodes.map((x) => x.p.stop("SIGKILL")));
      await t.lb?.stop();
      await t.redis?.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    return t;
  } catch (e) {
    await Promise.all(t.nodes.map((x) => x.p.stop("SIGKILL")));
    await t.lb?.stop();
    await t.redis?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
