// Operations: the platform's vital signs from Prometheus (through the API), refreshed
// every 5 s while the view is on screen.
import { h } from './dom.js';
import { api, errorMessage } from './api.js';
import { latest, lineChart } from './charts.js';

const MINUTES = 15;
const POLL_MS = 5000;

const trim = (v, digits) => Number(v.toFixed(digits)).toLocaleString();
const perSecond = (v) => `${trim(v, v < 10 ? 2 : 1)} /s`;
const percent = (v) => `${trim(v * 100, 1)} %`;
const millis = (v) => `${trim(v * 1000, 0)} ms`;
const duration = (v) => (v < 1 ? millis(v) : `${trim(v, 2)} s`);
const count = (v) => trim(v, 0);

const STATS = [
  ['queue_depth', 'Queue depth', count, 'tasks waiting'],
  ['throughput', 'Throughput', perSecond, 'tasks completed'],
  ['failure_rate', 'Failure rate', perSecond, 'tasks failed for good'],
  ['api_error_ratio', 'API errors', percent, 'of requests answered 5xx'],
  ['api_latency_p95', 'API latency p95', millis, 'request duration'],
  ['task_duration_p95', 'Task duration p95', duration, 'handler run time'],
];

export function createOps(root) {
  const message = h('p', { class: 'notice', hidden: true });
  const stats = h('dl', { class: 'stats' });
  const charts = h('div', { class: 'charts' });
  const workers = h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Workers', tabindex: 0 });
  const updated = h('p', { class: 'muted small' }, 'Loading…');
  root.replaceChildren(
    h('div', { class: 'view-head' }, h('h1', {}, 'Operations'), updated),
    message, stats, charts, h('h2', {}, 'Workers'), workers);
  let timer = 0;
  let alive = true;
  let busy = false;

  function render(data) {
    const series = data.series ?? {};
    const points = (name) => series[name] ?? [];
    stats.replaceChildren(...STATS.map(([name, label, format, note]) => {
      const value = latest(points(name));
      return h('div', { class: 'stat', 'data-metric': name }, h('dt', {}, label),
        h('dd', { class: 'value' }, value == null ? '—' : format(value)),
        h('dd', { class: 'muted small' }, value == null ? 'no data yet' : note));
    }));
    const span = `${MINUTES} minutes`;
    charts.replaceChildren(
      lineChart({ title: 'Queue depth', span, format: count, series: [{ label: 'waiting', points: points('queue_depth'), cls: 'l1' }] }),
      lineChart({ title: 'Throughput', span, format: perSecond, series: [{ label: 'completed', points: points('throughput'), cls: 'l2' }] }),
      lineChart({ title: 'Failures and retries', span, format: perSecond, series: [
        { label: 'failed', points: points('failure_rate'), cls: 'l4' }, { label: 'retried', points: points('retry_rate'), cls: 'l3' }] }),
      lineChart({ title: 'API error ratio', span, format: percent, series: [{ label: '5xx', points: points('api_error_ratio'), cls: 'l4' }] }),
      lineChart({ title: 'Latency p95', span, format: duration, series: [
        { label: 'API', points: points('api_latency_p95'), cls: 'l1' }, { label: 'task', points: points('task_duration_p95'), cls: 'l3' }] }));
    const rows = (data.workers ?? []).map((w) => h('tr', {},
      h('th', { scope: 'row' }, h('code', {}, w.instance)),
      h('td', {}, h('span', { class: `badge ${w.up ? 's-completed' : 's-failed'}` }, w.up ? 'Up' : 'Down')),
      h('td', { class: 'num' }, w.in_flight == null ? '—' : count(w.in_flight)),
      h('td', { class: 'num' }, w.completed_per_second == null ? '—' : perSecond(w.completed_per_second))));
    workers.replaceChildren(rows.length ? h('table', { class: 'workers' },
      h('thead', {}, h('tr', {}, ['Instance', 'Health', 'In flight', 'Completed'].map((c, i) => h('th', { scope: 'col', class: i > 1 ? 'num' : null }, c)))),
      h('tbody', {}, rows)) : h('p', { class: 'muted' }, 'No workers are reporting.'));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()} · every 5 s`;
  }

  async function poll() {
    clearTimeout(timer);
    if (busy) return;
    busy = true;
    try {
      render((await api('GET', `/api/v1/ops/metrics?minutes=${MINUTES}`)).data);
      message.hidden = true;
    } catch (error) {
      if (error.status === 401 || !alive) return;
      message.hidden = false;
      if (error.status === 403) {
        message.textContent = 'The operations view is for admins. Ask an admin for access, or use the board to follow your tasks.';
        updated.textContent = '';
        return; // polling cannot change that
      }
      message.textContent = errorMessage(error);
    } finally {
      busy = false;
    }
    if (alive && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  // A hidden tab stops asking; coming back asks at once.
  const onVisibility = () => { if (!document.hidden && alive) poll(); else clearTimeout(timer); };
  document.addEventListener('visibilitychange', onVisibility);
  poll();
  return {
    destroy() { alive = false; clearTimeout(timer); document.removeEventListener('visibilitychange', onVisibility); },
  };
}
