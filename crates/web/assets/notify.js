// The page's message regions: polite announcements (a toast) and error alerts.
import { h } from './dom.js';

let toastTimer = 0;

/** Says `text` politely. A modal dialog makes the page behind it inert, so the topmost
 *  open dialog's own live region says it too. */
export function announce(text) {
  const status = document.getElementById('status');
  status.textContent = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { status.textContent = ''; }, 6000);
  const dialogs = document.querySelectorAll('dialog[open] [data-live]');
  if (dialogs.length) dialogs[dialogs.length - 1].textContent = text;
}

export function showAlert(text) {
  const alert = document.getElementById('alert');
  alert.replaceChildren(h('p', {}, text),
    h('button', { type: 'button', class: 'btn ghost', onclick: clearAlert }, 'Dismiss'));
}

/** Loads a module on first use (views and dialogs most visits never open); on failure
 *  says so and resolves to null. */
export async function loadModule(path, what) {
  try {
    return await import(path);
  } catch {
    showAlert(`Could not load ${what}. Check your connection and retry.`);
    return null;
  }
}

export function clearAlert() {
  document.getElementById('alert').replaceChildren();
}

// Tasks created in this session, with the status last announced for each.
const created = new Map();

export function rememberCreated(task) { created.set(task.id, task.status); }
export function forgetCreated() { created.clear(); }

export function announceOutcome(task) {
  if (!created.has(task.id) || created.get(task.id) === task.status) return;
  created.set(task.id, task.status);
  if (task.status === 'completed') announce(`Task ${task.id} completed`);
  else if (task.status === 'failed') announce(`Task ${task.id} failed: ${task.last_error ?? 'no error message'}`);
}
