// emogen studio: a plain page over the HTTP API (no external assets; works offline).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { tab: "generate", emotions: [], selected: new Map(), va: [0.7, 0.5], job: null, source: null,
                photo: null, offset: 0, limits: {} };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const err = body && body.error ? body.error : { message: `HTTP ${response.status}` };
    const retry = response.headers.get("Retry-After");
    throw new Error(err.message + (err.hint ? ` ${err.hint}` : "") + (retry && !err.hint ? ` Retry in ${retry} s.` : ""));
  }
  return body;
}

function say(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 1800);
}

// ------------------------------------------------------------------ emotions and the valence-arousal pad
function renderEmotions() {
  const box = $("emotions");
  box.replaceChildren();
  for (const e of state.emotions) {
    const weight = el("input", { type: "range", min: "0", max: "1", step: "0.05", value: "1",
                                 "aria-label": `${e.id} weight` });
    weight.addEventListener("click", (ev) => ev.stopPropagation());
    weight.addEventListener("input", () => { state.selected.set(e.id, Number(weight.value)); weightLabel(); });
    const chip = el("div", { class: `chip ${e.polarity}`, role: "checkbox", tabindex: "0", "aria-checked": "false",
                             "data-emotion": e.id },
                    el("div", { class: "name" }, el("span", { text: e.id }), el("small", { class: "w" })), weight);
    const toggle = () => {
      if (state.selected.has(e.id)) state.selected.delete(e.id); else state.selected.set(e.id, Number(weight.value));
      chip.classList.toggle("on", state.selected.has(e.id));
      chip.setAttribute("aria-checked", String(state.selected.has(e.id)));
      updateFusion();
    };
    chip.addEventListener("click", toggle);
    chip.addEventListener("keydown", (ev) => { if (ev.key === " " || ev.key === "Enter") { ev.preventDefault(); toggle(); } });
    box.append(chip);
  }
}

function weightLabel() {
  const weighted = state.selected.size > 1 && $("mode").value !== "tokens";
  for (const chip of document.querySelectorAll(".chip")) {
    const w = state.selected.get(chip.dataset.emotion);
    chip.classList.toggle("weighted", weighted);
    chip.querySelector(".w").textContent = weighted && w !== undefined ? w.toFixed(2) : "";
  }
}

function updateFusion() {
  $("fusion").hidden = state.selected.size < 2;
  weightLabel();
}

function renderPad() {
  const pad = $("pad");
  for (const old of pad.querySelectorAll(".va-label")) old.remove();
  for (const e of state.emotions) {
    if (e.valence == null) continue;
    const label = el("span", { class: "va-label", text: e.id });
    label.style.left = `${e.valence * 100}%`;
    label.style.top = `${(1 - e.arousal) * 100}%`;
    pad.append(label);
  }
  placeDot();
}

function placeDot() {
  const [v, a] = state.va;
  $("pad-dot").style.left = `${v * 100}%`;
  $("pad-dot").style.top = `${(1 - a) * 100}%`;
  let nearest = null, best = Infinity;
  for (const e of state.emotions) {
    if (e.valence == null) continue;
    const d = (e.valence - v) ** 2 + (e.arousal - a) ** 2;
    if (d < best) { best = d; nearest = e.id; }
  }
  $("pad-readout").textContent = `valence ${v.toFixed(2)} · arousal ${a.toFixed(2)}` + (nearest ? ` · closest: ${nearest}` : "");
}

function padPoint(ev) {
  const r = $("pad").getBoundingClientRect();
  const v = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
  const a = Math.min(1, Math.max(0, 1 - (ev.clientY - r.top) / r.height));
  state.va = [Math.round(v * 100) / 100, Math.round(a * 100) / 100];
  placeDot();
}

function useVa() { return document.querySelector("input[name=target]:checked").value === "va"; }

// ------------------------------------------------------------------ building requests
function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function target(forEdit) {
  if (useVa()) return { va: state.va };
  const names = [...state.selected.keys()];
  if (!names.length) throw new Error("Pick an emotion first (or switch to the valence–arousal pad).");
  if (forEdit) {
    if (names.length > 1) throw new Error("An edit moves a photo toward one emotion: pick one (or use the pad).");
    return { emotion: names[0] };
  }
  if (names.length === 1) return { emotion: names[0] };
  const mode = $("mode").value;
  const body = { emotion: names, mode };
  if (mode !== "tokens") body.weights = names.map((n) => state.selected.get(n));
  return body;
}

function generationBody() {
  const body = { ...target(false), prompt: $("prompt").value || "{}", n: numberOrNull("count") || 1,
                 intensity: Number($("intensity").value) };
  for (const [id, key] of [["seed", "seed"], ["steps", "steps"], ["guidance", "guidance"], ["best-of", "best_of"]]) {
    const v = numberOrNull(id);
    if (v !== null) body[key] = v;
  }
  const size = $("size").value.trim();
  if (size) body.size = size;
  return body;
}

function editForm() {
  if (!state.photo) throw new Error("Drop a photo first.");
  const form = new FormData();
  form.append("image", state.photo, state.photo.name || "photo.png");
  const t = target(true);
  if (t.va) form.append("va", t.va.join(",")); else form.append("emotion", t.emotion);
  form.append("strength", $("strength").value);
  form.append("intensity", $("intensity").value);
  form.append("prompt", $("prompt").value || "{}");
  if ($("until").checked) form.append("until_confident", "0.6");
  const seed = numberOrNull("seed");
  if (seed !== null) form.append("seed", String(seed));
  return form;
}

// ------------------------------------------------------------------ running jobs with live progress
async function run(kind, payload) {
  say("");
  const go = $("go");
  go.disabled = true;
  try {
    const options = kind === "edit" ? { method: "POST", body: payload }
      : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) };
    const job = await api("/v1/jobs", options);
    state.job = job.id;
    showProgress(0, null, "queued…");
    const done = await follow(job.id);
    if (done.state === "succeeded") {
      showResult(done);
      say(`${done.result.count} image${done.result.count === 1 ? "" : "s"} written to the gallery.`, true);
    } else if (done.state === "cancelled") {
      say("Cancelled: the images finished before the current step are in the gallery.", true);
    } else {
      say(done.error ? done.error.message + (done.error.hint ? " " + done.error.hint : "") : "The job failed.");
    }
    await loadGallery(true);
  } catch (err) {
    say(err.message);
  } finally {
    go.disabled = false;
    state.job = null;
    $("progress").hidden = true;
  }
}

function follow(id) {
  return new Promise((resolve, reject) => {
    const source = new EventSource(`/v1/jobs/${id}/events`);
    const progress = (ev) => {
      const d = JSON.parse(ev.data);
      if (d.state === "running") showProgress(d.step, d.total, null);
      else showProgress(0, null, "queued…");
    };
    source.addEventListener("state", progress);
    source.addEventListener("progress", progress);
    source.addEventListener("done", (ev) => { source.close(); resolve(JSON.parse(ev.data)); });
    source.onerror = () => {
      source.close();
      api(`/v1/jobs/${id}`).then((job) => (job.state === "queued" || job.state === "running")
        ? follow(id).then(resolve, reject) : resolve(job)).catch(reject);
    };
  });
}

function showProgress(step, total, text) {
  $("progress").hidden = false;
  const fraction = total ? Math.min(1, step / total) : 0;
  $("bar-fill").style.width = `${fraction * 100}%`;
  $("progress-text").textContent = text || (total ? `step ${step} of ${total}` : "starting…");
}

function showResult(job) {
  const box = $("result");
  box.replaceChildren();
  for (const image of job.result.images) {
    if (image.kind === "edit" && image.source_url) box.append(compare(image.source_url, image.url));
    else box.append(el("figure", {}, el("img", { src: image.url, alt: `${image.emotion} image, seed ${image.seed}` })));
  }
}

function compare(before, after) {
  const afterBox = el("div", { class: "after" }, el("img", { src: after, alt: "after" }));
  const slider = el("input", { type: "range", min: "0", max: "100", value: "50", "aria-label": "before / after" });
  const box = el("div", { class: "compare" }, el("img", { src: before, alt: "before" }), afterBox,
                 el("span", { class: "tag l", text: "before" }), el("span", { class: "tag r", text: "after" }), slider);
  const set = () => { afterBox.style.clipPath = `inset(0 0 0 ${slider.value}%)`; };
  slider.addEventListener("input", set);
  set();
  return box;
}

// ------------------------------------------------------------------ the gallery
function label(image) {
  if (image.va && image.va.valence !== undefined) return `V ${image.va.valence} · A ${image.va.arousal}`;
  return (image.emotions && image.emotions.length > 1) ? image.emotions.join(" + ") : image.emotion;
}

function card(image) {
  const img = el("img", { src: image.url, alt: `${label(image)}, seed ${image.seed}`, loading: "lazy" });
  img.addEventListener("click", () => detail(image));
  const meta = el("div", { class: "meta" }, el("b", { text: label(image) }),
                  ` · seed ${image.seed}` + (image.kind === "edit" ? ` · edit ${image.strength}` : ""));
  return el("div", { class: "card", "data-file": image.file }, img, meta, actions(image));
}

function actions(image) {
  const box = el("div", { class: "actions" });
  if (image.kind === "edit") {
    box.append(el("button", { type: "button", text: "Edit again", onclick: () => editAgain(image) }));
  } else {
    box.append(el("button", { type: "button", text: "Same again", onclick: () => again(image, false) }));
    box.append(el("button", { type: "button", text: "Vary seed", onclick: () => again(image, true) }));
  }
  box.append(el("a", { href: image.url, download: image.file.split("/").pop(), text: "Download" }));
  box.append(el("button", { type: "button", text: "Copy infotext", onclick: () => copyInfotext(image) }));
  return box;
}

function settingsOf(image) {
  const body = { prompt: image.prompt || "{}", n: 1, steps: image.steps, guidance: image.guidance,
                 scheduler: image.scheduler, intensity: image.intensity ?? 1 };
  if (image.negative_prompt) body.negative_prompt = image.negative_prompt;
  if (Array.isArray(image.size)) body.size = `${image.size[0]}x${image.size[1]}`;
  else if (image.size) body.size = `${image.size}x${image.size}`;
  if (image.va && image.va.valence !== undefined) { body.va = [image.va.valence, image.va.arousal]; body.sigma = image.va.sigma; }
  else if (image.emotions && image.emotions.length > 1) {
    body.emotion = image.emotions;
    body.mode = image.fusion ? image.fusion.mode : "tokens";
    if (image.fusion && image.fusion.weights) body.weights = image.fusion.weights;
  } else body.emotion = image.emotion;
  return body;
}

function again(image, vary) {
  const body = settingsOf(image);
  body.seed = vary ? Math.floor(Math.random() * 4294967295) : image.seed;
  $("detail").close();
  run("generate", body);
}

async function editAgain(image) {
  try {
    const blob = await (await fetch(image.source_url, { credentials: "same-origin" })).blob();
    const form = new FormData();
    form.append("image", new File([blob], image.source.split("/").pop(), { type: "image/png" }));
    if (image.va && image.va.valence !== undefined) form.append("va", `${image.va.valence},${image.va.arousal}`);
    else form.append("emotion", image.target || image.emotion);
    form.append("strength", String(image.requested_strength ?? image.strength));
    form.append("intensity", String(image.intensity ?? 1));
    form.append("prompt", image.prompt || "{}");
    $("detail").close();
    run("edit", form);
  } catch (err) { say(err.message); }
}

async function copyInfotext(image) {
  try {
    const info = await api(`/v1/gallery/${image.file}`);
    await copy(info.infotext);
    toast("Infotext copied");
  } catch (err) { say(err.message); }
}

async function copy(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = el("textarea");
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

function detail(image) {
  const media = $("detail-media");
  media.replaceChildren(image.kind === "edit" && image.source_url ? compare(image.source_url, image.url)
    : el("img", { src: image.url, alt: label(image) }));
  const table = $("detail-table");
  table.replaceChildren();
  const rows = ["file", "emotion", "prompt", "seed", "steps", "guidance", "scheduler", "size", "intensity", "strength",
                "ssim", "negative_prompt", "base_model", "mapper"];
  for (const key of rows) {
    if (image[key] === undefined || image[key] === null || image[key] === "") continue;
    const value = typeof image[key] === "object" ? JSON.stringify(image[key]) : String(image[key]);
    table.append(el("tr", {}, el("td", { text: key }), el("td", { text: value })));
  }
  if (image.va && image.va.valence !== undefined) {
    table.append(el("tr", {}, el("td", { text: "valence, arousal" }), el("td", { text: `${image.va.valence}, ${image.va.arousal}` })));
  }
  const acts = actions(image);
  acts.prepend(el("button", { type: "button", text: "Load settings", onclick: () => { loadSettings(image); $("detail").close(); } }));
  $("detail-actions").replaceChildren(...acts.childNodes);
  $("detail").showModal();
}

function loadSettings(image) {
  const body = settingsOf(image);
  $("prompt").value = body.prompt === "{}" ? "" : body.prompt;
  $("intensity").value = body.intensity;
  $("intensity-out").textContent = Number(body.intensity).toFixed(2);
  $("seed").value = image.seed;
  $("steps").value = body.steps || "";
  $("guidance").value = body.guidance ?? "";
  $("size").value = body.size || "";
  if (body.va) {
    document.querySelector("input[name=target][value=va]").checked = true;
    state.va = body.va;
  } else {
    document.querySelector("input[name=target][value=emotions]").checked = true;
    state.selected.clear();
    const names = Array.isArray(body.emotion) ? body.emotion : [body.emotion];
    names.forEach((n, i) => state.selected.set(n, body.weights ? body.weights[i] : 1));
    if (body.mode) $("mode").value = body.mode;
    for (const chip of document.querySelectorAll(".chip")) {
      const on = state.selected.has(chip.dataset.emotion);
      chip.classList.toggle("on", on);
      chip.setAttribute("aria-checked", String(on));
      const w = state.selected.get(chip.dataset.emotion);
      if (w !== undefined) chip.querySelector("input").value = w;
    }
    updateFusion();
  }
  switchTarget();
  placeDot();
}

async function loadGallery(reset) {
  if (reset) state.offset = 0;
  const page = await api(`/v1/gallery?limit=60&offset=${state.offset}`);
  const box = $("gallery");
  if (reset) box.replaceChildren();
  for (const image of page.data) box.append(card(image));
  state.offset += page.data.length;
  $("gallery-count").textContent = `${page.total} image${page.total === 1 ? "" : "s"}`;
  $("more").hidden = state.offset >= page.total;
}

// ------------------------------------------------------------------ photo drop
function choosePhoto(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg|webp)$/.test(file.type)) { say("Use a PNG, JPEG or WebP photo."); return; }
  state.photo = file;
  const preview = $("drop-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").textContent = file.name;
}

// ------------------------------------------------------------------ wiring
function switchTab(tab) {
  state.tab = tab;
  $("tab-generate").classList.toggle("active", tab === "generate");
  $("tab-edit").classList.toggle("active", tab === "edit");
  $("tab-generate").setAttribute("aria-selected", String(tab === "generate"));
  $("tab-edit").setAttribute("aria-selected", String(tab === "edit"));
  $("generate-only").hidden = tab !== "generate";
  $("edit-only").hidden = tab !== "edit";
  $("go").textContent = tab === "generate" ? "Generate" : "Edit the photo";
}

function switchTarget() {
  $("emotion-box").hidden = useVa();
  $("va-box").hidden = !useVa();
}

async function refreshQueue() {
  try {
    const h = await api("/healthz");
    $("queue-info").textContent = `${h.running} running · ${h.queued} waiting` + (h.status === "draining" ? " · shutting down" : "");
  } catch (err) { $("queue-info").textContent = "server unreachable"; }
}

async function start() {
  $("tab-generate").addEventListener("click", () => switchTab("generate"));
  $("tab-edit").addEventListener("click", () => switchTab("edit"));
  for (const r of document.querySelectorAll("input[name=target]")) r.addEventListener("change", switchTarget);
  $("mode").addEventListener("change", weightLabel);
  $("intensity").addEventListener("input", () => { $("intensity-out").textContent = Number($("intensity").value).toFixed(2); });
  $("strength").addEventListener("input", () => { $("strength-out").textContent = Number($("strength").value).toFixed(2); });
  $("dice").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 4294967295); });
  const pad = $("pad");
  let dragging = false;
  pad.addEventListener("pointerdown", (ev) => { dragging = true; pad.setPointerCapture(ev.pointerId); padPoint(ev); });
  pad.addEventListener("pointermove", (ev) => { if (dragging) padPoint(ev); });
  pad.addEventListener("pointerup", () => { dragging = false; });
  pad.addEventListener("keydown", (ev) => {
    const d = { ArrowLeft: [-0.05, 0], ArrowRight: [0.05, 0], ArrowUp: [0, 0.05], ArrowDown: [0, -0.05] }[ev.key];
    if (!d) return;
    ev.preventDefault();
    state.va = state.va.map((x, i) => Math.round(Math.min(1, Math.max(0, x + d[i])) * 100) / 100);
    placeDot();
  });
  const drop = $("drop");
  drop.addEventListener("click", () => $("photo").click());
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") $("photo").click(); });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); choosePhoto(ev.dataTransfer.files[0]); });
  $("photo").addEventListener("change", () => choosePhoto($("photo").files[0]));
  $("go").addEventListener("click", () => {
    try {
      if (state.tab === "generate") run("generate", generationBody()); else run("edit", editForm());
    } catch (err) { say(err.message); }
  });
  $("cancel").addEventListener("click", () => { if (state.job) api(`/v1/jobs/${state.job}`, { method: "DELETE" }).catch(() => {}); });
  $("more").addEventListener("click", () => loadGallery(false));
  try {
    const [models, emotions] = await Promise.all([api("/v1/models"), api("/v1/emotions")]);
    const m = models.data[0];
    state.limits = m.limits;
    $("model-info").textContent = `${m.base_model.split("/").pop()} · mapper ${m.mapper_sha256.slice(0, 10)} · ${m.devices.join(", ")}`;
    $("count").max = m.limits.max_images;
    $("steps").placeholder = m.steps;
    $("guidance").placeholder = m.guidance;
    $("size").placeholder = `${m.resolution}x${m.resolution}`;
    $("best-of").max = m.limits.max_best_of;
    if (!m.has_probe) { $("best-of").disabled = true; $("until").disabled = true; }
    state.emotions = emotions.data;
    renderEmotions();
    renderPad();
    await loadGallery(true);
  } catch (err) { say(err.message); }
  refreshQueue();
  setInterval(refreshQueue, 5000);
}

document.addEventListener("DOMContentLoaded", start);
