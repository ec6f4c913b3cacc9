// Atelier's live page: jobs and their previews stream in over server-sent events (/events, pushed as the daemon
// emits them; the browser reconnects by itself), jobs are submitted through /api/submit, WebUI's listings fill the
// form, the plugins' forms come from their params_schema_json, and a pasted image's infotext refills the form.
"use strict";

const $ = (id) => document.getElementById(id);
const jobs = new Map();  // job_id -> article
let initImage = null;    // base64 of the img2img image
window.atelierPreviewLatencyMs = [];

async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(body)};
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
    throw new Error(detail || response.statusText);
  }
  return data;
}

// ------------------------------------------------------------------ jobs

function jobCard(id, prompt, mine) {
  let card = jobs.get(id);
  if (card) return card;
  card = $("job-template").content.firstElementChild.cloneNode(true);
  card.dataset.jobId = id;
  card.dataset.mine = mine === false ? "false" : "true";
  card.dataset.state = "queued";
  card.querySelector(".job-state").textContent = "queued";
  card.querySelector(".job-prompt").textContent = prompt || id;
  card.querySelector(".cancel").onclick = () => api("/api/cancel", {job_id: id}).catch(showError);
  card.querySelector(".skip").onclick = () => api("/api/skip", {job_id: id}).catch(showError);
  card.hidden = card.dataset.mine === "false" && !$("show-all").checked;
  jobs.set(id, card);
  $("jobs").prepend(card);
  return card;
}

function setState(card, state, text) {
  card.dataset.state = state;
  card.querySelector(".job-state").textContent = state;
  if (text !== undefined) card.querySelector(".job-text").textContent = text;
  const done = ["succeeded", "cancelled", "failed"].includes(state);
  card.querySelector(".cancel").disabled = done;
  card.querySelector(".skip").disabled = done;
}

const handlers = {
  daemon(d) {
    $("status").dataset.state = d.reachable ? "ok" : "away";
    $("status").textContent = d.reachable ? "daemon connected" : "daemon unreachable: " + (d.message || "");
  },
  queued(d) {
    const card = jobCard(d.job_id, d.prompt, d.mine);
    if (d.position !== undefined) card.querySelector(".job-text").textContent = `in queue: ${d.position + 1}`;
  },
  started(d) { setState(jobCard(d.job_id, d.prompt, d.mine), "running", ""); },
  progress(d) {
    const card = jobCard(d.job_id);
    if (card.dataset.state === "queued") setState(card, "running");
    card.querySelector("progress").value = d.progress || 0;
    const steps = d.steps ? `step ${d.step}/${d.steps}` : "";
    const images = d.job_count > 1 ? ` · image ${d.job_no + 1}/${d.job_count}` : "";
    card.querySelector(".job-text").textContent = (d.text || steps) + images +
        (d.eta_seconds > 0 ? ` · ${d.eta_seconds.toFixed(1)} s left` : "");
    if (d.preview) {
      const img = card.querySelector(".preview");
      img.src = d.preview;
      img.hidden = false;
      // How long after the daemon emitted it the preview arrived (same clock on one machine; bench/ reads it).
      if (d.published_us) window.atelierPreviewLatencyMs.push(Date.now() - d.published_us / 1000);
    }
  },
  result(d) {
    const card = jobCard(d.job_id);
    const img = document.createElement("img");
    img.src = d.image;
    img.title = d.infotext;
    img.className = "result";
    card.querySelector(".results").append(img);
    card.querySelector(".preview").hidden = true;
  },
  frame(d) {
    const card = jobCard(d.job_id);
    const img = document.createElement("img");
    img.src = d.image;
    img.className = "frame";
    card.querySelector(".results").append(img);
  },
  artifact(d) {
    const card = jobCard(d.job_id);
    let node;
    if (d.mime_type.startsWith("video/")) {
      node = document.createElement("video");
      node.controls = true;
      node.loop = true;
      node.autoplay = true;
      node.muted = true;
    } else if (d.mime_type.startsWith("image/")) {
      node = document.createElement("img");
    } else {
      node = document.createElement("a");
      node.textContent = d.name;
      node.download = d.name;
      node.href = d.data;
    }
    if (node.tagName !== "A") node.src = d.data;
    node.title = d.name;
    node.className = "artifact";
    card.querySelector(".artifacts").append(node);
  },
  finished(d) { setState(jobCard(d.job_id), d.state, d.message || ""); },
};

function connect() {
  const events = new EventSource("/events");
  for (const [type, handle] of Object.entries(handlers)) {
    events.addEventListener(type, (e) => handle(JSON.parse(e.data)));
  }
  events.onopen = () => { if ($("status").dataset.state === "connecting") $("status").textContent = "connected"; };
  events.onerror = () => {  // the gateway went away: EventSource reconnects by itself (retry: 1000)
    $("status").dataset.state = "connecting";
    $("status").textContent = "reconnecting…";
  };
}

// ------------------------------------------------------------------ form

function fill(select, names, chosen) {
  select.replaceChildren(...names.map((n) => new Option(n, n, false, n === chosen)));
}

async function loadListings() {
  try {
    const samplers = await api("/sdapi/v1/samplers");
    fill($("sampler_name"), samplers.map((s) => s.name), "DPM++ 2M");
    const schedulers = await api("/sdapi/v1/schedulers");
    fill($("scheduler"), schedulers.map((s) => s.label), "Automatic");
    const plugins = await api("/api/plugins");
    $("plugin-forms").replaceChildren(...plugins.plugins.map(pluginForm).filter(Boolean));
    const queue = await api("/api/jobs");
    for (const j of queue.jobs) {
      const card = jobCard(j.job_id, j.prompt, undefined);
      if (j.state === "running") setState(card, "running");
    }
  } catch (e) {
    showError(e);
    setTimeout(loadListings, 2000);  // the daemon may be starting
  }
}

// The item schema of a plugin's {"args": [item]} (the properties of one unit), resolving "$ref".
function itemSchema(schema) {
  let item = schema && schema.properties && schema.properties.args && schema.properties.args.items;
  if (item && item.$ref) item = item.$ref.split("/").slice(1).reduce((node, key) => node && node[key], schema);
  return item && item.properties ? item : null;
}

function pluginForm(plugin) {
  const item = itemSchema(plugin.schema);
  if (!item) return null;
  const set = document.createElement("fieldset");
  set.className = "plugin";
  set.dataset.plugin = plugin.name;
  const legend = document.createElement("legend");
  const toggle = document.createElement("label");
  const enabled = document.createElement("input");
  enabled.type = "checkbox";
  enabled.className = "plugin-enabled";
  toggle.append(enabled, " " + plugin.name);
  legend.append(toggle);
  set.append(legend);
  const body = document.createElement("div");
  body.hidden = true;
  legend.querySelector("input").onchange = (e) => { body.hidden = !e.target.checked; };
  for (const [key, spec] of Object.entries(item.properties)) {
    const label = document.createElement("label");
    label.textContent = key + " ";
    let input;
    if (spec.enum) {
      input = document.createElement("select");
      for (const v of spec.enum) input.append(new Option(String(v), JSON.stringify(v), false, v === spec.default));
      input.dataset.kind = "json";
    } else if (spec.type === "boolean") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = spec.default === true;
      input.dataset.kind = "boolean";
    } else if (spec.type === "number" || spec.type === "integer") {
      input = document.createElement("input");
      input.type = "number";
      input.step = spec.type === "integer" ? "1" : "any";
      if (spec.minimum !== undefined) input.min = spec.minimum;
      if (spec.maximum !== undefined) input.max = spec.maximum;
      if (spec.default !== undefined) input.value = spec.default;
      input.dataset.kind = "number";
    } else if (spec.type === "string") {
      input = document.createElement("input");
      input.value = spec.default !== undefined ? spec.default : "";
      input.dataset.kind = "string";
    } else {
      input = document.createElement("textarea");
      input.rows = 1;
      input.value = spec.default !== undefined ? JSON.stringify(spec.default) : "";
      input.dataset.kind = "json";
    }
    input.dataset.key = key;
    input.title = spec.description || "";
    label.append(input);
    body.append(label);
  }
  set.append(body);
  return set;
}

function pluginArgs() {
  const scripts = {};
  for (const set of document.querySelectorAll("fieldset.plugin")) {
    if (!set.querySelector(".plugin-enabled").checked) continue;
    const unit = {};
    for (const input of set.querySelectorAll("[data-key]")) {
      const kind = input.dataset.kind;
      if (kind === "boolean") unit[input.dataset.key] = input.checked;
      else if (kind === "number") { if (input.value !== "") unit[input.dataset.key] = Number(input.value); }
      else if (kind === "string") unit[input.dataset.key] = input.value;
      else if (input.value !== "") unit[input.dataset.key] = JSON.parse(input.value);
    }
    // The extensions' own switches: sd-webui-controlnet reads "enabled", sd-webui-animatediff "enable".
    if ("enabled" in unit) unit.enabled = true;
    if ("enable" in unit) unit.enable = true;
    scripts[set.dataset.plugin] = {args: [unit]};
  }
  return scripts;
}

function payload() {
  const p = {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    sampler_name: $("sampler_name").value,
    scheduler: $("scheduler").value,
    steps: Number($("steps").value),
    cfg_scale: Number($("cfg_scale").value),
    seed: Number($("seed").value),
    width: Number($("width").value),
    height: Number($("height").value),
    batch_size: Number($("batch_size").value),
    alwayson_scripts: pluginArgs(),
  };
  if (img2img()) {
    p.init_images = initImage ? [initImage] : [];
    p.denoising_strength = Number($("denoising_strength").value);
  }
  return p;
}

const img2img = () => document.querySelector("input[name=mode]:checked").value === "img2img";

function showError(e) { $("form-error").textContent = e ? String(e.message || e) : ""; }

async function submit(event) {
  event.preventDefault();
  showError(null);
  try {
    const {job_id} = await api("/api/submit", {payload: payload(), img2img: img2img()});
    jobCard(job_id, $("prompt").value, true);
  } catch (e) {
    showError(e);
  }
}

// An image pasted or dropped: its infotext (Atelier's or WebUI's) refills the form; in img2img it is the image.
async function useImage(file) {
  const data = await new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(file);
  });
  const base64 = data.slice(data.indexOf(",") + 1);
  if (img2img()) {
    initImage = base64;
    $("init_preview").src = data;
    $("init_preview").hidden = false;
  }
  try {
    const info = await api("/sdapi/v1/png-info", {image: base64});
    const p = info.parameters || {};
    if (!info.info) return;
    const set = (id, value) => { if (value !== undefined && value !== null && value !== "") $(id).value = value; };
    set("prompt", p.Prompt);
    set("negative_prompt", p["Negative prompt"]);
    set("steps", p.Steps);
    set("cfg_scale", p["CFG scale"]);
    set("seed", p.Seed);
    set("width", p["Size-1"]);
    set("height", p["Size-2"]);
    set("sampler_name", p.Sampler);
    set("scheduler", p["Schedule type"]);
    set("denoising_strength", p["Denoising strength"]);
  } catch (e) {
    showError(e);
  }
}

document.addEventListener("paste", (e) => {
  const file = [...e.clipboardData.files].find((f) => f.type.startsWith("image/"));
  if (file) useImage(file);
});
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/"));
  if (file) useImage(file);
});
$("init_image").onchange = (e) => { if (e.target.files[0]) useImage(e.target.files[0]); };
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.onchange = () => { $("img2img-fields").hidden = !img2img(); };
}
$("show-all").onchange = () => {
  for (const card of jobs.values()) card.hidden = card.dataset.mine === "false" && !$("show-all").checked;
};
$("job-form").onsubmit = submit;
connect();
loadListings();
