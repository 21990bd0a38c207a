// Bootstrap: restores or starts a session, routes between the views (#/board, #/ops,
// #/tasks/{id}) and ends the session on sign-out or on any 401.
import { h, field, setFieldError } from './dom.js';
import { api, errorMessage, onSessionEnd, setCsrfToken } from './api.js';
import { announceOutcome, clearAlert, forgetCreated, loadModule, showAlert } from './notify.js';
import * as live from './live.js';
import { createBoard } from './board.js';

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
let user = null;
let view = null;
let routing = 0; // the latest navigation wins when a view's module is still loading

function signedIn(session) {
  user = session.user;
  setCsrfToken(session.csrf_token);
  document.getElementById('who').textContent = `${user.name} · ${user.role}`;
  topbar.hidden = false;
  clearAlert();
  live.connect();
  route();
}

function signedOut(message) {
  user = null;
  setCsrfToken(null);
  live.disconnect();
  forgetCreated();
  for (const dialog of document.querySelectorAll('dialog')) dialog.remove();
  view?.destroy();
  view = null;
  topbar.hidden = true;
  clearAlert();
  history.replaceState(null, '', location.pathname);
  showSignIn(message);
}

function showSignIn(message) {
  const token = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  const button = h('button', { type: 'submit', class: 'btn primary wide' }, 'Sign in');
  const notice = h('p', { class: 'notice', role: 'alert', hidden: !message }, message ?? '');
  const form = h('form', { class: 'signin', novalidate: true },
    h('div', { class: 'signin-brand' }, h('img', { src: '/favicon.svg', alt: '', width: 40, height: 40 }), h('span', {}, 'FlowForge')),
    h('h1', {}, 'Sign in'),
    notice,
    field('API token', token, h('span', {}, 'Create one with ', h('code', {}, 'scripts/stack.sh token'), ' or ',
      h('code', {}, 'flowforge token create'), '.')),
    button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setFieldError(token, null);
    notice.hidden = true;
    button.disabled = true;
    try {
      const { data } = await api('POST', '/api/v1/session', { body: { token: token.value }, signIn: true });
      signedIn(data);
    } catch (error) {
      if (error.status === 401 || error.status === 422) {
        setFieldError(token, error.details?.find((d) => d.field === 'token')?.message ?? error.message);
        token.focus();
      } else {
        notice.textContent = errorMessage(error);
        notice.hidden = false;
      }
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(h('div', { class: 'signin-wrap' }, form));
  token.focus();
}

async function route() {
  if (!user) return;
  const ticket = ++routing;
  const [, name = 'board', id] = location.hash.split('/');
  const wanted = name === 'ops' ? 'ops' : 'board';
  for (const link of topbar.querySelectorAll('nav a')) {
    if (link.dataset.route === wanted) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (view?.name !== wanted) {
    const create = wanted === 'ops' ? (await loadModule('./ops.js', 'the operations view'))?.createOps : createBoard;
    if (!create || ticket !== routing || !user) return;
    view?.destroy();
    clearAlert();
    view = { name: wanted, ...create(main) };
    document.title = wanted === 'ops' ? 'Operations · FlowForge' : 'Board · FlowForge';
  }
  if (name === 'tasks' && Number(id) > 0 && !document.querySelector('dialog.detail')) view.open(Number(id));
}

async function signOut() {
  try {
    await api('DELETE', '/api/v1/session');
  } catch (error) {
    if (error.status === 401) return; // the 401 already signed out
    if (error.status !== 400) { showAlert(`Sign out failed: ${errorMessage(error)}`); return; }
  }
  signedOut('You signed out.');
}

onSessionEnd(() => { if (user) signedOut('Your session ended, sign in again.'); });
live.subscribe((event) => { if (event.type === 'task') announceOutcome(event.task); });
document.getElementById('sign-out').addEventListener('click', signOut);
window.addEventListener('hashchange', route);

try {
  signedIn((await api('GET', '/api/v1/session', { signIn: true })).data);
} catch (error) {
  showSignIn(error.status === 401 ? null : errorMessage(error));
}
