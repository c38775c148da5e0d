#!/usr/bin/env node
// Reference implementation of tests/CONTRACT.md on the real Node socket.io 4.8 server.
// The JS suite runs against it (SKEIN_TEST_TARGET=node) to prove the tests are right,
// and badinput.test.mjs compares Skein's answers to its answers.
//
// Usage: node reference-server.mjs [--port N] [--host H] [--ping-interval ms]
//        [--ping-timeout ms] [--max-payload bytes] [--connect-timeout ms]
//        [--upgrade-timeout ms] [--transports polling,websocket] [--test-handlers]
//        [--adapter memory|redis] [--redis-url URL] [--redis-key PREFIX]
//        [--redis-request-timeout ms] [--node-id ID]
// Prints `listening on HOST:PORT` on stdout; exits 0 on SIGTERM/SIGINT after io.close().
// With `--adapter redis` it uses @socket.io/redis-adapter 8.x (classic mode, redis v4 client);
// the node id is also the adapter uid on the wire, so `redis-cli monitor` shows who sent what.
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { Server } from "socket.io";
import { createClient } from "redis";
import { createAdapter } from "@socket.io/redis-adapter";

function parseArgs(argv) {
  const opts = {
    port: 0, host: "127.0.0.1", adapter: "memory", redisUrl: "redis://127.0.0.1:6379",
    redisKey: "socket.io", requestsTimeout: 5000, nodeId: randomBytes(3).toString("hex"),
  };
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`bad value for ${name}: ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case "--port": opts.port = num(a, val()); break;
      case "--host": opts.host = val(); break;
      case "--ping-interval": opts.pingInterval = num(a, val()); break;
      case "--ping-timeout": opts.pingTimeout = num(a, val()); break;
      case "--max-payload": opts.maxHttpBufferSize = num(a, val()); break;
      case "--connect-timeout": opts.connectTimeout = num(a, val()); break;
      case "--upgrade-timeout": opts.upgradeTimeout = num(a, val()); break;
      case "--transports": opts.transports = val().split(",").map((s) => s.trim()).filter(Boolean); break;
      case "--test-handlers": break; // always on here; accepted for symmetry with skein
      case "--adapter": opts.adapter = val(); break;
      case "--redis-url": opts.redisUrl = val(); break;
      case "--redis-key": opts.redisKey = val(); break;
      case "--redis-request-timeout": opts.requestsTimeout = num(a, val()); break;
      case "--node-id": opts.nodeId = val(); break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!["memory", "redis"].includes(opts.adapter)) throw new Error(`bad value for --adapter: ${opts.adapter}`);
  return opts;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(e.message);
  process.exit(2);
}

const httpServer = createServer();
const ioOpts = {};
for (const k of ["pingInterval", "pingTimeout", "maxHttpBufferSize", "connectTimeout", "upgradeTimeout", "transports"]) {
  if (opts[k] !== undefined) ioOpts[k] = opts[k];
}
// The adapter does not await its PUBLISH promises: while Redis is down node-redis may reject
// one (EPIPE on a half-closed socket). A production server logs that; it must not crash.
process.on("unhandledRejection", (e) => console.error(`unhandled rejection: ${e?.message ?? e}`));

const NODE = opts.nodeId;
let redisClients = [];
if (opts.adapter === "redis") {
  const pub = createClient({ url: opts.redisUrl });
  const sub = pub.duplicate();
  redisClients = [pub, sub];
  // Log each client's connection errors once per outage (the client reconnects by itself).
  for (const [name, c] of [["pub", pub], ["sub", sub]]) {
    let down = false;
    c.on("error", (e) => { if (!down) console.error(`redis ${name}: ${e.message}`); down = true; });
    c.on("ready", () => { if (down) console.error(`redis ${name}: ready again`); down = false; });
  }
  try {
    await Promise.all([pub.connect(), sub.connect()]);
  } catch (e) {
    console.error(`redis connect failed: ${e.message}`);
    process.exit(1);
  }
  const factory = createAdapter(pub, sub, { key: opts.redisKey, requestsTimeout: opts.requestsTimeout });
  ioOpts.adapter = function (nsp) {
    const adapter = new factory(nsp);
    adapter.uid = NODE; // one id for every namespace: ping-servers answers and the wire agree
    return adapter;
  };
}
const io = new Server(httpServer, ioOpts);

const sortById = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const asList = (r) => (r === undefined || r === null ? [] : Array.isArray(r) ? r : [r]);
// BroadcastOperator over `rooms` minus `except` (no rooms = whole namespace).
const target = (nsp, { rooms, except } = {}) => nsp.to(asList(rooms)).except(asList(except));
const isFn = (f) => typeof f === "function";

function register(parent) {
  parent.on("connection", (socket) => {
    const nsp = socket.nsp;
    socket.data = { auth: socket.handshake.auth };

    socket.on("echo", (...args) => {
      const ack = isFn(args[args.length - 1]) ? args.pop() : null;
      if (ack) ack(...args);
      else socket.emit("echo", ...args);
    });
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (isFn(ack)) ack(room);
    });
    socket.on("leave", (room, ack) => {
      for (const r of asList(room)) socket.leave(r);
      if (isFn(ack)) ack(room);
    });
    socket.on("rooms", (ack) => {
      if (isFn(ack)) ack([...socket.rooms]);
    });
    socket.on("pub", (obj) => {
      nsp.to(obj?.room).emit("msg", obj);
    });
    socket.on("broadcast", (o = {}, ack) => {
      let op = target(nsp, o);
      if (o.volatile) op = op.volatile;
      if (o.local) op = op.local;
      op.emit(o.event, ...asList(o.args));
      if (isFn(ack)) ack();
    });
    socket.on("socket-broadcast", (o = {}, ack) => {
      socket.broadcast.to(asList(o.rooms)).emit(o.event, ...asList(o.args));
      if (isFn(ack)) ack();
    });
    socket.on("server-ack", (o = {}, ack) => {
      socket.timeout(o.timeout ?? 1000).emit(o.event, ...asList(o.args), (err, ...response) => {
        if (!isFn(ack)) return;
        if (err) ack({ err: "operation has timed out" });
        else ack({ err: null, response });
      });
    });
    socket.on("broadcast-ack", (o = {}, ack) => {
      target(nsp, { rooms: o.rooms }).timeout(o.timeout ?? 1000).emit(o.event, ...asList(o.args), (err, responses) => {
        if (isFn(ack)) ack({ err: err ? err.message : null, responses });
      });
    });
    socket.on("fetch-sockets", async (o = {}, ack) => {
      const sockets = await target(nsp, o).fetchSockets();
      const out = sockets.map((s) => ({ id: s.id, rooms: [...s.rooms], data: s.data })).sort(sortById);
      if (isFn(ack)) ack(out);
    });
    socket.on("sockets-join", (o = {}, ack) => {
      target(nsp, o).socketsJoin(o.join);
      if (isFn(ack)) ack();
    });
    socket.on("sockets-leave", (o = {}, ack) => {
      target(nsp, o).socketsLeave(o.leave);
      if (isFn(ack)) ack();
    });
    socket.on("disconnect-sockets", (o = {}, ack) => {
      target(nsp, o).disconnectSockets(!!o.close);
      if (isFn(ack)) ack();
    });
    socket.on("remote-emit", async (o = {}, ack) => {
      const sockets = await target(nsp, o).fetchSockets();
      for (const s of sockets) s.emit(o.event, ...asList(o.args));
      if (isFn(ack)) ack(sockets.length);
    });
    socket.on("disconnect-me", (close) => {
      socket.disconnect(!!close);
    });
    socket.on("set-data", (data, ack) => {
      socket.data = data;
      if (isFn(ack)) ack();
    });
    // ------------------------------------------------ cluster additions (CONTRACT.md)
    socket.on("whoami", (ack) => {
      if (isFn(ack)) ack({ node: NODE });
    });
    socket.on("server-count", async (ack) => {
      const n = await nsp.adapter.serverCount();
      if (isFn(ack)) ack(n);
    });
    socket.on("all-rooms", async (ack) => {
      try {
        const rooms = await nsp.adapter.allRooms();
        if (isFn(ack)) ack([...rooms].sort());
      } catch (e) {
        if (isFn(ack)) ack({ err: e.message });
      }
    });
    socket.on("cluster-fetch", async (o = {}, ack) => {
      // The Node adapter has no partial results: on a timeout fetchSockets rejects.
      try {
        const sockets = await target(nsp, o).fetchSockets();
        const out = sockets.map((s) => ({ id: s.id, rooms: [...s.rooms], data: s.data })).sort(sortById);
        if (isFn(ack)) ack({ sockets: out, missing: [] });
      } catch (e) {
        if (isFn(ack)) ack({ sockets: [], missing: [], err: e.message });
      }
    });
    socket.on("server-side-emit", (o = {}, ack) => {
      if (o.timeout === undefined || o.timeout === null) {
        nsp.serverSideEmit(o.event, ...asList(o.args));
        if (isFn(ack)) ack();
        return;
      }
      // socket.io 4.8 has no timeout() for serverSideEmitWithAck: the adapter's requestsTimeout
      // applies; a shorter `timeout` answers first, without the partial responses.
      let done = false;
      const reply = (r) => { if (!done && isFn(ack)) { done = true; ack(r); } };
      const timer = o.timeout < opts.requestsTimeout
        ? setTimeout(() => reply({ err: "operation has timed out", responses: [] }), o.timeout) : null;
      nsp.serverSideEmit(o.event, ...asList(o.args), (err, responses) => {
        clearTimeout(timer);
        reply({ err: err ? err.message : null, responses: responses ?? [] });
      });
    });

    socket.on("disconnect", (reason) => {
      nsp.to("observers").emit("left", { id: socket.id, nsp: nsp.name, reason });
    });
    // Server-side socket errors (invalid packets...) must not crash the process.
    socket.on("error", () => {});

    socket.emit("hello", {
      id: socket.id,
      nsp: nsp.name,
      auth: socket.handshake.auth,
      query: socket.handshake.query,
    });
  });
}

// Server-side events (serverSideEmit from other nodes), on every namespace.
const withServerSide = new WeakSet();
function serverSide(nsp) {
  if (withServerSide.has(nsp)) return;
  withServerSide.add(nsp);
  nsp.on("ping-servers", (...args) => {
    const ack = isFn(args[args.length - 1]) ? args.pop() : null;
    if (ack) ack({ node: NODE, args });
  });
  nsp.on("relay", (o = {}) => {
    nsp.local.to(asList(o.room)).emit(o.event, ...asList(o.args));
  });
}
serverSide(io.of("/"));
io.on("new_namespace", serverSide);

register(io.of("/"));
register(io.of("/custom"));
register(io.of(/^\/dyn-[a-z0-9]+$/));
const priv = io.of("/private");
priv.use((socket, next) => {
  if (socket.handshake.auth && socket.handshake.auth.token === "secret") return next();
  const err = new Error("unauthorized");
  err.data = { reason: "bad token" };
  next(err);
});
register(priv);
// `/slow`: a middleware, then a connect handler that takes 200 ms before it registers the
// handlers. Node runs it before reading anything else; skein must not lose the events a
// client sends meanwhile.
const slow = io.of("/slow");
slow.use((socket, next) => next());
slow.on("connection", () => { const end = Date.now() + 200; while (Date.now() < end); });
register(slow);

let closing = false;
function shutdown(sig) {
  if (closing) return;
  closing = true;
  const force = setTimeout(() => {
    console.error(`forced exit after ${sig}`);
    process.exit(1);
  }, 5000);
  force.unref();
  io.close((err) => {
    for (const c of redisClients) c.disconnect().catch(() => {});
    if (err && err.code !== "ERR_SERVER_NOT_RUNNING") console.error("close error:", err.message);
    process.exit(0);
  });
  // Keep-alive sockets that are still busy after a second would hold httpServer.close().
  setTimeout(() => httpServer.closeAllConnections?.(), 1000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

httpServer.on("error", (e) => {
  console.error(`listen error: ${e.message}`);
  process.exit(1);
});
httpServer.listen(opts.port, opts.host, () => {
  const { port } = httpServer.address();
  console.log(`listening on ${opts.host}:${port}`);
});
