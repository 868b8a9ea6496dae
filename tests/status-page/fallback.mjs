// centrifuge-js in Debian's chromium (headless) on the bidirectional-emulation fallbacks: a
// page on another origin than the node (CORS: the node lists the page's origin in
// client.allowed_origins) loads the SDK's browser build and runs, per case, connect,
// subscribe, receive API publications, publish, and recover after a server-side disconnect.
// Cases: forced onto http_stream; forced onto sse; and with WebSockets blocked (every one the
// page opens fails, as behind a proxy refusing upgrades) and transports [websocket,
// http_stream, sse], falling back by itself; and on a page with no WebSocket at all
// ([websocket, http_stream]: the SDK skips the transport it cannot construct).
// Usage: node fallback.mjs PAGE_ORIGIN NODE_URL SDK_PATH TOKEN API_KEY CHANNEL_PREFIX SHOT
// Exits 0 when every case passes, 1 with the reason otherwise.
import { chromium } from 'playwright-core';
import http from 'node:http';

const [pageOrigin, nodeUrl, sdkPath, token, apiKey, prefix, shot] = process.argv.slice(2);

async function api(method, body) {
  const r = await fetch(`${nodeUrl}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`API ${method}: HTTP ${r.status} ${text}`);
  return JSON.parse(text).result;
}

// Runs one case in a fresh page; returns a summary line.
async function runCase(browser, name, transports, blockWebSocket) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Network failures and console errors explain most failures (CORS, a refused request).
  const net = [];
  page.on('requestfailed', (r) => net.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('console', (m) => { if (m.type() === 'error') net.push(`console: ${m.text()}`); });
  if (blockWebSocket === 'absent') {
    // A page or policy without WebSocket at all: the SDK finds no constructor and moves on
    // to the next transport in its list.
    await page.addInitScript(() => { delete window.WebSocket; window.WebSocket = undefined; });
  } else if (blockWebSocket) {
    // As behind a proxy that refuses upgrades: every WebSocket fails to open (error, then
    // close 1006). (A constructor that throws instead makes centrifuge-js 5.7.4's connect()
    // throw, with no fallback: the SDK only falls back on a transport that closes.)
    await page.addInitScript(() => {
      const Real = window.WebSocket;
      window.WebSocket = class extends Real {
        constructor(_url, protocols) { super('ws://127.0.0.1:1/blocked', protocols); }
      };
    });
  }
  await page.goto(`${pageOrigin}/app`);
  await page.addScriptTag({ path: sdkPath });
  const channel = `${prefix}${name}`;
  await page.evaluate(([transports, token, channel, nodeUrl]) => {
    window.state = { connected: [], connecting: [], subscribed: [], pubs: [], errors: [] };
    const c = new Centrifuge(transports, {
      token,
      emulationEndpoint: `${nodeUrl}/emulation`,
      minReconnectDelay: 1500,
      maxReconnectDelay: 2000,
    });
    c.on('connected', (ctx) => window.state.connected.push(ctx));
    c.on('connecting', (ctx) => window.state.connecting.push(ctx));
    c.on('error', (ctx) => window.state.errors.push(JSON.stringify(ctx)));
    const sub = c.newSubscription(channel, { recoverable: true, positioned: true });
    sub.on('subscribed', (ctx) => window.state.subscribed.push(ctx));
    sub.on('publication', (ctx) => window.state.pubs.push({ offset: ctx.offset, data: ctx.data }));
    sub.subscribe();
    c.connect();
    window.client = c;
    window.sub = sub;
  }, [transports, token, channel, nodeUrl]);
  const wait = (fn, arg, what) => page.waitForFunction(fn, arg, { timeout: 15000 }).catch(async () => {
    const st = await page.evaluate(() => JSON.stringify(window.state));
    throw new Error(`${name}: timed out waiting for ${what}; state ${st}; page errors ${errors.join('; ')}; network ${net.slice(0, 6).join('; ')}`);
  });
  await wait(() => window.state.subscribed.length === 1, null, 'subscribed');
  const used = await page.evaluate(() => window.state.connected[0].transport);
  const want = transports.length > 1 ? 'http_stream' : transports[0].transport;
  if (used !== want) throw new Error(`${name}: connected over ${used}, want ${want}`);
  await api('publish', { channel, data: { api: 1 } });
  await page.evaluate(() => window.sub.publish({ from: 'page' }));
  await wait(() => window.state.pubs.length === 2, null, 'the API and the page publication');
  // Recovery after a server-side disconnect: publish while the page is away.
  const n = await page.evaluate(() => window.state.connecting.length);
  await api('disconnect', { user: 'browser', disconnect: { code: 3011, reason: 'force reconnect' } });
  await wait((n) => window.state.connecting.length > n, n, 'the 3011 disconnect');
  const code = await page.evaluate((n) => window.state.connecting[n].code, n);
  if (code !== 3011) {
    const all = await page.evaluate(() => JSON.stringify([window.state.connecting, window.state.connected]));
    throw new Error(`${name}: disconnected with ${code}, want 3011 (n ${n}: ${all})`);
  }
  const missed = [];
  for (let i = 0; i < 2; i++) missed.push((await api('publish', { channel, data: { missed: i } })).offset);
  await wait(() => window.state.subscribed.length === 2 && window.state.pubs.length === 4, null, 'recovery');
  const again = await page.evaluate(() => window.state.subscribed[1]);
  if (!again.recovered) throw new Error(`${name}: not recovered: ${JSON.stringify(again)}`);
  const offsets = await page.evaluate(() => window.state.pubs.slice(2).map((p) => p.offset));
  if (JSON.stringify(offsets) !== JSON.stringify(missed)) throw new Error(`${name}: recovered ${offsets}, want ${missed}`);
  if (errors.length) throw new Error(`${name}: page errors ${errors.join('; ')}`);
  await page.screenshot({ path: shot.replace('.png', `-${name}.png`) });
  await page.evaluate(() => window.client.disconnect());
  await page.close();
  return `${name}: over ${used}, received, published, recovered ${missed.length}`;
}

// The page's own server (a real loopback origin: chromium lets such a page reach the node).
const pageServer = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html' });
  res.end('<!doctype html><meta charset="utf-8"><title>fallback</title><p>fallback test</p>');
});
const { hostname, port } = new URL(pageOrigin);
await new Promise((resolve) => pageServer.listen(Number(port), hostname, resolve));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = null;
const lines = [];
try {
  const ws = nodeUrl.replace(/^http/, 'ws');
  lines.push(await runCase(browser, 'http_stream', [{ transport: 'http_stream', endpoint: `${nodeUrl}/connection/http_stream` }], false));
  lines.push(await runCase(browser, 'sse', [{ transport: 'sse', endpoint: `${nodeUrl}/connection/sse` }], false));
  lines.push(await runCase(browser, 'blocked', [
    { transport: 'websocket', endpoint: `${ws}/connection/websocket` },
    { transport: 'http_stream', endpoint: `${nodeUrl}/connection/http_stream` },
    { transport: 'sse', endpoint: `${nodeUrl}/connection/sse` },
  ], true));
  lines.push(await runCase(browser, 'absent', [
    { transport: 'websocket', endpoint: `${ws}/connection/websocket` },
    { transport: 'http_stream', endpoint: `${nodeUrl}/connection/http_stream` },
  ], 'absent'));
} catch (e) {
  failed = e;
} finally {
  await browser.close();
  pageServer.close();
}
if (failed) {
  console.error('FAIL:', failed.message);
  process.exit(1);
}
console.log(`fallbacks OK: ${lines.join(' | ')}`);
