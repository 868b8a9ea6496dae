// Drives the real centrifuge-js SDK, forced onto its bidirectional-emulation fallbacks
// (`http_stream`, then `sse`), against running Switchyard nodes. Run by tests/compat.rs with
// SY_HTTP_URL (the node the streams go to), SY_EMULATION_URL (the node /emulation requests go
// to: another node in the cluster test), SY_API_URL, SY_API_KEY, SY_BIN, SY_CONFIG and
// SY_CHANNEL_PREFIX set. Prints "--- phase: ..." per phase; exits 0 when every phase passes.
// With SY_PROTOBUF=1 it drives the SDK's Protobuf build (`centrifuge/build/protobuf`) on
// `http_stream` only (payloads are bytes both ways, and a binary `b64data` publication must
// arrive byte for byte); SSE carries text and stays JSON.
//
// API facts relied on (centrifuge 5.7.4, build/index.js): an array of {transport, endpoint}
// makes the client use emulation for http_stream and sse; the connect command goes in the
// stream request (POST body / cf_connect), later commands are POSTed to
// `emulationEndpoint` as {session, node, data} with session/node from the connect result;
// the SSE transport needs an EventSource constructor (option `eventsource`); the 'connected'
// event's `transport` names the transport in use. The Protobuf build (build/protobuf/index.js,
// HttpStreamTransport) POSTs the length-delimited connect Command with `Content-Type:
// application/octet-stream`, reads length-delimited Replies from the stream (no separator),
// and POSTs an `EmulationRequest` message (node 1, session 2, data 3) with the same content
// type to `emulationEndpoint`.
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
const PROTOBUF = process.env.SY_PROTOBUF === '1';
const { Centrifuge } = await import(PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge');

// A payload as the SDK takes it (JSON text as bytes in Protobuf mode, the value in JSON), and
// a received one as a value.
const enc = (v) => (PROTOBUF ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (d) => {
  if (!PROTOBUF) return d;
  assert.ok(d instanceof Uint8Array, `Protobuf payloads are bytes: ${d}`);
  return JSON.parse(new TextDecoder().decode(d));
};
// protobufjs gives uint64 offsets as `Long` objects (the `long` package is installed).
const num = (x) => (x !== null && typeof x === 'object' && typeof x.toNumber === 'function' ? x.toNumber() : x);

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
  const mode = PROTOBUF ? `${transport}-protobuf` : transport;
  const user = `emu-${mode}`;
  const channel = `${PREFIX}${mode}`;
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
  // The session id came in the connect result (in Protobuf: ConnectResult field 9).
  assert.ok(client._session, 'the connect result carried the emulation session');

  phase(`${transport}: subscribe (a command sent through /emulation)`);
  const sub = client.newSubscription(channel, { recoverable: true, positioned: true });
  const subscribed = [];
  const pubs = [];
  sub.on('subscribed', (ctx) => subscribed.push(ctx));
  sub.on('publication', (ctx) => pubs.push({ ...ctx, offset: num(ctx.offset) }));
  sub.subscribe();
  await waitFor('subscribed', () => subscribed.length === 1);

  phase(`${transport}: receive API publications`);
  for (let i = 0; i < 3; i++) await api('publish', { channel, data: { api: i } });
  await waitFor('3 publications', () => pubs.length === 3);
  assert.deepEqual(pubs.map((p) => dec(p.data)), [0, 1, 2].map((i) => ({ api: i })));

  phase(`${transport}: client publish, history, presence (commands with replies)`);
  await sub.publish(enc({ from: 'client' }));
  await waitFor('own publication', () => pubs.length === 4);
  assert.deepEqual(dec(pubs[3].data), { from: 'client' });
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

  if (PROTOBUF) {
    phase(`${transport}: binary payloads (API b64data, a client publication), bytes unchanged`);
    const n = pubs.length;
    // Bytes a `\n`-split stream would cut, and a length-prefix-looking first byte.
    const raw = [10, 0, 255, 128, 10, 13];
    await api('publish', { channel, b64data: Buffer.from(raw).toString('base64') });
    await sub.publish(new Uint8Array([0xc3, 0x28, 0x0a]));
    await waitFor('two binary publications', () => pubs.length === n + 2);
    assert.deepEqual(pubs.slice(n).map((p) => Array.from(p.data)), [raw, [0xc3, 0x28, 0x0a]]);
  }

  phase(`${transport}: disconnect`);
  client.disconnect();
  assert.equal(client.state, 'disconnected');
}

async function main() {
  const all = PROTOBUF ? 'http_stream' : 'http_stream,sse';
  for (const t of (process.env.SY_TRANSPORTS || all).split(',')) {
    await scenario(t);
  }
  console.log(`centrifuge-js emulation (${PROTOBUF ? 'Protobuf' : 'JSON'}): all phases passed`);
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
