// The operator console: reads GET /admin/models every 1.5 s and drives the admin and embedding endpoints.
// Plain DOM, no framework; every value from the API goes in through textContent, never as HTML.
"use strict";

const REFRESH_MS = 1500;
const TOKEN_KEY = "llama-embeddings-console-token";
const HEAD_NUMBERS = 8;

const $ = (selector, root = document) => root.querySelector(selector);

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

// The message of an error answer: {"detail": str | [{msg, loc}]} (the original endpoints),
// {"error": str | {"message"}} (OpenAI-style), or the status line when the body is not JSON.
function errorMessage(status, body) {
  const detail = body && (body.detail !== undefined ? body.detail : body.error);
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => (item && item.msg ? [item.loc && item.loc.join("."), item.msg].filter(Boolean).join(": ")
                                                  : JSON.stringify(item))).join("; ");
  }
  if (detail && typeof detail.message === "string") return detail.message;
  return `HTTP ${status}`;
}

// fetch with the bearer token; resolves to the JSON answer, rejects with an Error carrying the API's message.
async function api(method, path, body) {
  const headers = {Accept: "application/json"};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  let answer = null;
  try {
    answer = await response.json();
  } catch (_) {
    answer = null;
  }
  if (!response.ok) throw new Error(`${response.status}: ${errorMessage(response.status, answer)}`);
  return answer;
}

function formatBytes(bytes) {
  if (typeof bytes !== "number" || !isFinite(bytes)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function text(value) {
  return value === undefined || value === null || value === "" ? "–" : String(value);
}

function setState(element, state) {
  element.textContent = text(state);
  element.className = `state state-${state}`;
}

function showMessage(element, message, kind) {
  element.textContent = message;
  element.className = `message ${kind}`;
  element.hidden = !message;
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = text(value);
  row.appendChild(td);
  return td;
}

function stateCell(row, state) {
  const span = document.createElement("span");
  setState(span, state);
  row.insertCell().appendChild(span);
}

function emptyRow(tbody, columns, message) {
  const row = tbody.insertRow();
  const td = cell(row, message);
  td.colSpan = columns;
  td.className = "empty";
}

// One section per installed model, made once and updated in place, so that the scale input keeps what is typed.
function modelSection(model) {
  const container = $("#models");
  let section = container.querySelector(`section[data-model="${CSS.escape(model.name)}"]`);
  if (section) return section;
  section = $("#model-template").content.firstElementChild.cloneNode(true);
  section.dataset.model = model.name;
  $(".model-name", section).textContent = model.name;
  const input = $("[data-scale-input]", section);
  input.value = model.desired;
  input.addEventListener("input", () => { input.dataset.touched = "1"; });
  $("form.scale", section).addEventListener("submit", (event) => {
    event.preventDefault();
    scale(model.name, section);
  });
  container.appendChild(section);
  return section;
}

function renderModel(model) {
  const section = modelSection(model);
  section.dataset.state = model.state;
  setState($(".state", section), model.state);
  $(".reason", section).textContent = model.reason || "";
  const fields = {desired: model.on_demand ? `${model.desired} (on demand)` : model.desired,
                  dimensions: model.dimensions, size: formatBytes(model.size_bytes), queue_depth: model.queue_depth};
  for (const [name, value] of Object.entries(fields)) $(`[data-field="${name}"]`, section).textContent = text(value);
  const input = $("[data-scale-input]", section);
  if (!input.dataset.touched && document.activeElement !== input) input.value = model.desired;

  const tbody = $("table.workers tbody", section);
  tbody.replaceChildren();
  const workers = [...(model.workers || [])].sort((a, b) => a.slot - b.slot);
  for (const worker of workers) {
    const row = tbody.insertRow();
    row.dataset.workerSlot = worker.slot;
    row.dataset.pid = worker.pid;
    cell(row, worker.slot);
    cell(row, worker.pid);
    stateCell(row, worker.state);
    cell(row, worker.threads);
    cell(row, typeof worker.rss_bytes === "number" ? (worker.rss_bytes / 1048576).toFixed(0) : null);
    cell(row, worker.requests);
    cell(row, worker.restarts);
    cell(row, worker.last_exit);
  }
  if (!workers.length) emptyRow(tbody, 8, "no workers");
}

function renderPulls(pulls) {
  const table = $("#pulls");
  const tbody = $("tbody", table);
  tbody.replaceChildren();
  for (const pull of pulls) {
    const row = tbody.insertRow();
    row.dataset.pullTarget = pull.target;
    cell(row, pull.name && pull.name !== pull.target ? `${pull.target} (${pull.name})` : pull.target);
    stateCell(row, pull.state);
    const percent = pull.total_bytes ? ` (${Math.floor((100 * pull.bytes) / pull.total_bytes)} %)` : "";
    cell(row, `${formatBytes(pull.bytes)} / ${pull.total_bytes ? formatBytes(pull.total_bytes) : "?"}${percent}`);
    cell(row, pull.message);
  }
  table.hidden = !pulls.length;
  $("#pulls-empty").hidden = Boolean(pulls.length);
}

// The embed and search boxes offer the served models (all installed ones while none is served); a choice is kept.
function renderModelChoices(models) {
  const served = models.filter((model) => model.served);
  const names = (served.length ? served : models).map((model) => model.name);
  for (const select of document.querySelectorAll("select.model-select")) {
    const current = [...select.options].map((option) => option.value);
    if (current.join("\n") === names.join("\n")) continue;
    const chosen = select.value;
    select.replaceChildren(...names.map((name) => new Option(name, name)));
    if (names.includes(chosen)) select.value = chosen;
  }
}

function render(answer) {
  const models = (answer.models || []).filter((model) => model.installed);
  const names = new Set(models.map((model) => model.name));
  for (const section of document.querySelectorAll("#models > section[data-model]")) {
    if (!names.has(section.dataset.model)) section.remove();
  }
  models.forEach(renderModel);
  renderModelChoices(models);
  const cache = answer.cache || {};
  $("#cache-hits").textContent = text(cache.hits);
  $("#cache-misses").textContent = text(cache.misses);
  const lookups = (cache.hits || 0) + (cache.misses || 0);
  $("#cache-ratio").textContent = lookups ? `${((100 * cache.hits) / lookups).toFixed(1)} %` : "–";
  const memory = answer.memory || {};
  $("#memory-available").textContent = formatBytes(memory.available_bytes);
  $("#memory-reserve").textContent = formatBytes(memory.reserve_bytes);
  renderPulls(answer.pulls || []);
}

async function refresh() {
  const status = $("#status");
  try {
    render(await api("GET", "/admin/models"));
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "status";
  } catch (error) {
    status.textContent = `cannot read /admin/models: ${error.message}`;
    status.className = "status error";
  }
}

// Refresh now, then REFRESH_MS after each answer (never two requests at once).
async function refreshLoop() {
  await refresh();
  setTimeout(refreshLoop, REFRESH_MS);
}

async function scale(name, section) {
  const input = $("[data-scale-input]", section);
  const button = $("[data-scale-button]", section);
  const result = $("[data-scale-result]", section);
  const workers = Number(input.value);
  button.disabled = true;
  try {
    const answer = await api("POST", `/admin/models/${encodeURIComponent(name)}/scale`, {workers});
    showMessage(result, `scaling to ${answer.workers} worker(s), ${answer.threads_per_worker} thread(s) each`, "ok");
    delete input.dataset.touched;
    await refresh();
  } catch (error) {
    showMessage(result, error.message, "error");
  } finally {
    button.disabled = false;
  }
}

async function embed(event) {
  event.preventDefault();
  const button = $("#embed-button");
  const message = $("#embed-message");
  button.disabled = true;
  try {
    const answer = await api("POST", "/get_embedding_vector/", {text: $("#embed-text").value,
                                                                model_name: $("#embed-model").value});
    const vector = answer.embedding || [];
    $("#embed-dimensions").textContent = text(answer.dimensions ?? vector.length);
    $("#embed-cached").textContent = answer.cached ? "yes" : "no";
    $("#embed-head").textContent = vector.slice(0, HEAD_NUMBERS).map((x) => x.toFixed(5)).join(", ")
      + (vector.length > HEAD_NUMBERS ? ", …" : "");
    $("#embed-result").hidden = false;
    showMessage(message, "", "ok");
  } catch (error) {
    $("#embed-result").hidden = true;
    showMessage(message, error.message, "error");
  } finally {
    button.disabled = false;
  }
}

async function search(event) {
  event.preventDefault();
  const button = $("#search-button");
  const message = $("#search-message");
  const list = $("#search-results");
  button.disabled = true;
  try {
    const answer = await api("POST", "/get_most_similar_string_from_database/", {
      text: $("#search-query").value, model_name: $("#search-model").value,
      number_of_most_similar_strings_to_return: Number($("#search-k").value)});
    const results = answer.results || [];
    list.replaceChildren(...results.map((hit) => {
      const item = document.createElement("li");
      const found = document.createElement("span");
      found.className = "text";
      found.textContent = hit.text;
      const similarity = document.createElement("span");
      similarity.className = "similarity";
      similarity.textContent = Number(hit.similarity).toFixed(4);
      item.append(found, similarity);
      return item;
    }));
    showMessage(message, results.length ? "" : "no stored strings to compare with", "ok");
  } catch (error) {
    list.replaceChildren();
    showMessage(message, error.message, "error");
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const tokenInput = $("#token");
  tokenInput.value = token();
  tokenInput.addEventListener("change", () => {
    if (tokenInput.value) localStorage.setItem(TOKEN_KEY, tokenInput.value);
    else localStorage.removeItem(TOKEN_KEY);
    refresh();
  });
  $("#embed-form").addEventListener("submit", embed);
  $("#search-form").addEventListener("submit", search);
  refreshLoop();
});
