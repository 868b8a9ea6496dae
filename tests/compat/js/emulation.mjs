// Drives the real centrifuge-js SDK, forced onto its bidirectional-emulation fallbacks
// (`http_stream`, then `sse`), against running Switchyard nodes. Run by tests/compat.rs with
// SY_HTTP_URL (the node the streams go to), SY_EMULATION_URL (the node /emulation requests go
// to: another node in the cluster test), SY_API_URL, SY_API_KEY, SY_BIN, SY_CONFIG and
// SY_CHANNEL_PREFIX set. Prints "--- phase: ..." per phase; exits 0 when every phase passes.
//
// API facts relied on (centrifuge 5.7.4, build/index.js): an array of {transport, endpoint}
// makes the client use emulation for http_stream and sse; the connect command goes in the
// stream request (POST body / cf_connect), later commands are POSTed to
// `emulationEndpoint` as {session, node, data} with session/node from the connect result;
// the SSE transport needs an EventSource constructor (option `eventsource`); the 'connected'
// event's `transport` names the transport in use.
import { Centrifuge } from 'centrifuge';
import { EventSource } from 'eventsource';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const HTTP_URL = env('SY_HTTP_URL');
const EMULATION_URL = env('SY_EMULATION_URL');
const API_URL = env('SY_API_URL');
const API_KEY = env('SY_API_KEY');
const PREFIX = env('SY_CHANNEL_PREFIX');

const phase = (name) => console.log(`--- phase: ${name}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function mint(user) {
  const args = ['token', '--config', env('SY_CONFIG'), '--user', user, '--ttl', '1h'];
  return execFileSync(env('SY_BIN'), args, { timeout: 10000 }).toString().trim();
}

async function api(method, body) {
  const res = await fetch(`${API_URL}/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `API ${method}: HTTP ${res.status}: ${text}`);
  const json = JSON.parse(text);
  assert.ok(json.result && !json.error, `API ${method} returned ${text}`);
  return json.result;
}

async function waitFor(what, pred, ms = 8000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pred()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

// One transport through the whole scenario: connect, subscribe, receive, publish, survive
// server pings (answered through /emulation), recover after a server-side disconnect.
async function scenario(transport) {
  const user = `emu-${transport}`;
  const channel = `${PREFIX}${transport}`;
  phase(`${transport}: connect`);
  const client = new Centrifuge(
    [{ transport, endpoint: `${HTTP_URL}/connection/${transport}` }],
    {
      token: mint(user),
      emulationEndpoint: `${EMULATION_URL}/emulation`,
      eventsource: EventSource,
      minReconnectDelay: 1500,
      maxReconnectDelay: 2000,
    },
  );
  client.on('error', (ctx) => console.error(`[${transport}] error event: ${JSON.stringify(ctx)}`));
  const connected = [];
  const connecting = [];
  client.on('connected', (ctx) => connected.push(ctx));
  client.on('connecting', (ctx) => connecting.push(ctx));
  client.connect();
  await waitFor(`${transport} connected`, () => connected.length === 1);
  assert.equal(connected[0].transport, transport, `connected over ${transport}`);

  phase(`${transport}: subscribe (a command sent through /emulation)`);
  const sub = client.newSubscription(channel, { recoverable: true, positioned: true });
  const subscribed = [];
  const pubs = [];
  sub.on('subscribed', (ctx) => subscribed.push(ctx));
  sub.on('publication', (ctx) => pubs.push(ctx));
  sub.subscribe();
  await waitFor('subscribed', () => subscribed.length === 1);

  phase(`${transport}: receive API publications`);
  for (let i = 0; i < 3; i++) await api('publish', { channel, data: { api: i } });
  await waitFor('3 publications', () => pubs.length === 3);
  assert.deepEqual(pubs.map((p) => p.data), [0, 1, 2].map((i) => ({ api: i })));

  phase(`${transport}: client publish, history, presence (commands with replies)`);
  await sub.publish({ from: 'client' });
  await waitFor('own publication', () => pubs.length === 4);
  assert.deepEqual(pubs[3].data, { from: 'client' });
  const hist = await sub.history({ limit: 10 });
  assert.equal(hist.publications.length, 4, `history: ${JSON.stringify(hist)}`);
  const pres = await sub.presence();
  assert.ok(Object.values(pres.clients).some((c) => c.user === user), `presence: ${JSON.stringify(pres)}`);

  phase(`${transport}: pings are answered through /emulation (ping_interval 2 s, no 3012)`);
  await sleep(4500);
  assert.equal(connecting.length, 1, `still connected after pings: ${JSON.stringify(connecting)}`);
  assert.equal(client.state, 'connected');

  phase(`${transport}: recover after the server drops the connection (API disconnect 3011)`);
  const lastOffset = pubs[pubs.length - 1].offset;
  await api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
  await waitFor('dropped by the server', () => connecting.length === 2, 5000);
  assert.equal(connecting[1].code, 3011, `the disconnect push's code: ${JSON.stringify(connecting[1])}`);
  const missed = [];
  for (let i = 0; i < 3; i++) missed.push((await api('publish', { channel, data: { missed: i } })).offset);
  assert.equal(connected.length, 1, 'test setup: published while the client was away');
  await waitFor('resubscribed after reconnect', () => subscribed.length === 2, 15000);
  const again = subscribed[1];
  assert.equal(again.wasRecovering, true, `wasRecovering: ${JSON.stringify(again)}`);
  assert.equal(again.recovered, true, `recovered: ${JSON.stringify(again)}`);
  await waitFor('the missed publications', () => pubs.length === 7);
  assert.deepEqual(pubs.slice(4).map((p) => p.offset), missed);
  assert.deepEqual(missed, [1, 2, 3].map((k) => lastOffset + k));
  assert.equal(connected[1].transport, transport, 'reconnected over the same transport');

  phase(`${transport}: disconnect`);
  client.disconnect();
  assert.equal(client.state, 'disconnected');
}

async function main() {
  for (const t of (process.env.SY_TRANSPORTS || 'http_stream,sse').split(',')) {
    await scenario(t);
  }
  console.log('centrifuge-js emulation: all phases passed');
}

const watchdog = setTimeout(() => {
  console.error('FAIL: centrifuge-js emulation run exceeded 80 s');
  process.exit(1);
}, 80000);

main().then(
  () => {
    clearTimeout(watchdog);
    process.exit(0);
  },
  (e) => {
    console.error(`FAIL: ${e.stack || e}`);
    process.exit(1);
  },
);
