// The API client: the session cookie rides along (same origin), the CSRF token is kept in
// memory only, and every failure becomes an ApiError with a message fit for people.

let csrfToken = null;
let sessionEnded = () => {};

export function setCsrfToken(token) { csrfToken = token; }
/** Called on any 401 from a signed-in request: the cookie expired or was revoked. */
export function onSessionEnd(fn) { sessionEnded = fn; }

class ApiError extends Error {
  constructor(status, code, message, details = [], retryAfter = null) {
    super(message);
    Object.assign(this, { status, code, details, retryAfter });
  }
}

/** `signIn: true` for the session calls, where a 401 means "not signed in" rather than
 *  "the session ended". */
export async function api(method, path, { body, headers = {}, signIn = false } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) h['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method, headers: h, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach FlowForge. Check your connection and retry.');
  }
  const json = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.ok) {
    return { data: json?.data, pagination: json?.pagination, status: response.status };
  }
  const e = json?.error ?? {};
  const seconds = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
  const error = new ApiError(response.status, e.code ?? `http_${response.status}`,
    e.message ?? (response.statusText || `HTTP ${response.status}`), e.details ?? [],
    Number.isFinite(seconds) ? seconds : null);
  if (response.status === 401 && !signIn) sessionEnded();
  throw error;
}

let kinds = null;
/** The task kinds this deployment runs, as the API describes them ({kind, summary,
 *  payload_schema, example}); asked once per page, again after a failure. */
export function loadKinds() {
  kinds ??= api('GET', '/api/v1/kinds').then(({ data }) => data).catch((error) => { kinds = null; throw error; });
  return kinds;
}

export function listTasks(params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null));
  return api('GET', `/api/v1/tasks?${query}`);
}

/** The sentence to show for an error that is not about one form field. */
export function errorMessage(error) {
  const wait = error.retryAfter != null ? ` in ${error.retryAfter} s` : ' shortly';
  if (error.status === 429) return `Too many requests — retry${wait}.`;
  if (error.status === 503 && error.code !== 'metrics_unavailable') {
    return `Service temporarily unavailable, retry${wait}.`;
  }
  if (error.details?.length) {
    return error.details.map((d) => `${d.field}: ${d.message}`).join('; ');
  }
  return error.message;
}
