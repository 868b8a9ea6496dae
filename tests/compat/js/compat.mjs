// Drives the real centrifuge-js SDK (npm `centrifuge` + `ws`) against a running Switchyard node.
// Run by tests/compat.rs with SY_WS_URL, SY_API_URL, SY_API_KEY, SY_BIN, SY_CONFIG and
// SY_CHANNEL_PREFIX set. Exits 0 when every phase passes, 1 with a message otherwise.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
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

const phase = (name) => console.log(`--- phase: ${name}`);

function mint(user) {
  return execFileSync(env('SY_BIN'), ['token', '--config', env('SY_CONFIG'), '--user', user, '--ttl', '1h'])
    .toString()
    .trim();
}

async function api(method, body) {
  const res = await fetch(`${API_URL}/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `${method}: HTTP ${res.status}`);
  const json = await res.json();
  assert.ok(json.result, `${method}: ${JSON.stringify(json)}`);
  return json.result;
}

async function waitFor(what, pred, ms = 8000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function newClient(user, opts = {}) {
  return new Centrifuge(WS_URL, { websocket: WebSocket, token: mint(user), ...opts });
}

async function main() {
  phase('connect with a minted token');
  const alice = newClient('js-alice', { minReconnectDelay: 1500, maxReconnectDelay: 2000 });
  let connectedCtx = null;
  let connects = 0;
  alice.on('connected', (ctx) => { connectedCtx = ctx; connects++; });
  alice.connect();
  await waitFor('alice connected', () => connectedCtx !== null);
  assert.match(connectedCtx.client, /^[0-9a-f-]{36}$/, 'client id is a UUID');

  phase('subscribe recoverable + positioned + join/leave');
  const sub = alice.newSubscription(channel, { recoverable: true, positioned: true, joinLeave: true });
  const pubs = [];
  const joins = [];
  const leaves = [];
  const subscribed = [];
  sub.on('publication', (ctx) => pubs.push(ctx));
  sub.on('join', (ctx) => joins.push(ctx));
  sub.on('leave', (ctx) => leaves.push(ctx));
  sub.on('subscribed', (ctx) => subscribed.push(ctx));
  sub.subscribe();
  await waitFor('subscribed', () => subscribed.length === 1);
  assert.equal(subscribed[0].recoverable, true);
  assert.equal(subscribed[0].positioned, true);
  assert.ok(subscribed[0].streamPosition.epoch, 'epoch given');

  phase('receive publications made through the server API');
  const offsets = [];
  for (let i = 0; i < 3; i++) {
    const r = await api('publish', { channel, data: { n: i } });
    offsets.push(r.offset);
  }
  await waitFor('3 API publications', () => pubs.length === 3);
  assert.deepEqual(pubs.map((p) => p.data), [{ n: 0 }, { n: 1 }, { n: 2 }]);
  assert.deepEqual(pubs.map((p) => p.offset), offsets);
  assert.ok(offsets[0] < offsets[1] && offsets[1] < offsets[2], 'offsets increase');

  phase('publish from the client');
  await sub.publish({ from: 'js' });
  await waitFor('own publication', () => pubs.length === 4);
  assert.deepEqual(pubs[3].data, { from: 'js' });
  assert.equal(pubs[3].info.user, 'js-alice');
  assert.equal(pubs[3].info.client, connectedCtx.client);

  phase('history');
  const h = await sub.history({ limit: 10 });
  assert.deepEqual(h.publications.map((p) => p.offset), pubs.map((p) => p.offset));
  assert.equal(h.epoch, subscribed[0].streamPosition.epoch);
  assert.equal(h.offset, pubs[3].offset);
  const h2 = await sub.history({ limit: 2, reverse: true });
  assert.deepEqual(h2.publications.map((p) => p.offset), [pubs[3].offset, pubs[2].offset]);

  phase('presence and presence stats');
  const pr = await sub.presence();
  assert.ok(pr.clients[connectedCtx.client], 'own client in presence');
  assert.equal(pr.clients[connectedCtx.client].user, 'js-alice');
  const ps = await sub.presenceStats();
  assert.ok(ps.numClients >= 1 && ps.numUsers >= 1, JSON.stringify(ps));

  phase('join and leave of a second client');
  await waitFor('own join', () => joins.some((j) => j.info.user === 'js-alice'));
  const bob = newClient('js-bob');
  bob.connect();
  const bobSub = bob.newSubscription(channel, { joinLeave: true });
  let bobSubscribed = false;
  bobSub.on('subscribed', () => { bobSubscribed = true; });
  bobSub.subscribe();
  await waitFor('bob subscribed', () => bobSubscribed);
  await waitFor('join of bob', () => joins.some((j) => j.info.user === 'js-bob'));
  bobSub.unsubscribe();
  await waitFor('leave of bob', () => leaves.some((l) => l.info.user === 'js-bob'));
  bob.disconnect();

  phase('recover after the server drops the connection');
  const before = pubs.length;
  const lastOffset = pubs[pubs.length - 1].offset;
  await api('disconnect', { user: 'js-alice', disconnect: { code: 3011, reason: 'force reconnect' } });
  const missed = [];
  for (let i = 0; i < 5; i++) {
    missed.push((await api('publish', { channel, data: { missed: i } })).offset);
  }
  await waitFor('resubscribed after reconnect', () => subscribed.length === 2, 15000);
  assert.equal(connects, 2, 'reconnected once');
  assert.equal(subscribed[1].wasRecovering, true);
  assert.equal(subscribed[1].recovered, true, 'recovered: true');
  await waitFor('missed publications', () => pubs.length === before + 5);
  const got = pubs.slice(before);
  assert.deepEqual(got.map((p) => p.offset), missed, 'exactly the missed ones, in order');
  assert.deepEqual(got.map((p) => p.data), [0, 1, 2, 3, 4].map((i) => ({ missed: i })));
  assert.equal(missed[0], lastOffset + 1, 'no gap');
  const all = pubs.map((p) => p.offset);
  assert.equal(new Set(all).size, all.length, 'no duplicates');

  phase('disconnect');
  alice.disconnect();
  console.log('centrifuge-js compatibility: all phases passed');
}

const watchdog = setTimeout(() => {
  console.error('FAIL: centrifuge-js compatibility run exceeded 60 s');
  process.exit(1);
}, 60000);

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
