// What the status page checks share: Debian's chromium, headless, driven by playwright-core.
import { chromium } from 'playwright-core';

// Opens `url`, runs `check(page)` (which returns a summary line), and screenshots the page to
// `shot` (also when the check fails, to show why). Exits 0 when the check passes and the page
// raised no error, 1 with the reason otherwise. `setup(page)`, when given, runs before the page
// loads (init scripts, routes).
export async function checkPage(url, shot, check, setup = null) {
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
    if (setup) await setup(page);
    await page.goto(url, { waitUntil: 'load' });
    try {
      const summary = await check(page);
      if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
      console.log(`status page OK: ${summary}; screenshot ${shot}`);
    } finally {
      await page.screenshot({ path: shot, fullPage: true });
    }
  } catch (e) {
    failed = e;
  } finally {
    await browser.close();
  }
  if (failed) {
    console.error('FAIL:', failed.message);
    process.exit(1);
  }
}

// Waits until the trimmed text of `sel` is `want` (one of `want`, given an array).
export async function expectText(page, sel, want, timeout = 10000) {
  const wants = Array.isArray(want) ? want : [want];
  await page.waitForFunction(
    ([s, w]) => w.includes(document.querySelector(s)?.textContent.trim()), [sel, wants], { timeout },
  ).catch(async () => {
    const got = await page.textContent(sel).catch(() => 'nothing');
    throw new Error(`${sel}: want ${wants.join(' or ')}, got ${got}`);
  });
}
