// One EventSource for the signed-in app. Views subscribe to task changes; local actions
// publish their results too, so the screen moves before the event comes round.
import { api } from './api.js';

const listeners = new Set();
let source = null;
let seenReady = false;
let retryTimer = 0;

export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function publish(event) {
  for (const fn of [...listeners]) fn(event);
}

function indicate(state, text) {
  const el = document.getElementById('live');
  el.dataset.state = state;
  el.textContent = text;
}

export function connect() {
  close();
  source = new EventSource('/api/v1/events');
  source.addEventListener('ready', () => {
    indicate('live', 'Live');
    // A reconnect may have missed changes: the views reload what they show.
    if (seenReady) publish({ type: 'reload' });
    seenReady = true;
  });
  source.addEventListener('task', (e) => publish({ type: 'task', task: JSON.parse(e.data) }));
  source.addEventListener('deleted', (e) => publish({ type: 'deleted', id: JSON.parse(e.data).id }));
  source.addEventListener('resync', () => publish({ type: 'reload' }));
  source.onerror = () => {
    indicate('down', 'Reconnecting…');
    // The browser retries by itself unless the answer was an error status (401, 503):
    // then ask whether the session still holds (a 401 ends it) and start over.
    if (source.readyState === EventSource.CLOSED) {
      const current = source;
      retryTimer = setTimeout(async () => {
        await api('GET', '/api/v1/session').catch(() => {});
        if (source === current) connect();
      }, 3000);
    }
  };
}

export function disconnect() {
  close();
  seenReady = false;
  indicate('down', 'Offline');
}

function close() {
  clearTimeout(retryTimer);
  source?.close();
  source = null;
}
