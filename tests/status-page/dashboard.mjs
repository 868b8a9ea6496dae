// Loads the live dashboard example (examples/dashboard) in Debian's chromium (headless, via
// playwright-core) and waits until it shows what the token allows. Usage:
//   node dashboard.mjs PAGE_URL SCREENSHOT_PATH ROLE [BLOCKED]
// ROLE staff: every staff stream shows values and the admin panel shows the refusal (103).
// ROLE admin: every stream shows values, alerts included.
// BLOCKED: transports the network refuses, comma-separated: `websocket` (every WebSocket the
// page opens fails, as behind a proxy refusing the upgrade) and `http_stream` (its streaming
// POST fails, as behind a proxy that refuses it). The page must then have tried each blocked one
// and show the next of websocket, http_stream, sse as its transport.
// Exits 0 when the page shows all of it (within 20 s), 1 with the reason otherwise.
import { checkPage, expectText } from './browser.mjs';

const [url, shot, role, blockedArg] = process.argv.slice(2);
const blocked = (blockedArg || '').split(',').filter((t) => t);
const ORDER = ['websocket', 'http_stream', 'sse'];
for (const t of blocked) {
  if (!['websocket', 'http_stream'].includes(t)) throw new Error(`cannot block ${t}`);
}
const want = ORDER.find((t) => !blocked.includes(t));
const WAIT = 20000;
const staff = ['staff:system-health', 'staff:analytics-update', 'staff:sensor-data',
  'staff:device-status'];
let refusedStreams = 0;
async function block(page) {
  if (blocked.includes('websocket')) {
    // A constructor that throws would make centrifuge-js 5.7.4's connect() throw with no
    // fallback (tests/status-page/fallback.mjs): the socket must open and fail instead.
    await page.addInitScript(() => {
      const Real = window.WebSocket;
      window.blockedWebSockets = 0;
      window.WebSocket = class extends Real {
        constructor(_url, protocols) {
          window.blockedWebSockets += 1;
          super('ws://127.0.0.1:1/blocked', protocols);
        }
      };
    });
  }
  if (blocked.includes('http_stream')) {
    await page.route('**/connection/http_stream', (route) => {
      refusedStreams += 1;
      return route.abort('connectionrefused');
    });
  }
}
const run = `${role}${blocked.length ? ` with ${blocked.join(' and ')} blocked` : ''}`;
async function check(page) {
  await expectText(page, '#state', 'connected', WAIT);
  await expectText(page, '#transport', want, WAIT);
  if (blocked.includes('websocket')) {
    const n = await page.evaluate(() => window.blockedWebSockets);
    if (!(n >= 1)) throw new Error(`the page never tried a WebSocket (${n})`);
  }
  if (blocked.includes('http_stream') && refusedStreams < 1) {
    throw new Error('the page never tried HTTP streaming');
  }
  const streams = role === 'admin' ? [...staff, 'admin:alert-new'] : staff;
  for (const ch of streams) {
    await page.waitForFunction(
      (c) => Number(document.querySelector(`.card[data-channel="${c}"]`).dataset.updates || 0) >= 1,
      ch, { timeout: WAIT },
    ).catch(() => { throw new Error(`${ch}: no value shown`); });
  }
  // Continuous streams keep arriving: a second sensor value.
  await page.waitForFunction(
    () => Number(document.querySelector('.card[data-channel="staff:sensor-data"]').dataset.updates) >= 2,
    null, { timeout: WAIT },
  ).catch(() => { throw new Error('sensor data did not keep arriving'); });
  const admin = await page.$eval('#admin', (c) => ({
    refused: c.dataset.refused || null, updates: Number(c.dataset.updates || 0),
    text: c.querySelector('.value').textContent,
  }));
  if (role === 'staff') {
    await page.waitForFunction(() => document.querySelector('#admin').dataset.refused, null,
      { timeout: WAIT }).catch(() => { throw new Error('the admin panel was not refused'); });
    const text = await page.textContent('#admin .value');
    if (!text.startsWith('refused: 103')) throw new Error(`admin panel: ${text}`);
  } else if (admin.refused) {
    throw new Error(`admin refused: ${admin.text}`);
  }
  const shown = await page.$$eval('.card', (cs) => cs.map((c) => `${c.dataset.channel}=${c.dataset.updates || c.dataset.refused}`));
  return `${role} over ${want}: ${shown.join(', ')}`;
}
await checkPage(url, shot, (page) => check(page).catch((e) => {
  throw new Error(`${run}: ${e.message}`);
}), block);
