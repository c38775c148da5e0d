// Resource limits against hostile or broken clients (skein only: the reference has no
// such limits to compare with). Every wait is bounded; nothing asserts a speed, only
// that a bound far below the old behaviour's is met.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";

const skeinOnly = h.TARGET === "node" ? "skein's own limits; the reference has none" : false;

/** GET /health/live on a fresh connection: the status, or the error's message. */
async function live(port, ms = 1000) {
  try {
    return (await h.http(port, { path: "/health/live", ms })).status;
  } catch (e) {
    return e.message;
  }
}

describe("idle and slow connections", { skip: skeinOnly }, () => {
  const ctx = {};
  before(async () => {
    // The shell sets both the soft and the hard limit: skein cannot raise it.
    ctx.srv = await h.startServer({
      kind: "skein",
      args: ["--header-timeout", "1000", "--body-timeout", "1000"],
      launcher: ["sh", "-c", 'ulimit -n 256; exec "$0" "$@"'],
    });
  });
  after(async () => {
    h.closeClients();
    await ctx.srv?.stop("SIGKILL");
  });

  test("300 idle sockets under a 256 fd limit: health and new clients get through", async () => {
    const port = ctx.srv.port;
    const idle = Array.from({ length: 300 }, () => h.rawTcp(port));
    await Promise.all(idle.map((c) => c.connected.catch(() => {})));
    // Those over the connection limit are answered 503 at once; the rest are closed by
    // the header timeout. Then the node serves again.
    await h.until(async () => (await live(port)) === 200, 15000, "/health/live answers 200");
    const { socket } = await h.connect(ctx.srv.url);
    await h.assertEchoes(socket, "new client after the idle flood");
    await h.until(() => idle.every((c) => c.isClosed), 10000, "every idle socket closed by the server");
    const refused = idle.filter((c) => c.data.startsWith("HTTP/1.1 503"));
    assert.ok(refused.length > 0, "connections over the limit were answered 503");
    assert.match(refused[0].data, /retry-after: 1/i);
    assert.match(refused[0].data, /connection: close/i);
    const emfile = (ctx.srv.stderr.match(/Too many open files/g) || []).length;
    assert.ok(emfile <= 1, `accept errors are logged once per burst, got ${emfile} lines`);
    h.assertAlive(ctx.srv);
  });

  test("a half-sent request head is closed after the header timeout", async () => {
    const c = h.rawTcp(ctx.srv.port);
    await c.connected;
    c.socket.write("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n");
    const at = await h.withTimeout(c.closed, 8000, "half-sent head closed");
    assert.ok(at, "closed");
  });

  test("an idle keep-alive connection is closed after the header timeout", async () => {
    const c = h.rawTcp(ctx.srv.port);
    await c.connected;
    c.socket.write("GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
    await h.until(() => c.data.includes("\r\n\r\nok"), 3000, "first response");
    assert.ok(!c.isClosed, "kept alive after the response");
    await h.withTimeout(c.closed, 8000, "idle keep-alive closed");
  });

  test("a long-polling GET waiting for packets is not cut by the header timeout", async () => {
    const port = ctx.srv.port;
    const { sid } = await h.pollOpen(port);
    // Three header timeouts long: the GET stays pending, then gets what is sent.
    const get = h.pollGet(port, sid, 8000);
    await h.sleep(3000);
    assert.equal((await h.pollPost(port, sid, "40")).status, 200);
    const r = await get;
    assert.equal(r.status, 200);
    assert.ok(h.packets(r.body).some((p) => p.startsWith("40{")), r.body);
  });

  test("a polling POST whose body trickles gets 408 and its session closes", async () => {
    const port = ctx.srv.port;
    const { sid } = await h.pollOpen(port);
    const c = h.rawTcp(port);
    await c.connected;
    c.socket.write(`POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n` +
      "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 100\r\n\r\n40");
    await h.until(() => c.data.startsWith("HTTP/1.1 "), 8000, "an answer to the slow POST");
    assert.match(c.data, /^HTTP\/1\.1 408/);
    const next = await h.pollGet(port, sid, 3000);
    assert.deepEqual([next.status, JSON.parse(next.body)], [400, { code: 1, message: "Session ID unknown" }]);
  });
});

describe("out of file descriptors (limit above the fd limit)", { skip: skeinOnly }, () => {
  const ctx = {};
  before(async () => {
    // --max-connections over what 256 descriptors allow: accept itself fails (EMFILE).
    ctx.srv = await h.startServer({
      kind: "skein",
      args: ["--max-connections", "1000", "--header-timeout", "1000"],
      launcher: ["sh", "-c", 'ulimit -n 256; exec "$0" "$@"'],
    });
  });
  after(async () => {
    h.closeClients();
    await ctx.srv?.stop("SIGKILL");
  });

  test("accept errors: answered 503 through the spare descriptor, logged once per burst", async () => {
    const port = ctx.srv.port;
    const idle = Array.from({ length: 300 }, () => h.rawTcp(port));
    await Promise.all(idle.map((c) => c.connected.catch(() => {})));
    await h.until(() => idle.some((c) => c.data.startsWith("HTTP/1.1 503")), 5000, "a 503 while out of descriptors");
    await h.until(async () => (await live(port)) === 200, 15000, "/health/live answers 200 again");
    const { socket } = await h.connect(ctx.srv.url);
    await h.assertEchoes(socket, "after running out of descriptors");
    const log = ctx.srv.stderr.replace(/\x1b\[[0-9;]*m/g, "");
    const warned = (log.match(/accept failed \(logged once/g) || []).length;
    // Without the burst logging this was a line every 50 ms for as long as it lasted.
    assert.ok(warned >= 1 && warned <= 5, `accept failures logged once per burst, got ${warned} warnings`);
    assert.match(log, /accept failed: recovered count=\d+/);
    for (const c of idle) c.socket.destroy();
    h.assertAlive(ctx.srv);
  });
});

describe("connection limit (--max-connections 4)", { skip: skeinOnly }, () => {
  const ctx = {};
  before(async () => {
    ctx.srv = await h.startServer({ kind: "skein", args: ["--max-connections", "4", "--header-timeout", "60000"] });
  });
  after(async () => { await ctx.srv?.stop("SIGKILL"); });

  test("over the limit: 503 with Retry-After and Connection: close; served again once one leaves", async () => {
    const port = ctx.srv.port;
    const held = Array.from({ length: 4 }, () => h.rawTcp(port));
    await Promise.all(held.map((c) => c.connected));
    // Every held connection answers a request, so all four are being served.
    for (const c of held) c.socket.write("GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
    await h.until(() => held.every((c) => c.data.includes("\r\n\r\nok")), 3000, "the 4 held connections served");
    const busy = await h.http(port, { path: "/health/live" });
    assert.equal(busy.status, 503);
    assert.equal(busy.headers["retry-after"], "1");
    assert.equal(busy.headers.connection, "close");
    held[0].socket.destroy();
    await h.until(async () => (await live(port)) === 200, 5000, "a freed slot serves again");
    for (const c of held) c.socket.destroy();
    h.assertAlive(ctx.srv);
  });
});

describe("WebSocket transport edge cases", { skip: skeinOnly }, () => {
  const ctx = {};
  before(async () => {
    ctx.srv = await h.startServer({
      kind: "skein",
      // Long heartbeat: a slow client must be dropped long before its next ping.
      args: ["--max-buffered-packets", "64", "--ping-interval", "60000", "--ping-timeout", "60000", "--max-payload", "100000"],
    });
  });
  after(async () => {
    h.closeClients();
    await ctx.srv?.stop("SIGKILL");
  });

  test("frames sent in the same write as the upgrade request are processed at once", async () => {
    const ws = await h.rawTcpWs(ctx.srv.port, { extra: h.maskedFrame(1, "40") });
    assert.equal(ws.status, 101);
    assert.equal((await ws.next())[0], "0", "open packet first");
    const reply = await ws.next(3000);
    assert.ok(reply.startsWith("40{"), `CONNECT reply without sending anything else, got ${reply}`);
    ws.socket.destroy();
  });

  test("a client that stops reading is dropped when its queue overflows; others keep receiving", async () => {
    const { socket: a } = await h.connect(ctx.srv.url, { transports: ["websocket"] });
    const { socket: watcher } = await h.connect(ctx.srv.url, { transports: ["websocket"] });
    assert.deepEqual(await h.ask(watcher, "join", "observers"), "observers");
    const left = [];
    watcher.on("left", (info) => left.push(info));
    let got = 0;
    a.on("big", () => { got++; });

    const slow = await h.rawTcpWs(ctx.srv.port);
    assert.equal((await slow.next())[0], "0");
    slow.send(h.maskedFrame(1, "40"));
    const sid = JSON.parse((await slow.next()).slice(2)).sid;
    slow.socket.pause(); // stops reading: the kernel buffers fill, then the server's queue

    const ids = async () => (await h.ask(a, "fetch-sockets", {})).map((s) => s.id);
    assert.ok((await ids()).includes(sid));
    const big = "x".repeat(60_000);
    let sent = 0;
    const t0 = Date.now();
    // Bounded: 600 × 60 kB is far more than loopback buffers hold.
    while (sent < 600 && (await ids()).includes(sid)) {
      for (let i = 0; i < 20; i++) await h.ask(a, "broadcast", { event: "big", args: [big] });
      sent += 20;
    }
    await h.until(async () => !(await ids()).includes(sid), 5000, "slow client gone from fetch-sockets");
    const dropMs = Date.now() - t0;
    console.log(`# slow client dropped after ${sent} broadcasts, ${dropMs} ms`);
    await h.until(() => left.some((l) => l.id === sid), 3000, "observers told the slow client left");
    assert.equal(left.find((l) => l.id === sid).reason, "transport error");
    await h.until(() => got === sent, 10000, `the healthy client got all ${sent} broadcasts (has ${got})`);
    await h.assertEchoes(a, "after the slow client was dropped");
    slow.socket.destroy();
  });

  test("one packet's attachments are bounded by max payload in total", async () => {
    const open = async () => {
      const ws = await h.rawTcpWs(ctx.srv.port);
      await ws.next();
      ws.send(h.maskedFrame(1, "40"));
      assert.ok((await ws.next()).startsWith("40{"));
      assert.ok((await ws.next()).startsWith('42["hello"'));
      return ws;
    };
    const placeholders = (n) => Array.from({ length: n }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(",");
    // Each attachment is under max payload (100 000), their sum is not.
    const over = await open();
    over.send(h.maskedFrame(1, `455-["echo",${placeholders(5)}]`));
    for (let i = 0; i < 5; i++) over.send(h.maskedFrame(2, Buffer.alloc(60_000, i)));
    await h.withTimeout(over.closed, 3000, "connection closed for oversized attachments");
    assert.ok(!over.messages.some((m) => typeof m === "string" && m.startsWith("45")), "nothing echoed");
    // Within the bound, the same packet goes through.
    const fine = await open();
    fine.send(h.maskedFrame(1, `452-["echo",${placeholders(2)}]`));
    for (let i = 0; i < 2; i++) fine.send(h.maskedFrame(2, Buffer.alloc(40_000, i)));
    assert.ok((await fine.next()).startsWith('452-["echo"'));
    assert.equal((await fine.next()).length, 40_000);
    fine.socket.destroy();
    h.assertAlive(ctx.srv);
  });
});
