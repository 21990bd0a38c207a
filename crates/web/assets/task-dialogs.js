// Task detail, the create/edit form and the delete confirmation: native modal <dialog>s,
// built when opened and removed when closed (focus goes back to whatever opened them).
import { fill, h, field, setFieldError } from './dom.js';
import { api, errorMessage, loadKinds } from './api.js';
import { announce, rememberCreated } from './notify.js';
import { publish, subscribe } from './live.js';
import { badge, timeEl } from './format.js';

const QUEUE_FIELDS = ['kind', 'payload', 'priority', 'max_attempts', 'timeout_secs'];
let dialogCount = 0;

function modal(title, className) {
  dialogCount += 1;
  const headingId = `dialog-${dialogCount}`;
  const heading = h('h2', { id: headingId }, title);
  const dialog = h('dialog', { class: className, 'aria-labelledby': headingId },
    h('div', { class: 'dialog-head' }, heading,
      h('button', { type: 'button', class: 'btn ghost close', 'aria-label': 'Close', onclick: () => dialog.close() }, '✕')));
  return { dialog, heading };
}

function show(dialog, opener, onClose) {
  dialog.append(h('p', { class: 'visually-hidden', 'data-live': true, 'aria-live': 'polite' }));
  // A live update may re-render the opener while the dialog is open: then focus its
  // successor (the same action, or the same task's card).
  const action = opener?.dataset.action;
  const taskId = opener?.closest('li[data-id]')?.dataset.id;
  const successor = action ? `dialog[open] [data-action="${action}"]` : taskId ? `li[data-id="${taskId}"] > button` : null;
  dialog.addEventListener('close', () => {
    onClose?.();
    dialog.remove();
    const target = opener?.isConnected ? opener : successor && document.querySelector(successor);
    (target ?? document.querySelector('dialog[open] .close') ?? document.getElementById('main')).focus();
  }, { once: true });
  document.body.append(dialog);
  dialog.showModal();
}

function alertBox() {
  return h('p', { class: 'form-alert', role: 'alert', hidden: true });
}

function setAlert(box, text) {
  box.textContent = text ?? '';
  box.hidden = !text;
}

const pretty = (value) => JSON.stringify(value, null, 2);

/** Resolves true when the user confirms. */
function confirmDialog(title, message, confirmLabel, opener) {
  return new Promise((resolve) => {
    const { dialog } = modal(title, 'confirm');
    let confirmed = false;
    const cancel = h('button', { type: 'button', class: 'btn', onclick: () => dialog.close() }, 'Keep it');
    dialog.append(h('p', {}, message), h('div', { class: 'actions' }, cancel,
      h('button', { type: 'button', class: 'btn danger', onclick: () => { confirmed = true; dialog.close(); } }, confirmLabel)));
    show(dialog, opener, () => resolve(confirmed));
    cancel.focus(); // the safe choice first
  });
}

export function openDetail(id, opener) {
  const { dialog, heading } = modal(`Task #${id}`, 'detail');
  const body = h('div', { class: 'detail-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const alert = alertBox();
  dialog.append(alert, body);
  let task = null;

  async function refresh() {
    try {
      task = (await api('GET', `/api/v1/tasks/${id}`)).data;
      render();
    } catch (error) {
      if (error.status === 401) return;
      setAlert(alert, error.status === 404 ? `Task #${id} does not exist or is not yours.` : errorMessage(error));
      if (!task) body.replaceChildren();
    }
  }

  async function act(label, run) {
    setAlert(alert, null);
    try {
      await run();
    } catch (error) {
      if (error.status !== 401) setAlert(alert, `${label} failed: ${errorMessage(error)}`);
      if (error.status === 409 || error.status === 412) refresh();
    }
  }

  function changed(updated, message) {
    task = updated;
    publish({ type: 'task', task });
    render();
    announce(message);
  }

  const actions = {
    edit: ['Edit', 'btn', (button) => openTaskForm(task, button)],
    cancel: ['Cancel task', 'btn', () => act('Cancel', async () => {
      const { data, status } = await api('POST', `/api/v1/tasks/${id}/cancel`);
      changed(data, status === 202 ? `Task ${id}: cancellation requested` : `Task ${id} cancelled`);
    })],
    retry: ['Retry', 'btn primary', () => act('Retry', async () => {
      const { data } = await api('POST', `/api/v1/tasks/${id}/retry`);
      changed(data, `Task ${id} queued again`);
    })],
    delete: ['Delete', 'btn danger', (button) => act('Delete', async () => {
      if (!await confirmDialog(`Delete task #${id}?`, `“${task.title}” and its history will be removed for good.`, 'Delete', button)) return;
      await api('DELETE', `/api/v1/tasks/${id}`);
      publish({ type: 'deleted', id });
      dialog.close();
      announce(`Task ${id} deleted`);
    })],
  };

  function available() {
    const s = task.status;
    return ['edit', (s === 'pending' || s === 'running') && 'cancel', (s === 'failed' || s === 'cancelled') && 'retry',
      s !== 'running' && 'delete'].filter(Boolean);
  }

  function row(label, value) {
    return h('div', {}, h('dt', {}, label), h('dd', {}, value ?? h('span', { class: 'muted' }, '—')));
  }

  function render() {
    // A re-render must not drop the keyboard user's place.
    const focused = body.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    heading.textContent = task.title;
    const t = task;
    fill(body,
      h('p', { class: 'detail-status' }, badge(t.status), h('span', {}, `#${t.id}`), h('span', { class: 'kind' }, t.kind),
        t.cancel_requested && t.status === 'running' ? h('span', { class: 'card-note' }, 'Cancellation requested') : null),
      t.description ? h('p', { class: 'description' }, t.description) : null,
      h('div', { class: 'actions' }, available().map((name) => {
        const [label, cls, run] = actions[name];
        const button = h('button', { type: 'button', class: cls, 'data-action': name });
        button.textContent = label;
        button.addEventListener('click', () => run(button));
        return button;
      })),
      h('dl', { class: 'facts' },
        row('Priority', String(t.priority)),
        row('Attempts', `${t.attempts} of ${t.max_attempts}`),
        row('Timeout', `${t.timeout_secs} s`),
        row('Created', timeEl(t.created_at)),
        row('Run at', timeEl(t.run_at)),
        row('Started', timeEl(t.started_at)),
        row('Completed', timeEl(t.completed_at)),
        row('Updated', timeEl(t.updated_at)),
        row('Leased by', t.leased_by),
        row('Lease expires', t.lease_expires_at ? timeEl(t.lease_expires_at) : null),
        row('Request id', t.request_id ? h('code', {}, t.request_id) : null),
        row('Trace id', t.trace_id ? h('code', {}, t.trace_id) : null),
        row('Version', String(t.version))),
      t.last_error ? h('section', {}, h('h3', {}, 'Last error'), h('p', { class: 'error-text' }, t.last_error)) : null,
      t.errors?.length ? h('section', {}, h('h3', {}, 'Failed attempts'),
        h('ol', { class: 'attempts' }, t.errors.map((e) => h('li', {},
          h('strong', {}, `Attempt ${e.attempt}`), ' ', timeEl(e.at), e.worker ? ` on ${e.worker}` : '',
          h('p', { class: 'error-text' }, e.error))))) : null,
      h('section', {}, h('h3', {}, 'Result'), t.result == null ? h('p', { class: 'muted' }, 'No result yet.')
        : h('pre', { tabindex: 0, 'aria-label': 'Result JSON' }, pretty(t.result))),
      h('section', {}, h('h3', {}, 'Payload'), h('pre', { tabindex: 0, 'aria-label': 'Payload JSON' }, pretty(t.payload))));
    if (focused) (body.querySelector(`[data-action="${focused}"]`) ?? dialog.querySelector('.close')).focus();
  }

  const unsubscribe = subscribe((event) => {
    if (event.type === 'task' && event.task.id === id && (!task || event.task.version >= task.version)) {
      // The server's events leave out the payload, result and errors: read the whole task.
      if ('payload' in event.task) {
        task = event.task;
        render();
      } else if (!task || event.task.version > task.version) {
        refresh();
      }
    } else if (event.type === 'deleted' && event.id === id && dialog.open) {
      dialog.close();
      announce(`Task ${id} was deleted`);
    } else if (event.type === 'reload') {
      refresh();
    }
  });
  show(dialog, opener, () => {
    unsubscribe();
    // A deep link (#/tasks/42) closes back onto the board.
    if (location.hash.startsWith('#/tasks/')) history.replaceState(null, '', '#/board');
  });
  refresh();
}

/** Create (task = null) or edit. An edit sends only the fields that changed, with the
 *  version it started from in If-Match. */
export function openTaskForm(task, opener) {
  const editing = Boolean(task);
  let base = task;
  const locked = editing && task.status !== 'pending';
  const { dialog } = modal(editing ? `Edit task #${task.id}` : 'New task', 'form-dialog');
  const input = (name, props) => h('input', { id: `tf-${name}`, name, ...props });
  const controls = {
    title: input('title', { maxlength: 200, required: true, autocomplete: 'off', value: task?.title ?? '' }),
    description: h('textarea', { id: 'tf-description', name: 'description', rows: 3 }, task?.description ?? ''),
    kind: h('select', { id: 'tf-kind', name: 'kind' }, h('option', { value: task?.kind ?? 'echo', selected: true }, task?.kind ?? 'echo')),
    payload: h('textarea', { id: 'tf-payload', name: 'payload', rows: 4, class: 'mono', spellcheck: 'false' },
      pretty(task?.payload ?? {})),
    priority: input('priority', { type: 'number', min: -100, max: 100, step: 1, value: task?.priority ?? 0 }),
    max_attempts: input('max_attempts', { type: 'number', min: 1, max: 100, step: 1, value: task?.max_attempts ?? 3 }),
    timeout_secs: input('timeout_secs', { type: 'number', min: 1, max: 86400, step: 1, value: task?.timeout_secs ?? 300 }),
  };
  if (locked) for (const name of QUEUE_FIELDS) controls[name].disabled = true;

  const alert = alertBox();
  // The kinds, their summaries and example payloads come from the API. Switching kind
  // swaps in that kind's example payload, unless the payload was edited.
  const kindField = field('Kind', controls.kind, ' ');
  const kindHint = kindField.querySelector('.hint');
  const examples = new Map();
  const describeKind = () => fill(kindHint, examples.get(controls.kind.value)?.summary ?? '');
  loadKinds().then((list) => {
    for (const k of list) examples.set(k.kind, k);
    const current = controls.kind.value;
    fill(controls.kind, list.some((k) => k.kind === current) ? [] : [h('option', { value: current }, current)],
      list.map((k) => h('option', { value: k.kind }, k.kind)));
    controls.kind.value = current;
    describeKind();
  }).catch((error) => setAlert(alert, `The list of task kinds did not load: ${errorMessage(error)}`));
  let template = controls.payload.value;
  controls.kind.addEventListener('change', () => {
    describeKind();
    if (controls.payload.value !== template) return;
    template = pretty(examples.get(controls.kind.value)?.example ?? {});
    controls.payload.value = template;
  });
  const save = h('button', { type: 'submit', class: 'btn primary' }, editing ? 'Save changes' : 'Create task');
  const form = h('form', { novalidate: true, class: 'task-form' },
    alert,
    field('Title', controls.title),
    field('Description', controls.description),
    locked ? h('p', { class: 'hint', id: 'tf-locked' },
      `This task is ${task.status}: kind, payload, priority, attempts and timeout can only change while it is pending.`) : null,
    h('div', { class: 'grid' },
      kindField,
      field('Priority', controls.priority, '−100 to 100, higher runs first'),
      field('Max attempts', controls.max_attempts, '1 to 100'),
      field('Timeout (s)', controls.timeout_secs, '1 to 86400')),
    field('Payload (JSON object)', controls.payload, 'Choosing a kind fills in an example.'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'btn', onclick: () => dialog.close() }, 'Cancel'), save));
  dialog.append(form);

  // Reads the form; errors are per field, with the same names as the API's.
  function collect() {
    const values = { title: controls.title.value.trim(), description: controls.description.value, kind: controls.kind.value };
    const errors = {};
    try {
      values.payload = JSON.parse(controls.payload.value || '{}');
      if (values.payload === null || typeof values.payload !== 'object' || Array.isArray(values.payload)) {
        errors.payload = 'Must be a JSON object, like {"duration_ms": 500}';
      }
    } catch (e) {
      errors.payload = `Not valid JSON: ${e.message}`;
    }
    for (const name of ['priority', 'max_attempts', 'timeout_secs']) {
      const n = controls[name].valueAsNumber;
      if (Number.isInteger(n)) values[name] = n; else errors[name] = 'Enter a whole number';
    }
    if (!editing) {
      if (!values.description) delete values.description;
      return { body: values, errors };
    }
    const body = {};
    for (const [name, value] of Object.entries(values)) {
      if (!controls[name].disabled && !errors[name] && !same(value, base, name)) body[name] = value;
    }
    return { body, errors, values };
  }

  const same = (value, t, name) => JSON.stringify(value) === JSON.stringify(t[name] ?? (name === 'description' ? '' : null));

  // Someone else saved first: the fields this user did not touch take the new values, the
  // ones they edited keep their input, and the next save is checked against the new version.
  async function rebase() {
    const { values } = collect();
    const latest = (await api('GET', `/api/v1/tasks/${task.id}`)).data;
    for (const [name, control] of Object.entries(controls)) {
      if (!same(values[name], base, name)) continue;
      const value = latest[name];
      control.value = name === 'payload' ? pretty(value) : String(value ?? '');
    }
    base = latest;
  }

  function showErrors(errors) {
    let first = null;
    for (const [name, control] of Object.entries(controls)) {
      setFieldError(control, errors[name]);
      if (errors[name] && !first) first = control;
    }
    const other = Object.entries(errors).filter(([name]) => !controls[name]).map(([f, m]) => `${f}: ${m}`);
    setAlert(alert, other.length ? other.join('; ') : first ? 'Please correct the highlighted fields.' : null);
    first?.focus();
  }

  let lastAttempt = null;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const { body, errors } = collect();
    showErrors(errors);
    if (Object.keys(errors).length) return;
    if (editing && !Object.keys(body).length) { dialog.close(); return; }
    // The same body keeps its Idempotency-Key, so resending after a lost answer creates nothing twice.
    const text = JSON.stringify(body);
    if (lastAttempt?.text !== text) lastAttempt = { text, key: crypto.randomUUID() };
    save.disabled = true;
    try {
      const { data } = editing
        ? await api('PATCH', `/api/v1/tasks/${task.id}`, { body, headers: { 'If-Match': `"${base.version}"` } })
        : await api('POST', '/api/v1/tasks', { body, headers: { 'Idempotency-Key': lastAttempt.key } });
      if (!editing) rememberCreated(data);
      publish({ type: 'task', task: data });
      dialog.close();
      announce(editing ? `Task ${data.id} saved` : `Task ${data.id} created`);
    } catch (error) {
      if (error.status === 401) return;
      if (error.details?.length) {
        // Field errors (422, or 409 when a payload does not fit the task's kind); a
        // payload's own fields (payload.duration_ms) are shown at the payload.
        showErrors(Object.fromEntries(error.details.map((d) => {
          const name = d.field.replace(/[.[].*$/, '');
          const inner = d.field.slice(name.length).replace(/^\./, '');
          return [name, inner ? `${inner}: ${d.message}` : d.message];
        })));
      } else if (error.status === 412) {
        await rebase().catch(() => {});
        setAlert(alert, 'This task was changed elsewhere while you edited it. Your changes are kept and the other fields now show the latest values: review, then save again.');
      } else {
        setAlert(alert, errorMessage(error));
      }
    } finally {
      save.disabled = false;
    }
  });
  show(dialog, opener);
  controls.title.focus();
}
