// The JSON API as the page uses it: the envelope, the stored token, polling a job to its end.

const TOKEN_KEY = 'avatar-service.token';
export const TERMINAL = new Set(['completed', 'failed', 'canceled']);

/** An answer with `success: false` (or no JSON at all): `message` is the server's words. */
export class ApiError extends Error {
  constructor(status, message, details = null, headers = null) {
    super(message);
    this.status = status;
    this.details = details;
    this.headers = headers;
  }
}

export function storedToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return ''; // storage disabled: the page works anonymously
  }
}

export function storeToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** Headers every request carries: the token, once one was saved. */
export function authHeaders(extra = {}) {
  const token = storedToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

/** The envelope's `data` of a JSON request, or an `ApiError` with the server's message. */
export async function requestJson(path, { method = 'GET', headers = {}, signal } = {}) {
  const response = await fetch(path, { method, headers: authHeaders(headers), signal });
  const body = await readEnvelope(response);
  return { data: body.data, headers: response.headers };
}

/** The body of `response` if it succeeded, else throws its envelope as an `ApiError`. */
export async function readEnvelope(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page, a cut connection
  }
  if (response.ok && body && body.success !== false) return body;
  throw envelopeError(response.status, body, response.headers);
}

export function envelopeError(status, body, headers = null) {
  const message = typeof body?.error === 'string' ? body.error : body?.error?.message;
  if (typeof message === 'string') return new ApiError(status, message, body.details ?? null, headers);
  if (status === 0) return new ApiError(0, 'The service could not be reached. Check your connection and try again.');
  return new ApiError(status, `The service answered ${status} without an explanation. Try again in a minute.`);
}

/** The GLB of a finished avatar as bytes, with the file name the service gives it. */
export async function downloadGlb(avatarId) {
  const response = await fetch(`/api/avatar/download/${encodeURIComponent(avatarId)}`, { headers: authHeaders() });
  if (!response.ok) await readEnvelope(response); // throws the server's message
  const disposition = response.headers.get('Content-Disposition') || '';
  const match = /filename="?([^";]+)"?/.exec(disposition);
  return { bytes: await response.arrayBuffer(), filename: match ? match[1] : `avatar_${avatarId}.glb` };
}

/**
 * POST the three photos. Resolves with the envelope's data (202: queued); rejects with an
 * `ApiError` whose `details` holds the per-photo verdicts when the service refuses one.
 * XMLHttpRequest rather than fetch: it reports how much of the upload has been sent.
 */
export function postPhotos(files, onSent) {
  const form = new FormData();
  for (const [view, file] of Object.entries(files)) form.append(view, file, file.name || `${view}.jpg`);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/avatar/generate');
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = 'json';
    xhr.upload.onprogress = (event) => { if (event.lengthComputable) onSent(event.loaded / event.total); };
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300 && body && body.success) resolve(body.data);
      else reject(envelopeError(xhr.status, body));
    };
    xhr.onerror = () => reject(envelopeError(0, null));
    xhr.send(form);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follow a job until it ends, calling `onStatus(data)` with each status body; resolves with the
 * last one. Each request asks the service to hold it until something changes (`Prefer: wait`);
 * an answer that comes at once is normal too (a service that does not hold requests, or a job
 * that moved on): the next request then follows with back-off, 0.5 s growing to 4 s and back to
 * 0.5 s whenever the job moves on. A lost connection or a 429/503 is retried the same way.
 */
export async function followJob(avatarId, onStatus, { waitSeconds = 20, signal } = {}) {
  const firstDelay = 500;
  const maxDelay = 4000;
  let delay = firstDelay;
  let lastStage = null;
  for (;;) {
    if (signal?.aborted) throw new DOMException('Stopped following the job', 'AbortError');
    let answer;
    const asked = performance.now();
    try {
      answer = await requestJson(`/api/avatar/jobs/${encodeURIComponent(avatarId)}`,
        { headers: { Prefer: `wait=${waitSeconds}` }, signal });
    } catch (error) {
      if (error.name === 'AbortError' || !isTransient(error)) throw error;
      const retryAfter = Number(error.headers?.get?.('Retry-After'));
      await sleep(retryAfter > 0 ? retryAfter * 1000 : delay);
      delay = Math.min(delay * 2, maxDelay);
      continue;
    }
    const status = answer.data;
    onStatus(status);
    if (TERMINAL.has(status.status)) return status;
    const moved = `${status.status}/${status.stage}/${status.progress}` !== lastStage;
    lastStage = `${status.status}/${status.stage}/${status.progress}`;
    // A service that held the request already waited for us: ask again at once.
    if (answer.headers.get('Preference-Applied') && performance.now() - asked >= 1000) continue;
    delay = moved ? firstDelay : Math.min(delay * 1.6, maxDelay);
    await sleep(delay);
  }
}

function isTransient(error) {
  return error instanceof TypeError /* network */ || (error instanceof ApiError && [0, 429, 502, 503, 504].includes(error.status));
}
