// herd's own small chart code: SVG built from data, nothing else.
// Also the two DOM helpers every view uses: h() for HTML, s() for SVG.

const SVG = "http://www.w3.org/2000/svg";

// h("div", {class: "x", onclick: f}, child, "text", [more])
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  set(e, attrs);
  add(e, children);
  return e;
}

export function s(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  set(e, attrs);
  add(e, children);
  return e;
}

function set(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
}

function add(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Rounded, readable axis ticks between lo and hi.
export function ticks(lo, hi, n = 4) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

// Ticks on a time axis (ms since the epoch), on round local times.
export function timeTicks(t0, t1, n = 4) {
  const S = 1000, M = 60 * S, H = 60 * M, D = 24 * H;
  const steps = [S, 5 * S, 15 * S, 30 * S, M, 5 * M, 15 * M, 30 * M, H, 2 * H, 3 * H, 6 * H, 12 * H, D, 2 * D, 7 * D, 14 * D, 30 * D];
  const step = steps.find((x) => x >= (t1 - t0) / n) || steps[steps.length - 1];
  const off = new Date(t0).getTimezoneOffset() * M;
  const out = [];
  for (let t = Math.ceil((t0 - off) / step) * step + off; t <= t1; t += step) out.push(t);
  return out;
}

export function fmtNum(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(digits) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(digits) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(digits) + "k";
  if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
  if (a < 0.01) return v.toExponential(0);
  if (a < 1) return String(+v.toPrecision(2));
  return v.toFixed(digits);
}

function legend(series) {
  return h("div", { class: "legend" },
    series.map((se, i) => h("span", {}, h("i", { class: "k" + ((se.color ?? i) % 6 + 1) }), se.name)));
}

function frame(title, svg, series, cls = "") {
  return h("figure", { class: ("chart " + cls).trim() },
    title ? h("h3", { text: title }) : null, svg, series && series.length > 1 ? legend(series) : null);
}

// Lines over time (or any x). series: [{name, points: [[x, y], ...]}].
export function lineChart({ title, series, xFormat = String, yFormat = fmtNum, width = 440, height = 200, step = false, yMin = 0, yMax }) {
  const pad = { l: 50, r: 12, t: 10, b: 24 };
  const pts = series.flatMap((se) => se.points);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || "chart" });
  if (pts.length === 0) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", text: "no data yet" }));
    return frame(title, svg, series);
  }
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const ys = pts.map((p) => p[1]).filter((v) => v !== null && !Number.isNaN(v));
  let y0 = Math.min(yMin, ...ys), y1 = yMax ?? Math.max(...ys);
  if (!(y1 > y0)) y1 = y0 + 1;
  const yt = ticks(y0, y1);
  y1 = Math.max(y1, yt[yt.length - 1]);
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  for (const t of yt) {
    svg.append(s("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: Y(t), y2: Y(t) }));
    svg.append(s("text", { x: pad.l - 6, y: Y(t) + 4, "text-anchor": "end", text: yFormat(t) }));
  }
  const n = Math.max(2, Math.floor(width / 110));
  const xt = x0 > 1e12 ? timeTicks(x0, x1, n) : ticks(x0, x1, n);
  for (const t of xt) {
    if (t < x0 || t > x1) continue;
    svg.append(s("text", { x: X(t), y: height - 6, "text-anchor": "middle", text: xFormat(t) }));
  }
  svg.append(s("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: Y(y0), y2: Y(y0) }));
  series.forEach((se, i) => {
    const cls = "s" + ((se.color ?? i) % 6 + 1);
    const p = se.points.filter((q) => q[1] !== null && !Number.isNaN(q[1]));
    if (p.length === 0) return;
    let d = "";
    p.forEach((q, j) => {
      if (j === 0) d += `M${X(q[0]).toFixed(1)},${Y(q[1]).toFixed(1)}`;
      else if (step) d += `H${X(q[0]).toFixed(1)}V${Y(q[1]).toFixed(1)}`;
      else d += `L${X(q[0]).toFixed(1)},${Y(q[1]).toFixed(1)}`;
    });
    svg.append(s("path", { class: `line ${cls}`, d }));
    if (p.length < 40) for (const q of p) svg.append(s("circle", { class: cls, cx: X(q[0]), cy: Y(q[1]), r: 2.5 }, s("title", { text: `${se.name}: ${yFormat(q[1])} at ${xFormat(q[0])}` })));
  });
  return frame(title, svg, series);
}

// Grouped vertical bars. categories: [label], series: [{name, values}].
export function barChart({ title, categories, series, yFormat = fmtNum, width = 440, height = 200, labelEvery = 1 }) {
  const pad = { l: 44, r: 10, t: 10, b: 24 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || "chart" });
  const all = series.flatMap((se) => se.values).filter((v) => v !== null && !Number.isNaN(v));
  if (categories.length === 0 || all.length === 0) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", text: "no data yet" }));
    return frame(title, svg, series);
  }
  const top = Math.max(...all);
  const yt = ticks(0, top > 0 ? top : 1);
  const y1 = yt[yt.length - 1] || 1;
  const Y = (y) => height - pad.b - (y / y1) * (height - pad.t - pad.b);
  for (const t of yt) {
    svg.append(s("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: Y(t), y2: Y(t) }));
    svg.append(s("text", { x: pad.l - 6, y: Y(t) + 4, "text-anchor": "end", text: yFormat(t) }));
  }
  const band = (width - pad.l - pad.r) / categories.length;
  const bw = Math.max(1, (band * 0.8) / series.length);
  categories.forEach((c, i) => {
    series.forEach((se, j) => {
      const v = se.values[i] ?? 0;
      const x = pad.l + i * band + band * 0.1 + j * bw;
      svg.append(s("rect", { class: "s" + ((se.color ?? j) % 6 + 1), x, y: Y(v), width: bw, height: Math.max(0, Y(0) - Y(v)) },
        s("title", { text: `${c} — ${se.name}: ${yFormat(v)}` })));
    });
    if (i % labelEvery === 0) svg.append(s("text", { x: pad.l + i * band + band / 2, y: height - 6, "text-anchor": "middle", text: c }));
  });
  svg.append(s("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: Y(0), y2: Y(0) }));
  return frame(title, svg, series);
}

// Horizontal bars, one per row: [{label, value}].
export function hbars({ title, rows, format = fmtNum, width = 560, color = 0 }) {
  const rowH = 24, pad = { l: 150, r: 56 };
  const height = Math.max(40, rows.length * rowH + 8);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || "chart" });
  const max = Math.max(1e-9, ...rows.map((r) => r.value || 0));
  rows.forEach((r, i) => {
    const y = 4 + i * rowH;
    const w = ((r.value || 0) / max) * (width - pad.l - pad.r);
    const label = r.label.length > 22 ? r.label.slice(0, 21) + "…" : r.label;
    svg.append(s("text", { x: pad.l - 8, y: y + 15, "text-anchor": "end", text: label }, s("title", { text: r.label })));
    svg.append(s("rect", { class: "s" + (color % 6 + 1), x: pad.l, y: y + 3, width: Math.max(1, w), height: rowH - 8, rx: 3 }));
    svg.append(s("text", { x: pad.l + w + 6, y: y + 15, text: format(r.value) }));
  });
  if (rows.length === 0) svg.append(s("text", { x: width / 2, y: 24, "text-anchor": "middle", text: "no data yet" }));
  return frame(title, svg, null, "bars");
}

// Winner against runner-up, signal by signal: a diverging bar per signal.
export function signalBars({ title, names, a, b, aName, bName, width = 560 }) {
  const rowH = 22, mid = width / 2 + 30, half = width - mid - 90;
  const height = names.length * rowH + 30;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || "signals" });
  const max = Math.max(1, ...names.map((n) => Math.max(Math.abs(a[n] || 0), Math.abs(b ? b[n] || 0 : 0))));
  const sc = (v) => (Math.abs(v) / max) * (half - 10);
  svg.append(s("line", { class: "axis", x1: mid, x2: mid, y1: 0, y2: height - 24 }));
  names.forEach((n, i) => {
    const y = i * rowH + 4;
    svg.append(s("text", { x: 4, y: y + 13, text: n.replaceAll("_", " ") }));
    const va = a[n] || 0;
    svg.append(s("rect", { class: "s1", x: va >= 0 ? mid : mid - sc(va), y, width: Math.max(1, sc(va)), height: 8, rx: 2 }, s("title", { text: `${aName}: ${va.toFixed(2)}` })));
    if (b) {
      const vb = b[n] || 0;
      svg.append(s("rect", { class: "s2", x: vb >= 0 ? mid : mid - sc(vb), y: y + 9, width: Math.max(1, sc(vb)), height: 8, rx: 2 }, s("title", { text: `${bName}: ${vb.toFixed(2)}` })));
    }
    const sign = (v) => (v >= 0 ? "+" : "") + v.toFixed(1);
    svg.append(s("text", { x: mid + half + 4, y: y + 13, "text-anchor": "start", text: b ? `${sign(va)} / ${sign(b[n] || 0)}` : sign(va) }));
  });
  const series = [{ name: aName }].concat(b ? [{ name: bName }] : []);
  return frame(title, svg, series.length > 1 ? series : null, "signals");
}

// A ring showing 0..100.
export function gauge(score, label = "health score") {
  const r = 42, c = 2 * Math.PI * r;
  const v = Math.max(0, Math.min(100, score ?? 0));
  const cls = v >= 90 ? "s1" : v >= 60 ? "s3" : "s5";
  return s("svg", { viewBox: "0 0 110 110", width: 110, height: 110, role: "img", "aria-label": `${label} ${v} of 100` },
    s("circle", { cx: 55, cy: 55, r, class: "ring axis", "stroke-width": 10 }),
    s("circle", { cx: 55, cy: 55, r, class: "ring " + cls, "stroke-width": 10, "stroke-dasharray": `${(v / 100) * c} ${c}`, transform: "rotate(-90 55 55)", "stroke-linecap": "round" }),
    s("text", { x: 55, y: 62, "text-anchor": "middle", "font-size": 24, class: "gauge-text", text: String(v) }));
}

// A tiny line with no axes.
export function sparkline(values, { width = 140, height = 30, label = "trend" } = {}) {
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label });
  if (values.length < 2) return svg;
  const max = Math.max(1e-9, ...values);
  const X = (i) => (i / (values.length - 1)) * (width - 2) + 1;
  const Y = (v) => height - 2 - (v / max) * (height - 4);
  svg.append(s("path", { class: "line s2", d: values.map((v, i) => `${i ? "L" : "M"}${X(i).toFixed(1)},${Y(v).toFixed(1)}`).join("") }));
  return svg;
}
