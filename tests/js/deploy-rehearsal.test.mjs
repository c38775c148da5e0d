// The local rehearsal of deploy/ (deploy/local: the code behind deploy/local/rehearse.sh)
// on each adapter that has an overlay with 3 nodes: Redis, 3 skein nodes configured from
// deploy/base/skein.toml and HAProxy (cookie affinity, as the ingress) in front; chat
// clients of the demo (half long-polling, half WebSocket) talk through a rolling
// restart in which every node is SIGTERMed after its replacement is ready.
// redis-streams: every client keeps its session and gets every message once, in order.
// redis (pub/sub, no recovery by design): every client comes back with a new session
// and the chat works across the new nodes.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";
import { startTopology } from "../../deploy/local/topology.mjs";
import { chatThroughRoll } from "../../deploy/local/scenario.mjs";

// Shorter than the 10 s of deploy/base/skein.toml, to keep the suite short; the
// timing itself is tested by tests/deploy (grace period) and recovery-cluster.test.mjs.
const DRAIN = ["--drain-period", "3000"];

for (const adapter of ["redis", "redis-streams", "nats"]) {
  describe(`local rehearsal of deploy/overlays/${adapter}`, () => {
    let t;
    before(async () => {
      t = await startTopology({ adapter, args: ["--demo", ...DRAIN], sticky: true });
    });
    after(async () => {
      h.closeClients();
      await t?.stop();
    });

    test("the nodes start with the base skein.toml, checked by skein --check-config", () => {
      assert.match(t.effective, /^config = ".*deploy\/base\/skein\.toml"/m);
      assert.match(t.effective, new RegExp(`^adapter = "${adapter}"  # --adapter`, "m"));
      assert.match(t.effective, /^grpc_tokens = \["<redacted>"\]/m);
      assert.ok(!t.effective.includes(t.tokens[0]), "the token is never printed");
      assert.equal(t.nodes.length, 3);
    });

    test("a rolling restart moves every chatting client to the new nodes", async () => {
      const report = await chatThroughRoll(t, { io: h.io, clients: 6, track: h.track });
      const detail = JSON.stringify(report, null, 1);
      assert.deepEqual(report.problems, [], detail);
      // Every node was replaced and drained cleanly; the cluster is 3 nodes again.
      assert.equal(report.exits.length, 3);
      for (const e of report.exits) assert.equal(e.code, 0, detail);
      assert.equal(report.nodes.lbUp, 3, detail);
      assert.deepEqual(report.nodes.peers, [2, 2, 2], detail);
      assert.ok(report.messages.confirmed > 20, `chat during the roll: ${detail}`);
      for (const c of report.clients) {
        assert.ok(c.connected && c.disconnects.length >= 1, `${c.name} moved and is back: ${detail}`);
        if (adapter !== "redis") {
          assert.deepEqual(c.ids, [c.firstId], `${c.name} kept its socket id`);
          assert.equal(c.recoveries, c.disconnects.length, `${c.name} recovered each time`);
          assert.equal(c.missing + c.duplicates + c.outOfOrder, 0, `${c.name} got every message once, in order`);
        } else {
          // Pub/sub persists nothing: each move is a new session.
          assert.equal(c.recoveries, 0, detail);
          assert.equal(c.ids.length, c.disconnects.length + 1, `${c.name}: a new session per move`);
        }
      }
    });
  });
}
