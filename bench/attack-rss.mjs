// Memory of a running server under repeated attachment floods (issue #10): each
// attacker sends a binary packet announcing 1,000 attachments, then 999 KB attachments
// until the server closes it (or it sent them all). After each round, the server's
// VmRSS once the connections are gone: a ratchet (RSS that keeps growing round after
// round) is what glibc's arenas showed when a packet's attachments were unbounded.
// Usage (Linux; needs tests/js's node_modules):
//   node bench/attack-rss.mjs PID PORT [ROUNDS=3] [ATTACKERS=50]
// Bounded: ROUNDS ≤ 10, ATTACKERS ≤ 200, every connection to 127.0.0.1 closed at the
// end of its round, each round at most 60 s.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";

const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const WebSocket = require("ws");
const [pid, port, roundsArg, attackersArg] = process.argv.slice(2);
const ROUNDS = Math.min(Number(roundsArg || 3), 10);
const ATTACKERS = Math.min(Number(attackersArg || 50), 200);
const ANNOUNCED = 1000;
const CHUNK = Buffer.alloc(999_000, 7);
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024;
const mb = (b) => Math.round(b / 1e5) / 10;

// One attacker: connects to `/`, then floods. Resolves with the attachments the server
// took before it closed the connection.
function attack() {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false });
    let sent = 0;
    let phase = 0;
    const done = () => { clearTimeout(guard); ws.terminate(); resolve(sent); };
    const guard = setTimeout(done, 60_000);
    ws.on("error", done);
    ws.on("close", done);
    ws.on("message", () => {
      if (++phase === 1) { ws.send("40"); return; }
      if (phase !== 2) return;
      const placeholders = Array.from({ length: ANNOUNCED }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(",");
      ws.send(`45${ANNOUNCED}-["upload",${placeholders}]`);
      const pump = () => {
        while (sent < ANNOUNCED && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 4 * CHUNK.length) {
          ws.send(CHUNK);
          sent++;
        }
        if (sent < ANNOUNCED && ws.readyState === WebSocket.OPEN) setTimeout(pump, 5);
        else if (sent >= ANNOUNCED) done();
      };
      pump();
    });
  });
}

const rows = [{ round: 0, rss_mb: mb(rss()) }];
for (let r = 1; r <= ROUNDS; r++) {
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, rss()); }, 50);
  const sent = await Promise.all(Array.from({ length: ATTACKERS }, attack));
  clearInterval(sampler);
  // A round can end before the first 50 ms sample: take one now as well.
  peak = Math.max(peak, rss());
  await sleep(2000);
  rows.push({ round: r, attackers: ATTACKERS, max_attachments_sent: Math.max(...sent), peak_rss_mb: mb(peak), rss_after_mb: mb(rss()) });
}
console.log(JSON.stringify(rows));
