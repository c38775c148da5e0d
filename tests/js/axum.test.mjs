// Skein mounted in an axum application (core/examples/axum.rs), beside an ordinary axum
// route, with the official client over both transports and the upgrade. Both ways of
// serving the router: axum::serve (WebSocket on hyper's upgraded connection, the generic
// path) and hyper's HTTP/1 server on plain TcpStreams (the stream taken back).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";

const skip = h.TARGET === "node" ? "the axum example is skein's" : false;

for (const [label, args] of [["axum::serve", []], ["hyper http1 on TcpStream", ["--http1"]]]) {
  describe(`axum app served with ${label}`, { skip }, () => {
    const ctx = {};
    before(async () => { ctx.srv = await h.startServer({ kind: "axum", args }); });
    after(async () => {
      h.closeClients();
      if (ctx.srv) {
        h.assertAlive(ctx.srv, "at the end");
        await ctx.srv.stop("SIGKILL");
      }
    });

    test("the application's own route answers beside Socket.IO", async () => {
      const r = await h.http(ctx.srv.port, { path: "/hello" });
      assert.deepEqual([r.status, r.body], [200, "hello from axum"]);
      const missing = await h.http(ctx.srv.port, { path: "/nope" });
      assert.equal(missing.status, 404);
    });

    for (const [name, opts, transport] of [
      ["polling only", { transports: ["polling"] }, "polling"],
      ["websocket only", { transports: ["websocket"] }, "websocket"],
      ["polling, upgraded to websocket", {}, "websocket"],
    ]) {
      test(`official client: ${name}`, async () => {
        const { socket, hello } = await h.connect(ctx.srv.url, opts);
        assert.deepEqual(hello, { id: socket.id, nsp: "/" });
        if (transport === "websocket" && !opts.transports) {
          await h.until(() => socket.io.engine.transport.name === "websocket", 5000, "upgrade");
        }
        assert.equal(socket.io.engine.transport.name, transport);
        await h.assertEchoes(socket, name);
        const bin = Buffer.from([1, 2, 3, 250]);
        const back = await h.ask(socket, "echo", bin);
        assert.deepEqual(h.toBuffers(back), bin);
        socket.disconnect();
      });
    }

    test("raw WebSocket: frames sent with the upgrade request are answered", async () => {
      const ws = await h.rawTcpWs(ctx.srv.port, { extra: h.maskedFrame(1, "40") });
      assert.equal(ws.status, 101);
      assert.equal((await ws.next())[0], "0");
      assert.ok((await ws.next()).startsWith("40{"));
      ws.socket.destroy();
    });
  });
}
