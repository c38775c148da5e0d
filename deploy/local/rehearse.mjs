// The rehearsal as a command: deploy/local/rehearse.sh ADAPTER [options]. Starts the
// topology of deploy/overlays/ADAPTER as local processes, chats through it during a
// rolling restart, prints what happened, and stops everything (also on Ctrl-C).
import { parseArgs } from "node:util";
import { setTimeout as delay } from "node:timers/promises";
import { io } from "socket.io-client";
import { startTopology, ADAPTERS } from "./topology.mjs";
import { chatThroughRoll } from "./scenario.mjs";

const usage = `usage: deploy/local/rehearse.sh ADAPTER [--clients N] [--drain-period MS] [--no-roll] [--hold SECONDS]
  ADAPTER          ${ADAPTERS.join(" | ")} (memory runs one node, like the single overlay)
  --clients N      chat clients during the roll (default 6)
  --drain-period   override drain_period of deploy/base/skein.toml (ms)
  --no-roll        only start the topology (use with --hold)
  --hold SECONDS   keep it running this long afterwards (the chat demo at the printed
                   URL; Ctrl-C stops it sooner)`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    clients: { type: "string", default: "6" },
    "drain-period": { type: "string" },
    "no-roll": { type: "boolean", default: false },
    hold: { type: "string", default: "0" },
    help: { type: "boolean", short: "h", default: false },
  },
});
const adapter = positionals[0];
if (values.help || !ADAPTERS.includes(adapter)) {
  console.error(usage);
  process.exit(values.help ? 0 : 2);
}

const log = (m) => console.log(`[rehearse] ${m}`);
let topology = null;
let stopping = false;
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  await topology?.stop().catch(() => {});
  process.exit(code);
}
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => { log(`${sig}: stopping`); shutdown(130); });

const args = ["--demo"];
if (values["drain-period"]) args.push("--drain-period", values["drain-period"]);
let code = 0;
try {
  topology = await startTopology({ adapter, args, log });
  log(`${topology.nodes.length} node(s) with --adapter ${adapter} behind ${topology.url}`);
  if (!values["no-roll"]) {
    const report = await chatThroughRoll(topology, { io, clients: Number(values.clients), log });
    for (const e of report.exits) log(`${e.node}: SIGTERM -> exit ${e.code ?? e.signal} after ${e.ms} ms`);
    log(`messages: ${JSON.stringify(report.messages)}`);
    for (const c of report.clients) {
      log(`${c.name} (${c.transport}): ${c.disconnects.length} move(s), ${c.recoveries} recovered, ` +
        `session ${c.ids.length === 1 ? "kept" : "new"}, ${c.received} received, ${c.missing} missed, ` +
        `${c.duplicates} duplicated, ${c.outOfOrder} out of order`);
    }
    log(`nodes now: ${report.nodes.ids.join(", ")} (each hears ${report.nodes.peers.join("/")} others; HAProxy: ${report.nodes.lbUp} up)`);
    if (report.problems.length) {
      code = 1;
      for (const p of report.problems) log(`PROBLEM: ${p}`);
    } else {
      log({
        "redis-streams": "OK: every client kept its session and got every message once, in order",
        nats: "OK: every client kept its session and got every message once, in order (JetStream)",
        redis: "OK: every client came back and the chat works across the new nodes (pub/sub keeps no session)",
        memory: "OK: every client came back to the new node (an in-memory session does not survive its node)",
      }[adapter]);
    }
  }
  const hold = Number(values.hold);
  if (hold > 0) {
    log(`up for ${hold} s: open ${topology.url}/ for the chat demo; Ctrl-C stops it`);
    await delay(hold * 1000);
  }
} catch (e) {
  console.error(`[rehearse] failed: ${e.stack || e}`);
  code = 1;
}
await shutdown(code);
