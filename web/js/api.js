// The REST client (docs/api.md): JSON in and out, errors turned into plain words.

const TOKEN_KEY = "landscape.token";

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Private mode without storage: the token lasts for this page only.
  }
}

/** An HTTP or network failure with a message meant for people. */
export class ApiError extends Error {
  constructor(message, { status = 0, fields = [], retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    // [{field: "grid.nx", message: "..."}] for validation errors (422).
    this.fields = fields;
    // Seconds the server asks to wait before sending the same request again (Retry-After).
    this.retryAfter = retryAfter;
  }
}

// A POST refused with 409 and Retry-After (its id's previous job is still stopping after a
// cancel) is sent again after that wait, this many times in all; then the error is the caller's.
export const STOPPING_TRIES = 3;

/** Whether `err` is the server's "still stopping, ask again shortly" refusal. */
export const isStopping = (err) => err instanceof ApiError && err.status === 409 && Boolean(err.retryAfter);

/** What the page says while it waits to send a refused request again: the server's words first. */
export function waitWords(err, attempt) {
  const message = err.message.charAt(0).toUpperCase() + err.message.slice(1);
  return `${message}. The page tries again by itself in ${err.retryAfter} s (try ${attempt + 1} of ${STOPPING_TRIES})…`;
}

function retryAfter(response) {
  const seconds = Number(response.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
}

const pause = (seconds, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    });
  });

/** Turn an error body into plain words; FastAPI's 422 list becomes "field: message" lines. */
export function describeError(status, body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) {
    const fields = detail.map((item) => {
      const loc = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body") : [];
      const field = loc.join(".");
      const msg = String(item.msg || "is not valid").replace(/^Value error, /, "");
      return { field, message: msg };
    });
    const text = fields.map((f) => (f.field ? `${f.field}: ${f.message}` : f.message)).join("\n");
    return { message: text || "The request was not valid.", fields };
  }
  if (typeof detail === "string" && detail) return { message: detail, fields: [] };
  if (status === 401) {
    return {
      message: "This server needs an API token: open Settings (top right) and paste it.",
      fields: [],
    };
  }
  if (status === 404) return { message: "Not found: it may have been deleted.", fields: [] };
  if (status >= 500) return { message: `The server failed (HTTP ${status}). Try again.`, fields: [] };
  return { message: `The request failed (HTTP ${status}).`, fields: [] };
}

/**
 * fetch + JSON + error mapping. `body` objects are sent as JSON, FormData as multipart.
 * Resolves to the parsed JSON (or null for 204); rejects with ApiError. A POST refused while
 * its id's cancelled job stops is sent again after the server's Retry-After, up to
 * STOPPING_TRIES times; `onWait(err, attempt)` is told before each wait (to show the words).
 */
export async function request(method, path, { body, signal, onWait } = {}) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await send(method, path, { body, signal });
    } catch (err) {
      if (method !== "POST" || !isStopping(err) || attempt >= STOPPING_TRIES) throw err;
      onWait?.(err, attempt);
      await pause(err.retryAfter, signal);
    }
  }
}

async function send(method, path, { body, signal }) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, signal });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError("Cannot reach the server: check that `landscape serve` is running.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const { message, fields } = describeError(response.status, data);
    throw new ApiError(message, { status: response.status, fields, retryAfter: retryAfter(response) });
  }
  return data;
}

let configPromise = null;

export const api = {
  /** The server's limits, presets and form defaults (fetched once per page load). */
  config: () => {
    configPromise ||= request("GET", "/api/config").catch((err) => {
      configPromise = null;
      throw err;
    });
    return configPromise;
  },
  models: () => request("GET", "/api/models"),
  losses: () => request("GET", "/api/losses"),
  datasets: () => request("GET", "/api/datasets"),
  checkpoints: () => request("GET", "/api/checkpoints"),
  uploadCheckpoint: (form) => request("POST", "/api/checkpoints", { body: form }),
  surfaces: () => request("GET", "/api/surfaces"),
  surface: (id, { maxPoints, signal } = {}) =>
    request(
      "GET",
      `/api/surfaces/${encodeURIComponent(id)}${maxPoints ? `?max_points=${maxPoints}` : ""}`,
      { signal },
    ),
  createSurface: (spec, { onWait } = {}) => request("POST", "/api/surfaces", { body: spec, onWait }),
  makeExact: (id) => request("POST", `/api/surfaces/${encodeURIComponent(id)}/exact`),
  createHessian: (id, body) => request("POST", `/api/surfaces/${encodeURIComponent(id)}/hessian`, { body }),
  gradientFlow: (id) => request("GET", `/api/surfaces/${encodeURIComponent(id)}/gradient-flow`),
  createGradientFlow: (id, body) =>
    request("POST", `/api/surfaces/${encodeURIComponent(id)}/gradient-flow`, { body }),
  sharpness: (id) => request("GET", `/api/surfaces/${encodeURIComponent(id)}/sharpness`),
  createSharpness: (id, body) => request("POST", `/api/surfaces/${encodeURIComponent(id)}/sharpness`, { body }),
  reports: () => request("GET", "/api/reports"),
  createReport: (body) => request("POST", "/api/reports", { body }),
  deleteSurface: (id) => request("DELETE", `/api/surfaces/${encodeURIComponent(id)}`),
  jobs: () => request("GET", "/api/jobs"),
  job: (id) => request("GET", `/api/jobs/${encodeURIComponent(id)}`),
  cancelJob: (id) => request("DELETE", `/api/jobs/${encodeURIComponent(id)}`),
};

// EventSource and plain download links cannot send headers: when the server protects reads,
// the token travels as the ?access_token= query parameter the API accepts for GETs.
function withToken(path) {
  const token = getToken();
  return token ? `${path}?access_token=${encodeURIComponent(token)}` : path;
}

export const links = {
  file: (id) => withToken(`/api/surfaces/${encodeURIComponent(id)}/file`),
  html: (id) => withToken(`/api/surfaces/${encodeURIComponent(id)}/html`),
  recipe: (id) => withToken(`/api/surfaces/${encodeURIComponent(id)}/recipe`),
  reportHtml: (id) => withToken(`/api/reports/${encodeURIComponent(id)}/html`),
  events: (jobId) => withToken(`/api/jobs/${encodeURIComponent(jobId)}/events`),
};
