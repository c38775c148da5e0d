// Child processes of a rehearsal (skein nodes, redis-server, HAProxy): spawned here,
// killed when the Node process exits for any reason, so nothing outlives a run.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { request } from "node:http";
import { setTimeout as delay } from "node:timers/promises";

const live = new Set();

function killAll() {
  for (const p of live) {
    try { p.kill("SIGKILL"); } catch { /* already gone */ }
  }
}
process.on("exit", killAll);

/** Spawn `cmd` and keep its output; the process is SIGKILLed at exit if still running. */
export function run(cmd, args, { env, cwd } = {}) {
  const proc = spawn(cmd, args, { cwd, env: env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
  live.add(proc);
  const p = {
    proc,
    stdout: "",
    stderr: "",
    exited: new Promise((resolve) => proc.once("exit", (code, signal) => { live.delete(proc); resolve({ code, signal }); })),
    get running() { return proc.exitCode === null && proc.signalCode === null; },
    /** Resolves with the first match of `re` on stdout or stderr; rejects on exit or timeout. */
    waitFor(re, ms, what) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`${what}: not within ${ms} ms\n${p.stderr.slice(-2000)}`)), ms);
        const check = () => { const m = re.exec(p.stdout) || re.exec(p.stderr); if (m) done(null, m); };
        const onData = () => check();
        const done = (err, m) => {
          clearTimeout(timer);
          proc.stdout.off("data", onData);
          proc.stderr.off("data", onData);
          if (err) reject(err); else resolve(m);
        };
        proc.stdout.on("data", onData);
        proc.stderr.on("data", onData);
        p.exited.then(({ code, signal }) => done(new Error(`${what}: exited (code ${code}, signal ${signal})\n${p.stderr.slice(-2000)}`)));
        check();
      });
    },
    /** Signal it and wait up to `ms` for the exit; SIGKILL after that. */
    async stop(signal = "SIGTERM", ms = 5000) {
      if (!p.running) return p.exited;
      proc.kill(signal);
      const r = await Promise.race([p.exited, delay(ms, null, { ref: false })]);
      if (r) return r;
      proc.kill("SIGKILL");
      return p.exited;
    },
  };
  proc.stdout.setEncoding("utf8").on("data", (d) => { p.stdout += d; });
  proc.stderr.setEncoding("utf8").on("data", (d) => { p.stderr += d; });
  // An error event (binary missing) must not crash the caller: it shows as an exit.
  proc.once("error", (e) => { p.stderr += `\n${e.message}`; live.delete(proc); });
  return p;
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** GET http://127.0.0.1:port/path: {status, body}; rejects on error or after `ms`. */
export function httpGet(port, path, ms = 1000) {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, timeout: ms }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on("error", reject);
    req.end();
  });
}

/** Polls `cond` every 50 ms until it is true; throws after `ms`. */
export async function until(cond, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timeout after ${ms} ms waiting for ${what}`);
    await delay(50);
  }
}
