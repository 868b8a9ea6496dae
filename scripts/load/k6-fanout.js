// k6 scenario for Switchyard over the client protocol (JSON, Centrifugo v2) with k6/ws, for
// people who already use k6. The native tool is `switchyard bench` (see README "Load testing");
// this script covers the same ground with k6's own metrics and thresholds:
//   - subscribers: ramping VUs (stages) that connect, subscribe, answer server pings ({} → {}),
//     count publications and record publish→delivery latency from the payload's send time;
//   - publisher: a constant arrival rate of POST /api/publish with X-API-Key, payloads in the
//     bench format {"p":0,"seq":N,"ts":<µs>,"pad":"…"}.
//
//   k6 run -e WS_URL=ws://127.0.0.1:8000/connection/websocket -e API_URL=http://127.0.0.1:8000 \
//          -e SECRET=switchyard-example-secret-change-me -e API_KEY=switchyard-example-api-key-change-me \
//          -e SUBSCRIBERS=1000 -e RATE=100 -e HOLD=60s scripts/load/k6-fanout.js
//
// Tokens are minted in the script (HS256 with SECRET), one user per VU. Loopback only.
import ws from 'k6/ws';
import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const WS_URL = __ENV.WS_URL || 'ws://127.0.0.1:8000/connection/websocket';
const API_URL = __ENV.API_URL || 'http://127.0.0.1:8000';
const SECRET = __ENV.SECRET || 'switchyard-example-secret-change-me';
const API_KEY = __ENV.API_KEY || 'switchyard-example-api-key-change-me';
const CHANNEL = __ENV.CHANNEL || 'chat:k6';
const SUBSCRIBERS = parseInt(__ENV.SUBSCRIBERS || '100', 10);
const RATE = parseInt(__ENV.RATE || '50', 10);
const RAMP = __ENV.RAMP || '10s';
const HOLD = __ENV.HOLD || '30s';
const PAYLOAD = parseInt(__ENV.PAYLOAD || '100', 10);
// Each subscriber VU stays connected this long (seconds): the ramp plus the hold plus slack.
const STAY = parseInt(__ENV.STAY || '60', 10);

const delivered = new Counter('switchyard_deliveries');
const latency = new Trend('switchyard_publish_to_delivery', true);
const subscribed = new Counter('switchyard_subscribed');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'ramping-vus',
      exec: 'subscriber',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: SUBSCRIBERS },
        { duration: HOLD, target: SUBSCRIBERS },
        { duration: '5s', target: 0 },
      ],
      gracefulRampDown: '5s',
    },
    publisher: {
      executor: 'constant-arrival-rate',
      exec: 'publisher',
      rate: RATE,
      timeUnit: '1s',
      startTime: RAMP,
      duration: HOLD,
      preAllocatedVUs: 20,
      maxVUs: 200,
    },
  },
  thresholds: {
    switchyard_publish_to_delivery: ['p(99)<100'],
    checks: ['rate>0.99'],
  },
};

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

// An HS256 connection token for `user`, valid for an hour.
function token(user) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const claims = b64url(JSON.stringify({ sub: user, iat: now, exp: now + 3600 }));
  const sig = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${sig}`;
}

export function subscriber() {
  const res = ws.connect(WS_URL, {}, function (socket) {
    socket.on('open', function () {
      // connect and subscribe in one frame, as centrifuge-js does.
      socket.send(
        JSON.stringify({ id: 1, connect: { token: token(`k6-${__VU}`), name: 'k6' } }) +
          '\n' +
          JSON.stringify({ id: 2, subscribe: { channel: CHANNEL } })
      );
    });
    socket.on('message', function (frame) {
      const now = Date.now() * 1000;
      for (const line of frame.split('\n')) {
        if (line === '') continue;
        if (line === '{}') {
          socket.send('{}'); // server ping → pong
          continue;
        }
        const msg = JSON.parse(line);
        if (msg.id === 2) {
          check(msg, { 'subscribed': (m) => m.subscribe !== undefined });
          subscribed.add(1);
        } else if (msg.push && msg.push.pub && msg.push.pub.data && msg.push.pub.data.ts) {
          delivered.add(1);
          latency.add((now - msg.push.pub.data.ts) / 1000);
        }
      }
    });
    socket.on('close', function () {});
    socket.setTimeout(function () {
      socket.close();
    }, STAY * 1000);
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}

let seq = 0;
export function publisher() {
  const head = `{"p":${__VU},"seq":${seq++},"ts":${Date.now() * 1000},"pad":"`;
  const pad = 'x'.repeat(Math.max(0, PAYLOAD - head.length - 2));
  const body = JSON.stringify({ channel: CHANNEL, data: JSON.parse(`${head}${pad}"}`) });
  const r = http.post(`${API_URL}/api/publish`, body, {
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
  });
  check(r, { 'published': (x) => x.status === 200 && x.json('result') !== undefined });
}
