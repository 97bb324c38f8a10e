// A batch: upload JSONL, watch its progress (bar, counts, ETA, last results, jobs per second).

import { download, request } from "./api.js";
import { follow } from "./sse.js";
import { drawSparkline, Rate } from "./spark.js";
import { $, BATCH_FINAL, clock, duration, el, guarded, showError } from "./ui.js";

/** How often the batch object is read again while it runs (for its ETA and status). */
const POLL_MS = 2000;
/** Rows of "last finished", and job texts fetched for them at once. */
const RESULT_ROWS = 8;
const TEXT_FETCHES = 2;

let watching = null; // {batchId, controller, timers}

/** A batch's counts as {total, succeeded, failed, cancelled, expired}, from the batch object's
 * request_counts ({total, completed, ...}, OpenAI's names) or a `job` event's counts. */
export function countsOf(counts) {
  return {
    total: counts.total ?? 0,
    succeeded: counts.succeeded ?? counts.completed ?? 0,
    failed: counts.failed ?? 0,
    cancelled: counts.cancelled ?? 0,
    expired: counts.expired ?? 0,
  };
}

export function finishedOf(counts) {
  return counts.succeeded + counts.failed + counts.cancelled + counts.expired;
}

/** POST /v1/batches with a JSONL body (a chosen file, else the pasted text); then watch it. */
export async function uploadBatch(form, onChange) {
  const file = form.elements.file.files[0];
  const body = file || form.elements.jsonl.value;
  if (!file && !body.trim()) throw new Error("choose a JSONL file or paste some JSONL lines");
  const model = form.elements.model.value;
  const batch = await request("POST", "/v1/batches", {
    body,
    type: "application/jsonl",
    query: model ? { model } : undefined,
  });
  onChange?.();
  watchBatch(batch, onChange);
  return batch;
}

function setStatus(view, status) {
  view.dataset.status = status;
  $("#batch-status").textContent = status;
  $("#batch-status").className = `status status-${status}`;
  $("#batch-cancel").disabled = BATCH_FINAL.has(status) || status === "cancelling";
}

/** Follow a batch (the batch object as POST or GET /v1/batches answers) into the batch view. */
export function watchBatch(batch, onChange) {
  stopWatching();
  const view = $("#batch-view");
  view.hidden = false;
  view.dataset.batchId = batch.id;
  view.dataset.state = "streaming";
  view.dataset.reconnects = "0";
  $("#batch-id").textContent = batch.id;
  $("#batch-results tbody").replaceChildren();
  $("#batch-connection").textContent = "";
  setStatus(view, batch.status);

  const controller = new AbortController();
  const rate = new Rate();
  // The page's own estimate: finished jobs since it started watching, over the time since.
  const seen = { atMs: performance.now(), finished: finishedOf(countsOf(batch.request_counts)) };
  let counts = countsOf(batch.request_counts);
  let serverEta = batch.estimated_completion_at ?? null;
  let latest = batch;

  const render = () => {
    const finished = finishedOf(counts);
    const percent = counts.total ? Math.floor((finished * 100) / counts.total) : 0;
    const bar = $("#batch-progress");
    bar.max = Math.max(1, counts.total);
    bar.value = finished;
    bar.setAttribute("aria-valuetext", `${finished} of ${counts.total} jobs finished`);
    view.dataset.percent = String(percent);
    view.dataset.finished = String(finished);
    $("#batch-percent").textContent = `${percent}% (${finished} of ${counts.total})`;
    $("#batch-counts").textContent =
      `${counts.succeeded} succeeded · ${counts.failed} failed · ` +
      `${counts.cancelled} cancelled · ${counts.expired} expired · ${counts.total - finished} to go`;
    $("#batch-eta").textContent = etaText(finished);
    drawSparkline($("#batch-spark"), rate.series(), $("#batch-spark-caption"), "jobs");
  };

  // A replayed log (a batch watched late) brings its events at once: draw once a frame.
  let frame = null;
  const scheduleRender = () => {
    frame ??= requestAnimationFrame(() => {
      frame = null;
      render();
    });
  };

  const etaText = (finished) => {
    const status = view.dataset.status;
    if (BATCH_FINAL.has(status)) {
      const end = latest.completed_at ?? latest.cancelled_at ?? latest.expired_at ?? latest.failed_at;
      const start = latest.in_progress_at ?? latest.created_at;
      return end ? `${status} in ${duration(end - start)}` : status;
    }
    const left = counts.total - finished;
    if (typeof serverEta === "number") {
      return `ETA ${clock(serverEta)}, in ~${duration(serverEta - Date.now() / 1000)} (the server's estimate)`;
    }
    const elapsedS = (performance.now() - seen.atMs) / 1000;
    const done = finished - seen.finished;
    if (done > 0 && elapsedS > 0) {
      const inS = (left * elapsedS) / done;
      return `ETA ${clock(Date.now() / 1000 + inS)}, in ~${duration(inS)} (at the rate seen on this page: ${(done / elapsedS).toFixed(2)} jobs/s)`;
    }
    return "ETA: once the first jobs finish";
  };

  // "Last finished": the newest rows first; each row's text fetched from GET /v1/jobs/{id}.
  const pending = [];
  let fetching = 0;
  const fetchTexts = () => {
    while (fetching < TEXT_FETCHES && pending.length) {
      const row = pending.shift();
      if (!row.isConnected) continue; // pushed out by newer rows before its turn
      fetching += 1;
      request("GET", `/v1/jobs/${row.dataset.jobId}`)
        .then((job) => {
          const cell = row.querySelector(".text");
          cell.textContent = job.text ?? (job.error ? `${job.error.type}: ${job.error.message}` : "");
          cell.title = cell.textContent; // the whole text, where the cell shows three lines
          row.dataset.loaded = "true";
        })
        .catch((err) => {
          if (!controller.signal.aborted) showError(err, `reading job ${row.dataset.jobId}`);
        })
        .finally(() => {
          fetching -= 1;
          fetchTexts();
        });
    }
  };
  const addResult = (data) => {
    const body = $("#batch-results tbody");
    const row = el(
      "tr",
      { "data-job-id": data.job_id, "data-custom-id": data.custom_id ?? "" },
      el("td", { text: data.custom_id ?? `#${data.index}` }),
      el("td", { class: `status status-${data.status}`, text: data.status }),
      el("td", {}, el("div", { class: "text", text: "…" })),
    );
    body.prepend(row);
    while (body.children.length > RESULT_ROWS) body.lastElementChild.remove();
    pending.unshift(row); // newest first; rows pushed out of the table are not fetched
    pending.length = Math.min(pending.length, RESULT_ROWS);
    fetchTexts();
  };

  const poll = setInterval(() => {
    request("GET", `/v1/batches/${batch.id}`)
      .then((fresh) => {
        if (controller.signal.aborted) return;
        latest = fresh;
        serverEta = fresh.estimated_completion_at ?? null;
        const freshCounts = countsOf(fresh.request_counts);
        if (finishedOf(freshCounts) >= finishedOf(counts)) counts = freshCounts;
        if (!BATCH_FINAL.has(view.dataset.status)) setStatus(view, fresh.status);
        render();
      })
      .catch((err) => {
        if (!controller.signal.aborted) showError(err, `reading batch ${batch.id}`);
      });
  }, POLL_MS);
  const tick = setInterval(render, 1000);
  watching = { batchId: batch.id, controller, timers: [poll, tick] };
  render();

  follow(batch.events_url || `/v1/batches/${batch.id}/events`, {
    signal: controller.signal,
    onEvent(event) {
      const data = event.data || {};
      if (event.type === "status") {
        setStatus(view, data.status);
      } else if (event.type === "job") {
        const next = countsOf(data.counts || {});
        const before = finishedOf(counts);
        if (finishedOf(next) >= before) counts = next;
        // Jobs per second from what this page sees finish (not the replay of earlier ones).
        if (finishedOf(next) > seen.finished) rate.add(1);
        addResult(data);
      } else if (event.type === "done") {
        if (data.counts) counts = countsOf(data.counts);
        setStatus(view, data.status);
        serverEta = null;
      }
      scheduleRender();
    },
    onConnection(state) {
      view.dataset.reconnects = String(state.reconnects);
      $("#batch-connection").textContent =
        state.state === "reconnecting"
          ? `connection lost (${state.cause}); reconnecting after event ${state.last}`
          : state.reconnects
            ? `reconnected ${state.reconnects}× (resumed after event ${state.last})`
            : "";
    },
    onAnomaly: (message) => showError(new Error(message), `batch ${batch.id} stream`),
  })
    .then(async () => {
      // The final object: its stamps (for "completed in ...") and its counts.
      latest = await request("GET", `/v1/batches/${batch.id}`);
      counts = countsOf(latest.request_counts);
      setStatus(view, latest.status);
      serverEta = null;
      view.dataset.state = "ended";
    })
    .catch((err) => {
      if (controller.signal.aborted) return;
      view.dataset.state = "failed";
      showError(err, `following batch ${batch.id}`);
    })
    .finally(() => {
      if (controller.signal.aborted) return;
      for (const timer of watching?.timers ?? []) clearInterval(timer);
      render();
      onChange?.();
    });
}

export function stopWatching() {
  if (watching) {
    watching.controller.abort();
    for (const timer of watching.timers) clearInterval(timer);
    watching = null;
  }
}

export async function cancelBatch(batchId) {
  return request("POST", `/v1/batches/${batchId}/cancel`);
}

/** The batch's results so far (succeeded jobs, JSONL) as a file. */
export async function downloadResults(batchId) {
  await download(`/v1/batches/${batchId}/results`, `${batchId}-results.jsonl`);
}

/** Wire the upload form and the batch view's buttons. */
export function setupBatch(onChange) {
  const form = $("#batch-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#batch-submit");
    button.disabled = true;
    await guarded(() => uploadBatch(form, onChange), "uploading the batch");
    button.disabled = false;
  });
  $("#batch-cancel").addEventListener("click", () =>
    guarded(async () => {
      const id = $("#batch-view").dataset.batchId;
      if (id) await cancelBatch(id);
      onChange?.();
    }, "cancelling the batch"),
  );
  $("#batch-download").addEventListener("click", () =>
    guarded(() => downloadResults($("#batch-view").dataset.batchId), "downloading results"),
  );
}
