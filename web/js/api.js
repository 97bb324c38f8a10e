// The API from the page: the key (sessionStorage), requests, OpenAI-shaped errors, downloads.

const KEY_ITEM = "tokenq.apiKey";

/** The API key entered on this page, or "" (keyless mode: requests go without the header). */
export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

/** Headers for a request: `extra`, plus `Authorization: Bearer <key>` when a key is set. */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

/** An answer of the API that is not 2xx: its status and OpenAI's error object, as sent. */
export class ApiError extends Error {
  constructor(what, status, error) {
    super(error.message || `HTTP ${status}`);
    this.name = "ApiError";
    this.what = what; // e.g. "POST /v1/jobs"
    this.status = status;
    this.type = error.type ?? null;
    this.code = error.code ?? null;
    this.param = error.param ?? null;
  }
}

/** The ApiError a non-2xx response stands for; a body that is not OpenAI's error object (a
 * proxy's page, say) keeps its first 300 characters as the message. */
export async function errorOf(response, what) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "object" && body.error !== null) {
      return new ApiError(what, response.status, body.error);
    }
  } catch {
    // not JSON: fall through
  }
  return new ApiError(what, response.status, {
    message: text.slice(0, 300) || response.statusText || `HTTP ${response.status}`,
  });
}

/** One request; the parsed JSON of a 2xx answer (null for 204), else it throws ApiError.
 * `json`: a body sent as application/json; `body` + `type`: any other body. */
export async function request(method, path, { json, body, type, query } = {}) {
  const url = query ? `${path}?${new URLSearchParams(query)}` : path;
  const headers = authHeaders({ Accept: "application/json" });
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (type) {
    headers["Content-Type"] = type;
  }
  const what = `${method} ${path}`;
  let response;
  try {
    response = await fetch(url, { method, headers, body, cache: "no-store" });
  } catch (err) {
    throw new ApiError(what, 0, { message: `no answer from the server (${err.message})` });
  }
  if (!response.ok) throw await errorOf(response, what);
  if (response.status === 204) return null;
  return response.json();
}

/** Save a Blob as a file the browser downloads (the one way to keep a fetched body: a plain
 * link could not send the Authorization header). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** GET `path` with the key and save its body as `filename`. */
export async function download(path, filename) {
  const what = `GET ${path}`;
  let response;
  try {
    response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    throw new ApiError(what, 0, { message: `no answer from the server (${err.message})` });
  }
  if (!response.ok) throw await errorOf(response, what);
  saveBlob(await response.blob(), filename);
}
