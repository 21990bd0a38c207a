// The operations view, accessibility (axe-core) of every main state, the phone layout and
// the first load's weight.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { STEP, WAIT, apiClient, card, launch, newPage, openCard, screenshot, signIn, unique } from './helpers.mjs';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const FIRST_LOAD_BUDGET = 150 * 1024;

let browser;
let api;
before(async () => {
  browser = await launch();
  api = await apiClient();
});
after(async () => {
  await api?.dispose();
  await browser?.close();
});

test('operations shows throughput after tasks complete, and workers that are up', { timeout: 120_000 }, async () => {
  const { page } = await newPage(browser);
  await signIn(page);
  await page.getByRole('link', { name: 'Operations' }).click();
  await page.locator('.stat[data-metric="throughput"]').waitFor();
  // Prometheus scrapes every 5 s and rates over 1 m, and a counter's first sample has no
  // rate yet: keep completing tasks until throughput shows (at most a minute).
  const end = Date.now() + WAIT;
  for (;;) {
    await Promise.all(Array.from({ length: 3 }, () => api.create({ title: unique('for throughput'), kind: 'echo' })));
    const shown = await page.waitForFunction(() => {
      const v = document.querySelector('.stat[data-metric="throughput"] .value')?.textContent ?? '';
      return Number.parseFloat(v) > 0;
    }, null, { timeout: 6000, polling: 500 }).then(() => true, () => false);
    if (shown) break;
    assert.ok(Date.now() < end, 'throughput above 0 within a minute');
  }
  await page.locator('table.workers tbody tr', { hasText: 'Up' }).first().waitFor({ timeout: WAIT });
  const chart = page.locator('svg.chart[role="img"]').nth(1);
  assert.match(await chart.getAttribute('aria-label'), /Throughput .*latest completed \d/);
  console.log(`  throughput: ${await page.locator('.stat[data-metric="throughput"] .value').innerText()}`);
  await screenshot(page, 'ops.png');
  await page.context().close();
});

async function axe(page, label) {
  await page.evaluate(axeSource); // through CDP, so the page's CSP does not apply
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  console.log(`  [axe ${label}] ${result.passes.length} rules passed, ${result.violations.length} violated`);
  for (const v of result.violations) {
    console.log(`  [axe ${label}] ${v.impact} ${v.id}: ${v.help} (${v.nodes.length}×) ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  }
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${label}: ${v.id}`);
}

test('no serious or critical axe violations on sign-in, board, dialogs and operations', { timeout: 120_000 }, async () => {
  for (const scheme of ['light', 'dark']) {
    const { page, context } = await newPage(browser, { colorScheme: scheme });
    const found = [];
    await page.goto('/');
    await page.locator('#token').waitFor();
    found.push(...await axe(page, `${scheme} sign-in`));
    await signIn(page);
    const task = await api.create({ title: unique('a11y'), kind: 'fail', max_attempts: 1 });
    await card(page, task.id, 'failed').waitFor({ timeout: WAIT });
    found.push(...await axe(page, `${scheme} board`));
    const detail = await openCard(page, task.id);
    await detail.locator('.attempts li').first().waitFor();
    found.push(...await axe(page, `${scheme} detail`));
    await page.keyboard.press('Escape');
    await page.getByRole('button', { name: 'New task' }).click();
    await page.locator('#tf-title').waitFor();
    await page.getByRole('button', { name: 'Create task' }).click(); // empty title: error state
    await page.locator('#tf-title[aria-invalid="true"]').waitFor();
    found.push(...await axe(page, `${scheme} create dialog`));
    await page.keyboard.press('Escape');
    await page.getByRole('link', { name: 'Operations' }).click();
    await page.locator('.stat').first().waitFor({ timeout: WAIT });
    found.push(...await axe(page, `${scheme} operations`));
    await context.close();
    assert.deepEqual(found, [], 'serious/critical violations');
  }
});

test('at phone width the board is usable and the page does not scroll sideways', { timeout: 90_000 }, async () => {
  const { page, context } = await newPage(browser, { viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true });
  await signIn(page);
  const task = await api.create({ title: unique('phone'), kind: 'noop' });
  await card(page, task.id, 'completed').waitFor({ timeout: WAIT });
  await screenshot(page, 'phone-board.png');
  const widths = await page.evaluate(() => ({ doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, view: window.innerWidth }));
  assert.ok(widths.doc <= widths.view && widths.body <= widths.view, `no horizontal overflow: ${JSON.stringify(widths)}`);
  // The board scrolls itself; every column is reachable and the cards open.
  const board = page.locator('.board');
  assert.ok(await board.evaluate((b) => b.scrollWidth > b.clientWidth), 'the board scrolls sideways');
  await card(page, task.id).scrollIntoViewIfNeeded();
  const detail = await openCard(page, task.id);
  const box = await detail.boundingBox();
  assert.ok(box.width <= 375, 'the dialog fits');
  await page.keyboard.press('Escape');
  await context.close();
});

/** The body as sent (still compressed), with the browser's Accept-Encoding. */
function encodedBody(url) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { rejectUnauthorized: false, headers: { 'Accept-Encoding': 'gzip, deflate, br, zstd' } }, (res) => {
      let bytes = 0;
      res.on('data', (chunk) => { bytes += chunk.length; });
      res.on('end', () => resolve({ bytes, encoding: res.headers['content-encoding'] ?? 'identity' }));
    });
    req.setTimeout(STEP, () => req.destroy(new Error(`timeout fetching ${url}`)));
    req.on('error', reject);
  });
}

test('first load of the board: JS and CSS stay small', { timeout: 60_000 }, async () => {
  const { page, context } = await newPage(browser);
  const assets = new Set();
  page.on('response', (r) => { if (['script', 'stylesheet'].includes(r.request().resourceType())) assets.add(r.url()); });
  await signIn(page);
  await page.waitForLoadState('networkidle').catch(() => {});
  let total = 0;
  for (const url of assets) {
    const { bytes, encoding } = await encodedBody(url);
    total += bytes;
    console.log(`  ${bytes} B ${new URL(url).pathname} (${encoding})`);
  }
  console.log(`first-load JS+CSS: ${total} bytes compressed`);
  assert.ok(assets.size >= 2, 'JS and CSS were seen');
  assert.ok(total < FIRST_LOAD_BUDGET, `${total} B is under ${FIRST_LOAD_BUDGET} B`);
  await context.close();
});
