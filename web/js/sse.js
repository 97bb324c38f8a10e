// An event log of the API (a job's or a batch's) read over SSE with fetch(), resumed with
// Last-Event-ID after a dropped connection. A browser's EventSource would resume by itself, but
// it cannot send an Authorization header.

import { ApiError, authHeaders, errorOf } from "./api.js";

/** Answers worth another try (a proxy's or a restarting server's); any other error is final. */
const RETRY_STATUSES = new Set([502, 503, 504]);
/** The pause before the n-th reconnection in a row: 0.25 s, doubling, at most 5 s. */
const RECONNECT_DELAY_MS = 250;
const RECONNECT_MAX_DELAY_MS = 5000;
/** Reconnections in a row, without an event between them, before the page gives up. */
const MAX_FAILURES = 20;
const FINAL_TYPES = new Set(["done", "error"]);

/** A text/event-stream, fed text as it arrives, as blocks {event, data, id} once each block's
 * blank line has come (so a block cut off by a dropped connection is never half-read). `id` is
 * the block's own `id:` field or null: tokenq's `queued` notes come without one.
 * https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation */
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.first = true;
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  feed(text) {
    this.buffer += text;
    const blocks = [];
    for (;;) {
      const end = this.buffer.search(/[\r\n]/);
      if (end < 0) break;
      // A CR at the very end may be the first half of a CRLF: wait for the next piece.
      if (this.buffer[end] === "\r" && end === this.buffer.length - 1) break;
      const eol = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      let line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + eol);
      if (this.first) {
        this.first = false;
        if (line.startsWith("\ufeff")) line = line.slice(1);
      }
      const block = this.line(line);
      if (block) blocks.push(block);
    }
    return blocks;
  }

  line(line) {
    if (line === "") {
      const block = this.data.length
        ? { event: this.event || "message", data: this.data.join("\n"), id: this.id }
        : null;
      this.reset();
      return block;
    }
    if (line.startsWith(":")) return null; // a comment: the server's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
    return null;
  }
}

/** A log's `queued` note as {position, estimated_start_at}: the server sends the note as an
 * event object ({seq, type, data: {...}}) without an SSE id; a bare object is taken as well. */
function noteOf(parsed) {
  if (parsed && typeof parsed.data === "object" && parsed.data !== null) return parsed.data;
  return parsed;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** Follow the log at `path` from after event `after` to its final event.
 *
 * Calls onEvent({seq, type, data}) for each event once, in order; onNote(note) for each
 * `queued` note (it has no id, so it never moves the resume point); onConnection(state) with
 * {state: "open"|"reconnecting", reconnects, cause?, delayMs?, last}; onAnomaly(text) for an
 * event whose seq is not the next one (a duplicate is dropped, a gap is reported).
 * Resolves {last, ended, reconnects}: `ended` is "final" (a done/error event) or "204" (the
 * server says the log ended at or before `last`). Rejects with ApiError for an answer that is
 * not worth retrying, or after MAX_FAILURES reconnections in a row; `signal` aborts it. */
export async function follow(path, { after = 0, onEvent, onNote, onConnection, onAnomaly, signal } = {}) {
  let last = after;
  let failures = 0;
  let reconnects = 0;
  for (;;) {
    let cause;
    try {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (last > 0) headers["Last-Event-ID"] = String(last);
      const response = await fetch(path, { headers, signal, cache: "no-store" });
      if (response.status === 204) return { last, ended: "204", reconnects };
      if (!response.ok) {
        if (!RETRY_STATUSES.has(response.status)) throw await errorOf(response, `GET ${path}`);
        cause = `HTTP ${response.status}`;
      } else {
        onConnection?.({ state: "open", reconnects, last });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        const parser = new SSEParser();
        let final = false;
        try {
          while (!final) {
            const { value, done } = await reader.read();
            if (done) break;
            for (const block of parser.feed(value)) {
              if (block.id === null) {
                if (block.event === "queued") onNote?.(noteOf(JSON.parse(block.data)));
                continue; // no id: not part of the log
              }
              const event = JSON.parse(block.data);
              if (event.seq <= last) {
                onAnomaly?.(`event ${event.seq} came again after ${last}; dropped`);
                continue;
              }
              if (event.seq !== last + 1) {
                onAnomaly?.(`events ${last + 1} to ${event.seq - 1} are missing`);
              }
              last = event.seq;
              failures = 0;
              onEvent?.(event);
              if (FINAL_TYPES.has(event.type)) {
                final = true;
                break;
              }
            }
          }
        } finally {
          reader.cancel().catch(() => {});
        }
        if (final) return { last, ended: "final", reconnects };
        cause = "the stream ended before its final event";
      }
    } catch (err) {
      if (err instanceof ApiError || signal?.aborted) throw err;
      cause = err.message || String(err); // the connection dropped (a TypeError from fetch)
    }
    failures += 1;
    if (failures > MAX_FAILURES) {
      throw new ApiError(`GET ${path}`, 0, {
        message: `the stream dropped ${MAX_FAILURES} times in a row after event ${last} (${cause})`,
      });
    }
    reconnects += 1;
    const delayMs = Math.min(RECONNECT_DELAY_MS * 2 ** (failures - 1), RECONNECT_MAX_DELAY_MS);
    onConnection?.({ state: "reconnecting", reconnects, cause, delayMs, last });
    await sleep(delayMs, signal);
  }
}
