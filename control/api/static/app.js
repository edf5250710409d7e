// realtime-ai live view: one EventSource per page, previews drawn with their result's boxes.
// No build step: plain browser JavaScript. Test hooks live on window.__rtai.
"use strict";

const P = "/api/v1/realtime-ai";
const SPARK_SECONDS = 300;
const PALETTE = ["#ff5a5f", "#3ec1d3", "#ffd166", "#06d6a0", "#a78bfa", "#f78c6b", "#4cc9f0", "#f15bb5"];

const rtai = (window.__rtai = {
  lastDrawn: {},   // stream -> {seq, w, h, boxes, drawn: [[x1,y1,x2,y2] in canvas pixels], canvas: [w,h],
                   //            tracks: [id per box] | null, labels: [text per box], zones: [[name, [[x,y] canvas px]]]}
  feed: [],         // the last feed messages ({type, t, stream, seq}), printed by the browser tests on failure
  framesDrawn: 0,
  drawnAt: [],      // performance.now() of the last 64 pictures drawn (the stream page's update rate)
  firstBoxAt: null, // performance.now() when the first box was drawn (page load to first box)
  fleet: null,
  phase: "init",    // init | login | live
});

let token = sessionStorage.getItem("rtai_token") || "";
const streamPage = location.pathname.startsWith("/stream/")
  ? decodeURIComponent(location.pathname.slice("/stream/".length)) : null;
const samples = [];  // stream page: [{t, fps_in, fps_out, p50, p99}]
let source = null;
let events = [];  // stream page: the newest events first (pushed on the page's one channel)

const $ = (sel, root = document) => root.querySelector(sel);
const authHeaders = () => (token ? { Authorization: "Bearer " + token } : {});
const fmt = (v, digits = 1) => (v === null || v === undefined || v === "" ? "–" : Number(v).toFixed(digits));

// ---- session and token -------------------------------------------------------------------
async function openSession() {
  const r = await fetch(P + "/live/session", { method: "POST", headers: authHeaders(), credentials: "same-origin" });
  if (r.status === 401) return false;
  if (!r.ok) throw new Error("live session: HTTP " + r.status);
  return true;
}

function showLogin(message) {
  rtai.phase = "login";
  if (source) { source.close(); source = null; }
  for (const id of ["overview", "streampage"]) $("#" + id).hidden = true;
  $("#add-btn").hidden = true;
  $("#login").hidden = false;
  $("#login-err").textContent = message || "";
  $("#conn").textContent = "token needed";
  $("#conn").className = "conn bad";
  $("#token").focus();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  if (await openSession()) {
    sessionStorage.setItem("rtai_token", token);
    $("#login").hidden = true;
    goLive();
  } else {
    showLogin("That token was refused.");
  }
});

async function boot() {
  try {
    if (await openSession()) goLive();
    else showLogin(token ? "The stored token was refused." : "");
  } catch (err) {
    $("#conn").textContent = String(err);
    setTimeout(boot, 2000);
  }
}

function goLive() {
  rtai.phase = "live";
  $("#add-btn").hidden = false;
  $(streamPage ? "#streampage" : "#overview").hidden = false;
  if (streamPage) $("#sp-title").textContent = streamPage;
  connect();
}

function logFeed(type, d) {
  rtai.feed.push({ type, t: Date.now(), stream: d.stream, seq: d.seq, boxes: d.boxes ? d.boxes.length : d.boxes, tracks: d.tracks });
  if (rtai.feed.length > 40) rtai.feed.shift();
}

function connect() {
  const url = P + "/live" + (streamPage ? "?stream=" + encodeURIComponent(streamPage) : "");
  source = new EventSource(url, { withCredentials: true });
  source.addEventListener("open", () => { $("#conn").textContent = "live"; $("#conn").className = "conn ok"; });
  source.addEventListener("error", async () => {
    $("#conn").textContent = "reconnecting…";
    $("#conn").className = "conn warn";
    if (source && source.readyState === EventSource.CLOSED) {
      source = null;
      if (await openSession().catch(() => true)) setTimeout(connect, 1000);
      else showLogin("The token is no longer accepted.");
    }
  });
  source.addEventListener("fleet", (e) => { const d = JSON.parse(e.data); logFeed("fleet", {}); onFleet(d); });
  source.addEventListener("frame", (e) => { const d = JSON.parse(e.data); logFeed("frame", d); onFrame(d); });
  source.addEventListener("events", (e) => onEvents(JSON.parse(e.data)));
  source.addEventListener("event", (e) => onEvents([JSON.parse(e.data)]));
}

// ---- drawing -------------------------------------------------------------------------------
function canvasFor(stream) {
  if (streamPage) return stream === streamPage ? $("#sp-canvas") : null;
  const tile = document.querySelector(`.tile[data-stream="${CSS.escape(stream)}"]`);
  return tile ? $("canvas", tile) : null;
}

// Frames of one batch arrive together: play them out spaced by their capture times.
const players = {};
function onFrame(f) {
  const p = (players[f.stream] ??= { queue: [], busy: false });
  p.queue.push(f);
  if (p.queue.length > 12) p.queue.splice(0, p.queue.length - 12);
  if (!p.busy) pump(p);
}

function pump(p) {
  const f = p.queue.shift();
  if (!f) { p.busy = false; return; }
  p.busy = true;
  const img = new Image();
  img.onload = () => {
    draw(f, img);
    const next = p.queue[0];
    let wait = next && f.t && next.t ? (next.t - f.t) * 1000 : 0;
    wait = Math.max(0, Math.min(wait, 500)) / (p.queue.length > 4 ? 2 : 1);
    setTimeout(() => pump(p), wait);
  };
  img.onerror = () => setTimeout(() => pump(p), 0);
  img.src = "data:image/jpeg;base64," + f.jpeg;
}

function draw(f, img) {
  const canvas = canvasFor(f.stream);
  if (!canvas) return;
  const w = f.w || img.naturalWidth, h = f.h || img.naturalHeight;
  const cw = canvas.width, ch = Math.round(cw * h / w);
  if (canvas.height !== ch) canvas.height = ch;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, cw, ch);
  const sx = cw / w, sy = ch / h;
  const info = (rtai.fleet && rtai.fleet.streams[f.stream]) || {};
  const zones = drawScene(ctx, info, cw, ch);
  const names = (rtai.fleet && rtai.fleet.names[f.model || info.model]) || [];
  const drawn = [], labels = [];
  const font = Math.max(11, Math.round(cw / 56));
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.lineWidth = Math.max(1.5, cw / 320);
  (f.boxes || []).forEach((b, i) => {
    const [x1, y1, x2, y2, conf, cls] = b;
    const track = f.tracks ? f.tracks[i] : null;
    const color = PALETTE[(track ?? cls) % PALETTE.length];
    const r = [x1 * sx, y1 * sy, x2 * sx, y2 * sy];
    drawn.push(r.map((v) => Math.round(v * 10) / 10));
    ctx.strokeStyle = color;
    ctx.strokeRect(r[0], r[1], r[2] - r[0], r[3] - r[1]);
    let label = `${names[cls] ?? "class " + cls} ${Math.round(conf * 100)}%`;
    if (track !== null) label += ` #${track}`;
    labels.push(label);
    const tw = ctx.measureText(label).width + 6;
    const ty = r[1] > font + 4 ? r[1] - font - 4 : r[1];
    const lx = Math.max(0, Math.min(r[0], cw - tw));  // labels stay inside the picture
    ctx.fillStyle = color;
    ctx.fillRect(lx, ty, tw, font + 4);
    ctx.fillStyle = "#111";
    ctx.fillText(label, lx + 3, ty + font);
  });
  if (f.boxes === null) {
    ctx.fillStyle = "rgba(0,0,0,.55)";
    ctx.fillRect(0, ch - font - 8, cw, font + 8);
    ctx.fillStyle = "#ddd";
    ctx.fillText("no result for this frame yet", 6, ch - 6);
  }
  rtai.lastDrawn[f.stream] = { seq: f.seq, w, h, boxes: f.boxes, drawn, canvas: [cw, ch], tracks: f.tracks || null, labels, zones };
  rtai.framesDrawn += 1;
  rtai.drawnAt.push(performance.now());
  if (rtai.drawnAt.length > 64) rtai.drawnAt.shift();
  if (rtai.firstBoxAt === null && drawn.length) rtai.firstBoxAt = performance.now();
  canvas.dataset.seq = f.seq;
  canvas.dataset.boxes = drawn.length;
  canvas.dataset.zones = zones.map(([name]) => name).join(",");
}

function drawScene(ctx, info, cw, ch) {
  // The stream's zones (polygons, with the tracks in each now) and lines (a -> b), from its analytics
  // settings (normalized 0..1); returns the zones outlined, in canvas pixels.
  const outlined = [];
  const shapes = [["zones", "rgba(255,209,102,.9)", true], ["lines", "rgba(76,201,240,.9)", false]];
  for (const [field, color, closed] of shapes) {
    const items = info[field];
    if (!Array.isArray(items)) continue;
    ctx.save();
    ctx.strokeStyle = color;
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 2;
    for (const item of items) {
      const pts = (item.points || []).map(([x, y]) => [Math.round(x * cw * 10) / 10, Math.round(y * ch * 10) / 10]);
      if (pts.length < 2) continue;
      ctx.beginPath();
      pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      if (closed) ctx.closePath();
      ctx.stroke();
      const n = closed && info.zone_counts ? info.zone_counts[item.name] : undefined;
      ctx.fillStyle = color;
      ctx.fillText(item.name + (n !== undefined ? ` (${n})` : ""), pts[0][0] + 4, pts[0][1] + 14);
      if (closed) outlined.push([item.name, pts]);
    }
    ctx.restore();
  }
  return outlined;
}

// ---- fleet state -----------------------------------------------------------------------------
function stats(dl, s) {
  const led = s.ledger || {};
  const dropped = Object.entries(led).filter(([k]) => k.startsWith("dropped")).reduce((a, [, v]) => a + v, 0);
  const gpus = Object.keys(s.gpus || {});
  const rows = [
    ["fps in / out", `${fmt(s.fps_in)} / ${fmt(s.fps_out)}`],
    ["p50 / p99", `${fmt(s.p50, 0)} / ${fmt(s.p99, 0)} ms`],
    ["produced", led.produced ?? 0], ["published", led.published ?? 0],
    ["dropped", dropped], ["failed", led.failed ?? 0],
    ["served by", gpus.length ? gpus.map((g) => (g === "cpu" ? "cpu" : "GPU " + g)).join(", ") : "–"],
  ];
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v; dd.dataset.k = k;
    return [dt, dd];
  }));
}

function setState(el, s) {
  el.textContent = s.state;
  el.className = "state " + s.state;
}

function onFleet(snapshot) {
  if (snapshot.error) { $("#conn").textContent = snapshot.error; $("#conn").className = "conn bad"; return; }
  rtai.fleet = snapshot;
  if (streamPage) updateStreamPage(snapshot);
  else updateOverview(snapshot);
}

function updateOverview(snapshot) {
  const tiles = $("#tiles");
  const ids = Object.keys(snapshot.streams);
  for (const tile of [...tiles.children]) if (!snapshot.streams[tile.dataset.stream]) tile.remove();
  for (const id of ids) {
    let tile = tiles.querySelector(`.tile[data-stream="${CSS.escape(id)}"]`);
    if (!tile) {
      tile = $("#tile-tpl").content.firstElementChild.cloneNode(true);
      tile.dataset.stream = id;
      const href = "/stream/" + encodeURIComponent(id);
      $(".view", tile).href = href;
      $(".name", tile).href = href;
      $(".name", tile).textContent = id;
      $(".stop", tile).addEventListener("click", () => stopStream(id));
      tiles.appendChild(tile);
    }
    const s = snapshot.streams[id];
    tile.dataset.state = s.state;
    setState($(".state", tile), s);
    $(".reason", tile).textContent = s.reason || "";
    const ev = $(".evcount", tile);
    ev.hidden = !s.tracking;
    ev.textContent = `${s.events ?? 0} events`;
    ev.dataset.count = s.events ?? 0;
    stats($(".stats", tile), s);
  }
  $("#stream-count").textContent = ids.length ? `(${ids.length})` : "";
  $("#no-streams").hidden = ids.length > 0;
  const wb = $("#workers tbody");
  wb.replaceChildren(...Object.entries(snapshot.workers).map(([name, w]) => {
    const tr = document.createElement("tr");
    tr.dataset.worker = name;
    const gpu = w.gpu && w.gpu !== "cpu";
    const mem = gpu && w.gpu_memory_used_mb ? `${fmt(w.gpu_memory_used_mb, 0)} / ${fmt(w.gpu_memory_total_mb, 0)} MB` : "–";
    const cells = [
      name, gpu ? `GPU ${w.gpu} ${w.gpu_name || ""}` : w.device || "cpu",
      w.alive ? w.state || "alive" : "dead", fmt(w.fps),
      gpu ? `${fmt(w.gpu_utilization_pct, 0)} %` : "–", mem,
      gpu ? `${fmt(w.gpu_temperature_c, 0)} °C` : "–", gpu ? `${fmt(w.gpu_power_w, 0)} W` : "–",
    ];
    tr.replaceChildren(...cells.map((c) => { const td = document.createElement("td"); td.textContent = c; return td; }));
    if (!w.alive) tr.className = "dead";
    return tr;
  }));
  const qb = $("#queues tbody");
  qb.replaceChildren(...ids.map((id) => {
    const s = snapshot.streams[id];
    const tr = document.createElement("tr");
    const depth = Math.min(100, s.queue_depth * 10);
    // No style attribute in markup (a strict CSP's style-src refuses it): the width is set through the CSSOM.
    tr.innerHTML = `<td></td><td><span class="bar"><i></i></span> <b></b></td><td></td>`;
    $("i", tr.cells[1]).style.width = `${depth}%`;
    tr.cells[0].textContent = id;
    $("b", tr.cells[1]).textContent = s.queue_depth;
    tr.cells[2].textContent = (s.ledger || {}).in_flight ?? 0;
    return tr;
  }));
}

function updateStreamPage(snapshot) {
  const s = snapshot.streams[streamPage];
  if (!s) { setState($("#sp-state"), { state: "gone" }); return; }
  setState($("#sp-state"), s);
  stats($("#sp-stats"), s);
  samples.push({ t: snapshot.t, fps_in: s.fps_in, fps_out: s.fps_out, p50: s.p50, p99: s.p99 });
  while (samples.length && samples[0].t < snapshot.t - SPARK_SECONDS) samples.shift();
  spark($("#sp-fps"), [["fps_in", "#3ec1d3", "fps in (source)"], ["fps_out", "#06d6a0", "fps out (results)"]]);
  spark($("#sp-lat"), [["p50", "#ffd166", "latency p50"], ["p99", "#ff5a5f", "latency p99"]]);
}

function legend(canvas, series) {
  // The lines' names and colours, once, in a list after the canvas (colours set from script: CSP-safe).
  const id = canvas.id + "-legend";
  if (document.getElementById(id)) return;
  const ul = document.createElement("ul");
  ul.id = id;
  ul.className = "legend";
  ul.replaceChildren(...series.map(([k, color, label]) => {
    const li = document.createElement("li");
    li.dataset.series = k;
    const key = document.createElement("i");
    key.style.background = color;
    li.append(key, label || k);
    return li;
  }));
  canvas.after(ul);
}

function spark(canvas, series) {
  legend(canvas, series);
  const ctx = canvas.getContext("2d");
  const { width: W, height: H } = canvas;
  ctx.clearRect(0, 0, W, H);
  const vals = samples.flatMap((p) => series.map(([k]) => p[k]).filter((v) => v !== null && v !== undefined));
  const max = Math.max(1, ...vals);
  const t0 = samples.length ? samples[0].t : 0, span = Math.max(SPARK_SECONDS / 10, (samples.at(-1)?.t ?? 0) - t0);
  for (const [k, color] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    samples.forEach((p, i) => {
      const x = ((p.t - t0) / span) * (W - 2) + 1, y = H - 2 - ((p[k] ?? 0) / max) * (H - 14);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#9aa4b2";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(`max ${fmt(max, 1)}`, 2, 10);
}

function onEvents(list) {
  // Events of the stream page's stream: the recent ones when the channel opens, then each new one.
  const seen = new Set(events.map((e) => e.id));
  events = [...list.filter((e) => !seen.has(e.id)), ...events].sort((a, b) => (b.t ?? 0) - (a.t ?? 0)).slice(0, 20);
  renderEvents();
}

const thumbs = new Map();  // "<stream>/<seq>" -> promise of an object URL (fetched once, with the token's header)
// An event's snapshot reference is "<stream id>/<seq>" and nothing else: a forged one ("../../../docs")
// must not make the page fetch another path with the token's header.
const SNAPSHOT_REF = /^([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})\/([0-9]{1,19})$/;
function snapshotUrl(ref) {
  const m = typeof ref === "string" ? SNAPSHOT_REF.exec(ref) : null;
  return m ? `${P}/snapshot/${encodeURIComponent(m[1])}/${encodeURIComponent(m[2])}?boxes=1` : null;
}
rtai.snapshotUrl = snapshotUrl;
function snapshotThumb(ref, li) {
  const url = snapshotUrl(ref);
  if (url === null) {
    const bad = document.createElement("span");
    bad.className = "snap muted";
    bad.textContent = "snapshot reference invalid";
    li.prepend(bad);
    return;
  }
  const a = document.createElement("a");
  a.className = "snap";
  a.dataset.snapshot = ref;
  a.target = "_blank";
  a.textContent = "snapshot";
  li.prepend(a);
  const show = (url) => {
    a.href = url;
    const im = document.createElement("img");
    im.src = url;
    im.alt = "snapshot " + ref;
    a.replaceChildren(im);
  };
  if (!thumbs.has(ref)) {
    thumbs.set(ref, fetch(url, { headers: authHeaders() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error("HTTP " + r.status))))
      .then((blob) => URL.createObjectURL(blob)));
  }
  thumbs.get(ref).then(show, () => { a.textContent = "snapshot expired"; });
}

function renderEvents() {
  const ul = $("#sp-events");
  if (!events.length) return;
  ul.replaceChildren(...events.map((e) => {
    const li = document.createElement("li");
    li.dataset.event = e.type;
    const when = e.t ? new Date(e.t * 1000).toLocaleTimeString() : "";
    const where = e.zone || e.line || "";
    const what = [e.type, e.class ?? "", where, e.direction ?? "", e.track !== undefined ? "#" + e.track : ""];
    li.textContent = `${when} ${what.filter((x) => x !== "").join(" ")}`;
    if (e.snapshot) snapshotThumb(e.snapshot, li);
    return li;
  }));
}

// ---- control ---------------------------------------------------------------------------------
async function stopStream(id) {
  const r = await fetch(`${P}/stop/${encodeURIComponent(id)}`, { method: "POST", headers: authHeaders() });
  if (!r.ok && r.status !== 404) alert(`stop ${id}: HTTP ${r.status}`);
  if (streamPage) location.href = "/";
}

$("#sp-stop").addEventListener("click", () => stopStream(streamPage));
$("#add-btn").addEventListener("click", () => {
  for (const el of document.querySelectorAll("#add-form .err")) el.textContent = "";
  $("#add-dialog").showModal();
});
$("#add-cancel").addEventListener("click", () => $("#add-dialog").close());

function requestBody(form) {
  const body = { stream_config: {}, model_settings: {}, processing_settings: {} };
  for (const el of form.elements) {
    if (!el.name || !el.name.includes(".")) continue;
    const [group, key] = el.name.split(".");
    let v = el.type === "checkbox" ? el.checked : el.value.trim();
    if (el.type === "number") v = v === "" ? undefined : Number(v);
    if (v === "" || v === undefined) continue;
    body[group][key] = v;
  }
  return body;
}

function showErrors(detail) {
  const form = $("#add-form");
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  for (const item of items) {
    const path = (item.loc || []).filter((p) => p !== "body").join(".");
    let box = form.querySelector(`.err[data-loc="${CSS.escape(path)}"]`);
    const named = /^(?:Value error, )?(\w+): /.exec(item.msg || "");  // a model validator names its field
    if (!box && named) box = form.querySelector(`.err[data-loc="${CSS.escape(path + "." + named[1])}"]`);
    box = box || form.querySelector('.err[data-loc="_general"]');
    box.textContent = (box.textContent ? box.textContent + " " : "") + item.msg;
    box.closest("form").querySelector(`[name="${CSS.escape(box.dataset.loc)}"]`)?.setAttribute("aria-invalid", "true");
  }
}

$("#add-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  for (const el of form.querySelectorAll(".err")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const r = await fetch(P + "/start", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(requestBody(form)),
  });
  const body = await r.json().catch(() => ({}));
  if (r.ok) { $("#add-dialog").close(); form.dataset.last = body.service_id; return; }
  showErrors(body.detail ?? `HTTP ${r.status}`);
});

boot();
