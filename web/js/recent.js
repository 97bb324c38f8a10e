// The caller's recent jobs and batches, with their status: watch, cancel, download.

import { ApiError, request, saveBlob } from "./api.js";
import { cancelBatch, countsOf, downloadResults, finishedOf, watchBatch } from "./batch.js";
import { cancelJob, myJobs, watchJob } from "./job.js";
import { $, BATCH_FINAL, clock, el, guarded, JOB_FINAL, showError } from "./ui.js";

const LISTED = 20;
/** While something listed is still running, the list is read again this often. */
const REFRESH_MS = 5000;

let refreshTimer = null;
let loading = null;

/** The caller's latest single jobs: GET /v1/jobs, or, on a server without that route (404 or
 * 405), the jobs this page submitted in this tab, read one by one. */
async function recentJobs() {
  try {
    const list = await request("GET", "/v1/jobs", { query: { limit: LISTED } });
    return { jobs: list.data, own: false };
  } catch (err) {
    if (!(err instanceof ApiError) || ![404, 405].includes(err.status)) throw err;
  }
  const jobs = [];
  for (const id of myJobs().slice(0, LISTED)) {
    try {
      jobs.push(await request("GET", `/v1/jobs/${id}`));
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err; // 404: expired since
    }
  }
  return { jobs, own: true };
}

function button(label, action, context, attrs = {}) {
  return el("button", {
    type: "button",
    text: label,
    ...attrs,
    on: () => guarded(action, context),
  });
}

function jobRow(job, refresh) {
  const running = !JOB_FINAL.has(job.status);
  return el(
    "tr",
    { "data-job-id": job.id, "data-status": job.status },
    el("td", {}, el("code", { text: job.id })),
    el("td", { class: `status status-${job.status}`, text: job.status }),
    el("td", { text: job.model }),
    el("td", { text: clock(job.created_at) }),
    el(
      "td",
      { class: "actions" },
      button("Watch", async () => watchJob(await request("GET", `/v1/jobs/${job.id}`), { onChange: refresh }), `watching job ${job.id}`, {
        "aria-label": `Watch job ${job.id}`,
      }),
      running
        ? button("Cancel", async () => { await cancelJob(job.id); refresh(); }, `cancelling job ${job.id}`, {
            "aria-label": `Cancel job ${job.id}`,
          })
        : null,
      job.text !== null && job.text !== undefined
        ? button(
            "Download text",
            async () => {
              const fresh = await request("GET", `/v1/jobs/${job.id}`);
              saveBlob(new Blob([fresh.text ?? ""], { type: "text/plain" }), `${job.id}.txt`);
            },
            `downloading job ${job.id}`,
            { "aria-label": `Download the text of job ${job.id}` },
          )
        : null,
    ),
  );
}

function batchRow(batch, refresh) {
  const counts = countsOf(batch.request_counts);
  const running = !BATCH_FINAL.has(batch.status) && batch.status !== "cancelling";
  return el(
    "tr",
    { "data-batch-id": batch.id, "data-status": batch.status },
    el("td", {}, el("code", { text: batch.id })),
    el("td", { class: `status status-${batch.status}`, text: batch.status }),
    el("td", { text: `${finishedOf(counts)} / ${counts.total}` }),
    el("td", { text: clock(batch.created_at) }),
    el(
      "td",
      { class: "actions" },
      button("Watch", async () => watchBatch(await request("GET", `/v1/batches/${batch.id}`), refresh), `watching batch ${batch.id}`, {
        "aria-label": `Watch batch ${batch.id}`,
      }),
      running
        ? button("Cancel", async () => { await cancelBatch(batch.id); refresh(); }, `cancelling batch ${batch.id}`, {
            "aria-label": `Cancel batch ${batch.id}`,
          })
        : null,
      button("Download results", () => downloadResults(batch.id), `downloading batch ${batch.id}`, {
        "aria-label": `Download the results of batch ${batch.id}`,
      }),
    ),
  );
}

function emptyRow(text) {
  return el("tr", {}, el("td", { colspan: "5", class: "hint", text }));
}

let again = false;

/** Read both lists again and show them: one reading at a time, and a call during one reads
 * once more after it (what changed meanwhile is shown). */
export function refreshRecent() {
  if (loading) {
    again = true;
    return loading;
  }
  loading = load().finally(() => {
    loading = null;
    if (again) {
      again = false;
      refreshRecent();
    }
  });
  return loading;
}

async function load() {
  const refresh = () => refreshRecent();
  const [jobs, batches] = await Promise.allSettled([
    recentJobs(),
    request("GET", "/v1/batches", { query: { limit: LISTED } }),
  ]);
  let active = false;
  const jobBody = $("#recent-jobs tbody");
  if (jobs.status === "fulfilled") {
    const { jobs: list, own } = jobs.value;
    $("#recent-note").textContent = own
      ? "This server has no GET /v1/jobs: the jobs listed are the ones this page submitted in this tab."
      : "";
    jobBody.replaceChildren(...list.map((job) => jobRow(job, refresh)));
    if (!list.length) jobBody.append(emptyRow("no jobs yet"));
    active ||= list.some((job) => !JOB_FINAL.has(job.status));
  } else {
    showError(jobs.reason, "listing jobs");
  }
  const batchBody = $("#recent-batches tbody");
  if (batches.status === "fulfilled") {
    const list = batches.value.data;
    batchBody.replaceChildren(...list.map((batch) => batchRow(batch, refresh)));
    if (!list.length) batchBody.append(emptyRow("no batches yet"));
    active ||= list.some((batch) => !BATCH_FINAL.has(batch.status));
  } else {
    showError(batches.reason, "listing batches");
  }
  $("#recent-section").dataset.loaded = String(Date.now());
  clearTimeout(refreshTimer);
  refreshTimer = active ? setTimeout(refresh, REFRESH_MS) : null;
}
