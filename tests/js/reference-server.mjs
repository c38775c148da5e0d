#!/usr/bin/env node
// Reference implementation of tests/CONTRACT.md on the real Node socket.io 4.8 server.
// The JS suite runs against it (SKEIN_TEST_TARGET=node) to prove the tests are right,
// and badinput.test.mjs compares Skein's answers to its answers.
//
// Usage: node reference-server.mjs [--port N] [--host H] [--ping-interval ms]
//        [--ping-timeout ms] [--max-payload bytes] [--connect-timeout ms]
//        [--upgrade-timeout ms] [--transports polling,websocket] [--test-handlers]
// Prints `listening on HOST:PORT` on stdout; exits 0 on SIGTERM/SIGINT after io.close().
import { createServer } from "node:http";
import { Server } from "socket.io";

function parseArgs(argv) {
  const opts = { port: 0, host: "127.0.0.1" };
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
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
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
