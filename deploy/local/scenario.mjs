// What a rolling update does to chatting users: clients of the chat demo (`--demo`)
// talk in one room through the load balancer while every node is replaced, then talk
// again. The report says what each client saw; `problems` lists what went wrong for
// the adapter (with recovery: same session and every message exactly once, in order;
// without: every client back and chatting). The socket.io-client `io` is passed in.
import { setTimeout as delay } from "node:timers/promises";
import { until } from "./procs.mjs";

const ROOM = "lobby";

/** One chat user: joins the room when it gets a new session, records every message. */
function chatter(io, url, i, polling) {
  const name = `u${i}`;
  const socket = io(url, {
    forceNew: true,
    auth: { username: name },
    // Half the clients start on long-polling and upgrade (they need the load
    // balancer's cookie: withCredentials keeps it), half go straight to WebSocket.
    transports: polling ? ["polling", "websocket"] : ["websocket"],
    withCredentials: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
  });
  const c = {
    name, socket, polling, joined: false, ids: [], recoveries: 0, disconnects: [],
    got: new Map(), // sender -> [seq, ...] in arrival order
    waiting: null, // {seq, resolve}: the sender's own message it waits to see
  };
  socket.on("connect", () => {
    if (!c.ids.includes(socket.id)) c.ids.push(socket.id);
    if (socket.recovered) { c.recoveries++; c.joined = true; return; }
    socket.timeout(5000).emit("join room", ROOM, (err) => { if (!err) c.joined = true; });
  });
  socket.on("disconnect", (reason) => { c.joined = false; c.disconnects.push(reason); });
  socket.on("chat message", ({ message }) => {
    const m = /^m:(u\d+):(\d+)$/.exec(message ?? "");
    if (!m) return;
    const [sender, seq] = [m[1], Number(m[2])];
    if (!c.got.has(sender)) c.got.set(sender, []);
    c.got.get(sender).push(seq);
    if (sender === name && c.waiting?.seq === seq) c.waiting.resolve(true);
  });
  return c;
}

/**
 * Sends numbered messages one at a time: each waits for its own echo (the room
 * includes the sender), which proves the node broadcast it ("confirmed"); one whose
 * echo does not come within 3 s (its connection dropped just then) is "unconfirmed".
 */
async function sendLoop(c, state, intervalMs) {
  let seq = 0;
  while (state.running) {
    if (!c.joined) { await delay(20); continue; }
    const s = seq++;
    const seen = new Promise((resolve) => { c.waiting = { seq: s, resolve }; });
    c.socket.emit("chat message", { room: ROOM, message: `m:${c.name}:${s}` });
    const ok = await Promise.race([seen, delay(3000, false, { ref: false })]);
    c.waiting = null;
    (ok ? state.confirmed : state.unconfirmed).add(`${c.name}:${s}`);
    await delay(intervalMs);
  }
}

/**
 * Runs the scenario on a topology from startTopology (started with --demo).
 * Returns {exits, clients, messages, nodes, problems}.
 */
export async function chatThroughRoll(t, { io, clients = 6, intervalMs = 150, expectRecovery, log = () => {}, track = (s) => s } = {}) {
  expectRecovery = expectRecovery ?? ["redis-streams", "nats"].includes(t.adapter);
  const cs = Array.from({ length: clients }, (_, i) => chatter(io, t.url, i, i % 2 === 1));
  for (const c of cs) track(c.socket);
  const state = { running: true, confirmed: new Set(), unconfirmed: new Set() };
  const problems = [];
  try {
    await until(() => cs.every((c) => c.joined), 15000, "every client connected and in the room");
    const firstIds = cs.map((c) => c.socket.id);
    log(`${clients} clients chatting through ${t.url}`);
    const senders = cs.map((c) => sendLoop(c, state, intervalMs));
    await delay(1000);
    const exits = await t.rollingRestart({ onStep: (s) => log(`${s.phase}: ${s.old} -> ${s.fresh}`) });
    await until(() => cs.every((c) => c.joined), 15000, "every client back in the room after the roll");
    await delay(1000);
    state.running = false;
    await Promise.all(senders);

    // After the roll: each client says one more thing, everyone must hear all of it.
    const final = cs.map((c) => `final-${c.name}`);
    const heard = cs.map(() => new Set());
    cs.forEach((c, i) => c.socket.on("chat message", ({ message }) => { if (final.includes(message)) heard[i].add(message); }));
    for (const [i, c] of cs.entries()) c.socket.emit("chat message", { room: ROOM, message: final[i] });
    await until(() => heard.every((h) => h.size === final.length), 10000, "the final round heard by everyone")
      .catch((e) => problems.push(`${e.message}: ${heard.map((h) => h.size).join(",")} of ${final.length}`));

    // Every message some client received, or whose sender saw it broadcast.
    const expected = new Set(state.confirmed);
    for (const c of cs) for (const [sender, seqs] of c.got) for (const s of seqs) expected.add(`${sender}:${s}`);
    if (expectRecovery) {
      await until(() => cs.every((c) => [...expected].every((k) => {
        const [sender, s] = k.split(":");
        return c.got.get(sender)?.includes(Number(s));
      })), 10000, "every message at every client").catch(() => {});
    }
    const perClient = cs.map((c, i) => {
      const missing = [...expected].filter((k) => {
        const [sender, s] = k.split(":");
        return !c.got.get(sender)?.includes(Number(s));
      });
      let duplicates = 0;
      let outOfOrder = 0;
      for (const seqs of c.got.values()) {
        duplicates += seqs.length - new Set(seqs).size;
        outOfOrder += seqs.filter((s, j) => j > 0 && s < seqs[j - 1]).length;
      }
      return {
        name: c.name, transport: c.polling ? "polling+upgrade" : "websocket", connected: c.socket.connected,
        firstId: firstIds[i], ids: [...c.ids], recoveries: c.recoveries, disconnects: [...c.disconnects],
        received: [...c.got.values()].reduce((n, l) => n + l.length, 0), missing: missing.length, duplicates, outOfOrder,
      };
    });
    // The drained nodes say goodbye; should a goodbye be lost, a node stops counting
    // a silent peer after 6 s (adapter-redis PEER_TIMEOUT).
    if (t.adapter !== "memory") await t.waitFormed(10000).catch(() => {});
    const peers = await t.clusterPeers();
    const lbState = await t.lb.state();
    const report = {
      adapter: t.adapter,
      exits: exits.map((e) => ({ node: e.node, code: e.exit?.code ?? null, signal: e.exit?.signal ?? null, ms: e.ms })),
      messages: { confirmed: state.confirmed.size, unconfirmed: state.unconfirmed.size, expected: expected.size },
      clients: perClient,
      nodes: { ids: t.nodes.map((x) => x.id), peers, lbUp: Object.values(lbState).filter((s) => s === "UP").length },
      problems,
    };

    for (const e of report.exits) if (e.code !== 0) problems.push(`node ${e.node} did not exit 0 after SIGTERM: ${JSON.stringify(e)}`);
    if (report.nodes.ids.length !== t.nodes.length || report.nodes.lbUp !== t.nodes.length) {
      problems.push(`expected ${t.nodes.length} nodes up behind the load balancer, HAProxy has ${report.nodes.lbUp}`);
    }
    if (t.adapter !== "memory" && peers.some((p) => p !== t.nodes.length - 1)) {
      problems.push(`each node should hear the ${t.nodes.length - 1} others: ${peers}`);
    }
    if (state.confirmed.size === 0) problems.push("no message was confirmed: the chat never worked");
    for (const c of perClient) {
      if (!c.connected) problems.push(`${c.name} is not connected at the end`);
      if (c.disconnects.length === 0) problems.push(`${c.name} was never moved: every node was replaced`);
      if (expectRecovery) {
        if (c.ids.length !== 1) problems.push(`${c.name} lost its session: ids ${c.ids.join(", ")}`);
        if (c.recoveries !== c.disconnects.length) problems.push(`${c.name}: ${c.disconnects.length} disconnects but ${c.recoveries} recoveries`);
        if (c.missing) problems.push(`${c.name} missed ${c.missing} of ${expected.size} messages`);
        if (c.duplicates) problems.push(`${c.name} got ${c.duplicates} duplicate messages`);
        if (c.outOfOrder) problems.push(`${c.name} got ${c.outOfOrder} messages out of order`);
      }
    }
    return report;
  } finally {
    state.running = false;
    for (const c of cs) {
      c.socket.io.reconnection(false);
      c.socket.disconnect();
    }
  }
}
