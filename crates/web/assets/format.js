// How tasks' statuses and times read on screen.
import { h } from './dom.js';

export const STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'];
export const STATUS_LABELS = {
  pending: 'Pending', running: 'Running', completed: 'Completed', failed: 'Failed', cancelled: 'Cancelled',
};

export function badge(status) {
  return h('span', { class: `badge s-${status}` }, STATUS_LABELS[status] ?? status);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });
const UNITS = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60]];

function relTime(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return Math.abs(seconds) < 10 ? 'just now' : relative.format(Math.round(seconds), 'second');
}

/** A <time> in local time (or relative) with the exact ISO instant as its tooltip. */
export function timeEl(iso, { rel = false } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso, 'data-rel': rel },
    rel ? relTime(iso) : new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }));
}

export function refreshTimes(root) {
  for (const t of root.querySelectorAll('time[data-rel]')) t.textContent = relTime(t.dateTime);
}
