// The example app server (examples/chat-app-server, Python, gRPC API only) as a test
// process: chat-app-server.test.mjs and demo.test.mjs (in Chromium) drive it.
import { spawn, spawnSync } from "node:child_process";
import path from "node:path";
import assert from "node:assert/strict";
import * as h from "./harness.mjs";

export const PYTHON = process.env.SKEIN_PYTHON || "python3";
export const APP = path.join(h.REPO, "examples/chat-app-server/app.py");
export const TOKEN = "chat-app-token";

export function pythonSkipReason() {
  if (h.TARGET !== "skein") return "the gRPC API is skein's (SKEIN_TEST_TARGET is not skein)";
  const r = spawnSync(PYTHON, ["-c", "import grpc, grpc_tools"], { stdio: "ignore" });
  if (r.status !== 0 && !process.env.SKEIN_REQUIRE_PYTHON) {
    return `${PYTHON} lacks grpcio/grpcio-tools (pip install -r tests/python/requirements.txt); set SKEIN_REQUIRE_PYTHON=1 to make this a failure`;
  }
  return null;
}

/** Starts the app server against `grpcAddr`; resolves once it has subscribed. */
export async function startApp(grpcAddr) {
  const proc = spawn(PYTHON, [APP, "--grpc", grpcAddr, "--token", TOKEN], {
    cwd: h.REPO, stdio: ["ignore", "pipe", "pipe"],
  });
  h.trackProcess(proc);
  let out = "";
  proc.stdout.setEncoding("utf8").on("data", (d) => { out += d; });
  proc.stderr.setEncoding("utf8").on("data", (d) => { out += d; });
  await h.until(() => /subscribed to/.test(out) || proc.exitCode !== null, 20000, "app server subscribed");
  assert.equal(proc.exitCode, null, `app server exited: ${out}`);
  return { proc, get output() { return out; } };
}

