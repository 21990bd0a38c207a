// The board kept live by server-sent events: tasks created elsewhere or in the dialog,
// cancelled and retried, move across the columns without a reload.
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { TOKEN, WAIT, apiClient, card, launch, newPage, openCard, screenshot, signIn, unique } from './helpers.mjs';

let browser;
let api;
let page;
let context;
before(async () => {
  browser = await launch();
  api = await apiClient();
  ({ context, page } = await newPage(browser));
  await signIn(page);
  // Set once; a reload would lose it, so it proves updates arrive without one.
  await page.evaluate(() => { window.notReloaded = true; });
});
after(async () => {
  await api?.dispose();
  await browser?.close();
});

// A failed test must not leave a dialog over the next one's board.
afterEach(() => page.evaluate(() => { for (const d of document.querySelectorAll('dialog[open]')) d.close(); }));

const stillSamePage = () => page.evaluate(() => window.notReloaded === true);

test('a task created elsewhere appears and moves to Completed by itself', { timeout: 90_000 }, async () => {
  const task = await api.create({ title: unique('elsewhere'), kind: 'sleep', payload: { duration_ms: 1500 } });
  await card(page, task.id).waitFor({ timeout: WAIT });
  await card(page, task.id, 'completed').waitFor({ timeout: WAIT });
  assert.match(await card(page, task.id).innerText(), new RegExp(`#${task.id}`));
  assert.ok(await stillSamePage(), 'no reload happened');
});

test('the dialog and the filter list the kinds the API runs; payload errors show at the payload', { timeout: 60_000 }, async () => {
  const kinds = await api.kinds();
  const names = kinds.map((k) => k.kind);
  const options = (select) => select.locator('option').evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
  await page.locator(`#f-kind option[value="${names.at(-1)}"]`).waitFor({ state: 'attached' });
  assert.deepEqual(await options(page.locator('#f-kind')), names);
  await page.getByRole('button', { name: 'New task' }).click();
  const dialog = page.locator('dialog.form-dialog[open]');
  await dialog.locator('#tf-kind').selectOption('sleep');
  assert.deepEqual(await options(dialog.locator('#tf-kind')), names);
  const sleep = kinds.find((k) => k.kind === 'sleep');
  assert.deepEqual(JSON.parse(await dialog.locator('#tf-payload').inputValue()), sleep.example, 'the example fills in');
  assert.equal(await dialog.locator('#tf-kind-hint').innerText(), sleep.summary);
  await dialog.locator('#tf-title').fill(unique('bad payload'));
  await dialog.locator('#tf-payload').fill('{"duration_ms": "soon"}');
  await dialog.getByRole('button', { name: 'Create task' }).click();
  await dialog.locator('#tf-payload[aria-invalid="true"]').waitFor();
  assert.match(await dialog.locator('#tf-payload-error').innerText(), /^duration_ms: /);
});

test('a task created in the dialog completes live and its detail shows the run', { timeout: 90_000 }, async () => {
  const title = unique('from the dialog');
  await page.getByRole('button', { name: 'New task' }).click();
  const dialog = page.locator('dialog.form-dialog[open]');
  await dialog.locator('#tf-title').fill(title);
  await dialog.locator('#tf-kind').selectOption('sleep');
  await dialog.locator('#tf-payload').fill('{"duration_ms": 800}');
  await screenshot(page, 'create-dialog.png');
  await dialog.getByRole('button', { name: 'Create task' }).click();
  await dialog.waitFor({ state: 'detached' });
  const completed = page.locator('.column[data-status="completed"] li', { hasText: title });
  await completed.waitFor({ timeout: WAIT });
  assert.ok(await stillSamePage());
  const id = Number(await completed.getAttribute('data-id'));
  // Its outcome is announced, since it was created in this session.
  await page.locator('#status', { hasText: `Task ${id} completed` }).waitFor();
  const detail = await openCard(page, id);
  const text = await detail.textContent();
  const task = await api.get(id);
  assert.match(text, /Request id/);
  assert.ok(task.request_id && text.includes(task.request_id), 'shows the request id');
  assert.match(text, /Attempts1 of 3/, 'attempts');
  assert.match(await detail.locator('pre[aria-label="Result JSON"]').innerText(), /"slept_ms": 800/);
  await screenshot(page, 'task-detail.png');
  await page.keyboard.press('Escape');
  await detail.waitFor({ state: 'detached' });
  assert.equal(await page.evaluate((tid) => document.activeElement?.closest('li')?.dataset.id, id), String(id),
    'focus returns to the card');
});

test('cancelling a long sleep moves it to Cancelled', { timeout: 90_000 }, async () => {
  const task = await api.create({ title: unique('long sleep'), kind: 'sleep', payload: { duration_ms: 120000 } });
  await card(page, task.id, 'running').waitFor({ timeout: WAIT });
  const detail = await openCard(page, task.id);
  await detail.getByRole('button', { name: 'Cancel task' }).click();
  await detail.locator('.badge', { hasText: 'Cancelled' }).waitFor({ timeout: WAIT });
  await page.keyboard.press('Escape');
  await card(page, task.id, 'cancelled').waitFor({ timeout: WAIT });
  const after = await api.get(task.id);
  assert.equal(after.status, 'cancelled');
});

test('retrying a failed task runs it again', { timeout: 90_000 }, async () => {
  const task = await api.create({ title: unique('fails once'), kind: 'fail', max_attempts: 1, payload: { fail_attempts: 1 } });
  await card(page, task.id, 'failed').waitFor({ timeout: WAIT });
  // Record every column the card passes through from here on.
  await page.evaluate((id) => {
    window.visited = [];
    new MutationObserver(() => {
      const column = document.querySelector(`li[data-id="${id}"]`)?.closest('.column')?.dataset.status;
      if (column && window.visited.at(-1) !== column) window.visited.push(column);
    }).observe(document.querySelector('.board'), { childList: true, subtree: true });
  }, task.id);
  const detail = await openCard(page, task.id);
  await detail.getByRole('button', { name: 'Retry' }).click();
  // Retry resets attempts to 0, so the run is attempt 1 again, which fail_attempts: 1
  // fails: it ends failed again, with both failures in its history.
  const done = await api.until(task.id, (t) => t.status === 'failed' && t.errors.length === 2);
  assert.equal(done.attempts, 1);
  assert.deepEqual(done.errors.map((e) => e.attempt), [1, 1]);
  await detail.locator('.attempts li').nth(1).waitFor({ timeout: WAIT });
  await page.keyboard.press('Escape');
  await card(page, task.id, 'failed').waitFor({ timeout: WAIT });
  const visited = await page.evaluate(() => window.visited);
  assert.ok(visited.includes('pending') || visited.includes('running'), `left Failed: ${visited}`);
  assert.equal(visited.at(-1), 'failed');
  // By now the columns hold completed, cancelled and failed tasks: the board's picture.
  await screenshot(page, 'board.png');
});

test('deleting asks for confirmation in a dialog, then removes the card', { timeout: 90_000 }, async () => {
  const task = await api.create({ title: unique('to delete'), kind: 'noop' });
  await card(page, task.id, 'completed').waitFor({ timeout: WAIT });
  const detail = await openCard(page, task.id);
  await detail.getByRole('button', { name: 'Delete' }).click();
  const confirm = page.locator('dialog.confirm[open]');
  await confirm.getByRole('button', { name: 'Keep it' }).click();
  await confirm.waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.action), 'delete', 'focus back on Delete');
  await detail.getByRole('button', { name: 'Delete' }).click();
  await confirm.getByRole('button', { name: 'Delete' }).click();
  await detail.waitFor({ state: 'detached' });
  await card(page, task.id).waitFor({ state: 'detached' });
  await page.locator('#status', { hasText: `Task ${task.id} deleted` }).waitFor();
});

test('when the event stream drops, the header says so and the board catches up on reconnect', { timeout: 120_000 }, async () => {
  // A page of its own whose event stream is under the test's control: the first stream
  // says ready and ends at once, the reconnects fail until allowed, then the real one.
  const own = await newPage(browser);
  let streams = 0;
  let allow = false;
  await own.page.route('**/api/v1/events', (route) => {
    streams += 1;
    if (streams === 1) return route.fulfill({ status: 200, contentType: 'text/event-stream', body: 'retry: 500\nevent: ready\ndata: {}\n\n' });
    return allow ? route.continue() : route.abort();
  });
  await own.page.goto('/');
  await own.page.locator('#token').fill(TOKEN);
  await own.page.getByRole('button', { name: 'Sign in' }).click();
  await own.page.locator('#live[data-state="down"]', { hasText: 'Reconnecting' }).waitFor({ timeout: WAIT });
  // Made while the page cannot hear about it.
  const task = await api.create({ title: unique('missed'), kind: 'noop' });
  await api.until(task.id, (t) => t.status === 'completed');
  allow = true;
  await own.page.locator('#live[data-state="live"]').waitFor({ timeout: WAIT });
  await card(own.page, task.id, 'completed').waitFor({ timeout: WAIT });
  assert.ok(streams >= 2, `reconnected (${streams} stream requests)`);
  await own.context.close();
});
