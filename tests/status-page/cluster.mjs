// Loads a cluster node's status page in Debian's chromium (headless, via playwright-core) and
// waits until it shows what is expected of each member. Usage:
//   node cluster.mjs ADMIN_URL SCREENSHOT_PATH EXPECT_JSON
// EXPECT_JSON: {"self": id, "reachable": [ids], "unreachable": [ids], "quorum": bool,
//   "reachableText": "1 of 3", "connections": "N" (cluster total)}.
// Exits 0 when the page shows all of it (within 20 s), 1 with the reason otherwise.
import { checkPage, expectText } from './browser.mjs';

const [url, shot, expectJson] = process.argv.slice(2);
const want = JSON.parse(expectJson);
const WAIT = 20000;
await checkPage(url, shot, async (page) => {
  await expectText(page, '#node-id', String(want.self), WAIT);
  await expectText(page, `#nodes tr[data-node="${want.self}"] .reach`, 'this node', WAIT);
  for (const id of want.reachable) {
    await expectText(page, `#nodes tr[data-node="${id}"] .reach`, 'reachable', WAIT);
  }
  for (const id of want.unreachable) {
    await expectText(page, `#nodes tr[data-node="${id}"] .reach`, 'unreachable', WAIT);
    // Not "follower": this node cannot know what a node it cannot reach is doing.
    await expectText(page, `#nodes tr[data-node="${id}"] td:nth-child(3)`, 'voter', WAIT);
  }
  await expectText(page, '#total-reachable', want.reachableText, WAIT);
  await expectText(page, '#total-connections', want.connections, WAIT);
  await page.waitForFunction(
    (q) => document.querySelector('#no-quorum').hidden === q, want.quorum, { timeout: WAIT },
  ).catch(() => { throw new Error(`the no-quorum banner should be ${want.quorum ? 'hidden' : 'shown'}`); });
  if (!want.quorum) {
    const banner = (await page.textContent('#no-quorum')).replace(/\s+/g, ' ').trim();
    if (!banner.startsWith('No quorum')) throw new Error(`banner: ${banner}`);
  }
  const rows = await page.$$eval('#nodes tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent).join(' | ')));
  return `nodes ${JSON.stringify(rows)}`;
});
