// Delta updates with the real centrifuge-js SDK (npm `centrifuge` 5.7 + `ws`): one subscriber
// with `delta: 'fossil'`, one without, on a channel whose namespace allows Fossil deltas; 1,000
// publications of a slowly changing ~4 KB JSON document through the server API. Asserts that
// the delta subscriber's SDK reconstructs every document exactly, in order, with consecutive
// offsets (the first in full, then deltas), and that it received far fewer bytes than the plain
// subscriber. Bytes are counted on each client's socket (every WebSocket message's payload).
// Then the delta client is dropped and recovers: missed publications and the next live ones are
// reconstructed too (recovered ones come in full, deltas resume after the first live one).
// Prints one "DELTA-RESULT {json}" line with the figures for tests/compat.rs.
//
// Run by tests/compat.rs (centrifuge_js_delta) with SY_WS_URL, SY_API_URL, SY_API_KEY, SY_BIN,
// SY_CONFIG and SY_CHANNEL_PREFIX (a namespace with allowed_delta_types = ["fossil"]) set; with
// SY_PROTOBUF=1 (centrifuge_js_delta_protobuf) it drives the SDK's Protobuf build, where data
// (full or delta) is bytes and the SDK applies deltas to the bytes it kept.
//
// SDK facts relied on (centrifuge 5.7.4, build/index.mjs): newSubscription(ch, {delta:
// 'fossil'}) sends `delta: "fossil"` and applies deltas only when the subscribe result has
// `delta: true` (JsonCodec.applyDeltaIfNeeded: `data` is a JSON string, full or a Fossil
// delta when `delta` is true); sub.deltaStats() -> {numPublications, numFullPayloads,
// numDeltaPayloads, bytesReceived, bytesDecoded, compressionRatio}.
import { OrderedWebSocket } from './ordered-ws.mjs';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const WS_URL = env('SY_WS_URL');
const API_URL = env('SY_API_URL');
const API_KEY = env('SY_API_KEY');
const channel = `${env('SY_CHANNEL_PREFIX')}doc`;
const N = 1000;
const PROTOBUF = process.env.SY_PROTOBUF === '1';
const { Centrifuge } = await import(PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge');
// Protobuf: data is the JSON text's bytes, offsets are protobufjs Longs.
const value = (d) => (PROTOBUF ? JSON.parse(new TextDecoder().decode(d)) : d);
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

async function waitFor(what, pred, ms = 20000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pred()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

// A dashboard of 48 sensors (~4 KB of JSON); version v changes the version, the time and one
// sensor's reading, like a feed of small updates to one document.
function documentAt(v) {
  const sensors = [];
  for (let i = 0; i < 48; i++) {
    const updates = Math.floor((v + 47 - i) / 48);
    sensors.push({
      id: `plant-3/line-${i % 6}/sensor-${i}`,
      kind: i % 2 ? 'temperature' : 'pressure',
      value: Math.round((20 + i * 0.7 + updates * 0.1) * 10) / 10,
      updates,
      ok: true,
    });
  }
  return { kind: 'plant_dashboard', version: v, at: 1764500000000 + v * 1000, sensors };
}

// A `ws` WebSocket that counts the payload bytes of every message it receives.
function countingWebSocket(counter) {
  return class extends OrderedWebSocket {
    constructor(...args) {
      super(...args);
      this.on('message', (data) => {
        // A Buffer, or an ArrayBuffer once the Protobuf build sets binaryType.
        counter.bytes += data.byteLength;
        counter.messages += 1;
      });
    }
  };
}

async function subscriber(user, subOpts) {
  const counter = { bytes: 0, messages: 0 };
  // A reconnect waits 1.5-2 s, so the recovery phase can publish while the client is away.
  const c = new Centrifuge(WS_URL, {
    websocket: countingWebSocket(counter),
    token: mint(user),
    minReconnectDelay: 1500,
    maxReconnectDelay: 2000,
  });
  c.on('error', (ctx) => console.error(`[${user}] error event: ${JSON.stringify(ctx)}`));
  const received = [];
  const subscribed = [];
  const sub = c.newSubscription(channel, subOpts);
  sub.on('error', (ctx) => console.error(`[${user}] subscription error: ${JSON.stringify(ctx)}`));
  sub.on('publication', (ctx) => received.push({ ...ctx, offset: num(ctx.offset), data: value(ctx.data) }));
  sub.on('subscribed', (ctx) => subscribed.push(ctx));
  sub.subscribe();
  c.connect();
  await waitFor(`${user} subscribed`, () => subscribed.length === 1);
  return { c, sub, counter, received, subscribed };
}

async function main() {
  phase('a) a delta subscriber and a plain one');
  const delta = await subscriber('delta-user', { delta: 'fossil', recoverable: true });
  const plain = await subscriber('plain-user', { positioned: true });
  // Bytes from here on: the publications (the connect and subscribe replies are excluded).
  const start = { delta: delta.counter.bytes, plain: plain.counter.bytes };

  phase(`b) ${N} publications of a ~4 KB document through the API`);
  const docBytes = JSON.stringify(documentAt(1)).length;
  assert.ok(docBytes > 3500 && docBytes < 5000, `document is ~4 KB: ${docBytes}`);
  let publishedBytes = 0;
  for (let v = 1; v <= N; v++) {
    const doc = documentAt(v);
    publishedBytes += JSON.stringify(doc).length;
    await api('publish', { channel, data: doc });
  }
  await waitFor(`${N} publications at both`, () => delta.received.length >= N && plain.received.length >= N);

  phase('c) every document reconstructed, in order, offsets consecutive');
  for (const [who, s] of [['delta', delta], ['plain', plain]]) {
    assert.equal(s.received.length, N, `${who}: exactly ${N} publications`);
    const first = s.received[0].offset;
    s.received.forEach((ctx, i) => {
      assert.equal(ctx.offset, first + i, `${who}: consecutive offsets`);
      assert.deepEqual(ctx.data, documentAt(i + 1), `${who}: publication ${i + 1} reconstructed`);
    });
  }
  const stats = delta.sub.deltaStats();
  assert.equal(stats.numPublications, N);
  assert.equal(stats.numFullPayloads, 1, `only the first is full: ${JSON.stringify(stats)}`);
  assert.equal(stats.numDeltaPayloads, N - 1);

  phase('d) bytes on the wire');
  const result = {
    publications: N,
    document_bytes: docBytes,
    published_bytes: publishedBytes,
    delta_wire_bytes: delta.counter.bytes - start.delta,
    plain_wire_bytes: plain.counter.bytes - start.plain,
    delta_sdk_stats: stats,
  };
  console.log(`DELTA-RESULT ${JSON.stringify(result)}`);
  assert.ok(
    result.delta_wire_bytes * 5 < result.plain_wire_bytes,
    `delta subscriber received under a fifth of the plain one's bytes: ${JSON.stringify(result)}`,
  );

  phase('e) recovery with deltas: dropped (API disconnect 3011), 5 missed, 5 live');
  await api('disconnect', { user: 'delta-user', disconnect: { code: 3011, reason: 'force reconnect' } });
  await waitFor('delta client dropped', () => delta.c.state !== 'connected', 5000);
  for (let v = N + 1; v <= N + 5; v++) await api('publish', { channel, data: documentAt(v) });
  assert.equal(delta.subscribed.length, 1, 'test setup: published while the client was away');
  await waitFor('resubscribed', () => delta.subscribed.length === 2);
  const again = delta.subscribed[1];
  assert.equal(again.recovered, true, `recovered: ${JSON.stringify(again)}`);
  assert.equal(again.hasRecoveredPublications, true);
  for (let v = N + 6; v <= N + 10; v++) await api('publish', { channel, data: documentAt(v) });
  await waitFor('missed and live publications', () => delta.received.length >= N + 10);
  assert.equal(delta.received.length, N + 10);
  delta.received.forEach((ctx, i) => {
    assert.deepEqual(ctx.data, documentAt(i + 1), `publication ${i + 1} reconstructed`);
    if (i > 0) assert.equal(ctx.offset, delta.received[i - 1].offset + 1, 'no gap, no duplicate');
  });
  const after = delta.sub.deltaStats();
  // Full: the first, the 5 recovered, the first live one after them; the rest deltas.
  assert.equal(after.numFullPayloads, 7, `${JSON.stringify(after)}`);
  assert.equal(after.numDeltaPayloads, N - 1 + 4);
  delta.c.disconnect();
  plain.c.disconnect();
  console.log('centrifuge-js delta: all phases passed');
}

const watchdog = setTimeout(() => {
  console.error('FAIL: centrifuge-js delta run exceeded 80 s');
  process.exit(1);
}, 80000);

main().then(
  () => {
    clearTimeout(watchdog);
    process.exit(0);
  },
  (err) => {
    console.error('FAIL:', err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
