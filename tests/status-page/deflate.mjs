// Debian's chromium (headless) agrees permessage-deflate with a node and decodes compressed
// publications: a page on the node's own origin opens /connection/websocket, connects and
// subscribes; publications of about 2 KB go out through the API; the page must receive them
// unchanged, and the node's metrics must show them sent compressed.
// Usage: node deflate.mjs BASE_URL ADMIN_URL TOKEN API_KEY CHANNEL SCREENSHOT_PATH
// Exits 0 when every check passes, 1 with the reason otherwise.
import { checkPage } from './browser.mjs';

const [base, adminUrl, token, apiKey, channel, shot] = process.argv.slice(2);
const COUNT = 5;

async function metric(name) {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

function documentFor(n) {
  const pages = [];
  for (let i = 0; i < 30; i++) pages.push({ path: `/products/category-${i}/item`, views: 1000 + i * 37 + n, unique: 800 + i * 11 });
  return { kind: 'analytics_summary', seq: n, top_pages: pages };
}

await checkPage(`${base}/healthz`, shot, async (page) => {
  const extensions = await page.evaluate(async ([tok, ch]) => {
    const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/connection/websocket`);
    window.got = [];
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('WebSocket error'));
    });
    ws.onmessage = (e) => {
      for (const line of e.data.split('\n')) if (line) window.got.push(JSON.parse(line));
    };
    ws.send(JSON.stringify({ id: 1, connect: { token: tok } }));
    ws.send(JSON.stringify({ id: 2, subscribe: { channel: ch } }));
    window.ws = ws;
    return ws.extensions;
  }, [token, channel]);
  if (!extensions.startsWith('permessage-deflate')) throw new Error(`extensions agreed: "${extensions}"`);
  await page.waitForFunction(() => window.got.some((m) => m.id === 2), null, { timeout: 10000 });
  const sub = await page.evaluate(() => window.got.find((m) => m.id === 2));
  if (!sub.subscribe) throw new Error(`subscribe: ${JSON.stringify(sub)}`);
  const before = await metric('switchyard_messages_out_compressed_total');
  const docs = [];
  for (let n = 0; n < COUNT; n++) {
    docs.push(documentFor(n));
    const r = await fetch(`${base}/api/publish`, {
      method: 'POST',
      headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel, data: docs[n] }),
    });
    if (r.status !== 200) throw new Error(`publish: HTTP ${r.status}`);
  }
  await page.waitForFunction((n) => window.got.filter((m) => m.push?.pub).length === n, COUNT, { timeout: 10000 });
  const got = await page.evaluate(() => window.got.filter((m) => m.push?.pub).map((m) => m.push.pub.data));
  for (let n = 0; n < COUNT; n++) {
    if (JSON.stringify(got[n]) !== JSON.stringify(docs[n])) throw new Error(`publication ${n}: ${JSON.stringify(got[n])}`);
  }
  const compressed = (await metric('switchyard_messages_out_compressed_total')) - before;
  if (compressed < COUNT) throw new Error(`${compressed} messages went compressed, want ${COUNT}`);
  return `extensions "${extensions}", ${COUNT} publications compressed and decoded`;
});
