// Loads the live dashboard example (examples/dashboard) in Debian's chromium (headless, via
// playwright-core) and waits until it shows what the token allows. Usage:
//   node dashboard.mjs PAGE_URL SCREENSHOT_PATH ROLE
// ROLE staff: every staff stream shows values and the admin panel shows the refusal (103).
// ROLE admin: every stream shows values, alerts included.
// Exits 0 when the page shows all of it (within 20 s), 1 with the reason otherwise.
import { checkPage, expectText } from './browser.mjs';

const [url, shot, role] = process.argv.slice(2);
const WAIT = 20000;
const staff = ['staff:system-health', 'staff:analytics-update', 'staff:sensor-data',
  'staff:device-status'];
await checkPage(url, shot, async (page) => {
  await expectText(page, '#state', 'connected', WAIT);
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
  return `${role}: ${shown.join(', ')}`;
});
