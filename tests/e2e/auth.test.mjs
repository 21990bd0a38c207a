// Signing in and out, the session cookie's attributes, and a session that ends mid-use.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { BASE_URL, WAIT, apiClient, card, launch, newPage, screenshot, signIn, unique } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const sessionCookie = async (context) => (await context.cookies(BASE_URL)).find((c) => c.name.includes('session'));

test('sign in: a wrong token is refused, the right one opens the board; sign out ends the session', { timeout: 120_000 }, async () => {
  const { context, page } = await newPage(browser);
  await page.goto('/');
  await page.locator('#token').waitFor();
  await screenshot(page, 'sign-in.png');

  await page.locator('#token').fill('ff_not_a_real_token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#token[aria-invalid="true"]').waitFor();
  const error = await page.locator('#token-error').innerText();
  assert.ok(error.length > 0, 'the error is shown next to the field');
  assert.match(await page.locator('#token').getAttribute('aria-describedby'), /token-error/);
  assert.equal(await sessionCookie(context), undefined, 'no cookie for a wrong token');

  await signIn(page);
  const cookie = await sessionCookie(context);
  assert.ok(cookie, 'a session cookie is set');
  assert.equal(cookie.httpOnly, true, 'HttpOnly');
  assert.equal(cookie.secure, true, 'Secure');
  assert.equal(cookie.sameSite, 'Strict', 'SameSite=Strict');
  assert.equal(await page.evaluate(() => document.cookie.includes('session')), false, 'scripts cannot read it');
  assert.match(await page.locator('#who').innerText(), /admin/);

  // The cookie as it was, to prove it is dead after signing out.
  const stolen = `${cookie.name}=${cookie.value}`;
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#token').waitFor();
  assert.equal(await page.locator('#topbar').isHidden(), true);
  const after = await context.request.get('/api/v1/session', { headers: { Cookie: stolen } });
  assert.equal(after.status(), 401, 'the old cookie no longer works');
  await context.close();
});

test('a session that ends mid-use lands on sign-in with a message', { timeout: 120_000 }, async () => {
  const { context, page } = await newPage(browser);
  await signIn(page);
  await context.clearCookies();
  // The next action: create a task.
  await page.getByRole('button', { name: 'New task' }).click();
  await page.locator('#tf-title').fill('never created');
  await page.getByRole('button', { name: 'Create task' }).click();
  await page.locator('#token').waitFor({ timeout: WAIT });
  assert.match(await page.locator('main').innerText(), /Your session ended, sign in again/);
  assert.equal(await page.locator('dialog').count(), 0, 'no dialog left open');
  assert.equal(await page.locator('#topbar').isHidden(), true);
  await context.close();
});

test('a user who is not an admin sees only their tasks, and Operations says why it is closed', { timeout: 120_000 }, async () => {
  const admin = await apiClient();
  const { token } = (await admin.createUser(unique('e2e-user').replace(' ', '-'))).token;
  const user = await apiClient(token);
  const theirs = await user.create({ title: unique('users own'), kind: 'noop' });
  const notTheirs = await admin.create({ title: unique('admins own'), kind: 'noop' });
  const { context, page } = await newPage(browser);
  await signIn(page, token);
  assert.match(await page.locator('#who').innerText(), /user/);
  await card(page, theirs.id).waitFor({ timeout: WAIT });
  await admin.until(notTheirs.id, (t) => t.status === 'completed');
  assert.equal(await card(page, notTheirs.id).count(), 0, "someone else's task is not shown");
  await page.getByRole('link', { name: 'Operations' }).click();
  await page.locator('.notice', { hasText: 'for admins' }).waitFor();
  await Promise.all([admin.dispose(), user.dispose()]);
  await context.close();
});

test('rate limits and outages say what to do, and keep the input', { timeout: 120_000 }, async () => {
  const { context, page } = await newPage(browser);
  await signIn(page);
  const json = (status, code, message) => ({ status, headers: { 'Retry-After': '7' }, contentType: 'application/json',
    body: JSON.stringify({ success: false, error: { code, message } }) });

  await page.route('**/api/v1/tasks?*', (route) => route.fulfill(json(429, 'rate_limited', 'slow down')));
  await page.locator('#f-q').fill('anything');
  await page.locator('#alert', { hasText: 'Too many requests — retry in 7 s' }).waitFor();
  await page.unroute('**/api/v1/tasks?*');

  await page.route('**/api/v1/tasks', (route) => route.fulfill(json(503, 'unavailable', 'database unreachable')));
  await page.getByRole('button', { name: 'New task' }).click();
  await page.locator('#tf-title').fill('kept on failure');
  await page.getByRole('button', { name: 'Create task' }).click();
  await page.locator('dialog[open] .form-alert', { hasText: 'Service temporarily unavailable, retry in 7 s' }).waitFor();
  assert.equal(await page.locator('#tf-title').inputValue(), 'kept on failure');
  await page.keyboard.press('Escape');

  await page.route('**/api/v1/ops/metrics*', (route) => route.fulfill(json(503, 'metrics_unavailable', 'Prometheus cannot be reached')));
  await page.getByRole('link', { name: 'Operations' }).click();
  await page.locator('.notice', { hasText: 'Prometheus cannot be reached' }).waitFor();
  await context.close();
});
