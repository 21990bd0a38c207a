// Hand-written SVG line charts: a few series against time, with the latest values in text.
import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 180;
const PAD = { left: 56, right: 10, top: 10, bottom: 24 };

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = text;
  return el;
}

/** The last number in [[t, v], ...] (values may be null: Prometheus's NaN). */
export function latest(points) {
  for (let i = points.length - 1; i >= 0; i -= 1) {
    if (Number.isFinite(points[i][1])) return points[i][1];
  }
  return null;
}

function niceCeil(v) {
  if (v <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((c) => c >= v);
}

const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/** series: [{ label, points, cls }]; format(value) → text with its unit. */
export function lineChart({ title, series, format, span }) {
  const values = series.map((x) => ({ ...x, value: latest(x.points) }));
  const summary = values.map((x) => `${x.label} ${x.value == null ? 'no data' : format(x.value)}`).join(', ');
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart',
    'aria-label': `${title} over the last ${span}: latest ${summary}` });
  const finite = series.flatMap((x) => x.points).filter(([, v]) => Number.isFinite(v));
  if (!finite.length) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No data yet'));
  } else {
    const t0 = Math.min(...finite.map(([t]) => t));
    const t1 = Math.max(t0 + 1, ...finite.map(([t]) => t));
    const top = niceCeil(Math.max(...finite.map(([, v]) => v)));
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    for (const v of [0, top / 2, top]) svg.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'gridline' }));
    for (const v of [0, top]) svg.append(s('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, format(v)));
    svg.append(s('text', { x: PAD.left, y: H - 6, class: 'axis' }, clock(t0)),
      s('text', { x: W - PAD.right, y: H - 6, 'text-anchor': 'end', class: 'axis' }, clock(t1)));
    for (const { points, cls } of series) {
      // A null value breaks the line rather than dropping to zero.
      let d = '';
      let pen = 'M';
      for (const [t, v] of points) {
        if (!Number.isFinite(v)) { pen = 'M'; continue; }
        d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = 'L';
      }
      svg.append(s('path', { d, class: `line ${cls}` }));
    }
  }
  return h('figure', { class: 'chart-card' },
    h('figcaption', {}, h('span', { class: 'chart-title' }, title),
      h('span', { class: 'legend' }, values.map((x) => h('span', { class: `key ${x.cls}` },
        `${x.label}: `, h('strong', {}, x.value == null ? '—' : format(x.value)))))),
    svg);
}
