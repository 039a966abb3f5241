// The TADS dashboard: a few pages over the JSON API of `tads serve`, charts by uPlot.
"use strict";

const main = document.getElementById("main");
const statusLine = document.getElementById("status");

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function table(columns, rows) {
  const head = el("tr", {}, ...columns.map(([title]) => el("th", {}, title)));
  const body = rows.map((r) => el("tr", {}, ...columns.map(([, cell]) => {
    const v = cell(r);
    return el("td", {}, v instanceof Node ? v : String(v ?? ""));
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

const hostLink = (h) => el("a", { href: "#/host/" + encodeURIComponent(h) }, h);
const sev = (s) => el("span", { class: s }, s);
const num = (x) => (typeof x === "number" ? x.toFixed(2) : "");
const seconds = (t) => Date.parse(t.endsWith("Z") || t.includes("+") ? t : t + "Z") / 1000;

const alertColumns = [
  ["host", (a) => hostLink(a.host_id)],
  ["severity", (a) => sev(a.severity)],
  ["start", (a) => a.start_ts],
  ["end", (a) => a.end_ts],
  ["points", (a) => a.points],
  ["peak", (a) => num(a.peak_score)],
  ["top metrics", (a) => (a.top_metrics || []).join(", ")],
  ["open", (a) => (a.open ? "open" : "")],
];

async function fleet() {
  const [open, latest] = await Promise.all([
    api("/api/alerts?open=true&limit=10000"),
    api("/api/alerts?limit=10000"),
  ]);
  const counts = { critical: 0, warning: 0, info: 0 };
  for (const a of open) counts[a.severity] += 1;
  const hosts = new Map();
  for (const a of latest) {
    const h = hosts.get(a.host_id) || { host: a.host_id, alerts: 0, peak: 0 };
    h.alerts += 1;
    h.peak = Math.max(h.peak, a.peak_score || 0);
    hosts.set(a.host_id, h);
  }
  const ranked = [...hosts.values()].sort((a, b) => b.peak - a.peak).slice(0, 15);
  main.replaceChildren(
    el("h2", {}, "Open alerts by severity"),
    el("div", { class: "cards", id: "open-cards" }, ...Object.entries(counts).map(([s, n]) =>
      el("div", { class: "card" }, el("div", { class: "n " + s }, String(n)), s))),
    el("h2", {}, "Hosts ranked by their alerts' peak score"),
    table([["host", (h) => hostLink(h.host)], ["alerts", (h) => h.alerts], ["peak", (h) => num(h.peak)]], ranked),
    el("h2", {}, "Latest alerts"),
    table(alertColumns, latest.slice(0, 20)),
  );
}

async function alertsPage(query) {
  const params = new URLSearchParams(query);
  params.set("limit", "500");
  const rows = await api("/api/alerts?" + params.toString());
  const form = el("form", { class: "filters" },
    "host ", el("input", { name: "host", value: params.get("host") || "" }),
    "severity ", el("select", { name: "severity" }, el("option", { value: "" }, "any"),
      ...["info", "warning", "critical"].map((s) => {
        const o = el("option", { value: s }, s);
        if (params.get("severity") === s) o.selected = true;
        return o;
      })),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/alerts?" + q.toString();
  });
  main.replaceChildren(el("h2", {}, `Alerts (${rows.length})`), form, table(alertColumns, rows));
}

async function models() {
  const list = await api("/api/models");
  main.replaceChildren(el("h2", {}, `Models (${list.length})`), table([
    ["name", (m) => m.name], ["features", (m) => m.features.length], ["k", (m) => m.k],
    ["seasonal", (m) => (m.seasonal ? "yes" : "")], ["fingerprint", (m) => m.fingerprint.slice(0, 12)],
  ], list));
}

async function quality() {
  const runs = await api("/api/runs");
  const parts = [el("h2", {}, `Score runs (${runs.length})`), table([
    ["run", (r) => r.id], ["model", (r) => r.model], ["rows", (r) => r.rows], ["alerts", (r) => r.alerts],
    ["finished", (r) => r.finished_at],
  ], runs)];
  for (const r of runs) {
    let e;
    try {
      e = await api(`/api/runs/${encodeURIComponent(r.id)}/eval`);
    } catch (err) {
      parts.push(el("p", {}, `${r.id}: no evaluation (${err.message})`));
      continue;
    }
    const pct = (x) => (typeof x === "number" ? (100 * x).toFixed(1) + " %" : "");
    parts.push(el("h2", {}, `Quality of ${r.id} against its labels (${e.label})`), table([
      ["", (k) => k[0]], ["precision", (k) => num(k[1].precision)], ["recall", (k) => num(k[1].recall)],
      ["F1", (k) => num(k[1].f1)],
    ], [["point-wise", e.point], ["point-adjusted", e.point_adjusted]]),
    el("p", { class: "summary" }, `event recall ${num(e.event_recall)} · normal time in alert ${pct(e.normal_in_alert)}`
      + ` · AU-PRC ${num(e.au_prc)} · false alerts per key-day ${num(e.false_alerts_per_key_day)}`));
    const types = Object.entries(e.events);
    parts.push(el("h2", {}, "Event recall by type"), el("div", { class: "bars" }, ...types.map(([t, s]) =>
      el("div", { class: "bar-row" }, el("span", { class: "bar-label" }, t),
        el("span", { class: "bar", style: `width: ${Math.round(300 * (s.recall || 0))}px` }),
        `${s.detected} of ${s.events}`))));
  }
  main.replaceChildren(...parts);
}

// Alerts as shaded bands behind a chart's series.
function shade(spans) {
  return {
    hooks: {
      drawClear: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.fillStyle = "rgba(192, 57, 43, 0.15)";
        for (const [a, b] of spans) {
          const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
          ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
        }
        ctx.restore();
      }],
    },
  };
}

async function host(name) {
  const datasets = await api("/api/datasets");
  const scored = datasets.find((d) => d.kind === "scored");
  let metrics = [];
  if (scored) {
    const d = await api("/api/datasets/" + encodeURIComponent(scored.id));
    const skip = new Set(["score", "pca_spe", "pca_t2", "mad_zmax", "is_anomaly"]);
    metrics = d.columns.filter((c) => /^(Float|Int|UInt)/.test(c.type) && !skip.has(c.name))
      .map((c) => c.name).slice(0, 3);
  }
  const t = await api(`/api/hosts/${encodeURIComponent(name)}/timeline?metrics=${metrics.join(",")}&limit=100000`);
  const xs = t.rows.map((r) => seconds(r.ts));
  const spans = t.alerts.map((a) => [seconds(a.start_ts), seconds(a.end_ts)]);
  const width = Math.min(1200, main.clientWidth - 20);
  const scoreChart = el("div", { class: "chart", id: "score-chart" });
  const metricChart = el("div", { class: "chart", id: "metric-chart" });
  main.replaceChildren(
    el("h2", {}, `Host ${t.host}: score against its threshold, alerts shaded`),
    scoreChart,
    el("h2", {}, "Metrics"),
    metricChart,
    el("h2", {}, `Alerts (${t.alerts.length})`),
    table(alertColumns, t.alerts),
  );
  if (!xs.length) {
    scoreChart.append(el("p", {}, "no scored rows for this host"));
    return;
  }
  new uPlot({
    width, height: 260, ...shade(spans),
    series: [{}, { label: "score", stroke: "#1d2330", width: 1 },
      { label: "threshold", stroke: "#c0392b", dash: [6, 4], width: 1 }],
  }, [xs, t.rows.map((r) => r.score), xs.map(() => t.threshold)], scoreChart);
  const palette = ["#2e86c1", "#28b463", "#d68910"];
  new uPlot({
    width, height: 220, ...shade(spans),
    series: [{}, ...metrics.map((m, i) => ({ label: m, stroke: palette[i], width: 1 }))],
  }, [xs, ...metrics.map((m) => t.rows.map((r) => r[m]))], metricChart);
}

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const page = path.startsWith("/host/") ? "host" : path.startsWith("/alerts") ? "alerts"
    : path.startsWith("/models") ? "models" : path.startsWith("/quality") ? "quality" : "fleet";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  main.replaceChildren(el("p", {}, "loading…"));
  try {
    if (page === "host") await host(decodeURIComponent(path.slice(6)));
    else if (page === "alerts") await alertsPage(query || "");
    else if (page === "models") await models();
    else if (page === "quality") await quality();
    else await fleet();
    main.dataset.loaded = page;
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, String(e.message || e)));
    main.dataset.loaded = "error";
  }
}

api("/api/health").then((h) => {
  statusLine.textContent = `TADS ${h.version} · ${h.datasets} tables · ${h.models} models`;
}).catch(() => {});
window.addEventListener("hashchange", route);
route();
