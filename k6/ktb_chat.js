// KTB Chat (Socket.IO) in k6: the same scenario as loadkit's Locust KtbChatUser.
//
//   loadkit serve ktb --host 127.0.0.1 --port 5002 --rest-port 5001 &      # Java variant: two ports
//   k6 run -e HOST=http://127.0.0.1:5001 -e SOCKET_URL=http://127.0.0.1:5002 \
//          --vus 10 --duration 30s --out json=ktb.json.gz k6/ktb_chat.js
//   loadkit serve ktb --variant node --port 5000 &                          # Node variant: one port
//   k6 run -e HOST=http://127.0.0.1:5000 --vus 10 --duration 30s k6/ktb_chat.js
//   loadkit report --k6-json ktb.json.gz --out reports/ktb-k6
//
// Server variant (-e VARIANT=auto|java|node, default auto, decided in setup() and printed):
// two URLs or GET /api/health 200 -> java; one URL with GET /health 200 and /api/health 404 -> node.
// Per variant, as in docs/ktb-users.md "Server variants": on Node, register already logs in,
// markMessagesAsRead and leaveRoom answer the sender nothing (they are counted in
// Counter loadkit_emitted{op}, never timed: k6 VUs share no memory, so the witness figures
// read_receipt / leave_seen of the Locust users have no k6 counterpart), a re-join waits until
// GET /api/rooms/:id no longer lists the VU and needs the full joinRoomSuccess listing it, and a
// fetch waits 350 ms after the previous reply (the server drops fetches within 300 ms).
//
// k6 has no Socket.IO client, so the framing is done by hand over k6's WebSocket:
// Engine.IO open `0{...}`, ping `2` -> pong `3`, Socket.IO CONNECT `40{auth}` -> `40{sid}` or
// CONNECT_ERROR `44{...}`, events `42["name",payload]`, ack request `42<id>[...]` -> `43<id>[...]`.
//
// Trend names are the Locust request names (request_type "ktb"), so `loadkit report` lines both
// tools up; REST calls keep their path as the request name (`/api/auth/login`, …):
//   connect                WebSocket open start -> Socket.IO CONNECT ack
//   joinRoom               joinRoom -> joinRoomSuccess for that room
//   chatMessage            chatMessage -> the server's `message` broadcast of our own content
//   fetchPreviousMessages  -> previousMessagesLoaded
//   markMessagesAsRead     (up to 3 recent ids) -> our own messagesRead broadcast (Java only)
//   messageReaction        add, then remove (two samples) -> messageReactionUpdate showing it
//   leaveRoom              -> its Socket.IO ack (then joinRoom again, its own sample) (Java only)
//   delivery               another VU's chatMessage: its send time (in the content) -> our receipt
// Failures: Counter `loadkit_failures` tagged {op, kind[, error: the server's text]}. JS timers have 1 ms resolution.
//
// Message content carries a nonce "k6 <vu>~<seq>~<ms>" with every number written in groups of
// at most 3 digits separated by '.', so it never holds a run of 4+ letters/digits and can never
// contain one of the server's random [a-z0-9]{4,10} banned words.
//
// Options (-e NAME=value): HOST (REST base URL, required), SOCKET_URL (Socket.IO base URL, default
// HOST), ROOM_SIZE (VUs per room, default 10), OPS (operations per socket session, default 30),
// THINK_MIN_MS / THINK_MAX_MS (default 1000 / 3000), TIMEOUT_MS (default 10000), PASSWORD,
// RUN_ID (account prefix; default: new accounts every run). Run length and VUs: --duration / --vus.

import http from 'k6/http';
import { WebSocket } from 'k6/experimental/websockets'; // k6/websockets in k6 >= 1.2
import { Trend, Counter, Rate } from 'k6/metrics';
import { sloThresholds } from './loadkit_slo.js';
import exec from 'k6/execution';

const HOST = (__ENV.HOST || '').replace(/\/+$/, '');
const SOCKET_URL = (__ENV.SOCKET_URL || HOST).replace(/\/+$/, '');
const ROOM_SIZE = parseInt(__ENV.ROOM_SIZE || '10', 10);
const OPS = parseInt(__ENV.OPS || '30', 10);
const THINK_MIN_MS = parseInt(__ENV.THINK_MIN_MS || '1000', 10);
const THINK_MAX_MS = parseInt(__ENV.THINK_MAX_MS || '3000', 10);
const TIMEOUT_MS = parseInt(__ENV.TIMEOUT_MS || '10000', 10);
const VARIANT_OPT = (__ENV.VARIANT || 'auto').toLowerCase();
const PASSWORD = __ENV.PASSWORD || 'loadkit-pass-1';
const EMOJI = '👍';
const WEIGHTS = [['chatMessage', 10], ['fetchPreviousMessages', 2], ['markMessagesAsRead', 3], ['messageReaction', 1], ['rejoin', 1]];

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
  // always-true thresholds make k6 keep per-operation failure counts in its end-of-test summary
  thresholds: {
    ...Object.fromEntries(
      ['connect', 'joinRoom', 'chatMessage', 'fetchPreviousMessages', 'markMessagesAsRead', 'messageReaction', 'leaveRoom', 'login']
        .map((op) => [`loadkit_failures{op:${op}}`, ['count>=0']])),
    ...sloThresholds(__ENV.SLO), // loadkit --slo expressions (-e SLO="chatMessage:p99<200ms;delivery:p99<300ms")
  },
};

const trends = {};
for (const n of ['connect', 'joinRoom', 'chatMessage', 'fetchPreviousMessages', 'markMessagesAsRead', 'messageReaction', 'leaveRoom', 'delivery']) {
  trends[n] = new Trend(n, true);
}
const failures = new Counter('loadkit_failures');
const failRate = new Rate('loadkit_fail_rate'); // per request {op}: 1 failed, 0 succeeded (SLO fail_rate)
const emitted = new Counter('loadkit_emitted'); // fire-and-forget emits (Node), tagged {op}

// "1795260867123" -> "1.795.260.867.123": never 4 digits in a row
function grp(n) {
  const s = String(Math.floor(n));
  const head = s.length % 3 || 3;
  const parts = [s.slice(0, head)];
  for (let i = head; i < s.length; i += 3) parts.push(s.slice(i, i + 3));
  return parts.join('.');
}
function ungrp(s) { return parseInt(s.replace(/\./g, ''), 10); }
const NONCE = /^k6 ([0-9.]+)~([0-9.]+)~([0-9.]+)~([0-9.]+)$/;

function wsUrl(base) {
  return base.replace(/^http/, 'ws') + '/socket.io/?EIO=4&transport=websocket';
}

function jsonBody(res) {
  try { return res.json(); } catch (e) { return {}; }
}

export function setup() {
  if (!/^https?:\/\//.test(HOST)) throw new Error('set -e HOST=http://HOST:PORT (the KTB REST base URL)');
  // a run id made only of groups of <= 3 digits: account names stay banned-word safe too
  const runId = __ENV.RUN_ID || grp(Date.now() % 1e9);
  return { runId: runId, variant: detectVariant() };
}

// the rules of ktb_variants.detect_variant
function detectVariant() {
  if (VARIANT_OPT === 'java' || VARIANT_OPT === 'node') { console.log(`KTB server variant ${VARIANT_OPT} (VARIANT)`); return VARIANT_OPT; }
  if (SOCKET_URL !== HOST) { console.log('KTB server variant java (REST and Socket.IO on two URLs)'); return 'java'; }
  const api = http.get(`${HOST}/api/health`, { tags: { name: '/api/health' }, responseCallback: http.expectedStatuses(200, 404) });
  if (api.status === 200) { console.log('KTB server variant java (GET /api/health 200)'); return 'java'; }
  const h = http.get(`${HOST}/health`, { tags: { name: '/health' }, responseCallback: http.expectedStatuses(200, 404) });
  if (h.status === 200) { console.log(`KTB server variant node (one URL, GET /health 200, GET /api/health ${api.status})`); return 'node'; }
  throw new Error(`KTB REST at ${HOST} not healthy: GET /api/health ${api.status}, GET /health ${h.status}`);
}

// ---- per-VU state (each VU has its own JS runtime, so module globals are per VU) -------------
let account = null; // {token, sessionId, userId, email}
let roomId = null;
let seq = 0;

function login(runId) {
  const email = `k6.${runId}.vu.${grp(exec.vu.idInTest)}@loadkit.test`;
  const headers = { 'Content-Type': 'application/json' };
  const reg = http.post(`${HOST}/api/auth/register`, JSON.stringify({ name: `k6 user ${exec.vu.idInTest}`, email: email, password: PASSWORD }),
    { headers: headers, tags: { name: '/api/auth/register' }, responseCallback: http.expectedStatuses(200, 201, 409) });
  if (![200, 201, 409].includes(reg.status)) { failures.add(1, { op: 'login', kind: `register_${reg.status}` }); return null; }
  const r = jsonBody(reg);
  if (reg.status === 201 && r.token && r.sessionId && r.user) { // Node: register logs in
    return { token: r.token, sessionId: r.sessionId, userId: r.user._id || r.user.id, email: email };
  }
  const res = http.post(`${HOST}/api/auth/login`, JSON.stringify({ email: email, password: PASSWORD }),
    { headers: headers, tags: { name: '/api/auth/login' } });
  const data = jsonBody(res);
  if (res.status !== 200 || !data.token || !data.sessionId) { failures.add(1, { op: 'login', kind: `login_${res.status}` }); return null; }
  const user = data.user || {};
  return { token: data.token, sessionId: data.sessionId, userId: user._id || user.id, email: email };
}

function authHeaders() {
  return { 'Content-Type': 'application/json', 'x-auth-token': account.token, 'x-session-id': account.sessionId };
}

// The room of this VU's group: the group's first VU creates it, the others find it by name.
function roomFor(runId) {
  const group = Math.floor((exec.vu.idInTest - 1) / ROOM_SIZE);
  const name = `k6 ${runId} room ${grp(group)}`;
  const leader = (exec.vu.idInTest - 1) % ROOM_SIZE === 0;
  if (leader) {
    const res = http.post(`${HOST}/api/rooms`, JSON.stringify({ name: name }), { headers: authHeaders(), tags: { name: '/api/rooms' } });
    const d = jsonBody(res).data;
    if ((res.status === 200 || res.status === 201) && d && d._id) return d._id;
    failures.add(1, { op: 'room', kind: `create_${res.status}` });
    return null;
  }
  return null; // found by searchRoom, polled from the async part
}

function searchRoom(runId) {
  const group = Math.floor((exec.vu.idInTest - 1) / ROOM_SIZE);
  const name = `k6 ${runId} room ${grp(group)}`;
  const res = http.get(`${HOST}/api/rooms?page=0&pageSize=10&search=${encodeURIComponent(name)}`, { headers: authHeaders(), tags: { name: '/api/rooms?search' } });
  const body = jsonBody(res);
  const list = Array.isArray(body.data) ? body.data : (body.data && Array.isArray(body.data.rooms) ? body.data.rooms : (Array.isArray(body.rooms) ? body.rooms : []));
  const hit = list.find((r) => r && r.name === name);
  return hit ? hit._id : null;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const think = () => pause(THINK_MIN_MS + Math.random() * Math.max(0, THINK_MAX_MS - THINK_MIN_MS));

function pickOp() {
  const total = WEIGHTS.reduce((a, w) => a + w[1], 0);
  let r = Math.random() * total;
  for (const [name, w] of WEIGHTS) { if ((r -= w) < 0) return name; }
  return 'chatMessage';
}

// A Socket.IO client on k6's WebSocket, just enough for this scenario.
class SocketIO {
  constructor(url, auth) {
    this.waiters = []; // {event, match, resolve, reject, timer}
    this.acks = {};
    this.ackId = 0;
    this.handlers = {};
    this.closed = false;
    this.t0 = Date.now();
    this.ws = new WebSocket(url);
    this.ready = new Promise((resolve, reject) => {
      this.ws.onmessage = (e) => this.onFrame(String(e.data), resolve, reject);
      this.ws.onerror = (e) => { this.fail(new Error(`websocket error: ${e.error || e}`)); reject(new Error('websocket error')); };
      this.ws.onclose = () => { this.closed = true; this.fail(new Error('disconnected')); reject(new Error('closed before CONNECT')); };
    });
    this.auth = auth;
  }

  onFrame(f, connected, refused) {
    const eio = f[0];
    if (eio === '0') { this.ws.send('40' + JSON.stringify(this.auth)); return; } // Engine.IO open
    if (eio === '2') { this.ws.send('3'); return; } // ping -> pong
    if (eio !== '4') return;
    const sio = f[1];
    if (sio === '0') { connected(Date.now() - this.t0); return; }
    if (sio === '4') { refused(new Error(`CONNECT_ERROR ${f.slice(2, 200)}`)); return; }
    let rest = f.slice(2);
    let id = '';
    while (rest.length && rest[0] >= '0' && rest[0] <= '9') { id += rest[0]; rest = rest.slice(1); }
    let args;
    try { args = JSON.parse(rest); } catch (err) { return; }
    if (sio === '3') { const a = this.acks[id]; if (a) { delete this.acks[id]; clearTimeout(a.timer); a.resolve(args); } return; }
    if (sio !== '2' || !Array.isArray(args)) return;
    const [event, ...payload] = args;
    const h = this.handlers[event];
    if (h) h(payload[0]);
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i];
      if ((w.event === event && w.match(payload[0])) || (w.errors.includes(event) && w.errMatch(payload[0]))) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        if (w.event === event) w.resolve(payload[0]);
        else {
          const p = payload[0] || {};
          const kind = p.code || p.type || ''; // Node's load errors carry `type`
          w.reject(new Error(`${event}: ${kind}${kind && p.message ? ' ' : ''}${p.message || ''}`.slice(0, 120)));
        }
        return;
      }
    }
  }

  on(event, fn) { this.handlers[event] = fn; }

  emit(event, payload) { this.ws.send('42' + JSON.stringify([event, payload])); }

  // emit and wait for `answer` matching `match`; `errors` events fail it
  request(event, payload, answer, match, errors) {
    return new Promise((resolve, reject) => {
      const w = { event: answer, match: match || (() => true), errors: errors || ['error'], errMatch: () => true, resolve: resolve, reject: reject };
      w.timer = setTimeout(() => { this.waiters.splice(this.waiters.indexOf(w), 1); reject(new Error('timeout')); }, TIMEOUT_MS);
      this.waiters.push(w);
      this.emit(event, payload);
    });
  }

  call(event, payload) {
    return new Promise((resolve, reject) => {
      const id = String(this.ackId++);
      const timer = setTimeout(() => { delete this.acks[id]; reject(new Error('timeout')); }, TIMEOUT_MS);
      this.acks[id] = { resolve: resolve, timer: timer };
      this.ws.send('42' + id + JSON.stringify([event, payload]));
    });
  }

  fail(err) {
    for (const w of this.waiters.splice(0)) { clearTimeout(w.timer); w.reject(err); }
    for (const id of Object.keys(this.acks)) { clearTimeout(this.acks[id].timer); delete this.acks[id]; }
  }

  close() { if (!this.closed) { this.closed = true; this.ws.close(); } }
}

function kindOf(err) {
  const m = String(err && err.message || err);
  if (m === 'timeout') return 'timeout';
  if (m === 'disconnected') return 'disconnect';
  if (m.includes('세션이 만료되었습니다')) return 'SESSION_EXPIRED'; // Node: MESSAGE_ERROR with this text
  const code = m.match(/: ([A-Z_]{4,})/);
  return code ? code[1] : 'error';
}

// time one operation: its Trend on success, loadkit_failures{op, kind} on failure
async function timed(op, fn) {
  const t0 = Date.now();
  try {
    const v = await fn();
    trends[op].add(Date.now() - t0);
    failRate.add(0, { op: op });
    return v;
  } catch (err) {
    const tags = { op: op, kind: kindOf(err) };
    const text = String((err && err.message) || err);
    if (tags.kind !== 'timeout' && tags.kind !== 'disconnect') tags.error = text.slice(0, 100); // the server's text
    failures.add(1, tags);
    failRate.add(1, { op: op });
    throw err;
  }
}

export default async function (data) {
  if (account === null) {
    account = login(data.runId);
    if (account === null) { await pause(1000); return; }
  }
  if (roomId === null) {
    roomId = roomFor(data.runId);
    for (let i = 0; roomId === null && i < 20; i++) {
      roomId = searchRoom(data.runId);
      if (roomId === null) await pause(500);
    }
    if (roomId === null) { failures.add(1, { op: 'room', kind: 'not_found' }); return; }
  }
  const me = exec.vu.idInTest;
  const recent = [];
  const sio = new SocketIO(wsUrl(SOCKET_URL), { token: account.token, sessionId: account.sessionId });
  sio.on('message', (m) => {
    if (!m || typeof m !== 'object') return;
    if (m._id && (m.room === undefined || m.room === roomId)) { recent.push(m._id); if (recent.length > 50) recent.shift(); }
    const n = typeof m.content === 'string' && m.content.match(NONCE);
    if (n && ungrp(n[1]) !== me) trends.delivery.add(Math.max(0, Date.now() - ungrp(n[3])));
  });
  sio.on('duplicate_login', () => { account = null; });
  sio.on('session_ended', () => { account = null; });
  try {
    const ms = await sio.ready;
    trends.connect.add(ms);
  } catch (err) {
    failures.add(1, { op: 'connect', kind: String(err.message).startsWith('CONNECT_ERROR') ? 'connect_error' : 'error' });
    account = null; // log in again next iteration
    sio.close();
    await pause(1000);
    return;
  }
  const node = data.variant === 'node';
  const joinMatch = (p) => p && p.roomId === roomId;
  const listed = (r) => Array.isArray(r && r.participants) && r.participants.some((u) => u && (u._id || u.id) === account.userId);
  // Node: the leave is complete once REST no longer lists this VU (no event tells the leaver)
  const awaitLeft = async () => {
    for (let i = 0; i < TIMEOUT_MS / 100; i++) {
      const res = http.get(`${HOST}/api/rooms/${roomId}`, { headers: authHeaders(), tags: { name: '/api/rooms/[id]' } });
      if (res.status === 200 && !listed(jsonBody(res).data)) return;
      await pause(100);
    }
  };
  // Java: any joinRoomSuccess for the room; Node: only the full form listing us (a short one means
  // the join overtook a leave: wait until the leave completed, then join again; only that is timed)
  const join = async () => {
    for (let attempt = 0; ; attempt++) {
      const t0 = Date.now();
      let r;
      try {
        r = await sio.request('joinRoom', roomId, 'joinRoomSuccess', joinMatch, ['joinRoomError']);
      } catch (err) {
        failures.add(1, { op: 'joinRoom', kind: kindOf(err), error: String(err.message || err).slice(0, 100) });
        throw err;
      }
      if (!node || listed(r)) {
        trends.joinRoom.add(Date.now() - t0);
        for (const m of (r && r.messages) || []) if (m && m._id) recent.push(m._id);
        return;
      }
      if (attempt >= 2) { failures.add(1, { op: 'joinRoom', kind: 'JOIN_NOT_LISTED' }); throw new Error('not listed'); }
      await awaitLeft();
    }
  };
  let lastFetch = 0;
  const chat = () => {
    const content = `k6 ${grp(me)}~${grp(++seq)}~${grp(Date.now())}~${grp(exec.vu.iterationInInstance)}`;
    return timed('chatMessage', () => sio.request('chatMessage', { room: roomId, type: 'text', content: content }, 'message', (m) => m && m.content === content));
  };
  try {
    await join();
    for (let i = 0; i < OPS && !sio.closed; i++) {
      const op = pickOp();
      try {
        if (op === 'chatMessage') {
          await chat();
        } else if (op === 'fetchPreviousMessages') {
          if (node && Date.now() - lastFetch < 350) await pause(350 - (Date.now() - lastFetch));
          try {
            await timed('fetchPreviousMessages', () => sio.request('fetchPreviousMessages', { roomId: roomId, limit: 30 }, 'previousMessagesLoaded'));
          } finally { lastFetch = Date.now(); }
        } else if (op === 'markMessagesAsRead') {
          if (!recent.length) await chat();
          const ids = recent.slice(-3);
          const same = (p) => p && p.userId === account.userId && JSON.stringify(p.messageIds) === JSON.stringify(ids);
          if (node) { sio.emit('markMessagesAsRead', { roomId: roomId, messageIds: ids }); emitted.add(1, { op: 'markMessagesAsRead' }); }
          else await timed('markMessagesAsRead', () => sio.request('markMessagesAsRead', { roomId: roomId, messageIds: ids }, 'messagesRead', same));
        } else if (op === 'messageReaction') {
          if (!recent.length) await chat();
          const mid = recent[recent.length - 1];
          for (const type of ['add', 'remove']) {
            const shows = (p) => {
              if (!p || p.messageId !== mid) return false;
              const users = (p.reactions || {})[EMOJI] || [];
              return (type === 'add') === users.includes(account.userId);
            };
            await timed('messageReaction', () => sio.request('messageReaction', { messageId: mid, reaction: EMOJI, type: type }, 'messageReactionUpdate', shows));
          }
        } else if (op === 'rejoin') {
          if (node) {
            sio.emit('leaveRoom', roomId);
            emitted.add(1, { op: 'leaveRoom' });
            await awaitLeft();
          } else {
            await timed('leaveRoom', () => sio.call('leaveRoom', roomId));
          }
          await join();
        }
      } catch (err) {
        if (kindOf(err) === 'SESSION_EXPIRED') { account = null; break; }
        if (kindOf(err) === 'RATE_LIMIT_EXCEEDED') await pause(1000);
      }
      await think();
    }
  } catch (err) {
    // joinRoom failed: already counted; start over with a new session next iteration
  }
  sio.close();
}
