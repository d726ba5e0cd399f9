// chldo streaming chat in k6: the same scenario as loadkit's Locust ChldoUser.
//
//   k6 run -e HOST=ws://127.0.0.1:8765 --vus 10 --duration 30s --out json=chldo.json.gz k6/chldo_stream.js
//   loadkit report --k6-json chldo.json.gz --out reports/chldo-k6
//
// Each VU opens one WebSocket, then loops: sendmsg, wait for END, think, next turn. Trend names are
// the Locust request names (request_type "chldo"), so `loadkit report` lines both tools up:
//   connect        WebSocket handshake (new WebSocket → open)
//   sendmsg        send → END (a failed turn adds 1 to loadkit_failures{op:sendmsg} instead)
//   time_to_start  send → START        ttft  send → first token (on_chat_model_stream)
//   som_to_eom     START → END         first_voice  send → first voice_ready
// Failures go to the Counter `loadkit_failures` tagged {op, kind[, error: the server's text]}. JS timers have 1 ms resolution.
//
// Options (-e NAME=value): HOST (required, ws:// or wss://), API_KEY (demo-key), RETURN_VOICE (unset:
// server default; 0 or 1), TURNS (turns per connection, default 10), THINK_MS (default 1000),
// TURN_TIMEOUT_MS (default 60000), SLO (loadkit --slo expressions as thresholds, ';'-separated, e.g.
// "ttft:p95<500ms;sendmsg:fail_rate<1%"; see loadkit_slo.js). Run length and VUs: k6's own --duration / --vus.

import { WebSocket } from 'k6/experimental/websockets'; // k6/websockets in k6 >= 1.2
import { Trend, Counter, Rate } from 'k6/metrics';
import exec from 'k6/execution';
import { sloThresholds } from './loadkit_slo.js';

const HOST = __ENV.HOST;
const API_KEY = __ENV.API_KEY || 'demo-key';
const RETURN_VOICE = __ENV.RETURN_VOICE;
const TURNS = parseInt(__ENV.TURNS || '10', 10);
const THINK_MS = parseInt(__ENV.THINK_MS || '1000', 10);
const TURN_TIMEOUT_MS = parseInt(__ENV.TURN_TIMEOUT_MS || '60000', 10);
const RUN_ID = __ENV.RUN_ID || `${Date.now().toString(36)}`;

const PROMPTS = [
  'Hello, nice to meet you',
  'What is the weather like today',
  'Tell me a short story about a cat',
  'How do I cook rice',
  '안녕 반가워요',
];

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
  // always-true thresholds make k6 keep per-operation failure counts in its end-of-test summary
  thresholds: {
    'loadkit_failures{op:connect}': ['count>=0'],
    'loadkit_failures{op:sendmsg}': ['count>=0'],
    ...sloThresholds(__ENV.SLO),
  },
};

const tConnect = new Trend('connect', true);
const tSendmsg = new Trend('sendmsg', true);
const tStart = new Trend('time_to_start', true);
const tTtft = new Trend('ttft', true);
const tSomEom = new Trend('som_to_eom', true);
const tVoice = new Trend('first_voice', true);
const failures = new Counter('loadkit_failures');
const failRate = new Rate('loadkit_fail_rate'); // per request {op}: 1 failed, 0 succeeded (SLO fail_rate)

export function setup() {
  if (!HOST || !/^wss?:\/\//.test(HOST)) {
    throw new Error('set -e HOST=ws://HOST:PORT (the chldo WebSocket URL)');
  }
}

function fail(op, kind, text) {
  const tags = { op: op, kind: kind };
  if (text) tags.error = String(text).slice(0, 100); // the server's own text, like Locust's failure message
  failures.add(1, tags);
  failRate.add(1, { op: op });
}

export default function () {
  const vu = exec.vu.idInTest;
  const userId = `k6-${RUN_ID}-u${vu}`;
  const roomUid = `k6${RUN_ID}r${vu}`;
  let turnsDone = 0;
  let turn = null; // {t0, tStart, tFirst, tVoice, timer}
  let promptIndex = vu;
  const t0 = Date.now();
  const ws = new WebSocket(HOST);

  function sendTurn() {
    const req = { action: 'sendmsg', room_uid: roomUid, user_id: userId, api_key: API_KEY,
                  msg: PROMPTS[promptIndex++ % PROMPTS.length] };
    if (RETURN_VOICE !== undefined && RETURN_VOICE !== '') req.return_voice = parseInt(RETURN_VOICE, 10);
    turn = { t0: Date.now(), tStart: null, tFirst: null, tVoice: null, timer: null };
    turn.timer = setTimeout(() => { fail('sendmsg', 'timeout'); turn = null; ws.close(); }, TURN_TIMEOUT_MS);
    ws.send(JSON.stringify(req));
  }

  function endTurn(ok, kind, text) {
    clearTimeout(turn.timer);
    const now = Date.now();
    if (ok) {
      tSendmsg.add(now - turn.t0);
      failRate.add(0, { op: 'sendmsg' });
      if (turn.tStart !== null) { tStart.add(turn.tStart - turn.t0); tSomEom.add(now - turn.tStart); }
      if (turn.tFirst !== null) tTtft.add(turn.tFirst - turn.t0);
      if (turn.tVoice !== null) tVoice.add(turn.tVoice - turn.t0);
    } else {
      fail('sendmsg', kind, text);
    }
    turn = null;
    turnsDone++;
    if (turnsDone >= TURNS) { ws.close(); return; }
    setTimeout(sendTurn, THINK_MS);
  }

  ws.onopen = () => {
    tConnect.add(Date.now() - t0);
    failRate.add(0, { op: 'connect' });
    sendTurn();
  };
  ws.onerror = (e) => {
    if (turn === null && turnsDone === 0) fail('connect', 'error');
    else if (turn !== null) { clearTimeout(turn.timer); fail('sendmsg', 'connection_lost'); turn = null; }
  };
  ws.onclose = () => {
    if (turn !== null) { clearTimeout(turn.timer); fail('sendmsg', 'connection_lost'); turn = null; }
  };
  ws.onmessage = (e) => {
    if (turn === null) return; // a frame between turns: Locust reports it as "protocol"; k6 ignores it
    let f;
    try { f = JSON.parse(e.data); } catch (err) { endTurn(false, 'protocol'); return; }
    const now = Date.now();
    const status = f.status;
    if (f.msgtype === 'error') {
      if (turn.tStart === null) { endTurn(false, 'validation', f.msg); return; } // single frame, no END follows
      turn.error = f.msg || 'error'; // in-stream error: the stream still ENDs
      return;
    }
    if (status === 'START') { if (turn.tStart === null) turn.tStart = now; return; }
    if (status === 'stream' || f.event === 'on_chat_model_stream') { if (turn.tFirst === null) turn.tFirst = now; return; }
    if (status === 'voice_ready') { if (turn.tVoice === null) turn.tVoice = now; return; }
    if (status === 'END') { endTurn(!turn.error, 'stream_error', turn.error); }
  };
}
