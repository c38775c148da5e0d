// HAProxy in front of skein nodes, configured as the Kubernetes setup behaves:
// health checks on /health/ready drop a draining node at once (readiness probe), an
// admin socket takes a server out before it is stopped (the endpoint removal of a pod
// deletion) and, with `sticky`, a cookie pins long-polling sessions to their node (the
// ingress-nginx / Gateway API session affinity of deploy/ingress).
import { execFileSync } from "node:child_process";
import { createConnection } from "node:net";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { run, freePort, httpGet, until } from "./procs.mjs";

function haproxyBin() {
  for (const p of [process.env.HAPROXY_BIN, "/usr/sbin/haproxy", "haproxy"]) {
    if (!p) continue;
    try { execFileSync(p, ["-v"], { stdio: "ignore" }); return p; } catch { /* next */ }
  }
  throw new Error("haproxy not found (apt-get install haproxy, or set HAPROXY_BIN)");
}

/**
 * Start HAProxy on a free 127.0.0.1 port with one backend server per `servers` entry
 * ({name, port}); servers that are not listening yet are simply down until they are.
 * Returns {url, port, log, cmd(line), state(), disable(name), stop()}.
 */
export async function startHaproxy(servers, { sticky = false, onSpawn = (p) => p } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "skein-haproxy-"));
  const sock = path.join(dir, "admin.sock");
  const cfg = path.join(dir, "haproxy.cfg");
  writeFileSync(cfg, `
global
  maxconn 4096
  stats socket ${sock} mode 600 level admin
defaults
  mode http
  timeout connect 500ms
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  retries 3
  option redispatch
frontend fe
  bind 127.0.0.1:${port}
  default_backend skein
backend skein
  balance roundrobin
  option httpchk GET /health/ready
  default-server inter 200ms fall 1 rise 2
${sticky ? "  cookie SKEINLB insert indirect nocache\n" : ""}${servers.map((s) => `  server ${s.name} 127.0.0.1:${s.port} check${sticky ? ` cookie ${s.name}` : ""}`).join("\n")}
`);
  const p = run(haproxyBin(), ["-f", cfg, "-db"]);
  onSpawn(p.proc);
  const lb = {
    port,
    url: `http://127.0.0.1:${port}`,
    proc: p.proc,
    get log() { return p.stdout + p.stderr; },
    /** One command on the admin socket; resolves with the answer. */
    cmd(line) {
      return new Promise((resolve, reject) => {
        const c = createConnection(sock);
        let out = "";
        c.setEncoding("utf8");
        c.on("connect", () => c.end(`${line}\n`));
        c.on("data", (d) => { out += d; });
        c.on("end", () => resolve(out));
        c.on("error", reject);
        c.setTimeout(2000, () => c.destroy(new Error(`haproxy: ${line}: timeout`)));
      });
    },
    /** {server name: "UP" | "DOWN" | "MAINT" | ...} from `show stat`. */
    async state() {
      const csv = await lb.cmd("show stat");
      const [head, ...rows] = csv.trim().split("\n");
      const cols = head.replace(/^# /, "").split(",");
      const [px, sv, st] = ["pxname", "svname", "status"].map((c) => cols.indexOf(c));
      const out = {};
      for (const r of rows) {
        const f = r.split(",");
        if (f[px] === "skein" && !["FRONTEND", "BACKEND"].includes(f[sv])) out[f[sv]] = f[st];
      }
      return out;
    },
    /** No new connections to `name` (existing ones go on): a pod's endpoint removal. */
    disable: (name) => lb.cmd(`disable server skein/${name}`),
    async stop() {
      await p.stop("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await until(async () => {
      try { return (await httpGet(port, "/health/ready", 500)).status === 200; } catch { return false; }
    }, 10000, "haproxy with a ready server");
  } catch (e) {
    await lb.stop();
    throw new Error(`${e.message}\n${lb.log}`);
  }
  return lb;
}
