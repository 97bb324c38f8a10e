// The page: the API key, the model pickers, and the job, batch and recent panels wired together.

import { apiKey, request, setApiKey } from "./api.js";
import { setupBatch } from "./batch.js";
import { setupJob } from "./job.js";
import { refreshRecent } from "./recent.js";
import { $, clearErrors, el, guarded } from "./ui.js";

function showKeyStatus() {
  $("#key-status").textContent = apiKey()
    ? "Requests carry this key (Authorization: Bearer), kept in this tab's sessionStorage only."
    : "No key: requests go without one, as a server with no API keys configured serves " +
      "clients on its own machine (loopback) that way. Enter a key if the server has keys.";
  document.body.dataset.keyed = String(Boolean(apiKey()));
}

/** Fill both model pickers from GET /v1/models (the models a live worker serves now). */
async function loadModels() {
  const list = await request("GET", "/v1/models");
  const ids = list.data.map((model) => model.id);
  const jobPicker = $("#job-model");
  const batchPicker = $("#batch-model");
  const previous = [jobPicker.value, batchPicker.value];
  jobPicker.replaceChildren(
    ...(ids.length
      ? ids.map((id) => el("option", { value: id, text: id }))
      : [el("option", { value: "", text: "the default model (no model has a live worker now)" })]),
  );
  batchPicker.replaceChildren(
    el("option", { value: "", text: "the default model" }),
    ...ids.map((id) => el("option", { value: id, text: id })),
  );
  if (ids.includes(previous[0])) jobPicker.value = previous[0];
  else if (ids.includes("smollm2")) jobPicker.value = "smollm2";
  if (ids.includes(previous[1])) batchPicker.value = previous[1];
  document.body.dataset.models = ids.join(" ");
}

async function reloadAll() {
  await Promise.all([guarded(loadModels, "listing models"), guarded(refreshRecent, "listing")]);
}

function setupKey() {
  const input = $("#api-key");
  input.value = apiKey();
  showKeyStatus();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    showKeyStatus();
    clearErrors();
    reloadAll();
  });
  $("#key-forget").addEventListener("click", () => {
    input.value = "";
    setApiKey("");
    showKeyStatus();
    clearErrors();
    reloadAll();
  });
}

setupKey();
setupJob(refreshRecent);
setupBatch(refreshRecent);
$("#models-reload").addEventListener("click", () => guarded(loadModels, "listing models"));
$("#recent-refresh").addEventListener("click", () => guarded(refreshRecent, "listing"));
reloadAll().then(() => {
  document.body.dataset.ready = "true";
});
