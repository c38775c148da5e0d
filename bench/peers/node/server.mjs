// Node socket.io peer for the Skein benchmark.
//
// Default socket.io settings; implements the bench handler contract on namespace "/":
//   echo(...args, ack)  -> ack(...args)
//   join(room, ack?)    -> socket.join(room); ack(room)
//   pub({room, ...})    -> io.to(room).emit("msg", obj)
//
// Usage: node server.mjs [--port N] [--host 127.0.0.1]
//        [--adapter memory|redis] [--redis-url URL] [--redis-key PREFIX]
// With `--adapter redis` (the bench's cluster cases) it uses @socket.io/redis-adapter
// (classic pub/sub, redis v4 client) with its defaults, the key as channel prefix.
// Prints `listening on HOST:PORT` on stdout once it accepts connections (with Redis,
// once both Redis connections are up).
import { createServer } from "node:http";
import { Server } from "socket.io";

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : def;
}

const port = Number(arg("port", "0"));
const host = arg("host", "127.0.0.1");
const adapter = arg("adapter", "memory");

const httpServer = createServer();
const io = new Server(httpServer);

if (adapter === "redis") {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: arg("redis-url", "redis://127.0.0.1:6379") });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub, { key: arg("redis-key", "socket.io") }));
} else if (adapter !== "memory") {
  console.error(`unknown adapter ${adapter} (memory, redis)`);
  process.exit(2);
}

io.on("connection", (socket) => {
  socket.on("echo", (...args) => {
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    if (ack) ack(...args);
    else socket.emit("echo", ...args);
  });
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack(room);
  });
  socket.on("pub", (obj) => {
    if (obj && obj.room !== undefined) io.to(obj.room).emit("msg", obj);
  });
});

httpServer.listen(port, host, () => {
  const addr = httpServer.address();
  process.stdout.write(`listening on ${addr.address}:${addr.port}\n`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
