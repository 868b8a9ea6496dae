// Loads a node's status page in Debian's chromium (headless, via playwright-core) and checks
// the figures it shows. Usage: node check.mjs ADMIN_URL NODE_ID CONNECTIONS CHANNELS
//   PRESENCE_CHANNEL PRESENCE_COUNT SCREENSHOT_PATH
// Exits 0 when every figure matches, 1 with the reason otherwise.
import { chromium } from 'playwright-core';

const [url, nodeId, connections, channels, presenceChannel, presenceCount, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = null;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: 'load' });
  const expectText = async (sel, want) => {
    await page.waitForFunction(
      ([s, w]) => document.querySelector(s)?.textContent.trim() === w, [sel, want], { timeout: 10000 },
    ).catch(async () => {
      const got = await page.textContent(sel);
      throw new Error(`${sel}: want ${want}, got ${got}`);
    });
  };
  await expectText('#node-id', nodeId);
  await expectText('#connections', connections);
  await expectText('#channels', channels);
  await expectText('#leader', nodeId);
  // Rates appear from the second refresh on.
  await page.waitForFunction(() => document.querySelector('#rate-out').textContent.trim() !== '–', null, { timeout: 10000 });
  const rows = await page.$$eval('#top tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  if (rows.length !== Number(channels)) throw new Error(`top channels: ${JSON.stringify(rows)}`);
  await page.fill('#presence-channel', presenceChannel);
  await page.click('#presence-form button');
  await page.waitForFunction((n) => document.querySelectorAll('#presence tr').length === n, Number(presenceCount), { timeout: 10000 });
  await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log(`status page OK: top channels ${JSON.stringify(rows)}; screenshot ${shot}`);
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
if (failed) {
  console.error('FAIL:', failed.message);
  process.exit(1);
}
