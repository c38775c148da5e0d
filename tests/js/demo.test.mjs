// `skein --demo`: the tutorial chat page (node/demo/index.html) driven in real Chromium.
// Stable element ids: #room, #join, #input, #form, #messages (li per message), #typing.
// Needs /usr/bin/chromium (apt-get install -y chromium); skipped without it unless
// SKEIN_REQUIRE_BROWSER is set. Screenshot: /tmp/skein-demo.png.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import * as h from "./harness.mjs";
import { TOKEN, startApp, pythonSkipReason } from "./chat-app.mjs";

const CHROMIUM = process.env.SKEIN_CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = "/tmp/skein-demo.png";
const FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];

function skipReason() {
  if (h.TARGET !== "skein") return "the demo is served by skein only (SKEIN_TEST_TARGET is not skein)";
  if (!existsSync(CHROMIUM) && !process.env.SKEIN_REQUIRE_BROWSER) {
    return `${CHROMIUM} is missing (apt-get install -y chromium); set SKEIN_REQUIRE_BROWSER=1 to make this a failure`;
  }
  return null;
}

describe("demo chat page in Chromium", () => {
  const reason = skipReason();
  let srv, browser;
  const pageErrors = [];

  before(async () => {
    if (reason) return;
    srv = await h.startServer({ kind: "skein", args: ["--demo"] });
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({
      executablePath: CHROMIUM, headless: true, chromiumSandbox: false, args: FLAGS, timeout: 30000,
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (!srv) return;
    try {
      h.assertAlive(srv, "after the demo");
    } finally {
      await srv.stop("SIGKILL");
    }
  });

  async function openPage(url = srv.url) {
    const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
    const page = await context.newPage();
    page.setDefaultTimeout(8000);
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("pageerror", (e) => pageErrors.push(e.message));
    const res = await page.goto(url + "/", { waitUntil: "load" });
    assert.equal(res.status(), 200);
    return { page, requests };
  }

  /** Join `room` (as `name` when the page has a #name field). */
  async function join(page, room, name) {
    if (name && (await page.locator("#name").count())) await page.fill("#name", name);
    await page.fill("#room", room);
    await page.click("#join");
    // The page may reconnect on join; when it shows a #status, wait for "connected".
    if (await page.locator("#status").count()) {
      await page.waitForFunction(() => /^connected/i.test(document.querySelector("#status").textContent.trim()));
    }
  }

  async function send(page, text) {
    await page.fill("#input", text);
    await page.press("#input", "Enter");
  }

  const messageItem = (page, text) => page.locator("#messages li", { hasText: text });

  test("the node serves the page and the official client itself", { skip: reason ?? false }, async () => {
    const page = await h.http(srv.port, { path: "/" });
    assert.equal(page.status, 200);
    assert.match(page.headers["content-type"] ?? "", /text\/html/);
    assert.match(page.body, /\/socket\.io\/socket\.io(\.min)?\.js/, "page loads the client from the node");
    assert.doesNotMatch(page.body, /<script[^>]+src=["']https?:/i, "no script from a CDN");
    const js = await h.http(srv.port, { path: "/socket.io/socket.io.js" });
    assert.equal(js.status, 200);
    assert.match(js.headers["content-type"] ?? "", /javascript/);
    assert.ok(js.body.length > 10_000 && /Socket\.IO|socket\.io/.test(js.body), "looks like the socket.io client bundle");
  });

  test("two browsers chat in a room with a typing indicator", { skip: reason ?? false, timeout: 90000 }, async () => {
    const A = await openPage();
    const B = await openPage();
    const C = await openPage(); // another room: must see nothing of r1
    for (const { requests } of [A, B, C]) {
      assert.ok(requests.some((u) => u.startsWith(`${srv.url}/socket.io/socket.io`)), "client bundle loaded from the node");
      const foreign = requests.filter((u) => !u.startsWith(srv.url) && !u.startsWith("data:"));
      assert.deepEqual(foreign, [], "no request leaves the node");
    }
    await join(A.page, "r1", "alice");
    await join(B.page, "r1", "bob");
    await join(C.page, "r2", "carol");
    await h.sleep(500); // joins are fire-and-forget emits

    await send(A.page, "hello from A");
    await messageItem(B.page, "hello from A").waitFor();
    await messageItem(A.page, "hello from A").waitFor();
    assert.equal(await B.page.locator("#input").inputValue(), "");

    // B types: A sees the indicator, B does not see its own
    await B.page.click("#input");
    await B.page.locator("#input").pressSequentially("reply", { delay: 40 });
    await A.page.waitForFunction(() => (document.querySelector("#typing")?.textContent ?? "").trim().length > 0);
    assert.equal((await B.page.locator("#typing").textContent() ?? "").trim(), "", "no typing indicator for yourself");

    await B.page.locator("#input").pressSequentially(" from B", { delay: 20 });
    await B.page.press("#input", "Enter");
    const li = messageItem(A.page, "reply from B");
    await li.waitFor();
    const text = await li.textContent();
    assert.ok(text.replace("reply from B", "").trim().length > 0, "the li shows the user too");
    if (await B.page.locator("#name").count()) assert.match(text, /bob/, "the user is the name typed in #name");
    await A.page.waitForFunction(() => (document.querySelector("#typing")?.textContent ?? "").trim() === "",
      null, { timeout: 10000 });

    await A.page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.equal(await messageItem(C.page, "hello from A").count(), 0, "room r2 must not get r1 messages");
    assert.equal(await messageItem(C.page, "reply from B").count(), 0);
    assert.deepEqual(pageErrors, [], "no page errors");
  });

  test("the page works with its chat logic in an external app server (--demo-logic api)",
    { skip: reason ?? pythonSkipReason() ?? false, timeout: 90000 }, async () => {
      const node = await h.startServer({
        kind: "skein", args: ["--demo", "--demo-logic", "api", "--grpc-port", "0", "--grpc-tokens", TOKEN],
      });
      let app;
      try {
        await h.until(() => /grpc listening on \S+/.test(node.stdout), 10000, "gRPC port printed");
        app = await startApp(/grpc listening on (\S+)/.exec(node.stdout)[1]);
        const A = await openPage(node.url);
        const B = await openPage(node.url);
        await join(A.page, "api-room", "alice");
        await join(B.page, "api-room", "bob");
        await h.sleep(500);
        await send(A.page, "through the app server");
        await messageItem(B.page, "through the app server").waitFor();
        assert.match(await messageItem(B.page, "through the app server").textContent(), /alice/);
        await B.page.click("#input");
        await B.page.locator("#input").pressSequentially("typing", { delay: 40 });
        await A.page.waitForFunction(() => /bob/.test(document.querySelector("#typing")?.textContent ?? ""));
        assert.deepEqual(pageErrors, [], "no page errors");
        h.assertAlive(node, "after the app-server chat");
      } finally {
        app?.proc.kill("SIGKILL");
        await node.stop("SIGKILL");
      }
    });

  test("two pages on two nodes chat in one room (redis adapter)", { skip: reason ?? false, timeout: 90000 }, async () => {
    const key = `skein-demo-${process.pid}-${Date.now()}`;
    const args = ["--demo", "--adapter", "redis", "--redis-url", "redis://127.0.0.1:6379", "--redis-key", key];
    const n1 = await h.startServer({ kind: "skein", args });
    const n2 = await h.startServer({ kind: "skein", args });
    try {
      const A = await openPage(n1.url);
      const B = await openPage(n2.url);
      await join(A.page, "cluster-room", "ana");
      await join(B.page, "cluster-room", "ben");
      await h.sleep(500);
      await send(A.page, "from node one");
      await messageItem(B.page, "from node one").waitFor();
      await B.page.click("#input");
      await B.page.locator("#input").pressSequentially("typing on node two", { delay: 30 });
      await A.page.waitForFunction(() => /ben/.test(document.querySelector("#typing")?.textContent ?? ""));
      await B.page.press("#input", "Enter");
      await messageItem(A.page, "typing on node two").waitFor();
      h.assertAlive(n1, "node one after the cross-node chat");
      h.assertAlive(n2, "node two after the cross-node chat");
    } finally {
      await n1.stop("SIGKILL");
      await n2.stop("SIGKILL");
    }
  });
});
