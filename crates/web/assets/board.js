// The board: one independently paged list per status (never the whole table), kept
// current by live events.
import { fill, h } from './dom.js';
import { listTasks, loadKinds, errorMessage } from './api.js';
import { loadModule, showAlert } from './notify.js';
import { subscribe } from './live.js';
import { STATUSES, STATUS_LABELS, refreshTimes, timeEl } from './format.js';

const PAGE = 50;
// The API's largest page: a column reloaded after "Load more" asks for this many at most.
const MAX_LIMIT = 200;
// Live arrivals beyond this many cards in a column drop its oldest ones, so a busy queue
// cannot grow the page without bound; "Load more" then starts that column over.
const MAX_CARDS = 500;
const TRIMMED = 'trimmed';
// A burst of resyncs (a busy queue) reloads the board at most this often.
const RELOAD_EVERY_MS = 1000;

async function withDialogs(open) {
  const dialogs = await loadModule('./task-dialogs.js', 'the task dialogs');
  if (dialogs) open(dialogs);
}

// Filters outlive the view, so a trip to Operations and back keeps them.
const filters = { statuses: new Set(STATUSES), kind: '', q: '' };

function matches(task) {
  return filters.statuses.has(task.status) && (!filters.kind || task.kind === filters.kind)
    && (!filters.q || task.title.toLowerCase().includes(filters.q.toLowerCase()));
}

// The time that matters for a card in its column.
function cardTime(task) {
  return task.completed_at ?? task.started_at ?? task.created_at;
}

function renderCard(button, task) {
  fill(button,
    h('span', { class: 'card-title' }, task.title),
    h('span', { class: 'card-meta' },
      h('span', {}, `#${task.id}`),
      h('span', { class: 'kind' }, task.kind),
      h('span', {}, `${task.attempts}/${task.max_attempts} attempts`),
      task.priority ? h('span', { class: 'prio' }, `priority ${task.priority}`) : null,
      timeEl(cardTime(task), { rel: true })),
    task.cancel_requested && task.status === 'running' ? h('span', { class: 'card-note' }, 'Cancelling…') : null);
}

export function createBoard(root) {
  const columns = new Map();
  // Where each visible task's card is: id → { li, button, task, status }.
  const cards = new Map();
  let destroyed = false;

  const search = h('input', { id: 'f-q', type: 'search', placeholder: 'Title contains…', autocomplete: 'off' });
  const kind = h('select', { id: 'f-kind' }, h('option', { value: '' }, 'All kinds'));
  // Without the list the filter offers "All kinds" only; the board says what failed.
  loadKinds().then((list) => kind.append(...list.map(({ kind: k }) =>
    h('option', { value: k, selected: filters.kind === k }, k)))).catch(() => {});
  search.value = filters.q;
  let debounce = 0;
  search.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { filters.q = search.value.trim(); reloadAll(); }, 300);
  });
  kind.addEventListener('change', () => { filters.kind = kind.value; reloadAll(); });

  const toggles = STATUSES.map((status) => h('label', { class: 'check' },
    h('input', {
      type: 'checkbox', value: status, checked: filters.statuses.has(status),
      onchange: (e) => {
        if (e.target.checked) filters.statuses.add(status); else filters.statuses.delete(status);
        const column = columns.get(status);
        column.section.hidden = !e.target.checked;
        if (e.target.checked) load(column); else drop(column);
      },
    }), STATUS_LABELS[status]));

  const newButton = h('button', { type: 'button', class: 'btn primary', onclick: () => withDialogs((d) => d.openTaskForm(null, newButton)) }, 'New task');
  const bar = h('div', { class: 'filters', role: 'search', 'aria-label': 'Filter tasks' },
    h('div', { class: 'field' }, h('label', { for: 'f-q' }, 'Search'), search),
    h('div', { class: 'field' }, h('label', { for: 'f-kind' }, 'Kind'), kind),
    h('fieldset', { class: 'columns-toggle' }, h('legend', {}, 'Columns'), toggles),
    newButton);

  const board = h('div', { class: 'board', role: 'region', 'aria-label': 'Task board', tabindex: 0 });
  for (const status of STATUSES) {
    const count = h('span', { class: 'count' }, '0');
    const list = h('ol', { class: 'cards', 'aria-labelledby': `col-${status}` });
    const more = h('button', { type: 'button', class: 'btn ghost more', hidden: true }, 'Load more');
    const section = h('section', { class: `column c-${status}`, 'data-status': status, hidden: !filters.statuses.has(status) },
      h('h2', { id: `col-${status}` }, STATUS_LABELS[status], ' ', count), list, more);
    // `seq` numbers the column's requests: only the latest one's answer is shown. `wanted` is
    // how many cards the user has paged to, so a reload keeps what "Load more" brought.
    const column = { status, section, list, count, more, cursor: null, seq: 0, wanted: PAGE, restarting: false };
    more.addEventListener('click', () => load(column, true));
    columns.set(status, column);
    board.append(section);
  }
  root.replaceChildren(h('h1', { class: 'visually-hidden' }, 'Board'), bar, board);

  function updateCount(column) {
    const n = column.list.children.length;
    column.count.textContent = column.cursor ? `${n}+` : String(n);
    column.more.hidden = !column.cursor;
  }

  function empty(column) {
    for (const li of column.list.children) cards.delete(Number(li.dataset.id));
    column.list.replaceChildren();
    column.cursor = null;
    updateCount(column);
  }

  // Hides a column's cards and drops any answer on its way.
  function drop(column) {
    column.seq += 1;
    column.restarting = false;
    empty(column);
  }

  // Loads the column's next page, or (`more` false, or while a reload is on its way) starts
  // it over with as many cards as the user had paged to.
  async function load(column, more = false) {
    if (more) column.wanted = Math.min(column.wanted + PAGE, MAX_LIMIT);
    const restart = !more || column.restarting || column.cursor === TRIMMED;
    column.seq += 1;
    const mine = column.seq;
    column.restarting ||= restart;
    column.more.disabled = true;
    try {
      const { data, pagination } = await listTasks({
        status: column.status, kind: filters.kind, q: filters.q, sort: '-created_at',
        limit: restart ? column.wanted : PAGE, cursor: restart ? null : column.cursor,
      });
      if (destroyed || mine !== column.seq) return;
      if (restart) { empty(column); column.restarting = false; }
      column.cursor = pagination?.next_cursor ?? null;
      for (const task of data) place(task, { paged: true });
      updateCount(column);
      if (more && !column.cursor) column.list.lastElementChild?.querySelector('button')?.focus();
    } catch (error) {
      if (!destroyed && mine === column.seq && error.status !== 401) showAlert(errorMessage(error));
    } finally {
      if (mine === column.seq) column.more.disabled = false;
    }
  }

  // New filters start every column at one page; a resync keeps each column's length.
  function reloadAll({ keepPages = false } = {}) {
    for (const column of columns.values()) {
      if (!keepPages) column.wanted = PAGE;
      if (filters.statuses.has(column.status)) load(column); else drop(column);
    }
  }

  let reloadTimer = 0;
  let lastReload = 0;
  function reloadSoon() {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = 0;
      lastReload = Date.now();
      reloadAll({ keepPages: true });
    }, Math.max(0, lastReload + RELOAD_EVERY_MS - Date.now()));
  }

  function trim(column) {
    while (column.list.children.length > MAX_CARDS) {
      const li = column.list.lastElementChild;
      cards.delete(Number(li.dataset.id));
      li.remove();
    }
    column.cursor = TRIMMED;
    updateCount(column);
  }

  function remove(id) {
    const card = cards.get(id);
    if (!card) return;
    card.li.remove();
    cards.delete(id);
    updateCount(columns.get(card.status));
  }

  // Puts a task's card where it belongs (newest first), moving or updating an existing
  // one so a focused card keeps focus.
  function place(task, { flash = false, paged = false } = {}) {
    const existing = cards.get(task.id);
    if (existing && existing.task.version > task.version) return;
    if (!matches(task)) { remove(task.id); return; }
    const column = columns.get(task.status);
    const list = column.list;
    const last = list.lastElementChild;
    // Older than everything loaded while more pages wait: "Load more" will bring it.
    if (!paged && !existing && column.cursor && last && task.id < Number(last.dataset.id)) return;
    const card = existing ?? { li: h('li', { 'data-id': task.id }) };
    if (!existing) {
      card.button = h('button', { type: 'button', class: 'card', onclick: () => withDialogs((d) => d.openDetail(task.id, card.button)) });
      card.li.append(card.button);
    }
    const from = existing?.status;
    const moved = from !== task.status;
    renderCard(card.button, task);
    card.button.dataset.status = task.status;
    Object.assign(card, { task, status: task.status });
    cards.set(task.id, card);
    if (moved) {
      const before = [...list.children].find((li) => Number(li.dataset.id) < task.id);
      list.insertBefore(card.li, before ?? null);
      if (from) updateCount(columns.get(from));
      updateCount(column);
      if (list.children.length > MAX_CARDS) trim(column);
    }
    if (flash && moved) {
      card.li.classList.remove('flash');
      void card.li.offsetWidth; // restart the animation
      card.li.classList.add('flash');
    }
  }

  const unsubscribe = subscribe((event) => {
    if (event.type === 'task') place(event.task, { flash: true });
    else if (event.type === 'deleted') remove(event.id);
    else if (event.type === 'reload') reloadSoon();
  });
  const clock = setInterval(() => refreshTimes(board), 30000);
  reloadAll();

  return {
    destroy() { unsubscribe(); clearInterval(clock); clearTimeout(debounce); clearTimeout(reloadTimer); destroyed = true; },
    open(id) { withDialogs((d) => d.openDetail(id, cards.get(id)?.button ?? newButton)); },
  };
}
