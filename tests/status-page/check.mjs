// Loads a node's status page in Debian's chromium (headless, via playwright-core) and checks
// the figures it shows. Usage: node check.mjs ADMIN_URL NODE_ID CONNECTIONS CHANNELS
//   PRESENCE_CHANNEL PRESENCE_COUNT SCREENSHOT_PATH
// Exits 0 when every figure matches, 1 with the reason otherwise.
import { checkPage, expectText } from './browser.mjs';

const [url, nodeId, connections, channels, presenceChannel, presenceCount, shot] = process.argv.slice(2);
await checkPage(url, shot, async (page) => {
  await expectText(page, '#node-id', nodeId);
  await expectText(page, '#connections', connections);
  await expectText(page, '#channels', channels);
  await expectText(page, '#leader', nodeId);
  await page.waitForFunction(
    () => /^\d+\.\d+\.\d+ \(commit \w+\)$/.test(document.querySelector('#version').textContent.trim()),
    null, { timeout: 10000 },
  ).catch(async () => { throw new Error(`#version: ${await page.textContent('#version')}`); });
  await expectText(page, `#nodes tr[data-node="${nodeId}"] .reach`, 'this node');
  if (await page.isVisible('#no-quorum')) throw new Error('a one-voter cluster shows the no-quorum banner');
  // Rates and the charts' lines appear from the second refresh on.
  await page.waitForFunction(() => document.querySelector('#rate-out').textContent.trim() !== '–', null, { timeout: 10000 });
  await page.waitForFunction(
    () => document.querySelector('#chart-messages polyline')?.getAttribute('points').split(' ').length >= 2,
    null, { timeout: 10000 },
  );
  const rows = await page.$$eval('#top tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  if (rows.length !== Number(channels)) throw new Error(`top channels: ${JSON.stringify(rows)}`);
  await page.fill('#presence-channel', presenceChannel);
  await page.click('#presence-form button');
  await page.waitForFunction((n) => document.querySelectorAll('#presence tr').length === n, Number(presenceCount), { timeout: 10000 });
  return `top channels ${JSON.stringify(rows)}`;
});
