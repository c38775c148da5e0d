// Deployments for the recovery tests: one node (in-memory store), or 3 skein nodes in
// Redis Streams mode behind a real HAProxy that drops a dead or draining backend.
import { before, after } from "node:test";
import * as h from "./harness.mjs";
import { startCluster, uniqueKey, REDIS_URL } from "./cluster-harness.mjs";
import { startHaproxy as startLb } from "../../deploy/local/haproxy.mjs";

/**
 * HAProxy on a free port in front of `nodes` (round-robin, no stickiness); health checks
 * drop a dead or draining node. The implementation is the local rehearsal's
 * (deploy/local/haproxy.mjs); its process is also killed when the test process exits.
 */
export function startHaproxy(nodes) {
  return startLb(nodes.map((n) => ({ name: n.name, port: n.port })), { onSpawn: h.trackProcess });
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
