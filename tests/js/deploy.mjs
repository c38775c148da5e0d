// Deployments for the recovery tests: one node (in-memory store), or 3 skein nodes in
// Redis Streams mode behind a real HAProxy that drops a dead or draining backend.
import { spawn, execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, after } from "node:test";
import * as h from "./harness.mjs";
import { startCluster, uniqueKey, freePort, REDIS_URL } from "./cluster-harness.mjs";

const { until } = h;

function haproxyBin() {
  for (const p of [process.env.HAPROXY_BIN, "/usr/sbin/haproxy", "haproxy"]) {
    if (!p) continue;
    try { execFileSync(p, ["-v"], { stdio: "ignore" }); return p; } catch { /* next */ }
  }
  throw new Error("haproxy not found (tests/services.sh installs it: apt-get install haproxy)");
}

/** HAProxy on a free port in front of `nodes`; health checks drop a dead or draining node. */
export async function startHaproxy(nodes) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "skein-haproxy-"));
  const cfg = path.join(dir, "haproxy.cfg");
  writeFileSync(cfg, `
global
  maxconn 4096
defaults
  mode http
  timeout connect 500ms
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  retries 3
  option redispatch
frontend fe
  bind 127.0.0.1:${port}
  default_backend skein
backend skein
  balance roundrobin
  option httpchk GET /health/ready
  default-server inter 200ms fall 1 rise 2
${nodes.map((n) => `  server ${n.name} 127.0.0.1:${n.port} check`).join("\n")}
`);
  const proc = h.trackProcess(spawn(haproxyBin(), ["-f", cfg, "-db"], { stdio: ["ignore", "pipe", "pipe"] }));
  let log = "";
  proc.stdout.on("data", (d) => { log += d; });
  proc.stderr.on("data", (d) => { log += d; });
  const url = `http://127.0.0.1:${port}`;
  await until(async () => {
    try { return (await h.http(port, { path: "/health/ready", ms: 500 })).status === 200; } catch { return false; }
  }, 10000, "haproxy up");
  return { url, port, proc, get log() { return log; }, stop: () => proc.kill("SIGKILL") };
}

export const streamsArgs = (key) => ["--adapter", "redis-streams", "--redis-url", REDIS_URL, "--redis-key", key, "--redis-stream", `${key}-stream`];

/** The deployments every recovery test runs on. */
export const DEPLOYMENTS = ["one node", "3 nodes behind HAProxy"];

/**
 * A describe block's deployment with `args` on every node: {url, cluster?, assertAlive()}.
 * On 3 nodes, clients reach them through the load balancer (round-robin, no stickiness).
 */
export function withDeployment(kind, args) {
  const ctx = {};
  before(async () => {
    if (kind === "one node") {
      ctx.srv = await h.startServer({ args });
      ctx.url = ctx.srv.url;
      return;
    }
    ctx.cluster = await startCluster({ adapterArgs: streamsArgs(uniqueKey("csr")), args });
    ctx.lb = await startHaproxy(ctx.cluster.nodes);
    ctx.url = ctx.lb.url;
  });
  after(async () => {
    h.closeClients();
    try {
      ctx.assertAlive();
    } finally {
      ctx.lb?.stop();
      await ctx.cluster?.stop();
      await ctx.srv?.stop("SIGKILL");
    }
  });
  ctx.assertAlive = () => {
    if (ctx.srv) h.assertAlive(ctx.srv, "(recovery tests)");
    ctx.cluster?.assertAlive();
  };
  return ctx;
}
