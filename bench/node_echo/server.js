// Minimal KTB-compatible Node socket.io 4 echo server, for bench/bench_ktb_users.py ONLY.
//
// Why: the Python reference server (loadkit serve ktb) cannot answer 20k+ chat round trips/s on one
// core, so the client benchmark needs a faster target. This speaks just enough of the KTB API on
// ONE port (the Node deployment shape): REST register/login/rooms, Socket.IO auth, joinRoom,
// chatMessage (broadcast `message` to the room, sender included), fetchPreviousMessages,
// markMessagesAsRead, messageReaction, leaveRoom (acked). No persistence, no real auth.
//
//   node bench/node_echo/server.js PORT        (socket.io installed in bench/node_modules)
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = parseInt(process.argv[2] || "5002", 10);
let nextId = 1;
const oid = () => (nextId++).toString(16).padStart(24, "0");

function body(req) {
  return new Promise((resolve) => {
    let s = "";
    req.on("data", (c) => (s += c));
    req.on("end", () => {
      try { resolve(JSON.parse(s || "{}")); } catch (e) { resolve({}); }
    });
  });
}

const users = new Map(); // email -> user
const server = http.createServer(async (req, res) => {
  const send = (status, obj) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(obj));
  };
  if (req.url.startsWith("/socket.io")) return; // handled by socket.io
  const b = req.method === "POST" ? await body(req) : {};
  if (req.url === "/api/health") return send(200, { status: "ok" });
  if (req.url === "/api/auth/register") {
    if (users.has(b.email)) return send(409, { success: false, message: "exists" });
    const u = { _id: oid(), name: b.name, email: b.email };
    users.set(b.email, u);
    return send(201, { success: true, user: u });
  }
  if (req.url === "/api/auth/login") {
    const u = users.get(b.email);
    if (!u) return send(401, { success: false });
    return send(200, { success: true, token: "t" + u._id, sessionId: "s" + u._id, user: u });
  }
  if (req.url === "/api/rooms" && req.method === "POST") {
    return send(201, { success: true, data: { _id: oid(), name: b.name, participants: [] } });
  }
  send(404, { success: false });
});

// PING_MS (optional): Engine.IO ping interval and timeout, so the idle benchmark can prove within
// seconds that every held connection answers pings (socket.io's defaults: 25 s and 20 s)
const pingMs = parseInt(process.env.PING_MS || "0", 10);
const pingOpts = pingMs > 0 ? { pingInterval: pingMs, pingTimeout: pingMs } : {};
const io = new Server(server, { serveClient: false, perMessageDeflate: false, cors: { origin: "*" }, ...pingOpts });
io.use((socket, next) => {
  const a = socket.handshake.auth || {};
  if (!a.token || !a.sessionId) return next(new Error("Authentication error"));
  socket.data.userId = String(a.token).slice(1);
  next();
});
io.on("connection", (socket) => {
  const uid = socket.data.userId;
  const sender = { id: uid, name: "u", email: "u@x" };
  socket.on("joinRoom", (roomId) => {
    socket.join(roomId);
    socket.emit("joinRoomSuccess", { roomId, participants: [], messages: [], hasMore: false, activeStreams: [] });
  });
  socket.on("leaveRoom", (roomId, ack) => {
    socket.leave(roomId);
    if (typeof ack === "function") ack();
  });
  socket.on("chatMessage", (m) => {
    if (!m || !m.room) return socket.emit("error", { code: "MESSAGE_ERROR", message: "no room" });
    io.to(m.room).emit("message", {
      _id: oid(), room: m.room, content: m.content, sender, type: "text",
      timestamp: Date.now(), reactions: {}, metadata: {},
    });
  });
  socket.on("fetchPreviousMessages", () => {
    socket.emit("messageLoadStart");
    socket.emit("previousMessagesLoaded", { messages: [], hasMore: false });
  });
  socket.on("markMessagesAsRead", (p) => {
    for (const r of socket.rooms) if (r !== socket.id) io.to(r).emit("messagesRead", { userId: uid, messageIds: p.messageIds });
  });
  socket.on("messageReaction", (p) => {
    const reactions = p.type === "add" ? { [p.reaction]: [uid] } : {};
    socket.emit("messageReactionUpdate", { messageId: p.messageId, reactions });
  });
});
server.listen(port, "127.0.0.1", () => console.log(`node echo ready on 127.0.0.1:${port}`));
