// Drives the real centrifuge-js SDK through Switchyard's proxy hooks, against the test
// backend tests/proxy/backend.py. Run by tests/proxy.rs with SY_WS_URL, SY_API_URL, SY_API_KEY
// and SY_BACKEND (the backend's base URL) set. Prints "--- phase: ..." per phase; exits 0 when
// every phase passes, 1 with a "FAIL: ..." message otherwise. Every wait is bounded; a
// watchdog ends the run at 55 s.
//
// SDK facts relied on (centrifuge 5.7.x): without `token` and `getToken` the client connects
// with no token; `data` is sent in the connect command; a connect error reply with
// `temporary: true` emits 'error' {type: 'connect', error: {code, message, temporary}} and
// reconnects with backoff; a subscribe error that is not temporary ends in 'unsubscribed'
// {code, reason}; server-side subscriptions emit client-level 'subscribed' / 'publication';
// `rpc` and `publish` reject with {code, message} on an error reply.
import { Centrifuge } from 'centrifuge';
import { OrderedWebSocket } from './ordered-ws.mjs';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const WS_URL = env('SY_WS_URL');
const API_URL = env('SY_API_URL');
const API_KEY = env('SY_API_KEY');
const BACKEND = env('SY_BACKEND');

const phase = (name) => console.log(`--- phase: ${name}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, pred, ms = 8000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

async function post(url, body, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `POST ${url}: HTTP ${res.status}: ${text}`);
  return JSON.parse(text);
}

const mode = (m) => post(`${BACKEND}/control`, { mode: m });
const apiPublish = (channel, data) => post(`${API_URL}/publish`, { channel, data }, { 'X-API-Key': API_KEY });

async function backendCalls(path) {
  const res = await fetch(`${BACKEND}/calls`, { signal: AbortSignal.timeout(5000) });
  return (await res.json()).filter((c) => c.path === path);
}

// A WebSocket that sends a session cookie, as a browser on the application's domain would.
function withCookie(cookie) {
  return class extends OrderedWebSocket {
    constructor(url, protocols) {
      super(url, protocols, { headers: { Cookie: cookie } });
    }
  };
}

function newClient(user, opts = {}) {
  const c = new Centrifuge(WS_URL, {
    websocket: withCookie(`session=${user}`),
    minReconnectDelay: 100,
    maxReconnectDelay: 300,
    ...opts,
  });
  c.errors = [];
  c.on('error', (ctx) => c.errors.push(ctx));
  c.on('disconnected', (ctx) => console.log(`[${user}] disconnected ${JSON.stringify(ctx)}`));
  return c;
}

function connected(c) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no connected event in 8 s')), 8000);
    c.once('connected', (ctx) => { clearTimeout(t); resolve(ctx); });
  });
}

async function main() {
  phase('tokenless connect: the cookie authenticates, server-side channel delivers');
  const alice = newClient('js-alice');
  const serverPubs = [];
  alice.on('publication', (ctx) => serverPubs.push(ctx));
  const serverSubs = [];
  alice.on('subscribed', (ctx) => serverSubs.push(ctx.channel));
  const ctx = await (async () => { const p = connected(alice); alice.connect(); return p; })();
  assert.equal(ctx.transport, 'websocket');
  await waitFor('server-side subscription', () => serverSubs.includes('proxied:server-js-alice'));
  await apiPublish('proxied:server-js-alice', { n: 1 });
  await waitFor('server-side publication', () => serverPubs.length === 1);
  assert.deepEqual(serverPubs[0].data, { n: 1 });
  const [call] = (await backendCalls('/connect')).filter((c) => c.body.client === ctx.client);
  assert.ok(call, 'the backend saw this client connect');
  assert.match(call.headers.cookie ?? call.headers.Cookie, /session=js-alice/);

  phase('subscribe refused for one channel, allowed for another');
  const refused = alice.newSubscription('proxied:forbidden-js');
  const unsub = new Promise((resolve) => refused.once('unsubscribed', resolve));
  refused.subscribe();
  const u = await unsub;
  assert.equal(u.code, 403, JSON.stringify(u));
  const room = alice.newSubscription('proxied:room-js');
  const subscribed = new Promise((resolve) => room.once('subscribed', resolve));
  const pubs = [];
  room.on('publication', (p) => pubs.push(p));
  room.subscribe();
  const s = await subscribed;
  assert.deepEqual(s.data, { welcome: 'proxied:room-js' });

  phase('a publication rewritten by the publish proxy, another refused');
  await room.publish({ text: 'hello' });
  await waitFor('rewritten publication', () => pubs.length === 1);
  assert.deepEqual(pubs[0].data, { text: 'HELLO', by: 'backend' });
  assert.deepEqual(pubs[0].info.chanInfo, { role: 'member' });
  await assert.rejects(room.publish({ reject: true }), (e) => e.code === 1002);

  phase('rpc round trip with data, and a backend error');
  const r = await alice.rpc('echo', { a: 1 });
  assert.deepEqual(r.data, { echo: { a: 1 }, user: 'js-alice', method: 'echo' });
  await assert.rejects(alice.rpc('fail', {}), (e) => e.code === 1003 && e.message === 'backend says no');

  phase('refresh proxy extends an expiring connection');
  const ivy = newClient('js-ivy', { data: { ttl: 1 } });
  const ivyCtx = await (async () => { const p = connected(ivy); ivy.connect(); return p; })();
  let disconnects = 0;
  ivy.on('disconnected', () => { disconnects += 1; });
  await waitFor('two refreshes', async () =>
    (await backendCalls('/refresh')).filter((c) => c.body.client === ivyCtx.client).length >= 2);
  assert.equal(ivy.state, 'connected');
  assert.equal(disconnects, 0);
  ivy.disconnect();

  for (const failure of ['500', 'timeout']) {
    phase(`a backend that ${failure === '500' ? 'answers 500' : 'times out'}: temporary error, then recovery`);
    await mode(failure);
    const bob = newClient(`js-bob-${failure}`);
    const ok = connected(bob);
    bob.connect();
    await waitFor('a connect error', () => bob.errors.some((e) => e.type === 'connect'));
    const err = bob.errors.find((e) => e.type === 'connect').error;
    assert.equal(err.code, 100, JSON.stringify(err));
    assert.equal(err.temporary, true);
    assert.ok(!JSON.stringify(err).includes('Traceback'), 'no backend internals');
    assert.equal(bob.state, 'connecting', 'the SDK keeps retrying');
    await mode('ok');
    await ok;
    bob.disconnect();
  }
  alice.disconnect();
}

const watchdog = setTimeout(() => {
  console.error('FAIL: watchdog: the run took over 55 s');
  process.exit(1);
}, 55000);
main().then(
  () => {
    clearTimeout(watchdog);
    console.log('--- all phases passed');
    process.exit(0);
  },
  (e) => {
    console.error(`FAIL: ${e.stack || e}`);
    process.exit(1);
  },
);
