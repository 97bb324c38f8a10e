// One job: submit a prompt or a chat, watch its tokens arrive, cancel it.

import { request } from "./api.js";
import { follow } from "./sse.js";
import { drawSparkline, Rate } from "./spark.js";
import { $, duration, guarded, JOB_FINAL, showError } from "./ui.js";

const MY_JOBS_ITEM = "tokenq.myJobs";
const MY_JOBS_KEPT = 50;

/** The ids of the jobs this page submitted in this tab, newest first. */
export function myJobs() {
  try {
    return JSON.parse(sessionStorage.getItem(MY_JOBS_ITEM) || "[]");
  } catch {
    return [];
  }
}

function remember(jobId) {
  const ids = [jobId, ...myJobs().filter((id) => id !== jobId)].slice(0, MY_JOBS_KEPT);
  sessionStorage.setItem(MY_JOBS_ITEM, JSON.stringify(ids));
}

/** The chat so far ({role, content}), sent whole with each new message. */
let conversation = [];
let watching = null; // {jobId, controller, timer, chat}

/** POST /v1/jobs with the form's fields; then watch the job. */
export async function submitJob(form, onChange) {
  const kind = form.elements.kind.value;
  const body = {
    max_tokens: Number(form.elements.max_tokens.value),
    temperature: Number(form.elements.temperature.value),
  };
  const model = form.elements.model.value;
  if (model) body.model = model;
  let chatTurn = null;
  if (kind === "chat") {
    const system = form.elements.system.value.trim();
    const user = form.elements.user.value;
    const messages = conversation.length === 0 && system ? [{ role: "system", content: system }] : [];
    chatTurn = [...conversation, ...messages, { role: "user", content: user }];
    body.messages = chatTurn;
  } else {
    body.prompt = form.elements.prompt.value;
  }
  const job = await request("POST", "/v1/jobs", { json: body });
  remember(job.id);
  onChange?.();
  watchJob(job, { chatTurn, onChange });
  return job;
}

/** Start a new conversation (the chat log empties). */
export function newConversation() {
  conversation = [];
  renderConversation();
}

function renderConversation() {
  const log = $("#chat-log");
  log.replaceChildren(
    ...conversation.map((m) => {
      const item = document.createElement("li");
      item.className = `chat-${m.role}`;
      const who = document.createElement("strong");
      who.textContent = `${m.role}: `;
      item.append(who, m.content);
      return item;
    }),
  );
  log.hidden = conversation.length === 0;
  // The system message opens a conversation; later turns carry it in the history.
  $("#chat-system").disabled = conversation.length > 0;
}

function setStatus(view, status) {
  view.dataset.status = status;
  $("#job-status").textContent = status;
  $("#job-status").className = `status status-${status}`;
  $("#job-cancel").disabled = JOB_FINAL.has(status);
}

function queueText(note) {
  if (!note || typeof note.position !== "number") return "";
  const where = note.position === 0 ? "next in queue" : `position ${note.position} in queue`;
  if (typeof note.estimated_start_at !== "number") return `${where}, start time not known yet`;
  const inS = note.estimated_start_at - Date.now() / 1000;
  return inS > 0.5 ? `${where}, starts in ~${duration(inS)}` : `${where}, starting about now`;
}

/** Follow a job's events into the job view: its status, its text as tokens arrive (dropped on
 * `reset`, a new attempt), its place in line, a tokens-per-second sparkline. `job` is the job
 * object (as POST /v1/jobs or GET /v1/jobs/{id} answers). */
export function watchJob(job, { chatTurn = null, onChange } = {}) {
  stopWatching();
  const view = $("#job-view");
  const text = $("#job-text");
  const connection = $("#job-connection");
  const queue = $("#job-queue");
  const summary = $("#job-summary");
  view.hidden = false;
  view.dataset.jobId = job.id;
  view.dataset.state = "streaming";
  view.dataset.lastSeq = "0";
  view.dataset.reconnects = "0";
  view.dataset.anomalies = "0";
  $("#job-id").textContent = job.id;
  text.replaceChildren();
  summary.replaceChildren();
  summary.className = "";
  connection.textContent = "";
  // While it waits: its place in line, and why it is not moving when the server knows.
  const showQueue = (note) => {
    queue.textContent = [queueText(note), job.notice].filter(Boolean).join(" · ");
  };
  if (job.status === "queued") showQueue(job.queue);
  else queue.textContent = "";
  setStatus(view, job.status);

  const rate = new Rate();
  const draw = () => drawSparkline($("#job-spark"), rate.series(), $("#job-spark-caption"), "tokens");
  draw();
  const controller = new AbortController();
  const timer = setInterval(draw, 1000);
  let tokens = 0;
  let streamed = "";
  watching = { jobId: job.id, controller, timer };

  const anomaly = (message) => {
    view.dataset.anomalies = String(Number(view.dataset.anomalies) + 1);
    showError(new Error(message), `job ${job.id} stream`);
  };
  const finish = (result, status) => {
    setStatus(view, status);
    queue.textContent = "";
    if (!result) return;
    // The tokens make the final text (unless the job echoes its prompt): say so if not.
    const differs = typeof result.text === "string" && result.text !== streamed;
    view.dataset.textDiffers = String(differs);
    const parts = [`${status}`];
    if (result.finish_reason) parts.push(`finish_reason ${result.finish_reason}`);
    if (result.usage) {
      parts.push(`${result.usage.prompt_tokens} prompt + ${result.usage.completion_tokens} completion tokens`);
    }
    if (result.timings?.tokens_per_second) {
      parts.push(`${result.timings.tokens_per_second.toFixed(1)} tokens/s`);
    }
    if (differs) parts.push("the job's final text differs from the streamed one");
    summary.textContent = parts.join(" · ");
    if (result.error) {
      summary.className = "error-text";
      summary.textContent += ` · ${result.error.type}: ${result.error.message}`;
    }
    if (chatTurn && status === "succeeded") {
      conversation = [...chatTurn, { role: "assistant", content: streamed }];
      renderConversation();
      $("#chat-user").value = "";
    }
  };

  follow(job.urls?.events || `/v1/jobs/${job.id}/events`, {
    signal: controller.signal,
    onEvent(event) {
      view.dataset.lastSeq = String(event.seq);
      const data = event.data || {};
      if (event.type === "status") {
        setStatus(view, data.status);
        if (data.status !== "queued") queue.textContent = "";
        else if (data.reason === "worker_lost") queue.textContent = "back in the queue: its worker was lost";
      } else if (event.type === "token") {
        if (data.text) {
          text.append(data.text);
          streamed += data.text;
        }
        const n = typeof data.n === "number" ? data.n : tokens + 1;
        rate.add(Math.max(0, n - tokens));
        tokens = n;
      } else if (event.type === "reset") {
        text.replaceChildren();
        streamed = "";
        tokens = 0;
        connection.textContent = data.resync
          ? "the server resent this attempt's text: shown anew"
          : `attempt ${data.attempt} started over: its text so far was dropped`;
      } else if (event.type === "done" || event.type === "error") {
        finish(data.result, data.status);
      }
    },
    onNote(note) {
      if (view.dataset.status === "queued") showQueue(note);
    },
    onConnection(state) {
      view.dataset.reconnects = String(state.reconnects);
      connection.textContent =
        state.state === "reconnecting"
          ? `connection lost (${state.cause}); reconnecting after event ${state.last} in ${duration(state.delayMs / 1000)}`
          : state.reconnects
            ? `reconnected ${state.reconnects}× (resumed after event ${state.last})`
            : "";
    },
    onAnomaly: anomaly,
  })
    .then(async (outcome) => {
      if (outcome.ended === "204") {
        // The log ended at or before the point we asked from: show the job as it is.
        const final = await request("GET", `/v1/jobs/${job.id}`);
        if (!streamed && final.text) {
          text.textContent = final.text;
          streamed = final.text;
        }
        finish(final, final.status);
      }
      view.dataset.state = "ended";
    })
    .catch((err) => {
      if (controller.signal.aborted) return;
      view.dataset.state = "failed";
      showError(err, `following job ${job.id}`);
    })
    .finally(() => {
      clearInterval(timer);
      draw();
      if (!controller.signal.aborted) onChange?.();
    });
}

export function stopWatching() {
  if (watching) {
    watching.controller.abort();
    clearInterval(watching.timer);
    watching = null;
  }
}

export async function cancelJob(jobId) {
  return request("POST", `/v1/jobs/${jobId}/cancel`);
}

/** Wire the job form and the job view's cancel button. */
export function setupJob(onChange) {
  const form = $("#job-form");
  const toggle = () => {
    const chat = form.elements.kind.value === "chat";
    $("#prompt-fields").hidden = chat;
    $("#chat-fields").hidden = !chat;
  };
  for (const radio of form.elements.kind) radio.addEventListener("change", toggle);
  toggle();
  renderConversation();
  $("#chat-new").addEventListener("click", newConversation);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#job-submit");
    button.disabled = true;
    await guarded(() => submitJob(form, onChange), "submitting the job");
    button.disabled = false;
  });
  $("#job-cancel").addEventListener("click", () =>
    guarded(async () => {
      const id = $("#job-view").dataset.jobId;
      if (id) await cancelJob(id);
      onChange?.();
    }, "cancelling the job"),
  );
}
