// The JSON API, as the page uses it: the session cookie authenticates (the
// browser sends it; scripts never see the token) and every state-changing
// request carries the CSRF token from GET /session.

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** An error answer of the API: `{"error": {"code", "message"}}` and the status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = new Set();
/** Called with every ApiError (the app uses it to notice an ended session). */
export function onApiError(fn) {
  listeners.add(fn);
}

function failed(err) {
  for (const fn of listeners) fn(err);
  return err;
}

function isSafe(method) {
  return method === 'GET' || method === 'HEAD';
}

/** `/workspaces/3/file?path=a%2Fb` from a path and a query object. */
export function url(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

async function errorOf(res) {
  const text = await res.text().catch(() => '');
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  const e = body && body.error;
  return new ApiError(res.status, (e && e.code) || `http_${res.status}`,
    (e && e.message) || `${res.status} ${res.statusText}`);
}

let renewer = null;
let renewing = null;
/**
 * `fn` renews an expired session (resolves true if it did); a request answered
 * 401 is then sent once more. Concurrent 401s share one renewal.
 */
export function setRenewer(fn) {
  renewer = fn;
}

function renewOnce() {
  if (!renewing) renewing = renewer().finally(() => { renewing = null; });
  return renewing;
}

/** Calls the API; resolves with the parsed JSON (or null for 204), rejects with an ApiError. */
export async function api(method, path, options = {}) {
  try {
    return await call(method, path, options);
  } catch (err) {
    if (err.status !== 401 || !renewer || path.startsWith('/session')) throw err;
    if (!(await renewOnce().catch(() => false))) throw failed(err);
    return call(method, path, options);
  }
}

async function call(method, path, { json, query, body, headers = {} } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  } else if (body !== undefined) {
    init.body = body;
  }
  if (!isSafe(method) && csrfToken) init.headers['X-CSRF-Token'] = csrfToken;
  let res;
  try {
    res = await fetch(url(path, query), init);
  } catch {
    throw failed(new ApiError(0, 'network', 'Cannot reach the server. Check the connection and try again.'));
  }
  if (!res.ok) {
    const err = await errorOf(res);
    // A 401 may still be renewed; the caller reports it if not.
    throw res.status === 401 && renewer && !path.startsWith('/session') ? err : failed(err);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/**
 * Uploads a File with `PUT`: the browser streams it from disk, so any size
 * works. `onProgress(loaded, total)` follows the bytes sent.
 */
export function putFile(path, query, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', url(path, query));
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    if (csrfToken) xhr.setRequestHeader('X-CSRF-Token', csrfToken);
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try { body = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(file.size, file.size);
        resolve(body);
      } else {
        const e = body && body.error;
        reject(failed(new ApiError(xhr.status, (e && e.code) || `http_${xhr.status}`,
          (e && e.message) || `upload failed (${xhr.status})`)));
      }
    });
    xhr.addEventListener('error', () => reject(failed(new ApiError(0, 'network', 'The upload was interrupted.'))));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'Upload cancelled.')));
    xhr.send(file);
  });
}
