// unmask serve's page: stream /v1/completions and redraw the canvas at every step.
// Each run gets a pane; a cell per canvas position: prompt, mask (▒▒) or the committed token,
// coloured by the step that committed it. window.unmaskTrace keeps, per pane, the number of masked
// cells after each drawn step (the browser test reads it).
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let models = [];
window.unmaskTrace = {};

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

function setStatus(text) {
  $("status").textContent = text;
}

async function errorOf(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function fillSelect(select, list) {
  select.replaceChildren(...list.map((m) => new Option(`${m.id} (${m.objective})`, m.id)));
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    setStatus(await errorOf(response));
    return;
  }
  models = (await response.json()).data;
  fillSelect($("run"), models.filter((m) => m.decoder === "mdm").concat(models.filter((m) => m.decoder !== "mdm")));
  fillSelect($("ar-run"), models.filter((m) => m.decoder === "ar"));
  fillSelect($("mdm-run"), models.filter((m) => m.decoder === "mdm"));
  setStatus(`${models.length} run(s) served`);
}

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

function requestBody(model, prompt) {
  const body = { model: model.id, prompt, stream: true, max_tokens: numberOf("max_tokens"), temperature: numberOf("temperature") };
  if (model.decoder === "mdm") {
    body.method = $("method").value;
    if (numberOf("steps") !== null && body.method !== "threshold") body.steps = numberOf("steps");
    if (numberOf("block_length") !== null) body.block_length = numberOf("block_length");
    if (body.method === "threshold") body.threshold = numberOf("threshold");
    if ($("cache").value !== "none") body.cache = $("cache").value;
    if ($("conv").checked) {
      body.conv = true;
      body.conv_kernel = numberOf("conv_kernel");
    }
  }
  return body;
}

function colour(step, total) {
  const f = total > 1 ? (step - 1) / (total - 1) : 0;
  return `hsl(${Math.round(220 - 220 * Math.min(1, f))}, 75%, 82%)`;
}

class Pane {
  constructor(model, label) {
    this.model = model;
    this.node = $("pane-template").content.firstElementChild.cloneNode(true);
    this.node.dataset.run = model.id;
    this.node.dataset.decoder = model.decoder;
    this.node.dataset.state = "waiting";
    this.node.querySelector(".run-name").textContent = `${label}: ${model.id}`;
    this.canvas = this.node.querySelector(".canvas");
    this.cells = [];
    this.total = null;
    this.trace = window.unmaskTrace[model.id] = [];
    $("panes").append(this.node);
  }

  meta(text) {
    this.node.querySelector(".meta").textContent = text;
  }

  masked() {
    return this.canvas.querySelectorAll(".tok.mask").length;
  }

  start(u) {
    const row = u.rows[0];
    this.total = u.planned_steps;
    this.cells = row.pieces.map((piece, i) => {
      const cell = document.createElement("span");
      cell.className = "tok " + (piece === null ? "mask" : i < row.prompt_len ? "prompt" : "given");
      if (piece !== null) cell.textContent = piece;
      return cell;
    });
    this.canvas.replaceChildren(...this.cells);
    this.node.dataset.state = "decoding";
    this.trace.push(this.masked());
    this.meta(`${u.decoder.toUpperCase()}, batch of ${u.batch_rows}`);
  }

  step(u) {
    const row = u.rows.find((r) => r.index === 0);
    if (!row) return;
    row.positions.forEach((p, k) => {
      const cell = this.cells[p];
      if (!cell) return;
      cell.className = "tok";
      cell.textContent = row.pieces[k];
      cell.dataset.step = u.step;
      cell.style.background = colour(u.step, this.total || u.step);
    });
    this.trace.push(this.masked());
    this.meta(`step ${u.step}${this.total ? " / " + this.total : ""}`);
  }

  done(chunk, text) {
    const u = chunk.unmask;
    for (const cell of this.cells) {
      if (cell.classList.contains("mask")) cell.remove(); // AR stopped at end of document
      else if (cell.dataset.step) cell.style.background = colour(Number(cell.dataset.step), u.steps);
    }
    this.node.querySelector(".answer").textContent = text;
    this.node.dataset.state = "done";
    this.meta(`${u.steps} steps, ${u.seconds.toFixed(2)} s on the server`);
  }

  fail(message) {
    const error = this.node.querySelector(".error");
    error.textContent = message;
    error.hidden = false;
    this.node.dataset.state = "error";
  }
}

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function runPane(pane, prompt) {
  const response = await fetch("/v1/completions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify(requestBody(pane.model, prompt)),
  });
  if (!response.ok) return pane.fail(await errorOf(response));
  const delay = numberOf("delay") || 0;
  let text = ""; // AR: the deltas of every token; MDM: the whole answer in the last chunk
  for await (const chunk of events(response)) {
    if (chunk.error) return pane.fail(chunk.error.message);
    text += chunk.choices.find((c) => c.index === 0)?.text || "";
    const u = chunk.unmask;
    if (u.event === "start") pane.start(u);
    else if (u.event === "step") {
      pane.step(u);
      if (delay) await sleep(delay);
    } else if (u.event === "done") pane.done(chunk, text);
  }
}

async function generate(event) {
  event.preventDefault();
  if (!models.length) await loadModels();
  const prompt = $("prompt").value;
  const byId = (id) => models.find((m) => m.id === id);
  const chosen =
    mode() === "side"
      ? [["AR", byId($("ar-run").value)], ["MDM", byId($("mdm-run").value)]]
      : [[byId($("run").value)?.decoder === "ar" ? "AR" : "MDM", byId($("run").value)]];
  if (chosen.some(([, m]) => !m)) return setStatus("side by side needs an AR run and an MDM run");
  $("panes").replaceChildren();
  window.unmaskTrace = {};
  $("go").disabled = true;
  setStatus("decoding…");
  try {
    await Promise.all(chosen.map(([label, m]) => runPane(new Pane(m, label), prompt)));
    setStatus("done");
  } catch (e) {
    setStatus(String(e));
  } finally {
    $("go").disabled = false;
  }
}

for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    const side = mode() === "side";
    $("run-one").hidden = side;
    $("run-ar").hidden = !side;
    $("run-mdm").hidden = !side;
  });
}
$("form").addEventListener("submit", generate);
$("token").addEventListener("change", loadModels);
loadModels();
