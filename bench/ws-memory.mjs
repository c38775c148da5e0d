// Memory per idle WebSocket connection of a running server: opens N raw Engine.IO
// WebSocket sessions (joined to `/`), lets them settle, and reads the server's VmRSS
// before and after. Usage (Linux; needs tests/js's node_modules):
//   node bench/ws-memory.mjs PID PORT [N=2000]
// Bounded: N connections to 127.0.0.1, closed at the end.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";

const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const WebSocket = require("ws");
const [pid, port, nArg] = process.argv.slice(2);
const N = Math.min(Number(nArg || 2000), 20000);
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024;

async function open() {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false });
  ws.on("message", (d) => { if (d.toString() === "2") ws.send("3"); });
  await new Promise((resolve, reject) => {
    ws.once("error", reject);
    let n = 0;
    ws.on("message", () => { if (++n === 1) ws.send("40"); else if (n === 2) resolve(); });
  });
  return ws;
}

// Warm up (allocator arenas, runtime), then measure.
const warm = [];
for (let i = 0; i < 200; i++) warm.push(await open());
await sleep(500);
const before = rss();
const conns = [];
for (let i = 0; i < N; i += 100) conns.push(...(await Promise.all(Array.from({ length: Math.min(100, N - i) }, open))));
await sleep(1000);
const after = rss();
console.log(JSON.stringify({ connections: N, rss_before: before, rss_after: after, bytes_per_connection: Math.round((after - before) / N) }));
for (const ws of [...warm, ...conns]) ws.terminate();
