// Editing with validation errors from the server, and the filters narrowing the board.
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { TOKEN, WAIT, apiClient, card, later, launch, newPage, openCard, signIn, unique } from './helpers.mjs';

let browser;
let api;
let page;
const created = [];
before(async () => {
  browser = await launch();
  api = await apiClient();
  ({ page } = await newPage(browser));
  await signIn(page);
});
// A failed test must leave neither a dialog nor a filter behind for the next one.
afterEach(async () => {
  await page.evaluate(() => { for (const d of document.querySelectorAll('dialog[open]')) d.close(); });
  if (await page.locator('#f-q').inputValue()) await page.locator('#f-q').fill('');
  if (await page.locator('#f-kind').inputValue()) await page.locator('#f-kind').selectOption('');
  for (const box of await page.getByRole('checkbox').all()) await box.check();
});
after(async () => {
  for (const id of created) await api.remove(id);
  await api?.dispose();
  await browser?.close();
});

async function pendingTask(fields) {
  const task = await api.create({ run_at: later(), ...fields });
  created.push(task.id);
  return task;
}

test('an invalid edit shows the error at the field and keeps the input; a valid one saves', { timeout: 90_000 }, async () => {
  const task = await pendingTask({ title: unique('to edit') });
  await card(page, task.id, 'pending').waitFor({ timeout: WAIT });
  const detail = await openCard(page, task.id);
  await detail.getByRole('button', { name: 'Edit' }).click();
  const form = page.locator('dialog.form-dialog[open]');
  const newTitle = unique('edited');
  await form.locator('#tf-title').fill(newTitle);
  await form.locator('#tf-priority').fill('500');
  await form.getByRole('button', { name: 'Save changes' }).click();

  // The server's 422 lands next to the priority field, which gets focus.
  const priority = form.locator('#tf-priority[aria-invalid="true"]');
  await priority.waitFor();
  const error = form.locator('#tf-priority-error');
  assert.ok((await error.innerText()).length > 0);
  assert.match(await priority.getAttribute('aria-describedby'), /tf-priority-error/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'tf-priority');
  assert.equal(await form.locator('#tf-title').inputValue(), newTitle, 'input kept');
  assert.equal(await form.locator('#tf-priority').inputValue(), '500', 'input kept');
  assert.equal((await api.get(task.id)).title, task.title, 'nothing was saved');

  await form.locator('#tf-priority').fill('7');
  await form.getByRole('button', { name: 'Save changes' }).click();
  await form.waitFor({ state: 'detached' });
  await card(page, task.id).filter({ hasText: newTitle }).waitFor();
  assert.match(await card(page, task.id).innerText(), /priority 7/);
  await detail.locator('h2', { hasText: newTitle }).waitFor();
  const saved = await api.get(task.id);
  assert.equal(saved.title, newTitle);
  assert.equal(saved.priority, 7);
});

test('an empty title is refused at the field', { timeout: 60_000 }, async () => {
  await page.getByRole('button', { name: 'New task' }).click();
  const form = page.locator('dialog.form-dialog[open]');
  await form.locator('#tf-payload').fill('{"duration_ms": 5}');
  await form.getByRole('button', { name: 'Create task' }).click();
  await form.locator('#tf-title[aria-invalid="true"]').waitFor();
  assert.equal(await form.locator('#tf-payload').inputValue(), '{"duration_ms": 5}', 'input kept');
  // Client-side: a payload that is not a JSON object.
  await form.locator('#tf-payload').fill('[1, 2]');
  await form.locator('#tf-title').fill(unique('never'));
  await form.getByRole('button', { name: 'Create task' }).click();
  await form.locator('#tf-payload[aria-invalid="true"]').waitFor();
  assert.equal(await form.locator('#tf-title').getAttribute('aria-invalid'), null, 'title error cleared');
  await form.getByRole('button', { name: 'Cancel' }).click();
  await form.waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'New task', 'focus back on the opener');
});

test('kind, text and status filters narrow the board', { timeout: 90_000 }, async () => {
  const word = unique('needle').replace(' ', '-');
  const echo = await pendingTask({ title: `${word} echo`, kind: 'echo' });
  const noop = await pendingTask({ title: `${word} noop`, kind: 'noop' });
  const other = await pendingTask({ title: unique('haystack'), kind: 'noop' });
  await card(page, other.id, 'pending').waitFor({ timeout: WAIT });

  await page.locator('#f-q').fill(word);
  await card(page, noop.id).waitFor();
  await card(page, echo.id).waitFor();
  await card(page, other.id).waitFor({ state: 'detached' });

  await page.locator('#f-kind').selectOption('noop');
  await card(page, echo.id).waitFor({ state: 'detached' });
  await card(page, noop.id, 'pending').waitFor();
  assert.equal(await page.locator('.column[data-status="pending"] li').count(), 1);

  // A change made elsewhere that no longer matches the filters takes the card away.
  await api.patch(noop.id, { title: unique('renamed') });
  await card(page, noop.id).waitFor({ state: 'detached', timeout: WAIT });
  await api.patch(noop.id, { title: `${word} noop again` });
  await card(page, noop.id, 'pending').waitFor({ timeout: WAIT });

  await page.getByRole('checkbox', { name: 'Completed' }).uncheck();
  assert.equal(await page.locator('.column[data-status="completed"]').isHidden(), true);
  assert.equal(await page.locator('.column[data-status="pending"]').isVisible(), true);
  await page.getByRole('checkbox', { name: 'Completed' }).check();
  await page.locator('.column[data-status="completed"]').waitFor();
});

test('a long column loads 50 at a time, "Load more" brings the rest, and reloads keep them', { timeout: 120_000 }, async () => {
  // A page of its own whose event stream ends as soon as it says ready, so the browser
  // reconnects every half second and each reconnect reloads the board: "Load more" must
  // neither be lost to a reload racing it nor undone by the next one.
  const own = await newPage(browser);
  let streams = 0;
  await own.page.route('**/api/v1/events', (route) => {
    streams += 1;
    return route.fulfill({ status: 200, contentType: 'text/event-stream', body: 'retry: 500\nevent: ready\ndata: {}\n\n' });
  });
  await own.page.goto('/');
  await own.page.locator('#token').fill(TOKEN);
  await own.page.getByRole('button', { name: 'Sign in' }).click();
  await own.page.locator('.board').waitFor();
  const word = unique('bulk').replace(' ', '-');
  const tasks = await api.bulk(Array.from({ length: 55 }, (_, i) => ({ title: `${word} ${i}`, kind: 'noop', run_at: later() })));
  created.push(...tasks.map((t) => t.id));
  await own.page.locator('#f-q').fill(word);
  const pending = own.page.locator('.column[data-status="pending"]');
  await own.page.waitForFunction((w) => {
    const column = document.querySelector('.column[data-status="pending"]');
    const titles = [...column.querySelectorAll('li .card-title')].map((t) => t.textContent);
    return column.querySelector('.count').textContent === '50+'
      && titles.length === 50 && titles.every((t) => t.startsWith(`${w} `));
  }, word, { timeout: WAIT });
  await pending.getByRole('button', { name: 'Load more' }).click();
  await pending.locator('.count', { hasText: /^55$/ }).waitFor();
  const reloaded = streams;
  await own.page.waitForTimeout(2500);
  assert.ok(streams >= reloaded + 2, `the board reloaded meanwhile (${streams - reloaded} streams)`);
  assert.equal(await pending.locator('.count').textContent(), '55', 'the reloads kept the second page');
  assert.equal(await pending.locator('li').count(), 55);
  assert.equal(await pending.getByRole('button', { name: 'Load more' }).isHidden(), true);
  const ids = await pending.locator('li').evaluateAll((lis) => lis.map((li) => Number(li.dataset.id)));
  assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first, no duplicates');
  assert.equal(new Set(ids).size, 55);
  await own.context.close();
});

test('an edit that races another change is refused and keeps the input', { timeout: 90_000 }, async () => {
  const task = await pendingTask({ title: unique('contended') });
  await card(page, task.id, 'pending').waitFor({ timeout: WAIT });
  const detail = await openCard(page, task.id);
  await detail.getByRole('button', { name: 'Edit' }).click();
  const form = page.locator('dialog.form-dialog[open]');
  const mine = unique('mine');
  await form.locator('#tf-title').fill(mine);
  await api.patch(task.id, { description: 'changed elsewhere' }); // moves the version on
  await form.getByRole('button', { name: 'Save changes' }).click();
  await form.locator('.form-alert', { hasText: 'changed elsewhere' }).waitFor();
  assert.equal(await form.locator('#tf-title').inputValue(), mine, 'input kept');
  assert.equal(await form.locator('#tf-description').inputValue(), 'changed elsewhere', 'untouched fields refreshed');
  // Saving again applies the change on top of the latest version.
  await form.getByRole('button', { name: 'Save changes' }).click();
  await form.waitFor({ state: 'detached' });
  const saved = await api.get(task.id);
  assert.equal(saved.title, mine);
  assert.equal(saved.description, 'changed elsewhere', 'the other change survives');
});
