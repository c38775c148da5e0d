// Shared helpers for the cross-process suite: start/stop servers (skein or the Node
// reference), official-client helpers, raw HTTP long-polling and raw WebSocket clients.
import { spawn } from "node:child_process";
import { before, after } from "node:test";
import { request as httpRequest } from "node:http";
import { connect as netConnect } from "node:net";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import assert from "node:assert/strict";
import { io, Manager } from "socket.io-client";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, "../..");
export const SKEIN_BIN = process.env.SKEIN_BIN || path.join(REPO, "target/debug/skein");
export const REFERENCE = path.join(here, "reference-server.mjs");
/** core/examples/axum.rs, built by `cargo build --workspace --all-targets` beside the binary. */
export const AXUM_EXAMPLE = process.env.SKEIN_AXUM_BIN || path.join(path.dirname(SKEIN_BIN), "examples/axum");
/** Which server the suite drives: `skein` (default) or `node` (the reference). */
export const TARGET = process.env.SKEIN_TEST_TARGET || "skein";
if (!["skein", "node"].includes(TARGET)) throw new Error(`SKEIN_TEST_TARGET must be skein or node, got ${TARGET}`);

export const sleep = (ms) => delay(ms);
export { io, Manager, WebSocket };

// ---------------------------------------------------------------- processes
const live = new Set();
function killAll() {
  for (const p of live) {
    try { p.kill("SIGKILL"); } catch { /* already gone */ }
  }
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => { killAll(); process.exit(130); });
}

/** SIGKILL `proc` when the test process exits, unless it exited before (cluster-harness.mjs). */
export function trackProcess(proc) {
  live.add(proc);
  proc.once("exit", () => live.delete(proc));
  return proc;
}

function hasFlag(args, flag) {
  return args.includes(flag);
}

/**
 * Start a server process and wait for `listening on 127.0.0.1:PORT`.
 * kind: "skein" | "node" (default: $SKEIN_TEST_TARGET). args: extra flags. retries: on failure.
 */
export async function startServer({ retries = 0, ...opts } = {}) {
  for (let i = 0; ; i++) {
    try {
      return await startOnce(opts);
    } catch (e) {
      if (i >= retries) throw e;
      await delay(300); // e.g. the port of a killed process is not free yet
    }
  }
}

async function startOnce({ kind = TARGET, args = [], timeoutMs = 20000, extraEnv = {}, launcher = [] }) {
  let cmd, argv;
  if (kind === "skein") {
    if (!existsSync(SKEIN_BIN)) throw new Error(`skein binary not found at ${SKEIN_BIN} (build it with cargo build -p skein-node, or set SKEIN_BIN)`);
    cmd = SKEIN_BIN;
    argv = args.includes("--demo") ? [] : ["--test-handlers"];
  } else if (kind === "node") {
    cmd = process.execPath;
    argv = [REFERENCE];
  } else if (kind === "axum") {
    if (!existsSync(AXUM_EXAMPLE)) throw new Error(`axum example not found at ${AXUM_EXAMPLE} (cargo build -p skein-core --examples, or set SKEIN_AXUM_BIN)`);
    cmd = AXUM_EXAMPLE;
    argv = [];
  } else {
    throw new Error(`unknown server kind ${kind}`);
  }
  if (!hasFlag(args, "--port")) argv.push("--port", "0");
  if (!hasFlag(args, "--host")) argv.push("--host", "127.0.0.1");
  argv.push(...args);

  // A launcher runs the server through another program, e.g.
  // ["sh", "-c", 'ulimit -n 256; exec "$0" "$@"'] for a low open-file limit.
  if (launcher.length) {
    argv = [...launcher.slice(1), cmd, ...argv];
    cmd = launcher[0];
  }
  const proc = spawn(cmd, argv, {
    cwd: REPO, // skein resolves node/demo/... relative to the repository root
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_BACKTRACE: "1", ...extraEnv },
  });
  live.add(proc);
  let stdout = "";
  let stderr = "";
  const exited = new Promise((resolve) => {
    proc.once("exit", (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    });
  });
  const port = await new Promise((resolve, reject) => {
    const re = /listening on 127\.0\.0\.1:(\d+)/;
    const timer = setTimeout(() => {
      reject(new Error(`${kind} did not print "listening on" within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    const check = () => {
      const m = re.exec(stdout) || re.exec(stderr);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    };
    proc.stdout.setEncoding("utf8").on("data", (d) => { stdout += d; check(); });
    proc.stderr.setEncoding("utf8").on("data", (d) => { stderr += d; check(); });
    proc.once("error", (e) => { clearTimeout(timer); reject(e); });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${kind} exited early (code ${code}, signal ${signal})\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  }).catch((e) => { try { proc.kill("SIGKILL"); } catch {} throw e; });

  const server = {
    kind,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    proc,
    args,
    get stdout() { return stdout; },
    get stderr() { return stderr; },
    /** {code, signal} once the process exited, or null after timeoutMs. */
    async waitExit(timeoutMs = 10000) {
      return Promise.race([exited, delay(timeoutMs).then(() => null)]);
    },
    /** Send `signal` (default SIGTERM) and wait; SIGKILL after 5 s if needed. */
    async stop(signal = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill(signal);
      const r = await server.waitExit(5000);
      if (r) return r;
      proc.kill("SIGKILL");
      return exited;
    },
  };
  return server;
}

/** The process never exited and never panicked. */
export function assertAlive(server, where = "") {
  assert.equal(server.proc.exitCode, null, `${server.kind} exited ${where}: code ${server.proc.exitCode}\n${server.stderr}`);
  assert.equal(server.proc.signalCode, null, `${server.kind} killed ${where}: ${server.proc.signalCode}\n${server.stderr}`);
  assert.ok(!/panicked/.test(server.stderr), `${server.kind} panicked ${where}:\n${server.stderr}`);
}

/** A describe block with its own server (flags `args`); clients are closed afterwards. */
export function withServer(args = []) {
  const ctx = {};
  before(async () => { ctx.srv = await startServer({ args }); ctx.url = ctx.srv.url; });
  after(async () => {
    closeClients();
    if (!ctx.srv) return;
    try {
      assertAlive(ctx.srv, "at the end of the block");
    } finally {
      await ctx.srv.stop("SIGKILL");
    }
  });
  return ctx;
}

// ---------------------------------------------------------------- generic async helpers
export function withTimeout(promise, ms, label = "operation") {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${label}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolve with the args array of the next `event` (optionally matching `filter(...args)`). */
export function waitEvent(emitter, event, ms = 5000, filter = () => true) {
  return withTimeout(new Promise((resolve) => {
    const h = (...args) => {
      if (!filter(...args)) return;
      emitter.off(event, h);
      resolve(args);
    };
    emitter.on(event, h);
  }), ms, `event ${event}`);
}

/** Poll `cond` until true. */
export async function until(cond, ms = 5000, label = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timeout after ${ms} ms waiting for ${label}`);
    await delay(20);
  }
}

// ---------------------------------------------------------------- official client
const clients = new Set();

/**
 * Connect an official client to `url` + `nsp`; resolves once both `connect` and `hello`
 * arrived: {socket, hello}. Rejects with the connect_error.
 */
export async function connect(url, { nsp = "/", ms = 8000, ...opts } = {}) {
  const socket = io(url + (nsp === "/" ? "" : nsp), { forceNew: true, reconnection: false, ...opts });
  clients.add(socket);
  const hello = new Promise((resolve) => socket.once("hello", resolve));
  await withTimeout(new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  }), ms, `connect ${nsp}`);
  return { socket, hello: await withTimeout(hello, ms, `hello on ${nsp}`) };
}

/** Connect and expect a connect_error; resolves with the error. */
export async function connectError(url, { nsp = "/", ms = 8000, ...opts } = {}) {
  const socket = io(url + (nsp === "/" ? "" : nsp), { forceNew: true, reconnection: false, ...opts });
  clients.add(socket);
  try {
    return await withTimeout(new Promise((resolve, reject) => {
      socket.once("connect", () => reject(new Error(`unexpected connect to ${nsp}`)));
      socket.once("connect_error", resolve);
    }), ms, `connect_error on ${nsp}`);
  } finally {
    socket.disconnect();
  }
}

export function track(socket) {
  clients.add(socket);
  return socket;
}

export function closeClients() {
  for (const s of clients) {
    try {
      s.io?.reconnection(false);
      s.disconnect();
      s.io?.engine?.close();
    } catch { /* ignore */ }
  }
  clients.clear();
}

/** Emit with ack and a 5 s timeout; resolves the FIRST ack argument (like emitWithAck). */
export function ask(socket, event, ...args) {
  return socket.timeout(5000).emitWithAck(event, ...args);
}

/** Emit with ack and a timeout; resolves ALL ack arguments as an array. */
export function askAll(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, ...res) => (err ? reject(err) : resolve(res)));
  });
}

/** Records every incoming event of a socket: [{event, args}] */
export function record(socket) {
  const log = [];
  socket.onAny((event, ...args) => log.push({ event, args }));
  return log;
}

/** Normalise binary values received by the client to Buffers (deep). */
export function toBuffers(v) {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(toBuffers);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toBuffers(x)]));
  return v;
}

/** Echo must still work on `socket` (healthy-client check). */
export async function assertEchoes(socket, label = "") {
  assert.ok(socket.connected, `healthy client disconnected ${label}`);
  const tag = `ping-${Date.now()}-${Math.random()}`;
  const res = await withTimeout(askAll(socket, "echo", tag, { n: 1 }), 6000, `healthy echo ${label}`);
  assert.deepEqual(res, [tag, { n: 1 }], `healthy echo ${label}`);
}

// ---------------------------------------------------------------- raw HTTP / Engine.IO polling
export const EIO = "/socket.io/";

/**
 * Plain HTTP request on a fresh connection. Resolves {status, headers, body (string), raw (Buffer)};
 * a 101 answer to an upgrade request resolves {status: 101} (the socket is destroyed).
 * On timeout the request is aborted and the promise rejects (message starts with "timeout").
 */
export function http(port, { method = "GET", path: p = EIO, query, body, headers = {}, ms = 5000 } = {}) {
  const qs = query === undefined ? "" : "?" + (typeof query === "string" ? query : new URLSearchParams(query).toString());
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(String(body));
    const req = httpRequest({
      host: "127.0.0.1", port, method, path: p + qs, agent: false,
      headers: { ...(data ? { "content-length": data.length, "content-type": "text/plain;charset=UTF-8" } : {}), ...headers },
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        clearTimeout(timer);
        const raw = Buffer.concat(chunks);
        resolve({ status: res.statusCode, headers: res.headers, raw, body: raw.toString("utf8") });
      });
      res.on("error", (e) => { clearTimeout(timer); reject(e); });
    });
    const timer = setTimeout(() => {
      reject(new Error(`timeout after ${ms} ms: ${method} ${p}${qs}`));
      req.destroy();
    }, ms);
    req.on("upgrade", (res, socket) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: res.statusCode, headers: res.headers, raw: Buffer.alloc(0), body: "" });
    });
    req.on("error", (e) => { clearTimeout(timer); reject(e); });
    if (data) req.write(data);
    req.end();
  });
}

/** A GET that may legitimately stay pending (long-poll): its result, or "pending" after ms. */
export async function pollGetOrPending(port, sid, ms = 1000) {
  try {
    return await pollGet(port, sid, ms);
  } catch (e) {
    if (/^timeout/.test(e.message)) return "pending";
    throw e;
  }
}

/** Headers of a WebSocket upgrade request. */
export const upgradeHeaders = () => ({
  Connection: "Upgrade",
  Upgrade: "websocket",
  "Sec-WebSocket-Version": "13",
  "Sec-WebSocket-Key": Buffer.from(String(Math.random()).slice(0, 16).padEnd(16, "0")).toString("base64"),
});

/** Body parsed as JSON when possible, else the raw string. */
export function parsedBody(res) {
  try { return JSON.parse(res.body); } catch { return res.body; }
}

/** Engine.IO v4 polling handshake: {sid, open} */
export async function pollOpen(port, extra = {}) {
  const res = await http(port, { query: { EIO: "4", transport: "polling", ...extra } });
  assert.equal(res.status, 200, `polling handshake: ${res.status} ${res.body}`);
  assert.equal(res.body[0], "0", `open packet expected: ${res.body}`);
  const open = JSON.parse(res.body.slice(1));
  return { sid: open.sid, open };
}

export const pollGet = (port, sid, ms = 5000) =>
  http(port, { query: { EIO: "4", transport: "polling", sid }, ms });
export const pollPost = (port, sid, body, headers = {}) =>
  http(port, { method: "POST", query: { EIO: "4", transport: "polling", sid }, body, headers });
/** Split a polling payload into packets. */
export const packets = (body) => (body === "" ? [] : body.split("\x1e"));

// ---------------------------------------------------------------- raw WebSocket
/**
 * Raw Engine.IO WebSocket client. Queues every text/binary message; answers pings with
 * pongs unless autoPong is false. `closed` resolves {code, reason, at}.
 */
export class RawWs {
  constructor(url, { autoPong = true, maxPayload } = {}) {
    this.messages = [];
    this.waiters = [];
    this.autoPong = autoPong;
    this.ws = new WebSocket(url, { perMessageDeflate: false, ...(maxPayload ? { maxPayload } : {}) });
    this.ws.on("error", () => {}); // surfaced through `closed`
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("unexpected-response", (_req, res) => reject(new Error(`ws upgrade refused: ${res.statusCode}`)));
      this.ws.once("error", reject);
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() }));
    });
    this.isClosed = false;
    this.closed.then(() => { this.isClosed = true; this._wake(); });
    this.ws.on("message", (data, isBinary) => {
      const msg = isBinary ? Buffer.from(data) : data.toString();
      if (msg === "2" && this.autoPong) this.ws.send("3");
      this.messages.push(msg);
      this._wake();
    });
  }
  _wake() { for (const w of this.waiters.splice(0)) w(); }
  /** Next message (shifts it from the queue); rejects on timeout or close. */
  async next(ms = 3000, { skipPings = true } = {}) {
    const end = Date.now() + ms;
    for (;;) {
      while (this.messages.length) {
        const m = this.messages.shift();
        if (skipPings && m === "2") continue;
        return m;
      }
      if (this.isClosed) throw new Error("ws closed");
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no ws message within ${ms} ms`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }
  send(data) { this.ws.send(data); }
  /** {code, reason, at} if closed within ms, else null. */
  async closedWithin(ms) {
    return Promise.race([this.closed, delay(ms).then(() => null)]);
  }
  terminate() { this.ws.terminate(); }
  close() { try { this.ws.close(); } catch { /* ignore */ } }
}

/** Open a raw Engine.IO websocket session: returns {ws, open} after the open packet. */
export async function wsOpen(server, { autoPong = true, query = "EIO=4&transport=websocket" } = {}) {
  const ws = new RawWs(`${server.wsUrl}${EIO}?${query}`, { autoPong });
  await withTimeout(ws.opened, 5000, "ws open");
  const first = await ws.next(3000);
  assert.equal(first[0], "0", `open packet expected, got ${first}`);
  return { ws, open: JSON.parse(first.slice(1)) };
}

/** Raw websocket session joined to namespace `/`: returns {ws, open, sid (socket id)}. */
export async function wsConnectNsp(server, { autoPong = true, nsp = "/", auth } = {}) {
  const { ws, open } = await wsOpen(server, { autoPong });
  const prefix = nsp === "/" ? "" : `${nsp},`;
  ws.send(`40${prefix}${auth ? JSON.stringify(auth) : ""}`);
  const connected = await ws.next(3000);
  assert.ok(connected.startsWith(`40${prefix}`), `CONNECT ack expected, got ${connected}`);
  const sid = JSON.parse(connected.slice(2 + prefix.length)).sid;
  // The test application emits `hello` right after connect.
  const hello = await ws.next(3000);
  assert.ok(hello.startsWith(`42${prefix}["hello"`), `hello expected, got ${hello}`);
  return { ws, open, sid };
}

/** Normalised close code: 1000/1005 are both a plain close. */
export const closeClass = (code) => (code === 1000 || code === 1005 ? "normal" : code);

/**
 * Which of `sockets` received `event` because of `action`. After the action, `via` (the
 * socket that performed it) broadcasts a marker to its whole namespace: as delivery is
 * ordered per connection, whatever the action sent a socket arrives before the marker.
 * Returns, per socket, the list of args arrays of `event` received in between.
 */
export function deliveryProbe(sockets) {
  const logs = sockets.map((s) => record(s));
  let n = 0;
  return async function deliveries(via, event, action) {
    const start = logs.map((l) => l.length);
    await action();
    const tag = `marker-${++n}`;
    const isMark = (e) => e.event === "__marker" && e.args[0] === tag;
    await ask(via, "broadcast", { event: "__marker", args: [tag] });
    await until(() => logs.every((l) => l.slice(start[logs.indexOf(l)]).some(isMark)), 5000, `marker ${tag}`);
    return logs.map((l, i) => {
      const part = l.slice(start[i]);
      return part.slice(0, part.findIndex(isMark)).filter((e) => e.event === event).map((e) => e.args);
    });
  };
}

/** Connect `n` official clients (same options) in parallel; returns their sockets. */
export async function connectMany(url, n, opts = {}) {
  return (await Promise.all(Array.from({ length: n }, () => connect(url, opts)))).map((c) => c.socket);
}

/** Sorted copy. */
export const sorted = (a) => [...a].sort();

/**
 * Raw polling session joined to `/`, then upgraded by hand like engine.io-client does:
 * long-poll in flight, `2probe`/`3probe` on the WebSocket, the pending GET answered, `5`.
 * Resolves {sid, ws, pendingGet} right after `5` was sent.
 */
export async function rawUpgrade(server) {
  const { sid } = await pollOpen(server.port);
  await pollPost(server.port, sid, "40");
  let got = "";
  while (!got.includes('["hello"')) got += (await pollGet(server.port, sid)).body;
  const pending = pollGetOrPending(server.port, sid, 3000);
  await delay(20);
  const ws = new RawWs(`${server.wsUrl}${EIO}?EIO=4&transport=websocket&sid=${sid}`);
  await withTimeout(ws.opened, 3000, "ws open");
  ws.send("2probe");
  assert.equal(await ws.next(3000), "3probe");
  const pendingGet = await pending;
  ws.send("5");
  return { sid, ws, pendingGet };
}

// ---------------------------------------------------------------- raw TCP WebSocket
/** A masked client WebSocket frame (opcode 1 text, 2 binary, 8 close). */
export function maskedFrame(opcode, payload) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload));
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const n = data.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n])
    : n < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 0xff])
    : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; })()]);
  const body = Buffer.from(data.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([head, mask, body]);
}

/**
 * A WebSocket client written on a raw TCP socket, for what `ws` cannot do: bytes sent in
 * the same write as the upgrade request (`extra`), or a reader that stops reading
 * (`socket.pause()`). Resolves once the 101 arrived: {socket, status, next(ms), send(frame),
 * messages, closed (promise), isClosed}. Text frames are strings, binary frames Buffers.
 */
export function rawTcpWs(port, { path: p = `${EIO}?EIO=4&transport=websocket`, extra = Buffer.alloc(0), ms = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    let buf = Buffer.alloc(0);
    let head = null;
    const messages = [];
    const waiters = [];
    const wake = () => { for (const w of waiters.splice(0)) w(); };
    let isClosed = false;
    const closed = new Promise((r) => socket.once("close", () => { isClosed = true; wake(); r(Date.now()); }));
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no 101 within ${ms} ms`)); }, ms);
    socket.on("error", () => {});
    socket.once("close", () => { clearTimeout(timer); if (!head) reject(new Error("closed before the 101")); });
    const parse = () => {
      for (;;) {
        if (buf.length < 2) return;
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) return;
        const data = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        if (op === 1) messages.push(data.toString());
        else if (op === 2) messages.push(Buffer.from(data));
        else if (op === 8) messages.push({ close: len >= 2 ? data.readUInt16BE(0) : 1005 });
        wake();
      }
    };
    socket.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (!head) {
        const i = buf.indexOf("\r\n\r\n");
        if (i < 0) return;
        head = buf.subarray(0, i).toString();
        buf = buf.subarray(i + 4);
        clearTimeout(timer);
        const status = Number(head.split(" ")[1]);
        resolve({
          socket, status, head, messages, closed,
          get isClosed() { return isClosed; },
          send: (frame) => socket.write(frame),
          /** Next message (text, Buffer or {close}); pings ("2") skipped. */
          async next(wait = 3000) {
            const end = Date.now() + wait;
            for (;;) {
              while (messages.length) {
                const m = messages.shift();
                if (m === "2") continue;
                return m;
              }
              if (isClosed) throw new Error("connection closed");
              const left = end - Date.now();
              if (left <= 0) throw new Error(`no message within ${wait} ms`);
              await new Promise((r) => { const t = setTimeout(r, left); waiters.push(() => { clearTimeout(t); r(); }); });
            }
          },
        });
      }
      parse();
    });
    const key = Buffer.from("skein-raw-tcp-ws").toString("base64");
    const req = `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
    socket.write(Buffer.concat([Buffer.from(req), extra]));
  });
}

/** A raw TCP connection to `port`: {socket, data (string so far), closed (promise of the time)}. */
export function rawTcp(port) {
  const socket = netConnect({ host: "127.0.0.1", port });
  const conn = { socket, data: "", isClosed: false };
  socket.setEncoding("latin1");
  socket.on("data", (d) => { conn.data += d; });
  socket.on("error", () => {});
  conn.connected = new Promise((r, j) => { socket.once("connect", r); socket.once("error", j); });
  conn.closed = new Promise((r) => socket.once("close", () => { conn.isClosed = true; r(Date.now()); }));
  return conn;
}
