// What a node with no member of a room pays for the room's broadcasts: 3 skein nodes
// (A publishes, B holds the room's only member, C holds none), 20,000 broadcasts to the
// room from A, the CPU each node spent meanwhile (/proc/<pid>/schedstat), on Redis
// pub/sub (every node receives every broadcast, and drops it by channel name) and on
// NATS (a node subscribes to a room's subject only while it has a member of it).
//
// Usage (Linux; needs tests/js's node_modules, redis-server and nats-server on PATH):
//   node bench/room-interest.mjs [--skein target/release/skein] [--count 20000] [--adapters redis,nats]
// Private redis-server / nats-server on free 127.0.0.1 ports; bounded: every phase has
// a deadline, and the whole run stops after 5 minutes.
import { readFileSync, readdirSync, mkdtempSync } from "node:fs";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const { values } = parseArgs({
  options: {
    skein: { type: "string", default: new URL("../target/release/skein", import.meta.url).pathname },
    count: { type: "string", default: "20000" },
    adapters: { type: "string", default: "redis,nats" },
  },
});
const COUNT = Number(values.count);
const procs = [];
const hardStop = setTimeout(() => { console.error("room-interest: 5 min limit"); cleanup(); process.exit(2); }, 300_000);

function cleanup() {
  for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Spawns and waits until `ready` matches its output; returns the process and the match. */
function start(cmd, args, ready, what) {
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  procs.push(p);
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${what} not ready:\n${out.slice(-2000)}`)), 15000);
    const on = (d) => {
      out += d;
      const m = out.match(ready);
      if (m) { clearTimeout(timer); resolve({ p, m }); }
    };
    p.stdout.setEncoding("utf8").on("data", on);
    p.stderr.setEncoding("utf8").on("data", on);
    p.once("exit", (code) => { clearTimeout(timer); reject(new Error(`${what} exited ${code}:\n${out.slice(-2000)}`)); });
  });
}

/** CPU time of a process so far, in ms: the ns on CPU of each of its threads (schedstat). */
const cpuMs = (pid) => readdirSync(`/proc/${pid}/task`).reduce((sum, tid) => {
  try {
    return sum + Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]) / 1e6;
  } catch {
    return sum; // a thread that ended meanwhile
  }
}, 0);

const connect = (url) => new Promise((resolve, reject) => {
  const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
  s.once("connect", () => resolve(s));
  s.once("connect_error", reject);
});
const ask = (s, ev, ...args) => s.timeout(10000).emitWithAck(ev, ...args);

async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(50);
  }
}

async function run(adapter) {
  const key = `ri-${process.pid}-${adapter}`;
  let backend;
  if (adapter === "redis") {
    const port = await freePort();
    await start("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      /Ready to accept connections/, "redis-server");
    backend = ["--adapter", "redis", "--redis-url", `redis://127.0.0.1:${port}`, "--redis-key", key];
  } else {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "ri-nats-"));
    await start("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-sd", dir], /Server is ready/, "nats-server");
    backend = ["--adapter", "nats", "--nats-url", `nats://127.0.0.1:${port}`, "--nats-prefix", key];
  }
  const nodes = [];
  for (const name of ["A", "B", "C"]) {
    const { p, m } = await start(values.skein, ["--host", "127.0.0.1", "--port", "0", "--test-handlers", "--log", "warn",
      "--node-id", `${name}-${key}`, ...backend], /listening on (\S+)/, `skein ${name}`);
    nodes.push({ name, pid: p.pid, url: `http://${m[1]}` });
  }
  const [a, b] = await Promise.all([connect(nodes[0].url), connect(nodes[1].url)]);
  const c = await connect(nodes[2].url); // a client on C, in no room
  await until(async () => (await Promise.all([a, b, c].map((s) => ask(s, "server-count")))).every((n) => n === 3), 20000, "cluster formed");
  await ask(b, "join", "room");
  let got = 0;
  b.on("msg", () => { got++; });
  // Warm up (the subscription, the connections), then measure.
  for (let i = 0; i < 100; i++) a.emit("pub", { room: "room", seq: -1 });
  await until(() => got >= 100, 20000, "warm-up delivered");
  await sleep(500);
  got = 0;
  const before = nodes.map((n) => cpuMs(n.pid));
  const t0 = Date.now();
  for (let seq = 0; seq < COUNT; seq++) {
    a.emit("pub", { room: "room", seq });
    // Keep the publisher's queue short: no more than 2,000 broadcasts in flight.
    if (seq % 500 === 499) await until(() => got >= seq - 2000, 60000, "the member keeps up");
  }
  await until(() => got >= COUNT, 120000, `all ${COUNT} delivered to the member on B`);
  const elapsed = Date.now() - t0;
  await sleep(300);
  const spent = nodes.map((n, i) => cpuMs(n.pid) - before[i]);
  for (const s of [a, b, c]) s.disconnect();
  cleanup();
  procs.length = 0;
  return {
    adapter, broadcasts: COUNT, seconds: elapsed / 1000,
    cpu_ms: Object.fromEntries(nodes.map((n, i) => [n.name, Math.round(spent[i])])),
    memberless_us_per_broadcast: Number(((spent[2] * 1000) / COUNT).toFixed(2)),
  };
}

try {
  const results = [];
  for (const adapter of values.adapters.split(",")) results.push(await run(adapter));
  console.log(JSON.stringify({ scenario: "room-interest", skein: values.skein, results }, null, 1));
  console.log("\n| adapter | broadcasts | s | CPU A (publisher) ms | CPU B (member) ms | CPU C (no member) ms | C µs/broadcast |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(`| ${r.adapter} | ${r.broadcasts} | ${r.seconds.toFixed(1)} | ${r.cpu_ms.A} | ${r.cpu_ms.B} | ${r.cpu_ms.C} | ${r.memberless_us_per_broadcast} |`);
  }
} finally {
  clearTimeout(hardStop);
  cleanup();
}
process.exit(0);
