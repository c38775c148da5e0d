// Dynamic namespaces under hostile clients: a client chooses the name, so what a node keeps
// per name must go when the name's last socket does (cleanupEmptyChildNamespaces), names
// are bounded, and /metrics stays a bounded set of series whatever names clients send.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";

const WS = { transports: ["websocket"] };

async function metrics(srv) {
  return (await h.http(srv.port, { path: "/metrics" })).body;
}

const value = (body, series) => {
  const line = body.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
};

/** `n` clients, each on its own /dyn-<random> namespace, connected then gone. */
async function visitMany(srv, n) {
  const names = Array.from({ length: n }, (_, i) => `/dyn-v${i}x${Math.random().toString(36).slice(2, 8)}`);
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(names.slice(i, i + 50).map((nsp) => h.connect(srv.url, { ...WS, nsp })));
    for (const { socket } of batch) socket.disconnect();
  }
  return names;
}

describe("dynamic namespaces: bounded whatever clients send", () => {
  test("an empty child namespace is removed (default): 300 names visited leave nothing behind", async () => {
    const srv = await h.startServer({});
    try {
      const stay = (await h.connect(srv.url, { ...WS, nsp: "/dyn-keep1" })).socket;
      await visitMany(srv, 300);
      await h.until(async () => value(await metrics(srv), "skein_dynamic_child_namespaces") === 1, 5000, "only the occupied child left");
      const body = await metrics(srv);
      assert.equal(value(body, 'skein_namespace_sockets{nsp="(dynamic children)"}'), 1, "its socket counted in the one series");
      const series = body.split("\n").filter((l) => l.startsWith("skein_namespace_sockets"));
      assert.ok(series.length <= 6, `one series per registered namespace, plus one: ${series.length}`);
      assert.ok(!body.includes("/dyn-v"), "no client-chosen name in /metrics");
      // A removed child comes back on the next connect, and works.
      const again = (await h.connect(srv.url, { ...WS, nsp: "/dyn-keep1" })).socket;
      assert.equal(await h.ask(again, "echo", "x"), "x");
      stay.disconnect();
      again.disconnect();
      await h.until(async () => value(await metrics(srv), "skein_dynamic_child_namespaces") === 0, 5000, "no child left");
      h.assertAlive(srv);
    } finally {
      h.closeClients();
      await srv.stop("SIGKILL");
    }
  });

  test("with --cleanup-empty-child-namespaces false they stay, as the reference's default, but /metrics stays bounded", async () => {
    const srv = await h.startServer({ args: ["--cleanup-empty-child-namespaces", "false"] });
    try {
      await visitMany(srv, 100);
      // The clients' disconnects reach the server after they return: wait for them.
      const sockets = 'skein_namespace_sockets{nsp="(dynamic children)"}';
      await h.until(async () => value(await metrics(srv), sockets) === 0, 5000, "every visitor gone");
      const body = await metrics(srv);
      assert.equal(value(body, "skein_dynamic_child_namespaces"), 100, "the empty children stay");
      assert.equal(value(body, sockets), 0);
      assert.ok(!body.includes("/dyn-v"), "no client-chosen name in /metrics");
    } finally {
      h.closeClients();
      await srv.stop("SIGKILL");
    }
  });

  test("a namespace name over 256 bytes is an invalid namespace, and is not kept", async () => {
    const srv = await h.startServer({ args: ["--max-payload", "2000000"] });
    try {
      for (const len of [257, 500_000]) {
        const nsp = `/dyn-${"a".repeat(len - 5)}`;
        const { ws } = await h.wsOpen(srv);
        ws.send(`40${nsp},`);
        const reply = await ws.next(3000);
        assert.equal(reply, `44${nsp},{"message":"Invalid namespace"}`, `length ${len}`);
        ws.close();
      }
      const ok = await h.connect(srv.url, { ...WS, nsp: `/dyn-${"b".repeat(251)}` });
      assert.equal(await h.ask(ok.socket, "echo", 1), 1, "a 256-byte name is fine");
      const body = await metrics(srv);
      assert.ok(body.length < 10_000, `a small scrape (${body.length} bytes)`);
      h.assertAlive(srv);
    } finally {
      h.closeClients();
      await srv.stop("SIGKILL");
    }
  });
});
