// Drives the real centrifuge-js SDK (npm `centrifuge` + `ws`) against a running Switchyard node.
// Run by tests/compat.rs with SY_WS_URL, SY_API_URL, SY_API_KEY, SY_BIN, SY_CONFIG and
// SY_CHANNEL_PREFIX set; with SY_PROTOBUF=1 it drives the SDK's Protobuf build
// (`centrifuge/build/protobuf`: payloads are bytes both ways) and a last phase checks binary
// payloads. Prints "--- phase: ..." per phase; exits 0 when every phase passes,
// 1 with a "FAIL: ..." message otherwise. Every wait is bounded; a watchdog ends the run at 55 s.
//
// API facts relied on (centrifuge 5.7.x, build/index.mjs and build/types.d.ts):
// - client events 'connected' {client, transport, data?}, 'connecting' / 'disconnected'
//   {code, reason}, 'error' {type, error}; options minReconnectDelay / maxReconnectDelay (ms);
//   the reconnect delay is backoff(attempt, min, max), at least min.
// - subscription events 'subscribed' {channel, recoverable, positioned, streamPosition?
//   {offset, epoch}, wasRecovering, recovered, hasRecoveredPublications, data?},
//   'publication' {channel, data, info?, offset?, tags?}, 'join' / 'leave' {channel, info}
//   with info {client, user, connInfo?, chanInfo?}.
// - sub.history({limit, since, reverse}) -> {publications, epoch, offset};
//   sub.presence() -> {clients: {<client>: {client, user, connInfo?, chanInfo?}}};
//   sub.presenceStats() -> {numClients, numUsers}.
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
const PREFIX = env('SY_CHANNEL_PREFIX');
const channel = `${PREFIX}room`;
const PROTOBUF = process.env.SY_PROTOBUF === '1';
const { Centrifuge } = await import(PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge');

// A payload as the SDK takes it (JSON text as bytes in Protobuf mode, the value in JSON), and
// a received one as a value (Protobuf mode gives the JSON text's bytes).
const enc = (v) => (PROTOBUF ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dec = (d) => {
  if (!PROTOBUF) return d;
  assert.ok(d instanceof Uint8Array, `Protobuf payloads are bytes: ${d}`);
  return JSON.parse(new TextDecoder().decode(d));
};
const bytes = (d) => Array.from(d);
// The Protobuf build decodes uint64 offsets with protobufjs, which gives `Long` objects when
// the `long` package is installed (it is, as protobufjs's dependency): compared as numbers.
const num = (x) => (x !== null && typeof x === 'object' && typeof x.toNumber === 'function' ? x.toNumber() : x);
const withOffset = (o) => ({ ...o, offset: num(o.offset) });
async function history(sub, opts) {
  const h = await sub.history(opts);
  return { ...h, offset: num(h.offset), publications: h.publications.map(withOffset) };
}

const phase = (name) => console.log(`--- phase: ${name}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Client-side errors are printed as they happen: they explain most failures.
const onError = (who) => (ctx) => console.error(`[${who}] error event: ${JSON.stringify(ctx)}`);

function mint(user, info) {
  const args = ['token', '--config', env('SY_CONFIG'), '--user', user, '--ttl', '1h'];
  if (info !== undefined) args.push('--info', JSON.stringify(info));
  const token = execFileSync(env('SY_BIN'), args, { timeout: 10000 }).toString().trim();
  assert.ok(token && !token.includes('\n'), `switchyard token printed one line, got ${JSON.stringify(token)}`);
  return token;
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

async function apiPublish(data) {
  const r = await api('publish', { channel, data });
  assert.equal(typeof r.offset, 'number', `API publish result has a numeric offset: ${JSON.stringify(r)}`);
  assert.ok(typeof r.epoch === 'string' && r.epoch !== '', `API publish result has an epoch: ${JSON.stringify(r)}`);
  return r;
}

async function waitFor(what, pred, ms = 8000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pred()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

function newClient(user, opts = {}, info = undefined) {
  const c = new Centrifuge(WS_URL, { websocket: OrderedWebSocket, token: mint(user, info), ...opts });
  c.on('error', onError(user));
  return c;
}

async function main() {
  phase('a) connect with a minted token');
  // A reconnect waits 1.5-2 s, so the recovery phase can publish while the client is away.
  const alice = newClient('js-alice', { minReconnectDelay: 1500, maxReconnectDelay: 2000 });
  const connected = [];
  const connecting = [];
  const disconnected = [];
  alice.on('connected', (ctx) => connected.push(ctx));
  alice.on('connecting', (ctx) => connecting.push(ctx));
  alice.on('disconnected', (ctx) => disconnected.push(ctx));
  alice.connect();
  await waitFor('alice connected', () => connected.length === 1);
  const clientId = connected[0].client;
  assert.match(clientId ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, `client id is a UUID: ${clientId}`);
  assert.equal(connected[0].transport, 'websocket');
  assert.equal(alice.state, 'connected');

  phase('b) subscribe recoverable + positioned + join/leave');
  const sub = alice.newSubscription(channel, { recoverable: true, positioned: true, joinLeave: true });
  const pubs = [];
  const joins = [];
  const leaves = [];
  const subscribed = [];
  sub.on('publication', (ctx) => pubs.push(withOffset(ctx)));
  sub.on('join', (ctx) => joins.push(ctx));
  sub.on('leave', (ctx) => leaves.push(ctx));
  sub.on('subscribed', (ctx) => subscribed.push(ctx.streamPosition ? { ...ctx, streamPosition: withOffset(ctx.streamPosition) } : ctx));
  sub.on('error', (ctx) => console.error(`[js-alice sub] error event: ${JSON.stringify(ctx)}`));
  sub.subscribe();
  await waitFor('subscribed', () => subscribed.length === 1);
  const first = subscribed[0];
  assert.equal(first.channel, channel);
  assert.equal(first.recoverable, true, 'subscribe reply says recoverable');
  assert.equal(first.positioned, true, 'subscribe reply says positioned');
  assert.equal(first.wasRecovering, false);
  assert.equal(first.recovered, false);
  assert.ok(first.streamPosition && first.streamPosition.epoch, `epoch in subscribe reply: ${JSON.stringify(first)}`);
  assert.equal(typeof first.streamPosition.offset, 'number');
  const epoch = first.streamPosition.epoch;
  const top0 = first.streamPosition.offset;

  phase('c) receive publications made through the server API');
  const offsets = [];
  for (let i = 0; i < 3; i++) {
    const r = await apiPublish({ n: i });
    assert.equal(r.epoch, epoch, 'API publish epoch equals the subscribe epoch');
    offsets.push(r.offset);
  }
  assert.deepEqual(offsets, [top0 + 1, top0 + 2, top0 + 3], `offsets grow by 1 from the subscribe position ${top0}`);
  await waitFor('3 API publications', () => pubs.length >= 3);
  assert.equal(pubs.length, 3, `exactly 3 publications, got ${JSON.stringify(pubs)}`);
  assert.deepEqual(pubs.map((p) => dec(p.data)), [{ n: 0 }, { n: 1 }, { n: 2 }], 'data, in order');
  assert.deepEqual(pubs.map((p) => p.offset), offsets, 'offsets equal the API-returned ones');
  assert.ok(pubs.every((p) => p.channel === channel));

  phase('d) publish from the client');
  await sub.publish(enc({ from: 'js' }));
  await waitFor('own publication', () => pubs.length >= 4);
  assert.equal(pubs.length, 4);
  assert.deepEqual(dec(pubs[3].data), { from: 'js' });
  assert.ok(pubs[3].info, `own publication carries info: ${JSON.stringify(pubs[3])}`);
  assert.equal(pubs[3].info.user, 'js-alice', 'info.user is the publisher');
  assert.equal(pubs[3].info.client, clientId, 'info.client is the publishing connection');
  assert.equal(pubs[3].offset, offsets[2] + 1);

  phase('e) history');
  const received = pubs.map((p) => ({ offset: p.offset, data: dec(p.data) }));
  const top = pubs[3].offset;
  const h = await history(sub, { limit: 10 });
  assert.deepEqual(h.publications.map((p) => ({ offset: p.offset, data: dec(p.data) })), received, 'history limit 10');
  assert.equal(h.epoch, epoch);
  assert.equal(h.offset, top);
  assert.equal(h.publications[3].info?.user, 'js-alice', 'history keeps the publisher info');
  const hAll = await history(sub, { limit: -1 });
  assert.deepEqual(hAll.publications.map((p) => p.offset), received.map((p) => p.offset), 'history limit -1 = all');
  const hPos = await history(sub);
  assert.equal(hPos.publications.length, 0, 'history without limit returns only the position');
  assert.equal(hPos.offset, top);
  assert.equal(hPos.epoch, epoch);
  const hRev = await history(sub, { limit: 2, reverse: true });
  assert.deepEqual(hRev.publications.map((p) => p.offset), [top, top - 1], 'reverse history, newest first');
  const hSince = await history(sub, { limit: 10, since: { offset: offsets[0], epoch } });
  assert.deepEqual(hSince.publications.map((p) => p.offset), [offsets[1], offsets[2], top], 'history since');

  phase('f) presence and presence stats');
  const pr = await sub.presence();
  assert.ok(pr.clients && pr.clients[clientId], `own client in presence: ${JSON.stringify(pr)}`);
  assert.equal(pr.clients[clientId].user, 'js-alice');
  assert.equal(pr.clients[clientId].client, clientId);
  const ps = await sub.presenceStats();
  assert.ok(ps.numClients >= 1 && ps.numUsers >= 1, `presence stats: ${JSON.stringify(ps)}`);

  phase('g) join and leave of a second client');
  await waitFor('own join', () => joins.some((j) => j.info.user === 'js-alice' && j.info.client === clientId));
  const bob = newClient('js-bob', {}, { name: 'Bob' });
  const bobConnected = [];
  bob.on('connected', (ctx) => bobConnected.push(ctx));
  bob.connect();
  const bobSub = bob.newSubscription(channel, { joinLeave: true });
  let bobSubscribed = false;
  bobSub.on('subscribed', () => { bobSubscribed = true; });
  bobSub.subscribe();
  await waitFor('bob subscribed', () => bobSubscribed);
  await waitFor('join of bob', () => joins.some((j) => j.info.user === 'js-bob'));
  const bobJoin = joins.find((j) => j.info.user === 'js-bob');
  assert.equal(bobJoin.channel, channel);
  assert.equal(bobJoin.info.client, bobConnected[0]?.client, 'join carries bob\'s client id');
  assert.deepEqual(dec(bobJoin.info.connInfo), { name: 'Bob' }, 'join carries conn_info from the token');
  const ps2 = await sub.presenceStats();
  assert.ok(ps2.numClients >= 2 && ps2.numUsers >= 2, `presence stats with bob: ${JSON.stringify(ps2)}`);
  const pr2 = await sub.presence();
  const bobInPresence = Object.values(pr2.clients).find((c) => c.user === 'js-bob');
  assert.ok(bobInPresence, `bob in presence: ${JSON.stringify(pr2)}`);
  assert.deepEqual(dec(bobInPresence.connInfo), { name: 'Bob' }, 'presence carries conn_info');
  bobSub.unsubscribe();
  await waitFor('leave of bob', () => leaves.some((l) => l.info.user === 'js-bob'));
  assert.equal(leaves.find((l) => l.info.user === 'js-bob').info.client, bobConnected[0].client);
  bob.disconnect();

  phase('h) recover after the server drops the connection (API disconnect 3011)');
  const before = pubs.length;
  const lastOffset = pubs[pubs.length - 1].offset;
  const nConnecting = connecting.length; // connect() itself emitted one (code 0)
  await api('disconnect', { user: 'js-alice', disconnect: { code: 3011, reason: 'force reconnect' } });
  await waitFor('alice dropped by the server', () => connecting.length > nConnecting, 5000);
  const drop = connecting[nConnecting];
  assert.equal(drop.code, 3011, `connecting event has the close code: ${JSON.stringify(drop)}`);
  assert.equal(disconnected.length, 0, '3011 is not terminal: the client must reconnect');
  const missed = [];
  for (let i = 0; i < 5; i++) missed.push((await apiPublish({ missed: i })).offset);
  assert.equal(connected.length, 1, 'test setup: the 5 publications were made while alice was away');
  assert.deepEqual(missed, [1, 2, 3, 4, 5].map((k) => lastOffset + k), 'no gap in the offsets');
  await waitFor('resubscribed after reconnect', () => subscribed.length === 2, 15000);
  assert.equal(connected.length, 2, 'reconnected once');
  const again = subscribed[1];
  assert.equal(again.wasRecovering, true, `wasRecovering: ${JSON.stringify(again)}`);
  assert.equal(again.recovered, true, `recovered: ${JSON.stringify(again)}`);
  assert.equal(again.hasRecoveredPublications, true, 'the missed publications came in the subscribe reply');
  assert.equal(again.streamPosition?.epoch, epoch, 'same epoch after recovery');
  await waitFor('the 5 missed publications', () => pubs.length >= before + 5);
  await sleep(300); // a duplicate would show up here
  const got = pubs.slice(before);
  assert.deepEqual(got.map((p) => p.offset), missed, `exactly the missed ones, in order: ${JSON.stringify(got)}`);
  assert.deepEqual(got.map((p) => dec(p.data)), [0, 1, 2, 3, 4].map((i) => ({ missed: i })));
  const all = pubs.map((p) => p.offset);
  assert.equal(new Set(all).size, all.length, `no duplicate publication: ${all}`);
  // The subscription is live again after the recovery.
  const live = await apiPublish({ live: true });
  await waitFor('live publication after recovery', () => pubs.length >= before + 6);
  assert.equal(pubs[before + 5].offset, live.offset);
  assert.equal(live.offset, missed[4] + 1);

  if (PROTOBUF) {
    phase('h2) binary payloads: API b64data and a client publication, bytes unchanged');
    const n = pubs.length;
    const raw = [0, 255, 128, 10, 13];
    await api('publish', { channel, b64data: Buffer.from(raw).toString('base64') });
    await sub.publish(new Uint8Array([0xc3, 0x28]));
    await waitFor('two binary publications', () => pubs.length >= n + 2);
    assert.deepEqual(pubs.slice(n).map((p) => bytes(p.data)), [raw, [0xc3, 0x28]]);
    const hb = await history(sub, { limit: 2, reverse: true });
    assert.deepEqual(hb.publications.map((p) => bytes(p.data)), [[0xc3, 0x28], raw], 'binary history');
  }

  if (PROTOBUF) {
    // tests/compat.rs runs the Protobuf mode with server pings every second: stay connected
    // through a few, answering each (an empty Reply) with a pong (an empty Command).
    phase('h3) keep-alive: three server pings answered');
    await sleep(3200);
  }
  // The only drop was the forced one: no 3012 (a missed pong) or any other along the way.
  assert.deepEqual(connecting.map((c) => c.code), [0, 3011], `connecting events: ${JSON.stringify(connecting)}`);

  phase('i) disconnect');
  alice.disconnect();
  await waitFor('disconnected event', () => disconnected.length === 1, 3000);
  assert.equal(alice.state, 'disconnected');
  console.log(`centrifuge-js compatibility (${PROTOBUF ? 'Protobuf' : 'JSON'}): all phases passed`);
}

const watchdog = setTimeout(() => {
  console.error('FAIL: centrifuge-js compatibility run exceeded 55 s');
  process.exit(1);
}, 55000);

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
