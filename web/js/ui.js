// Small DOM helpers and the page's error list: every failed request is shown, never dropped.

export const $ = (selector) => document.querySelector(selector);

/** An element with attributes (`text` sets its text, `on` its click handler) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "on") node.addEventListener("click", value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** At most this many errors stay listed (the oldest go first). */
const MAX_ERRORS = 6;

/** Show an error (an ApiError of api.js, or any Error) in the page's error list. The same
 * message again counts up instead of adding a line. */
export function showError(err, context) {
  const list = $("#errors");
  const parts = [];
  if (context) parts.push(context);
  if (err.what) parts.push(err.what);
  if (err.status) parts.push(String(err.status));
  if (err.code) parts.push(err.code);
  const head = parts.join(" · ");
  const message = err.param ? `${err.message} (param: ${err.param})` : err.message || String(err);
  const key = `${head}|${message}`;
  for (const item of list.children) {
    if (item.dataset.key === key) {
      item.dataset.count = String(Number(item.dataset.count) + 1);
      item.querySelector(".count").textContent = ` (×${item.dataset.count})`;
      list.prepend(item);
      $("#errors-section").hidden = false;
      return;
    }
  }
  const item = el(
    "li",
    { "data-key": key, "data-count": "1", "data-code": err.code || "" },
    el("strong", { text: head ? `${head}: ` : "" }),
    el("span", { class: "message", text: message }),
    el("span", { class: "count" }),
    " ",
    el("button", {
      type: "button",
      text: "Dismiss",
      "aria-label": "Dismiss this error",
      on: () => {
        item.remove();
        $("#errors-section").hidden = list.children.length === 0;
      },
    }),
  );
  list.prepend(item);
  while (list.children.length > MAX_ERRORS) list.lastElementChild.remove();
  $("#errors-section").hidden = false;
}

export function clearErrors() {
  $("#errors").replaceChildren();
  $("#errors-section").hidden = true;
}

/** Run an async action; show its error instead of letting it go unseen. */
export async function guarded(action, context) {
  try {
    return await action();
  } catch (err) {
    if (err?.name !== "AbortError") showError(err, context);
    return undefined;
  }
}

/** Seconds as "12 s", "3 min 5 s", "2 h 4 min". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Unix seconds as local time of day (with the date when it is not today). */
export function clock(unixS) {
  const date = new Date(unixS * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

export const JOB_FINAL = new Set(["succeeded", "failed", "cancelled", "expired"]);
export const BATCH_FINAL = new Set(["completed", "failed", "cancelled", "expired"]);
