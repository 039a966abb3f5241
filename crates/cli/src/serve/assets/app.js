// The TADS dashboard: a few pages over the JSON API of `tads serve`, charts by uPlot.
"use strict";

const main = document.getElementById("main");
const statusLine = document.getElementById("status");

// The server's token, when it asks for one (kept for this tab only).
function headers(extra) {
  const h = { Accept: "application/json", ...(extra || {}) };
  const token = sessionStorage.getItem("tadsToken");
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function api(path, init) {
  const response = await fetch(path, { ...(init || {}), headers: headers(init && init.headers) });
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
    ["seasonal", (m) => (m.seasonal ? "yes" : "")],
    ["scoring space", (m) => (m.scoring_space ? "yes" : "")],
    ["fingerprint", (m) => m.fingerprint.slice(0, 12)],
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

// Jobs: a form that starts one, and every job with its progress, live over Server-Sent Events.
const jobFields = {
  generate: [["out", "generated"], ["hosts", "20"], ["duration", "2d"], ["seed", "42"]],
  train: [["data", ""], ["model", "m"]],
  score: [["data", ""], ["model", ""], ["out", "scores"]],
  eval: [["scored", ""]],
};
const following = new Set();

function jobProgress(j) {
  const pct = j.rows_total ? Math.min(100, (100 * j.rows_done) / j.rows_total) : (j.state === "succeeded" ? 100 : 0);
  return el("span", {}, el("span", { class: "progress" }, el("span", { style: `width: ${pct.toFixed(0)}%` })),
    ` ${j.rows_done.toLocaleString()}${j.rows_total ? " / " + j.rows_total.toLocaleString() : ""} rows`);
}

function jobRow(j) {
  const cancel = el("button", { type: "button" }, "Cancel");
  cancel.addEventListener("click", () => api(`/api/jobs/${j.id}`, { method: "DELETE" }).catch((e) => alert(e.message)));
  return el("tr", { id: "job-" + j.id, "data-state": j.state },
    el("td", {}, j.id), el("td", {}, j.kind), el("td", { class: "state " + j.state }, j.state),
    el("td", {}, j.phase || ""), el("td", {}, jobProgress(j)),
    el("td", {}, j.rows_per_s ? Math.round(j.rows_per_s).toLocaleString() : ""),
    el("td", {}, j.eta_s != null ? j.eta_s.toFixed(0) + " s" : ""),
    el("td", {}, j.error ? el("span", { class: "error" }, j.error) : (j.served_as.join(", ") || j.output || "")),
    el("td", {}, j.state === "queued" || j.state === "running" ? cancel : ""));
}

// Reads an event stream (fetch, so that the token header can go with it): onEvent(name, data) for each
// event, until the stream ends.
async function readEvents(path, onEvent) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }) });
  if (!response.ok) throw new Error(response.statusText);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, cut).split("\n");
      buffer = buffer.slice(cut + 2);
      const field = (f) => lines.filter((l) => l.startsWith(f + ":")).map((l) => l.slice(f.length + 1).trim()).join("\n");
      const data = field("data");
      if (data) onEvent(field("event") || "message", data);
    }
  }
}

// Follows a job's event stream and updates its row.
async function follow(id) {
  if (following.has(id)) return;
  following.add(id);
  try {
    await readEvents(`/api/jobs/${id}/events`, (_, data) => {
      const j = JSON.parse(data);
      const row = document.getElementById("job-" + j.id);
      if (row) row.replaceWith(jobRow(j));
    });
  } finally {
    following.delete(id);
  }
}

// Live updates: when a served score output changes (a `tads watch` round), the server says so on
// /api/live, and the fleet and host pages read the API again in place. A lost stream is opened
// again; a change missed meanwhile shows in the version of its first event.
let liveVersion = null;
async function live() {
  const liveLine = document.getElementById("live");
  for (;;) {
    try {
      await readEvents("/api/live", (name, data) => {
        const v = JSON.parse(data);
        const missed = liveVersion !== null && v.version !== liveVersion;
        liveVersion = v.version;
        if (name === "scores" || missed) {
          liveLine.textContent = `live · updated ${new Date(v.at).toLocaleTimeString()} (${v.tables.join(", ")})`;
          // body[data-live] names the version the page shows (set once it is drawn).
          const shown = () => { document.body.dataset.live = String(v.version); };
          if (main.dataset.loaded === "fleet" || main.dataset.loaded === "host") route(true).then(shown);
          else shown();
        } else {
          liveLine.textContent = "live";
        }
      });
    } catch (e) {
      liveLine.textContent = "";
    }
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

async function jobsPage() {
  const [list, datasets, modelList] = await Promise.all([api("/api/jobs"), api("/api/datasets"), api("/api/models")]);
  const kind = el("select", { name: "kind" }, ...Object.keys(jobFields).map((k) => el("option", { value: k }, k)));
  const fields = el("span", { class: "fields" });
  const options = (k) => {
    if (k === "data") return datasets.filter((d) => d.kind === "telemetry").map((d) => d.id);
    if (k === "scored") return datasets.filter((d) => d.kind === "scored").map((d) => d.id);
    // A group's members are listed as group/member; a job scores with the group.
    if (k === "model" && kind.value === "score") return [...new Set(modelList.map((m) => m.name.split("/")[0]))];
    return null;
  };
  const showFields = () => fields.replaceChildren(...jobFields[kind.value].map(([k, v]) => {
    const choices = options(k);
    const input = choices ? el("select", { name: k }, ...choices.map((c) => el("option", { value: c }, c)))
      : el("input", { name: k, value: v, size: 10 });
    return el("label", {}, k + " ", input);
  }));
  kind.addEventListener("change", showFields);
  showFields();
  const token = el("input", { name: "token", type: "password", placeholder: "token, if the server has one", size: 18 });
  const message = el("span", { id: "job-message" });
  const form = el("form", { class: "filters", id: "job-form" }, kind, fields,
    el("label", {}, "overwrite ", el("input", { name: "overwrite", type: "checkbox" })), token,
    el("button", { type: "submit" }, "Start"), message);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (token.value) sessionStorage.setItem("tadsToken", token.value);
    const args = {};
    for (const [k, v] of new FormData(form)) {
      if (k === "kind" || k === "token") continue;
      if (k === "overwrite") args.overwrite = true; else if (v !== "") args[k] = v;
    }
    try {
      const job = await api("/api/jobs", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ kind: kind.value, args }),
      });
      message.textContent = `job ${job.id} started`;
      message.className = "";
      document.querySelector("#jobs tbody").prepend(jobRow(job));
      follow(job.id);
    } catch (err) {
      message.textContent = err.message;
      message.className = "error";
    }
  });
  const jobs = el("table", { id: "jobs" },
    el("thead", {}, el("tr", {}, ...["job", "kind", "state", "phase", "progress", "rows/s", "ETA", "output", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...list.map(jobRow)));
  main.replaceChildren(el("h2", {}, "Start a job"), form, el("h2", {}, "Jobs, newest first"), jobs);
  for (const j of list) if (j.state === "queued" || j.state === "running") follow(j.id);
}

// Shows the page of the location's hash; `quiet` (a live update) keeps the page until the new one is ready.
async function route(quiet) {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const page = path.startsWith("/host/") ? "host" : path.startsWith("/alerts") ? "alerts"
    : path.startsWith("/models") ? "models" : path.startsWith("/quality") ? "quality"
    : path.startsWith("/jobs") ? "jobs" : "fleet";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (!quiet) main.replaceChildren(el("p", {}, "loading…"));
  try {
    if (page === "host") await host(decodeURIComponent(path.slice(6)));
    else if (page === "alerts") await alertsPage(query || "");
    else if (page === "models") await models();
    else if (page === "quality") await quality();
    else if (page === "jobs") await jobsPage();
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
window.addEventListener("hashchange", () => route());
route();
live();
