// herd's dashboard: state, the live event stream, tabs, theme and the key.
//
// Everything comes from this origin: the page, `/fleet/events` (read with
// fetch so it can carry the API key as `Authorization: Bearer`, like every
// other call the page makes), and herd's JSON API.

import { h } from "./charts.js";
import { VIEWS } from "./views.js";

const FEED_MAX = 200;
const STATS_MAX = 150;
const HEALTH_MAX = 720;

export const state = {
  info: null,
  nodes: new Map(),
  queues: [],
  health: null,
  healthHistory: [],
  perf: { series: [], cold_loads: [] },
  pulls: [],
  extras: null,
  bench: null,
  stats: null,
  statsHistory: [],
  feed: [],
  feedById: new Map(),
  feedVersion: 0,
  connected: false,
  lastEventAt: 0,
};

// ---- API: every call carries the key when one is set -----------------------

function key() {
  return sessionStorage.getItem("herd.key") || "";
}

export function authHeaders(extra = {}) {
  const k = key();
  return k ? { ...extra, Authorization: "Bearer " + k } : { ...extra };
}

export async function api(path, { method = "GET", body, headers } = {}) {
  const init = { method, headers: authHeaders(headers), cache: "no-store" };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const rsp = await fetch(path, init);
  const text = await rsp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!rsp.ok) {
    const msg = (json && (json.error?.message || json.error)) || text || rsp.statusText;
    const err = new Error(`${rsp.status}: ${typeof msg === "string" ? msg : JSON.stringify(msg)}`);
    err.status = rsp.status;
    throw err;
  }
  return json;
}

export function toast(msg, bad = false) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

// ---- The event stream -------------------------------------------------------

function feedKey(d) {
  return `${d.id}#${d.attempt}`;
}

function addDecision(d) {
  const entry = { key: feedKey(d), d, o: null, at: Date.now() };
  if (state.feedById.has(entry.key)) return;
  state.feed.unshift(entry);
  state.feedById.set(entry.key, entry);
  const prev = state.feedById.get(d.id);
  if (!prev || prev.d.attempt <= d.attempt) state.feedById.set(d.id, entry);
  while (state.feed.length > FEED_MAX) {
    const gone = state.feed.pop();
    state.feedById.delete(gone.key);
    if (state.feedById.get(gone.d.id) === gone) state.feedById.delete(gone.d.id);
  }
}

function addOutcome(o) {
  const entry = state.feedById.get(o.id);
  if (entry) entry.o = o;
}

function applySnapshot(snap) {
  state.info = snap.info || state.info;
  state.nodes = new Map((snap.nodes || []).map((n) => [n.id, n]));
  state.queues = snap.queues || [];
  state.health = snap.health;
  state.healthHistory = snap.health_history || [];
  state.perf = snap.perf || { series: [], cold_loads: [] };
  state.pulls = snap.pulls || [];
  state.extras = snap.extras;
  state.bench = snap.bench;
  if (snap.stats) pushStats(snap.stats);
  state.feed = [];
  state.feedById = new Map();
  for (const f of snap.feed || []) {
    if (f.event === "decision") addDecision(f.data);
    else if (f.event === "outcome") addOutcome(f.data);
  }
}

// A health report; the history keeps a point per change of the score or
// of what fires (as herd's own history does), at most HEALTH_MAX.
function health(r) {
  state.health = r;
  const firing = r.checks.map((c) => ({ id: c.id, subject: c.subject, severity: c.severity }));
  const last = state.healthHistory[state.healthHistory.length - 1];
  if (last && last.score === r.score && JSON.stringify(last.firing) === JSON.stringify(firing)) return;
  state.healthHistory.push({ ts: Date.now(), score: r.score, firing });
  while (state.healthHistory.length > HEALTH_MAX) state.healthHistory.shift();
}

function pushStats(st) {
  state.stats = st;
  state.statsHistory.push([Date.now(), st.requests_per_s || 0]);
  while (state.statsHistory.length > STATS_MAX) state.statsHistory.shift();
}

function apply(event, data) {
  switch (event) {
    case "snapshot": applySnapshot(data); break;
    case "node": state.nodes.set(data.id, data); break;
    case "node_gone": state.nodes.delete(data.id); break;
    case "queues": state.queues = data; break;
    case "health": health(data); break;
    case "perf": state.perf = data; break;
    case "pulls": state.pulls = data; break;
    case "extras": state.extras = data; break;
    case "stats": pushStats(data); break;
    case "bench": state.bench = data; break;
    case "decision": addDecision(data); state.feedVersion++; break;
    case "outcome": addOutcome(data); state.feedVersion++; break;
    default: return;
  }
  state.lastEventAt = Date.now();
  if (event === "snapshot") state.feedVersion++;
  changed(event);
}

// One SSE block: lines of `field: value`.
function block(text, cursor) {
  let event = "message", data = [], id = null;
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  if (id !== null) cursor.last = id;
  if (data.length === 0) return;
  let parsed;
  try { parsed = JSON.parse(data.join("\n")); } catch { return; }
  apply(event, parsed);
}

async function stream() {
  const cursor = { last: null };
  let wait = 1000;
  for (;;) {
    try {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (cursor.last) headers["Last-Event-ID"] = cursor.last;
      const rsp = await fetch("/fleet/events", { headers, cache: "no-store" });
      if (!rsp.ok || !rsp.body) {
        live(false, rsp.status === 401 || rsp.status === 403 ? "needs an API key (top right)" : `event stream: ${rsp.status}`);
        throw new Error("status " + rsp.status);
      }
      live(true);
      wait = 1000;
      const reader = rsp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          block(buf.slice(0, i), cursor);
          buf = buf.slice(i + 2);
        }
      }
      live(false, "reconnecting…");
    } catch {
      if (state.connected) live(false, "reconnecting…");
    }
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 10000);
  }
}

function live(on, text) {
  state.connected = on;
  const el = document.getElementById("live");
  el.className = "live " + (on ? "on" : "off");
  document.getElementById("live-text").textContent = on ? "live" : text || "offline";
  changed("live");
}

// ---- Rendering: only the active view, at most once a frame ------------------

let active = null;
const dirty = new Set();
let frame = 0;

function changed(what) {
  dirty.add(what);
  if (!frame) frame = requestAnimationFrame(render);
}

function render() {
  frame = 0;
  const what = new Set(dirty);
  dirty.clear();
  if (!active || !state.info) return;
  const v = VIEWS[active];
  const panel = document.getElementById("panel-" + active);
  try {
    v.render(panel, state, what);
  } catch (e) {
    console.warn("render", active, e);
  }
}

export function rerender() {
  changed("manual");
}

// ---- Tabs (WAI-ARIA tabs pattern, automatic activation) --------------------

function buildTabs(views) {
  const tabs = document.getElementById("tabs");
  const panels = document.getElementById("panels");
  tabs.replaceChildren();
  panels.replaceChildren();
  for (const id of views) {
    const v = VIEWS[id];
    if (!v) continue;
    tabs.append(h("button", {
      role: "tab", id: "tab-" + id, type: "button", "aria-controls": "panel-" + id,
      "aria-selected": "false", tabindex: "-1", "data-view": id,
      onclick: () => select(id, true),
    }, v.title));
    const panel = h("section", { role: "tabpanel", id: "panel-" + id, "aria-labelledby": "tab-" + id, tabindex: "0", hidden: true });
    panels.append(panel);
    v.mount(panel, state);
  }
  // The tab list element outlives a rebuild (entering a key boots again):
  // one listener, however often the tabs are built.
  tabs.onkeydown = (e) => {
    const all = [...tabs.querySelectorAll('[role="tab"]')];
    const i = all.indexOf(document.activeElement);
    if (i < 0) return;
    let j = null;
    if (e.key === "ArrowRight") j = (i + 1) % all.length;
    else if (e.key === "ArrowLeft") j = (i - 1 + all.length) % all.length;
    else if (e.key === "Home") j = 0;
    else if (e.key === "End") j = all.length - 1;
    if (j === null) return;
    e.preventDefault();
    all[j].focus();
    select(all[j].dataset.view, true);
  };
}

function select(id, push) {
  const views = state.info?.views || [];
  if (!views.includes(id)) id = views[0];
  active = id;
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const on = t.dataset.view === id;
    t.setAttribute("aria-selected", on ? "true" : "false");
    t.tabIndex = on ? 0 : -1;
  }
  for (const p of document.querySelectorAll('[role="tabpanel"]')) p.hidden = p.id !== "panel-" + id;
  if (push && location.hash !== "#" + id) history.replaceState(null, "", "#" + id);
  const v = VIEWS[id];
  if (v.show) v.show(document.getElementById("panel-" + id), state);
  changed("tab");
}

// ---- Theme and key ---------------------------------------------------------

function theme() {
  const root = document.documentElement;
  const saved = localStorage.getItem("herd.theme");
  if (saved === "dark" || saved === "light") root.dataset.theme = saved;
  document.getElementById("theme").addEventListener("click", () => {
    const dark = root.dataset.theme === "dark" ||
      (root.dataset.theme === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
    root.dataset.theme = dark ? "light" : "dark";
    localStorage.setItem("herd.theme", root.dataset.theme);
    changed("theme");
  });
}

function keyForm() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("key");
  input.value = key();
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const k = input.value.trim();
    if (k) sessionStorage.setItem("herd.key", k);
    else sessionStorage.removeItem("herd.key");
    toast(k ? "Key kept for this tab; calls now send it." : "Key removed.");
    boot();
  });
}

// ---- Boot ----------------------------------------------------------------

let streaming = false;

async function boot() {
  try {
    state.info = await api("/dashboard/info");
  } catch (e) {
    live(false, e.status === 401 || e.status === 403 ? "needs an API key (top right)" : "herd does not answer");
    return;
  }
  document.getElementById("shape").textContent =
    `${state.info.shape} ${state.info.version}${state.info.read_only ? " · read-only" : ""}`;
  document.title = `${state.info.shape} — dashboard`;
  buildTabs(state.info.views);
  select(location.hash.slice(1), false);
  if (!streaming) {
    streaming = true;
    stream();
  }
}

window.addEventListener("hashchange", () => {
  if (state.info) select(location.hash.slice(1), false);
});

theme();
keyForm();
boot();
