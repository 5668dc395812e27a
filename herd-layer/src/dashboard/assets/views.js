// The eight views. Each has mount (build its frame once), render (bring it
// up to date with the state; only the active view renders) and, when it
// reads herd's JSON API rather than the event stream, show (fetch on
// entering the tab).
//
// Rows and cards are keyed by node or request, and updated in place, so
// keyboard focus survives live updates.

import { h, lineChart, barChart, hbars, signalBars, gauge, sparkline, fmtNum } from "./charts.js";
import { api, toast, rerender } from "./app.js";

const GIB = 1024 ** 3;
const SIGNALS = ["model_temperature", "memory_fit", "queue_depth", "expected_wait", "generation_speed",
  "role_affinity", "availability", "context_fit", "device_thermal", "memory_pressure", "reliability", "prefix_hit"];

// ---- small helpers ------------------------------------------------------

// Replace an element's children, leaving out the absent ones.
function put(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
}

function bytes(b) {
  if (b >= GIB) return gib(b);
  if (b >= 1024 ** 2) return (b / 1024 ** 2).toFixed(0) + " MiB";
  return (b / 1024).toFixed(0) + " KiB";
}

const gib = (b) => (b / GIB).toFixed(b >= 10 * GIB ? 0 : 1) + " GiB";
const pct = (x) => Math.round(x * 100) + "%";
const ms = (x) => (x === null || x === undefined ? "–" : x >= 1000 ? (x / 1000).toFixed(2) + " s" : Math.round(x) + " ms");
const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const hourLabel = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
const dayLabel = (t) => new Date(t).toLocaleDateString([], { month: "2-digit", day: "2-digit" });

function badge(text, cls, field) {
  return h("span", { class: "badge " + cls, "data-field": field }, text);
}

function bar(frac, cls = "") {
  const inner = h("span");
  inner.style.width = Math.max(0, Math.min(1, frac || 0)) * 100 + "%";
  return h("span", { class: "bar " + cls, role: "img", "aria-label": pct(frac || 0) }, inner);
}

function block(title, ...children) {
  return h("section", { class: "block" }, h("div", { class: "block-head" }, h("h2", { text: title })), ...children);
}

function empty(text) {
  return h("p", { class: "empty", text });
}

function table(head, rows, cls = "") {
  return h("div", { class: "table-wrap" },
    h("table", { class: cls },
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { class: c.endsWith("#") ? "num" : "", scope: "col" }, c.replace(/#$/, ""))))),
      h("tbody", {}, rows)));
}

const thermalClass = { nominal: "b-ok", fair: "b-info", serious: "b-warn", critical: "b-bad", unknown: "b-muted" };
const pressureClass = { normal: "b-ok", warn: "b-warn", critical: "b-bad", unknown: "b-muted" };
const severityClass = { info: "b-info", warning: "b-warn", critical: "b-bad" };
const statusClass = { ok: "b-ok", retried: "b-ok", picked: "b-ok", shed: "b-warn", rejected: "b-warn", incomplete: "b-bad", disconnected: "b-muted", failed: "b-bad" };

function sortedNodes(state) {
  return [...state.nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
}

function queuesOf(state, node) {
  return state.queues.filter((q) => q.node === node);
}

function allModels(state) {
  const names = new Set();
  for (const n of state.nodes.values()) {
    for (const m of n.available || []) names.add(m.name);
    for (const m of n.loaded || []) names.add(m.name);
  }
  return [...names].sort();
}

// Keep one child of `container` per key, in order; make new ones with
// `create`, bring every one up to date with `update`.
function keyed(container, items, keyOf, create, update) {
  const have = new Map([...container.children].map((c) => [c.dataset.key, c]));
  let prev = null;
  for (const item of items) {
    const k = keyOf(item);
    let el = have.get(k);
    if (!el) {
      el = create(item);
      el.dataset.key = k;
    }
    have.delete(k);
    update(el, item);
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== el) container.insertBefore(el, want);
    prev = el;
  }
  for (const el of have.values()) el.remove();
}

function fill(select, values, label = (v) => v, keepFirst = 0) {
  const current = select.value;
  const want = values.join("\u0000");
  if (select.dataset.options === want) return;
  select.dataset.options = want;
  while (select.options.length > keepFirst) select.remove(keepFirst);
  for (const v of values) select.append(h("option", { value: v }, label(v)));
  if (values.includes(current)) select.value = current;
}

// ---- Fleet --------------------------------------------------------------

function fleetCard(n, state) {
  const qs = queuesOf(state, n.id);
  const inUse = qs.reduce((a, q) => a + q.in_flight, 0);
  const waiting = qs.reduce((a, q) => a + q.waiting, 0);
  const memUsed = n.memory_total_bytes ? 1 - n.memory_available_bytes / n.memory_total_bytes : 0;
  const diskFree = n.disk_total_bytes ? n.disk_available_bytes / n.disk_total_bytes : null;
  const head = h("div", { class: "card-head" },
    h("h3", { text: n.id }),
    badge(n.online ? "online" : "offline", n.online ? "b-ok" : "b-bad", "status"),
    badge(n.source, "b-muted", "source"),
    n.simulated ? badge("simulated", "b-muted") : null);
  const sub = h("div", { class: "muted small" },
    [n.chip || "unknown chip", n.engine_version ? `${n.engine} ${n.engine_version}` : n.engine, n.url].join(" · "));
  const kv = h("dl", { class: "kv" },
    h("dt", {}, "Memory"),
    h("dd", {}, bar(memUsed, n.memory_pressure === "critical" ? "bad" : n.memory_pressure === "warn" ? "warn" : ""),
      h("span", { class: "small num" }, n.memory_total_bytes ? `${gib(n.memory_total_bytes - n.memory_available_bytes)} / ${gib(n.memory_total_bytes)}` : "unknown"),
      badge(n.memory_pressure, pressureClass[n.memory_pressure] || "b-muted", "pressure")),
    h("dt", {}, "Thermal"),
    h("dd", {}, badge(n.thermal, thermalClass[n.thermal] || "b-muted", "thermal")),
    h("dt", {}, "CPU"),
    h("dd", {}, bar(n.cpu_utilization, n.cpu_utilization > 0.9 ? "warn" : ""), h("span", { class: "small num", "data-field": "cpu" }, pct(n.cpu_utilization))),
    h("dt", {}, "Disk"),
    h("dd", {}, diskFree === null ? h("span", { class: "muted small" }, "unknown")
      : [bar(1 - diskFree, diskFree < 0.05 ? "bad" : diskFree < 0.15 ? "warn" : ""), h("span", { class: "small num" }, `${gib(n.disk_available_bytes)} free`)]),
    h("dt", {}, "Mode"),
    h("dd", {}, badge(n.mode, n.mode === "full" ? "b-ok" : "b-warn", "mode"), n.draining ? badge("draining", "b-warn", "draining") : null),
    h("dt", {}, "Slots"),
    h("dd", { "data-field": "slots", class: "small num" }, `${inUse} in use · ${waiting} queued · ${n.parallel_slots || "?"} per model`),
    h("dt", {}, "Availability"),
    h("dd", { "data-field": "availability", class: "small" }, n.availability === null || n.availability === undefined ? "learning" : pct(n.availability)));
  const loaded = (n.loaded || []).map((m) => {
    const q = qs.find((x) => x.model === m.name);
    return h("li", { "data-model": m.name },
      h("span", {}, m.name),
      h("span", { class: "muted num" }, `${gib(m.size_bytes)}${m.context_length ? " · ctx " + m.context_length : ""}${q ? ` · ${q.in_flight}/${q.slots} busy${q.waiting ? ", " + q.waiting + " queued" : ""}` : ""}`));
  });
  const disk = n.available || [];
  return [head, sub,
    n.online ? null : h("p", { class: "small b-bad", "data-field": "offline-reason" }, "Offline: " + (n.offline_reason || "unknown")),
    kv,
    h("h4", { text: "Loaded" }),
    loaded.length ? h("ul", { class: "models" }, loaded) : h("p", { class: "muted small" }, "nothing loaded"),
    h("p", { class: "muted small" }, `${disk.length} models on disk (${gib(disk.reduce((a, m) => a + m.size_bytes, 0))})`)];
}

const fleet = {
  title: "Fleet",
  mount(p) {
    p.append(
      h("div", { class: "stats", id: "fleet-stats" }),
      block("Nodes", h("div", { class: "cards", id: "fleet-cards" })),
      h("section", { class: "block", id: "fleet-unattached-block" }, h("div", { class: "block-head" }, h("h2", { text: "Not attached" })), h("div", { id: "fleet-unattached" })));
  },
  render(p, state) {
    const nodes = sortedNodes(state);
    const online = nodes.filter((n) => n.online).length;
    const waiting = state.queues.reduce((a, q) => a + q.waiting, 0);
    const inflight = state.queues.reduce((a, q) => a + q.in_flight, 0);
    const stat = (k, v, extra) => h("div", { class: "stat" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k), extra);
    put(p.querySelector("#fleet-stats"), 
      stat("nodes online", `${online} / ${nodes.length}`),
      stat("requests / s", fmtNum(state.stats?.requests_per_s ?? 0), sparkline(state.statsHistory.map((x) => x[1]), { label: "requests per second, recent" })),
      stat("in flight · queued", `${inflight} · ${waiting}`),
      stat("health score", state.health ? String(state.health.score) : "–"));
    const cards = p.querySelector("#fleet-cards");
    if (nodes.length === 0) put(cards, empty("No node yet. Start herd-node on a machine with Ollama, or give herd --node URLs."));
    else {
      if (cards.querySelector(".empty")) put(cards);
      keyed(cards, nodes, (n) => n.id,
        (n) => h("article", { class: "card", "data-node": n.id, "aria-label": "node " + n.id }),
        (el, n) => { el.classList.toggle("offline", !n.online); put(el, ...fleetCard(n, state).filter(Boolean)); });
    }
    const ex = state.extras || {};
    const un = ex.unattached || [];
    const ublock = p.querySelector("#fleet-unattached-block");
    ublock.hidden = !ex.mdns && un.length === 0;
    put(p.querySelector("#fleet-unattached"), 
      un.length === 0 ? empty(ex.mdns ? "Every herd-node seen on the network is attached." : "")
        : table(["Node", "Address", "Version", "Why"], un.map((u) => h("tr", { "data-unattached": u.node_id },
          h("td", {}, u.node_id), h("td", { class: "mono" }, u.address), h("td", {}, u.version), h("td", {}, u.why)))));
  },
};

// ---- Routing ------------------------------------------------------------

function topReasons(d) {
  const w = d.winner, r = d.runner_up;
  if (!w) return d.error ? "nothing could serve" : "–";
  if (!r) return "only candidate";
  const diffs = SIGNALS.map((s) => [s, (w.signals[s] || 0) - (r.signals[s] || 0)]).filter((x) => x[1] > 0.05).sort((a, b) => b[1] - a[1]).slice(0, 2);
  return diffs.length ? diffs.map(([s, v]) => `${s.replaceAll("_", " ")} +${v.toFixed(1)}`).join(", ") : "tie broken by load, then name";
}

function decisionDetail(d) {
  const parts = [];
  if (d.winner) {
    parts.push(signalBars({ title: d.runner_up ? `Signals: ${d.winner.node} against ${d.runner_up.node}` : `Signals of ${d.winner.node}`,
      names: SIGNALS, a: d.winner.signals, b: d.runner_up?.signals, aName: d.winner.node, bName: d.runner_up?.node }));
  }
  parts.push(h("div", { class: "small" },
    h("h4", { text: "Candidates" }),
    d.candidates.length ? h("ol", {}, d.candidates.map((c) => h("li", {}, `${c.node}: ${c.score.toFixed(1)}`))) : h("p", { class: "muted" }, "none"),
    h("h4", { text: "Eliminated" }),
    d.eliminated.length ? h("ul", {}, d.eliminated.map((e) => h("li", {}, h("strong", {}, e.node), ": " + e.why))) : h("p", { class: "muted" }, "none"),
    d.excluded.length ? h("p", {}, "Already tried: " + d.excluded.join(", ")) : null,
    d.error ? h("p", { class: "b-bad" }, d.error) : null,
    h("p", { class: "muted" }, `${d.api} ${d.kind} · ~${d.prompt_tokens} prompt tokens · attempt ${d.attempt} · request ${d.id}`)));
  return parts;
}

function resultCell(td, o) {
  put(td);
  if (!o) { td.append(h("span", { class: "muted" }, "running…")); return; }
  td.append(badge(o.status, statusClass[o.status] || "b-muted", "outcome"));
  const bits = [];
  if (o.ttft_ms !== null && o.ttft_ms !== undefined) bits.push("TTFT " + ms(o.ttft_ms));
  if (o.output_tokens) bits.push(o.output_tokens + " tok");
  if (o.load_ms && o.load_ms > 500) bits.push("cold load " + ms(o.load_ms));
  if (bits.length) td.append(h("div", { class: "small muted" }, bits.join(" · ")));
  if (o.error) td.append(h("div", { class: "small b-bad" }, o.error.slice(0, 160)));
}

const routing = {
  title: "Routing",
  paused: false,
  expanded: new Set(),
  mount(p, state) {
    const pause = h("button", { type: "button", "aria-pressed": "false", id: "feed-pause" }, "Pause feed");
    pause.addEventListener("click", () => {
      this.paused = !this.paused;
      pause.setAttribute("aria-pressed", String(this.paused));
      pause.textContent = this.paused ? "Resume feed" : "Pause feed";
      rerender();
    });
    const feed = h("section", { class: "block" },
      h("div", { class: "block-head" }, h("h2", { text: "Live decisions" }), h("span", { class: "muted small grow", id: "feed-count" }), pause),
      h("p", { class: "muted small" }, "Every request herd routes: who won, who came second and by which signals, who could not serve and why. Open a row for every signal."),
      h("div", { class: "table-wrap" },
        h("table", { class: "feed stack" },
          h("thead", {}, h("tr", {}, ["Time", "Model", "Winner", "Runner-up", "Why the winner", "Eliminated", "Result"].map((c) => h("th", { scope: "col", class: c === "Eliminated" ? "hide-narrow" : null }, c)))),
          h("tbody", { id: "feed-body" }))),
      h("p", { class: "empty", id: "feed-empty" }, "No request routed yet."));
    const model = h("input", { id: "explain-model", name: "model", list: "explain-models", required: true, placeholder: "qwen3:8b", autocomplete: "off" });
    const form = h("form", { class: "row", id: "explain-form" },
      h("div", { class: "field" }, h("label", { for: "explain-model" }, "Model"), model, h("datalist", { id: "explain-models" })),
      h("div", { class: "field" }, h("label", { for: "explain-prompt" }, "Prompt tokens"), h("input", { id: "explain-prompt", name: "prompt_tokens", type: "number", min: 0, value: 100 })),
      h("div", { class: "field" }, h("label", { for: "explain-max" }, "Max output tokens"), h("input", { id: "explain-max", name: "max_tokens", type: "number", min: 1, placeholder: "any" })),
      h("div", { class: "field" }, h("label", { for: "explain-kind" }, "Kind"),
        h("select", { id: "explain-kind", name: "kind" }, ["chat", "generate", "embed", "transcribe", "image"].map((k) => h("option", { value: k }, k)))),
      h("div", { class: "field" }, h("label", { for: "explain-needs" }, "Needs"), h("input", { id: "explain-needs", name: "needs", placeholder: "vision,tools", autocomplete: "off" })),
      h("button", { type: "submit", class: "primary" }, "Explain"));
    const out = h("div", { id: "explain-out", "aria-live": "polite" });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const q = new URLSearchParams({ model: model.value.trim(), kind: form.kind.value });
      if (form.prompt_tokens.value) q.set("prompt_tokens", form.prompt_tokens.value);
      if (form.max_tokens.value) q.set("max_tokens", form.max_tokens.value);
      if (form.needs.value.trim()) q.set("needs", form.needs.value.trim());
      put(out, h("p", { class: "muted" }, "ranking…"));
      try {
        put(out, ...explainResult(await api("/fleet/explain?" + q)));
      } catch (err) {
        put(out, h("p", { class: "b-bad" }, String(err.message)));
      }
    });
    p.append(feed, block("Explain a pick", h("p", { class: "muted small" }, "What scoring would decide now for a model and prompt size, without sending anything."), form, out));
  },
  render(p, state) {
    const body = p.querySelector("#feed-body");
    const st = state.stats;
    p.querySelector("#feed-count").textContent = st ? `${st.shown} shown of ${st.decisions} decisions · ${fmtNum(st.requests_per_s)} req/s` : "";
    p.querySelector("#feed-empty").hidden = state.feed.length > 0;
    fill(p.querySelector("#explain-models"), allModels(state));
    if (this.paused) return;
    const rows = [];
    for (const e of state.feed) {
      rows.push({ kind: "row", e });
      if (this.expanded.has(e.key)) rows.push({ kind: "detail", e });
    }
    keyed(body, rows, (r) => (r.kind === "row" ? "r:" : "d:") + r.e.key,
      (r) => r.kind === "row" ? this.row(r.e) : h("tr", { class: "detail" }, h("td", { colspan: 7 }, decisionDetail(r.e.d))),
      (el, r) => {
        // Only a row whose outcome changed is touched.
        if (r.kind === "row" && (el.outcome !== r.e.o || !el.shown)) {
          el.outcome = r.e.o;
          el.shown = true;
          resultCell(el.querySelector("[data-field=result]"), r.e.o);
        }
      });
  },
  row(e) {
    const d = e.d;
    const toggle = h("button", { type: "button", class: "link", "aria-expanded": String(this.expanded.has(e.key)), "aria-label": `details of the decision for ${d.model} at ${clock(d.ts)}` }, clock(d.ts));
    toggle.addEventListener("click", () => {
      if (this.expanded.has(e.key)) this.expanded.delete(e.key); else this.expanded.add(e.key);
      toggle.setAttribute("aria-expanded", String(this.expanded.has(e.key)));
      rerender();
    });
    const tr = h("tr", { class: Date.now() - e.at < 1500 ? "fresh" : "", "data-request": d.id },
      h("td", { "data-label": "Time" }, toggle),
      h("td", { "data-label": "Model" }, d.tried, d.tried !== d.model ? h("div", { class: "small muted" }, "fallback for " + d.model) : null),
      h("td", { "data-field": "winner", "data-label": "Winner" }, d.winner ? [h("strong", {}, d.winner.node), h("div", { class: "small muted num" }, `${d.winner.score.toFixed(1)} · ${d.winner.temperature}`)] : h("span", { class: "b-bad" }, "none")),
      h("td", { "data-field": "runner-up", "data-label": "Runner-up" }, d.runner_up ? [d.runner_up.node, h("div", { class: "small muted num" }, `${d.runner_up.score.toFixed(1)} (−${(d.winner.score - d.runner_up.score).toFixed(1)})`)] : h("span", { class: "muted" }, "–")),
      h("td", { class: "small", "data-label": "Why the winner" }, topReasons(d)),
      h("td", { class: "small hide-narrow", "data-label": "Eliminated" }, d.eliminated.length ? d.eliminated.map((x) => x.node).join(", ") : "–"),
      h("td", { "data-field": "result", "data-label": "Result" }));
    return tr;
  },
};

function explainResult(r) {
  const rk = r.ranking;
  const w = rk.candidates[0], ru = rk.candidates[1];
  const out = [h("p", {}, w ? ["Winner: ", h("strong", { "data-field": "explain-winner" }, w.node), ` (${w.score.toFixed(1)}, ${w.temperature}, first token in ~${ms(w.expected_ttft_ms)})`]
    : h("span", { class: "b-bad" }, rk.model_known ? "No node can serve it now." : "No node has this model."))];
  if (rk.candidates.length) {
    out.push(table(["Node", "Score#", "Model", "First token#", "Generation#", "Load", "Top signals"],
      rk.candidates.map((c) => h("tr", {},
        h("td", {}, c.node), h("td", { class: "num" }, c.score.toFixed(1)), h("td", {}, c.temperature),
        h("td", { class: "num" }, ms(c.expected_ttft_ms)), h("td", { class: "num" }, ms(c.expected_generation_ms)),
        h("td", { class: "num" }, `${c.load.in_flight}/${c.slots} · ${c.load.waiting} queued`),
        h("td", { class: "small" }, SIGNALS.map((s) => [s, c.signals[s]]).filter((x) => Math.abs(x[1]) >= 0.5).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 3).map(([s, v]) => `${s.replaceAll("_", " ")} ${v > 0 ? "+" : ""}${v.toFixed(1)}`).join(", "))))));
    out.push(signalBars({ title: ru ? `${w.node} against ${ru.node}` : `Signals of ${w.node}`, names: SIGNALS, a: w.signals, b: ru?.signals, aName: w.node, bName: ru?.node }));
  }
  if (rk.eliminated.length) {
    out.push(h("h4", { text: "Eliminated" }), h("ul", {}, rk.eliminated.map((e) => h("li", {}, h("strong", {}, e.node), ": " + e.reason.replaceAll("_", " ")))));
  }
  return out;
}

// ---- Models -------------------------------------------------------------

const models = {
  title: "Models",
  mount(p) {
    p.append(
      block("Where each model is", h("p", { class: "muted small" }, "● loaded in memory · ○ on disk only"), h("div", { id: "models-matrix" })),
      block("Learned speed per node:model", h("div", { id: "models-perf" })),
      block("Auto-pulls", h("div", { id: "models-pulls" })));
  },
  render(p, state) {
    const nodes = sortedNodes(state);
    const names = allModels(state);
    const sizeOf = (m) => Math.max(0, ...nodes.flatMap((n) => (n.available || []).concat(n.loaded || []).filter((x) => x.name === m).map((x) => x.size_bytes)));
    put(p.querySelector("#models-matrix"), names.length === 0 ? empty("No model on any node.")
      : table(["Model", "Size"].concat(nodes.map((n) => n.id)), names.map((m) => h("tr", { "data-model": m },
        h("td", {}, m), h("td", { class: "num" }, gib(sizeOf(m))),
        nodes.map((n) => {
          const l = (n.loaded || []).find((x) => x.name === m);
          const d = (n.available || []).find((x) => x.name === m);
          return h("td", { class: l ? "cell-loaded" : d ? "cell-disk" : "muted", "data-node": n.id, title: l ? `loaded, context ${l.context_length}` : d ? "on disk" : "absent" },
            l ? "● loaded" : d ? "○ disk" : "–");
        }))), "matrix"));
    const cold = new Map((state.perf.cold_loads || []).map((c) => [`${c.node}|${c.model}`, c]));
    const series = state.perf.series || [];
    put(p.querySelector("#models-perf"), series.length === 0 ? empty("Nothing learned yet: herd learns from the requests it routes (or from a benchmark).")
      : table(["Node", "Model", "TTFT (median)#", "Tokens/s#", "Samples#", "Completed#", "Failed#", "Typical cold load#", "Cold loads seen#"],
        series.map((s) => {
          const c = cold.get(`${s.node}|${s.model}`);
          return h("tr", { "data-perf": `${s.node}:${s.model}` },
            h("td", {}, s.node), h("td", {}, s.model),
            h("td", { class: "num" }, ms(s.perf?.ttft_ms)), h("td", { class: "num" }, s.perf ? fmtNum(s.perf.tokens_per_s) : "–"),
            h("td", { class: "num" }, s.perf?.samples ?? 0), h("td", { class: "num" }, s.completed), h("td", { class: "num" }, s.failed),
            h("td", { class: "num" }, ms(s.perf?.cold_load_ms)), h("td", { class: "num" }, c ? `${c.count} (last ${ms(c.last_ms)})` : "0"));
        })));
    const pulls = state.pulls || [];
    put(p.querySelector("#models-pulls"), pulls.length === 0 ? empty("No pull started by herd. A request for a model no node has starts one on the node where it fits best.")
      : table(["Model", "Node", "Status", "Progress"], pulls.map((x) => {
        const frac = x.total ? x.completed / x.total : x.done ? 1 : 0;
        const prog = h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(frac * 100), "aria-label": `pull of ${x.model}` }, h("span"));
        prog.firstChild.style.width = frac * 100 + "%";
        return h("tr", { "data-pull": x.model }, h("td", {}, x.model), h("td", {}, x.node),
          h("td", {}, x.error ? h("span", { class: "b-bad" }, x.error) : x.done ? badge("done", "b-ok") : x.status),
          h("td", {}, prog, h("div", { class: "small muted num" }, x.total ? `${bytes(x.completed)} of ${bytes(x.total)}` : "")));
      })));
  },
};

// ---- Trends -------------------------------------------------------------

function fillBuckets(groups, size, count) {
  const end = Math.floor(Date.now() / size) * size;
  const by = new Map(groups.map((g) => [Number(g.key), g]));
  const out = [];
  for (let t = end - (count - 1) * size; t <= end; t += size) out.push([t, by.get(t) || null]);
  return out;
}

function trendCharts(groups, size, count, label) {
  const b = fillBuckets(groups, size, count);
  const secs = size / 1000;
  const v = (g, f) => (g ? g[f] ?? null : 0);
  return [
    lineChart({ title: "Requests per second", series: [{ name: "requests/s", points: b.map(([t, g]) => [t, v(g, "requests") / secs]) }], xFormat: label, yFormat: (x) => fmtNum(x, 2) }),
    lineChart({ title: "Time to first token", series: [
      { name: "p50", points: b.filter(([, g]) => g && g.ttft_p50_ms !== null).map(([t, g]) => [t, g.ttft_p50_ms]) },
      { name: "p90", points: b.filter(([, g]) => g && g.ttft_p90_ms !== null).map(([t, g]) => [t, g.ttft_p90_ms]), color: 2 }], xFormat: label, yFormat: ms }),
    barChart({ title: "Tokens in and out", categories: b.map(([t]) => label(t)), labelEvery: Math.ceil(b.length / 6),
      series: [{ name: "prompt (in)", values: b.map(([, g]) => v(g, "prompt_tokens")) }, { name: "output (out)", values: b.map(([, g]) => v(g, "output_tokens")), color: 1 }] }),
    barChart({ title: "Errors", categories: b.map(([t]) => label(t)), labelEvery: Math.ceil(b.length / 6),
      series: [{ name: "errors", values: b.map(([, g]) => v(g, "errors")), color: 4 }] }),
  ];
}

const trends = {
  title: "Trends",
  loaded: 0,
  mount(p) {
    const refresh = h("button", { type: "button" }, "Refresh");
    refresh.addEventListener("click", () => this.load(p));
    p.append(
      h("section", { class: "block" }, h("div", { class: "block-head" }, h("h2", { text: "Now" }), h("span", { class: "grow" }), refresh),
        h("div", { id: "trends-live", class: "score" })),
      block("Last 48 hours, by hour", h("div", { class: "charts", id: "trends-hour" })),
      block("Last 30 days, by day", h("div", { class: "charts", id: "trends-day" })));
  },
  show(p) {
    if (Date.now() - this.loaded > 30000) this.load(p);
  },
  async load(p) {
    this.loaded = Date.now();
    const now = Date.now();
    for (const [id, by, size, count, label] of [["#trends-hour", "hour", 3600e3, 48, hourLabel], ["#trends-day", "day", 86400e3, 30, dayLabel]]) {
      const el = p.querySelector(id);
      try {
        const r = await api(`/fleet/analytics/usage?by=${by}&since_ms=${now - count * size}`);
        put(el, ...trendCharts(r.groups || [], size, count, label));
      } catch (e) {
        put(el, h("p", { class: "b-bad" }, e.message));
      }
    }
  },
  render(p, state) {
    const st = state.stats;
    put(p.querySelector("#trends-live"), 
      h("div", {}, h("div", { class: "stat" }, h("div", { class: "v" }, fmtNum(st?.requests_per_s ?? 0)), h("div", { class: "k" }, "requests/s now"))),
      sparkline(state.statsHistory.map((x) => x[1]), { width: 300, height: 50, label: "requests per second over the last minutes" }),
      h("div", { class: "muted small" }, st ? `${st.finished} requests ended since start, ${st.errors} with an error` : ""));
  },
};

// ---- Health -------------------------------------------------------------

function evidence(ev) {
  if (!ev || typeof ev !== "object") return null;
  return h("dl", { class: "evidence" }, Object.entries(ev).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))]));
}

const health = {
  title: "Health",
  mount(p) {
    p.append(
      h("section", { class: "block" }, h("div", { class: "score", id: "health-score" })),
      block("Score over time", h("div", { id: "health-history" })),
      block("Firing checks", h("div", { class: "checks", id: "health-checks" })),
      h("section", { class: "block" }, h("details", {}, h("summary", {}, "Every check herd runs"), h("p", { id: "health-watched", class: "small mono" }))));
  },
  render(p, state) {
    const r = state.health;
    if (!r) { put(p.querySelector("#health-score"), empty("Waiting for the first health report…")); return; }
    const bySev = (s) => r.checks.filter((c) => c.severity === s).length;
    put(p.querySelector("#health-score"), gauge(r.score),
      h("div", {}, h("div", { class: "stat" }, h("div", { class: "v", "data-field": "health-score" }, String(r.score)), h("div", { class: "k" }, "health score (100 = nothing firing)")),
        h("p", { class: "small muted" }, `${bySev("critical")} critical · ${bySev("warning")} warnings · ${bySev("info")} notes — over the last ${r.window_requests} requests and the fleet's state now`)));
    const pts = state.healthHistory.map((x) => [x.ts, x.score]);
    if (pts.length) pts.push([Date.now(), r.score]);
    put(p.querySelector("#health-history"), lineChart({ title: "Health score", series: [{ name: "score", points: pts }], step: true, yMax: 100, xFormat: (t) => clock(t), width: 960, height: 220 }),
      h("ul", { class: "log" }, state.healthHistory.slice(-12).reverse().map((x) => h("li", {}, `${clock(x.ts)} — ${x.score}: ${x.firing.length ? x.firing.map((f) => `${f.id} (${f.subject})`).join(", ") : "nothing firing"}`))));
    put(p.querySelector("#health-checks"), ...(r.checks.length === 0 ? [empty("Nothing is firing.")]
      : r.checks.map((c) => h("article", { class: "check sev-" + c.severity, "data-check": c.id, "data-subject": c.subject },
        h("div", { class: "card-head" }, badge(c.severity, severityClass[c.severity] || "b-muted"), h("code", {}, c.id), h("span", { class: "muted small" }, c.subject)),
        h("p", {}, c.message), evidence(c.evidence), h("p", { class: "fix small" }, h("strong", {}, "Fix: "), c.fix)))));
    p.querySelector("#health-watched").textContent = (r.watched || []).join(" · ");
  },
};

// ---- Tags & usage -------------------------------------------------------

const usage = {
  title: "Tags & usage",
  by: "tag",
  since: 7 * 86400e3,
  loaded: 0,
  mount(p, state) {
    const groups = state.info?.usage_by || ["tag", "model", "node"];
    if (!groups.includes(this.by)) this.by = groups[0];
    const seg = h("div", { class: "seg", role: "group", "aria-label": "Group by" });
    for (const g of groups) {
      const b = h("button", { type: "button", "aria-pressed": String(g === this.by), "data-by": g }, "by " + g);
      b.addEventListener("click", () => { this.by = g; for (const x of seg.children) x.setAttribute("aria-pressed", String(x.dataset.by === g)); this.load(p); });
      seg.append(b);
    }
    const since = h("select", { id: "usage-since", "aria-label": "Time range" },
      [["last 24 hours", 86400e3], ["last 7 days", 7 * 86400e3], ["last 30 days", 30 * 86400e3], ["everything stored", 0]].map(([l, v]) => h("option", { value: v, selected: v === this.since }, l)));
    since.addEventListener("change", () => { this.since = Number(since.value); this.load(p); });
    p.append(h("section", { class: "block" }, h("div", { class: "block-head" }, h("h2", { text: "Usage" }), seg, since),
      h("div", { id: "usage-chart" }), h("div", { id: "usage-table" })));
  },
  show(p) {
    if (Date.now() - this.loaded > 15000) this.load(p);
  },
  async load(p) {
    this.loaded = Date.now();
    const q = new URLSearchParams({ by: this.by });
    if (this.since) q.set("since_ms", String(Date.now() - this.since));
    try {
      const r = await api("/fleet/analytics/usage?" + q);
      const g = (r.groups || []).slice().sort((a, b) => b.requests - a.requests);
      put(p.querySelector("#usage-chart"), hbars({ title: `Requests by ${this.by}`, rows: g.slice(0, 20).map((x) => ({ label: x.key, value: x.requests })) }));
      put(p.querySelector("#usage-table"), g.length === 0 ? empty(this.by === "tag" ? "No tagged request yet: send metadata.tags, tags or x-herd-tags." : "No request stored yet.")
        : table([this.by, "Requests#", "Errors#", "Prompt tokens#", "Output tokens#", "Avg latency#", "Avg TTFT#"], g.map((x) => h("tr", { "data-usage": x.key },
          h("td", {}, x.key), h("td", { class: "num" }, x.requests), h("td", { class: "num" }, x.errors),
          h("td", { class: "num" }, fmtNum(x.prompt_tokens)), h("td", { class: "num" }, fmtNum(x.output_tokens)),
          h("td", { class: "num" }, ms(x.avg_latency_ms)), h("td", { class: "num" }, ms(x.avg_ttft_ms))))));
    } catch (e) {
      put(p.querySelector("#usage-table"), h("p", { class: "b-bad" }, e.message));
    }
  },
  render() {},
};

// ---- Benchmarks ---------------------------------------------------------

const benchmarks = {
  title: "Benchmarks",
  running: false,
  loaded: 0,
  mount(p) {
    const form = h("form", { class: "row", id: "bench-form" },
      h("div", { class: "field" }, h("label", { for: "bench-node" }, "Node"), h("select", { id: "bench-node", name: "node" }, h("option", { value: "" }, "every node"))),
      h("div", { class: "field" }, h("label", { for: "bench-model" }, "Model"), h("select", { id: "bench-model", name: "model" }, h("option", { value: "" }, "every loaded model"))),
      h("div", { class: "field" }, h("label", { for: "bench-tokens" }, "Tokens per request"), h("input", { id: "bench-tokens", name: "tokens", type: "number", min: 4, max: 512, value: 32 })),
      h("button", { type: "submit", class: "primary", id: "bench-run" }, "Run benchmark"));
    form.addEventListener("submit", (e) => { e.preventDefault(); this.run(p, form); });
    p.append(
      block("Run a benchmark", h("p", { class: "muted small" }, "Measures time to first token and tokens/s of each node:model alone, then with every slot busy; scoring uses the figures at once."),
        form, h("div", { id: "bench-progress", "aria-live": "polite" }), h("div", { id: "bench-last" })),
      block("Results over time", h("div", { class: "charts", id: "bench-charts" }), h("div", { id: "bench-table" })));
  },
  show(p) {
    if (Date.now() - this.loaded > 15000) this.load(p);
  },
  async run(p, form) {
    if (this.running) return;
    this.running = true;
    const btn = p.querySelector("#bench-run");
    btn.disabled = true;
    const body = {};
    if (form.node.value) body.node = form.node.value;
    if (form.model.value) body.model = form.model.value;
    if (form.tokens.value) body.tokens = Number(form.tokens.value);
    const started = Date.now();
    const prog = p.querySelector("#bench-progress");
    const tick = () => {
      const b = this.bench;
      const frac = b && b.total ? b.done / b.total : null;
      const bar = h("div", { class: "progress" + (frac === null ? " busy" : ""), role: "progressbar", "aria-label": "benchmark progress", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": frac === null ? null : Math.round(frac * 100) }, h("span"));
      if (frac !== null) bar.firstChild.style.width = frac * 100 + "%";
      put(prog, bar, h("p", { class: "small muted" }, `running for ${Math.round((Date.now() - started) / 1000)} s` + (b && b.total ? ` · ${b.done} of ${b.total} node:models${b.current ? " · now " + b.current : ""}` : "")));
    };
    tick();
    const timer = setInterval(tick, 500);
    try {
      const r = await api("/fleet/benchmark", { method: "POST", body });
      put(p.querySelector("#bench-last"), h("h4", { text: "This run" }), benchTable(r.benchmarks || []),
        (r.errors || []).length ? h("ul", { class: "b-bad small" }, r.errors.map((e) => h("li", {}, e))) : null);
      put(prog, h("p", { class: "small", "data-field": "bench-done" }, `done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${(r.benchmarks || []).length} measured, ${(r.errors || []).length} failed`));
      this.load(p);
    } catch (e) {
      put(prog, h("p", { class: "b-bad" }, e.message));
    } finally {
      clearInterval(timer);
      this.running = false;
      btn.disabled = false;
    }
  },
  async load(p) {
    this.loaded = Date.now();
    try {
      const r = await api("/fleet/benchmark");
      const all = (r.runs || r.benchmarks || []).slice().sort((a, b) => a.ts_ms - b.ts_ms);
      const keys = [...new Set(all.map((b) => `${b.node}:${b.model}`))].sort();
      const per = (f) => keys.map((k, i) => ({ name: k, color: i, points: all.filter((b) => `${b.node}:${b.model}` === k).map((b) => [b.ts_ms, b[f]]) }));
      const label = (t) => new Date(t).toLocaleString([], { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
      put(p.querySelector("#bench-charts"), 
        lineChart({ title: "Time to first token", series: per("ttft_ms"), xFormat: label, yFormat: ms }),
        lineChart({ title: "Tokens/s, one request", series: per("tokens_per_s_single"), xFormat: label }),
        lineChart({ title: "Tokens/s, every slot busy", series: per("tokens_per_s_parallel"), xFormat: label }));
      put(p.querySelector("#bench-table"), all.length ? benchTable(all.slice().reverse().slice(0, 50)) : empty("No benchmark stored yet."));
    } catch (e) {
      put(p.querySelector("#bench-table"), h("p", { class: "b-bad" }, e.message));
    }
  },
  render(p, state) {
    this.bench = state.bench;
    const nodes = sortedNodes(state).filter((n) => n.online);
    fill(p.querySelector("#bench-node"), nodes.map((n) => n.id), (v) => v, 1);
    fill(p.querySelector("#bench-model"), allModels(state), (v) => v, 1);
  },
};

function benchTable(rows) {
  return table(["When", "Node", "Model", "TTFT#", "Tokens/s alone#", "Tokens/s parallel#", "Slots#"], rows.map((b) => h("tr", { "data-bench": `${b.node}:${b.model}` },
    h("td", {}, new Date(b.ts_ms).toLocaleString()), h("td", {}, b.node), h("td", {}, b.model),
    h("td", { class: "num" }, ms(b.ttft_ms)), h("td", { class: "num" }, fmtNum(b.tokens_per_s_single)),
    h("td", { class: "num" }, fmtNum(b.tokens_per_s_parallel)), h("td", { class: "num" }, b.parallel))));
}

// ---- Control ------------------------------------------------------------

const control = {
  title: "Control",
  mount(p) {
    p.append(
      block("Nodes", h("p", { class: "muted small" }, "Each action goes through herd's own API (POST /fleet/nodes/{node}/command, /api/pull, /api/generate with keep_alive 0), with the key entered above."),
        h("div", { class: "table-wrap" }, h("table", { class: "stack" }, h("thead", {}, h("tr", {}, ["Node", "State", "Routing", "Warm", "Pull", "Unload"].map((c) => h("th", { scope: "col" }, c)))), h("tbody", { id: "control-body" }))),
        h("h4", { text: "What was done" }), h("ul", { class: "log", id: "control-log", "aria-live": "polite" })),
      block("Config in effect", h("p", { class: "muted small" }, "Secrets are shown as (set)."), h("pre", { id: "config-pre", tabindex: "0" }, "loading…")));
  },
  async show(p) {
    try {
      const cfg = await api("/fleet/config");
      p.querySelector("#config-pre").textContent = JSON.stringify(cfg, null, 2);
    } catch (e) {
      p.querySelector("#config-pre").textContent = e.message;
    }
  },
  log(p, text, bad = false) {
    const li = h("li", { class: bad ? "b-bad" : "" }, `${clock(Date.now())} — ${text}`);
    p.querySelector("#control-log").prepend(li);
    toast(text, bad);
  },
  async act(p, label, call) {
    try {
      const r = await call();
      this.log(p, `${label}: accepted${r && r.id !== undefined ? " (command " + r.id + ")" : ""}`);
    } catch (e) {
      this.log(p, `${label}: ${e.message}`, true);
    }
  },
  command(p, node, body, label) {
    return this.act(p, label, () => api(`/fleet/nodes/${encodeURIComponent(node)}/command`, { method: "POST", body }));
  },
  row(p, n) {
    const id = n.id;
    const btn = (text, action, onclick, cls = "") => {
      const b = h("button", { type: "button", class: cls, "data-action": action, "aria-label": `${text} ${id}` }, text);
      b.addEventListener("click", onclick);
      return b;
    };
    const warm = h("select", { "aria-label": `model to warm on ${id}`, "data-input": "warm" });
    const pull = h("input", { "aria-label": `model to pull onto ${id}`, placeholder: "model:tag", "data-input": "pull", size: 12 });
    const unload = h("select", { "aria-label": `model to unload from ${id}`, "data-input": "unload" });
    return h("tr", { "data-node": id },
      h("td", { "data-label": "Node" }, h("strong", {}, id)),
      h("td", { "data-field": "state", "data-label": "State" }),
      h("td", { "data-label": "Routing" }, h("div", { class: "controls" },
        btn("Drain", "drain", () => this.command(p, id, { type: "drain" }, `drain ${id}`)),
        btn("Undrain", "undrain", () => this.command(p, id, { type: "undrain" }, `undrain ${id}`)),
        btn("Pause", "pause", () => this.command(p, id, { type: "mode", mode: "paused" }, `pause ${id}`)),
        btn("Resume", "resume", () => this.command(p, id, { type: "mode", mode: "full" }, `resume ${id}`)),
        btn("Small only", "small-only", () => this.command(p, id, { type: "mode", mode: "small-only" }, `small-only ${id}`)))),
      h("td", { "data-label": "Warm" }, h("div", { class: "controls" }, warm, btn("Warm", "warm", () => warm.value && this.command(p, id, { type: "warm", model: warm.value }, `warm ${warm.value} on ${id}`)))),
      h("td", { "data-label": "Pull" }, h("div", { class: "controls" }, pull, btn("Pull", "pull", () => {
        const m = pull.value.trim();
        if (!m) return;
        const node = this.nodes && this.nodes.get(id);
        if (node && node.source === "attached") this.command(p, id, { type: "pull", model: m }, `pull ${m} onto ${id}`);
        else this.act(p, `pull ${m} onto ${id}`, () => api("/api/pull", { method: "POST", body: { model: m, node: id, stream: false } }));
      }))),
      h("td", { "data-label": "Unload" }, h("div", { class: "controls" }, unload, btn("Unload", "unload", () => unload.value && this.act(p, `unload ${unload.value} from ${id}`,
        () => api("/api/generate", { method: "POST", body: { model: unload.value, keep_alive: 0 }, headers: { "x-herd-node": id } })), "danger"))));
  },
  render(p, state) {
    this.nodes = state.nodes;
    const body = p.querySelector("#control-body");
    keyed(body, sortedNodes(state), (n) => n.id, (n) => this.row(p, n), (el, n) => {
      const st = el.querySelector("[data-field=state]");
      put(st, ...[badge(n.online ? "online" : "offline", n.online ? "b-ok" : "b-bad", "status"), " ",
        badge(n.mode, n.mode === "full" ? "b-ok" : "b-warn", "mode")].concat(n.draining ? [" ", badge("draining", "b-warn", "draining")] : []));
      el.querySelector("[data-action=drain]").disabled = n.draining || !n.online;
      el.querySelector("[data-action=undrain]").disabled = !n.draining;
      el.querySelector("[data-action=pause]").disabled = n.mode === "paused" || !n.online;
      el.querySelector("[data-action=resume]").disabled = n.mode === "full";
      fill(el.querySelector("[data-input=warm]"), (n.available || []).map((m) => m.name));
      fill(el.querySelector("[data-input=unload]"), (n.loaded || []).map((m) => m.name));
    });
  },
};

export const VIEWS = { fleet, routing, models, trends, health, usage, benchmarks, control };
