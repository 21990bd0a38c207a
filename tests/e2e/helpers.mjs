// Shared setup for the browser tests: configuration, a browser per test file, signing in,
// and an API client that acts "from elsewhere" with the bearer token.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, request } from 'playwright-core';

export const HERE = fileURLToPath(new URL('.', import.meta.url));
export const BASE_URL = (process.env.FLOWFORGE_E2E_URL ?? 'https://localhost:28443').replace(/\/$/, '');
export const TOKEN = process.env.FLOWFORGE_E2E_TOKEN ?? '';
export const ARTIFACTS = process.env.FLOWFORGE_E2E_ARTIFACTS ?? join(HERE, 'artifacts');
export const CHROMIUM = process.env.FLOWFORGE_E2E_CHROMIUM ?? '/usr/bin/chromium';
// Every wait in these tests is bounded by this (or less).
export const WAIT = 60_000;
export const STEP = 15_000;

if (!TOKEN) throw new Error('FLOWFORGE_E2E_TOKEN must hold an admin API token');
mkdirSync(ARTIFACTS, { recursive: true });

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: STEP,
  });
}

export async function newPage(browser, options = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, baseURL: BASE_URL, ...options });
  context.setDefaultTimeout(STEP);
  const page = await context.newPage();
  page.on('pageerror', (error) => console.log(`  [page error] ${error.message}`));
  return { context, page };
}

let counter = 0;
/** A title no other test (or earlier run) uses. */
export function unique(prefix) {
  counter += 1;
  return `${prefix} ${Date.now().toString(36)}${counter}${Math.random().toString(36).slice(2, 6)}`;
}

export async function signIn(page, token = TOKEN) {
  await page.goto('/');
  await page.locator('#token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('.board').waitFor();
  await page.locator('#live[data-state="live"]').waitFor({ timeout: WAIT });
}

export function card(page, id, status) {
  const column = status ? `.column[data-status="${status}"] ` : '';
  return page.locator(`${column}li[data-id="${id}"]`);
}

export async function openCard(page, id) {
  await card(page, id).locator('button').click();
  const dialog = page.locator('dialog.detail[open]');
  await dialog.locator('.detail-status').waitFor();
  return dialog;
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
}

/** The API with a bearer token (the admin's by default), as another program would use it. */
export async function apiClient(token = TOKEN) {
  const ctx = await request.newContext({
    baseURL: BASE_URL, ignoreHTTPSErrors: true, timeout: STEP,
    extraHTTPHeaders: { Authorization: `Bearer ${token}` },
  });
  async function call(method, path, data) {
    const response = await ctx.fetch(`/api/v1${path}`, { method, data });
    const body = response.status() === 204 ? null : await response.json();
    if (!response.ok()) throw new Error(`${method} ${path} → ${response.status()} ${JSON.stringify(body)}`);
    return body.data;
  }
  return {
    create: (task) => call('POST', '/tasks', task),
    bulk: (tasks) => call('POST', '/tasks/bulk', { tasks }),
    createUser: (name) => call('POST', '/users', { name }),
    kinds: () => call('GET', '/kinds'),
    get: (id) => call('GET', `/tasks/${id}`),
    patch: (id, changes) => call('PATCH', `/tasks/${id}`, changes),
    remove: (id) => call('DELETE', `/tasks/${id}`).catch(() => {}),
    /** Polls until predicate(task) holds; returns the task. */
    async until(id, predicate, timeout = WAIT) {
      const end = Date.now() + timeout;
      for (;;) {
        const task = await call('GET', `/tasks/${id}`);
        if (predicate(task)) return task;
        if (Date.now() > end) throw new Error(`task ${id} never matched; last: ${JSON.stringify(task)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    dispose: () => ctx.dispose(),
  };
}

/** An hour ahead: the task stays pending (and editable) for the whole test. */
export const later = () => new Date(Date.now() + 3600_000).toISOString();
