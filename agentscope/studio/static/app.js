// AgentScope Studio: a single page over the JSON API (/api). Plain JS, no build step, no network but this server.
// Every value from a trace is shown with textContent (never innerHTML): traces hold model output.
"use strict";

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "style") node.setAttribute("style", v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const ms = (v) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : v >= 10 ? `${v.toFixed(0)} ms` : `${v.toFixed(2)} ms`);
const durNs = (a, b) => (b && a ? ms((b - a) / 1e6) : "—");
// A run's length: seconds with a decimal, then minutes and hours.
function longDur(ns) {
  const s = ns / 1e9;
  if (s < 1) return ms(ns / 1e6);
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}
const when = (ns) => (ns ? new Date(ns / 1e6).toLocaleString() : "—");
const num = (v) => (v === null || v === undefined ? "—" : Number(v).toLocaleString());
const short = (s, n) => (s && s.length > n ? s.slice(0, n - 1) + "…" : s || "");
const json = (v) => JSON.stringify(v, null, 2);

function badge(text, cls) {
  return h("span", { class: `badge ${cls || text}` }, text);
}

function statusBadge(status) {
  return badge(status, `status-${status}`);
}

// How long a run has lasted (the API's duration_ns: from its real start to its end, or to now while it runs).
// A running run's duration keeps counting here, from when the row was read (no clock shared with the server).
function runDuration(run) {
  const node = h("span", { class: "duration", "data-duration-ns": run.duration_ns }, longDur(run.duration_ns));
  if (run.status === "running") {
    node.classList.add("ticking");
    node._readAt = performance.now();
  }
  return node;
}

setInterval(() => {
  for (const node of document.querySelectorAll(".duration.ticking")) {
    node.textContent = longDur(Number(node.dataset.durationNs) + (performance.now() - node._readAt) * 1e6);
  }
}, 1000);

function debounce(fn, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}

// ------------------------------------------------------------------ API and auth

const auth = {
  get token() { return sessionStorage.getItem("agentscope-token") || ""; },
  set token(v) { sessionStorage.setItem("agentscope-token", v); },
};

if (location.hash.startsWith("#token=")) {
  auth.token = decodeURIComponent(location.hash.slice(7));
  history.replaceState(null, "", location.pathname + "#/");
}

let tokenWaiters = null;

function askToken(message) {
  if (!tokenWaiters) {
    tokenWaiters = [];
    const dialog = document.getElementById("token-dialog");
    document.getElementById("token-error").textContent = message || "";
    const form = document.getElementById("token-form");
    form.onsubmit = () => {
      auth.token = document.getElementById("token-input").value.trim();
      const waiters = tokenWaiters;
      tokenWaiters = null;
      waiters.forEach((w) => w());
    };
    if (!dialog.open) dialog.showModal();
  }
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  for (;;) {
    const headers = auth.token ? { Authorization: `Bearer ${auth.token}` } : {};
    const response = await fetch(url, { headers });
    if (response.status === 401) {
      await askToken(auth.token ? "That token was not accepted." : "");
      continue;
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status}: ${detail}`);
    }
    return response.json();
  }
}

// One live feed per page; closed on navigation.
let feed = null;

function live(params, handlers) {
  if (feed) feed.close();
  const url = new URL("/api/events", location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v) url.searchParams.set(k, v);
  if (auth.token) url.searchParams.set("token", auth.token);
  feed = new EventSource(url);
  const dot = document.getElementById("live");
  feed.addEventListener("ready", () => dot.classList.add("on"));
  feed.onerror = () => dot.classList.remove("on");
  for (const [event, fn] of Object.entries(handlers)) {
    feed.addEventListener(event, (e) => fn(JSON.parse(e.data)));
  }
}

// ------------------------------------------------------------------ router

const app = document.getElementById("app");

function crumbs(...items) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...items.flatMap((item, i) => [i ? h("span", { class: "sep" }, "/") : null,
    item.href ? h("a", { href: item.href }, item.text) : h("span", {}, item.text)]).filter(Boolean));
}

async function route() {
  if (feed) { feed.close(); feed = null; }
  document.getElementById("live").classList.remove("on");
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  app.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  try {
    if (parts[0] === "run" && parts[1]) await runPage(parts[1], params.get("tab") || "traces");
    else if (parts[0] === "trace" && parts[1]) await tracePage(parts[1], params.get("view") || "tree", params.get("span"));
    else if (parts[0] === "compare" && parts[1] && parts[2]) await comparePage(parts[1], parts[2]);
    else if (parts[0] === "evals") await evaluationsPage(); // evaluations.js
    else if (parts[0] === "eval" && parts[1]) await evaluationPage(parts[1]);
    else if (parts[0] === "eval-compare" && parts[1] && parts[2]) await evalComparePage(parts[1], parts[2]);
    else await runsPage(params);
  } catch (err) {
    app.replaceChildren(h("p", { class: "error-text" }, `Could not load this page: ${err.message}`));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ------------------------------------------------------------------ runs list

async function runsPage(params) {
  crumbs({ text: "Runs" });
  const filters = {
    project: params.get("project") || "", agent: params.get("agent") || "", status: params.get("status") || "",
    since: params.get("since") || "", q: params.get("q") || "",
  };
  const projects = await api("/api/projects");
  const selected = new Set();
  const compareButton = h("button", { id: "compare-button", type: "button", disabled: true, onclick: () => {
    const [a, b] = [...selected];
    location.hash = `#/compare/${a}/${b}`;
  } }, "Compare 2 runs");

  const field = (name, node) => h("label", {}, name, node);
  const projectSelect = h("select", { name: "project" }, h("option", { value: "" }, "all projects"),
    ...projects.map((p) => h("option", { value: p, selected: p === filters.project }, p)));
  const statusSelect = h("select", { name: "status" },
    ...[["", "any status"], ["running", "running"], ["finished", "finished"], ["failed", "failed"], ["lost", "lost (process gone)"], ["error", "with errors"]]
      .map(([v, t]) => h("option", { value: v, selected: v === filters.status }, t)));
  const form = h("form", { class: "filters", id: "run-filters", onsubmit: (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    for (const [k, v] of data.entries()) if (v) q.set(k, v);
    location.hash = `#/?${q}`;
  } },
  field("Project", projectSelect),
  field("Agent", h("input", { name: "agent", value: filters.agent, placeholder: "agent name" })),
  field("Status", statusSelect),
  field("Since", h("input", { name: "since", type: "datetime-local", value: filters.since })),
  field("Search", h("input", { name: "q", type: "search", value: filters.q, placeholder: "run, project or agent" })),
  h("button", { type: "submit" }, "Filter"), compareButton);

  const tbody = h("tbody", { id: "runs-body" });
  const summary = h("p", { class: "muted", id: "runs-summary" });
  const table = h("table", { class: "runs" }, h("thead", {}, h("tr", {},
    ...["", "Run", "Project", "Status", "Started", "Duration", "Traces", "Spans", "Errors", "Tokens in/out", "Agents"].map((t) => h("th", {}, t)))), tbody);
  app.replaceChildren(h("section", {}, h("h1", {}, "Runs"), form, summary, table));

  function row(run) {
    const box = h("input", { type: "checkbox", "aria-label": `select ${run.name}`, checked: selected.has(run.id), onchange: (e) => {
      if (e.target.checked) selected.add(run.id); else selected.delete(run.id);
      compareButton.disabled = selected.size !== 2;
    } });
    return h("tr", { "data-run": run.id, class: run.error_count ? "has-errors" : "" },
      h("td", {}, box),
      h("td", {}, h("a", { href: `#/run/${run.id}`, class: "run-link" }, run.name)),
      h("td", {}, run.project), h("td", {}, statusBadge(run.status)),
      h("td", {}, when(run.started_ns)), h("td", {}, runDuration(run)),
      h("td", { class: "num" }, num(run.trace_count)), h("td", { class: "num" }, num(run.span_count)),
      h("td", { class: run.error_count ? "num error-text" : "num" }, num(run.error_count)),
      h("td", { class: "num" }, `${num(run.input_tokens)} / ${num(run.output_tokens)}`),
      h("td", {}, run.agents.join(", ")));
  }

  async function load() {
    const since = filters.since ? new Date(filters.since).getTime() * 1e6 : undefined;
    const data = await api("/api/runs", { project: filters.project, agent: filters.agent, status: filters.status, q: filters.q, since_ns: since, limit: 200 });
    tbody.replaceChildren(...data.runs.map(row));
    summary.textContent = data.total ? `${data.total} run${data.total === 1 ? "" : "s"}` : "No runs yet. Run an agent with tracing on (agentscope.init() or agentscope run) and it appears here.";
    return data;
  }
  const first = await load();
  const reload = debounce(load, 250);
  // Start the feed where the list was read, so a run created in between is not missed.
  const since = Math.max(0, ...first.runs.map((r) => r.updated_ns));
  live({ after_run_ns: since || undefined }, {
    run: (run) => {
      const existing = tbody.querySelector(`tr[data-run="${run.id}"]`);
      if (existing) {
        const fresh = row(run);
        existing.replaceWith(fresh);
      } else {
        reload();
      }
    },
  });
}

// ------------------------------------------------------------------ run page (traces, metrics, stats)

// What the tracer of a run kept: every trace or a sample, with or without messages and tool arguments.
function recording(config) {
  const t = (config || {}).tracing;
  if (!t) return "every trace";
  const share = t.sample_rate >= 1 ? "every trace" : `${+(t.sample_rate * 100).toFixed(2)} % of traces`;
  return t.capture_content === false ? `${share}, without content` : share;
}

async function runPage(runId, tab) {
  const run = await api(`/api/runs/${runId}`);
  crumbs({ text: "Runs", href: "#/" }, { text: run.name });
  if (run.metrics.length && tab === "traces" && !run.trace_count) tab = "metrics";
  const header = h("div", { class: "run-header", id: "run-header" });
  function fillHeader(r) {
    header.replaceChildren(
      h("h1", {}, r.name, " ", statusBadge(r.status)),
      h("dl", { class: "facts" },
        h("dt", {}, "Project"), h("dd", {}, r.project),
        h("dt", {}, "Started"), h("dd", {}, when(r.started_ns)),
        h("dt", {}, "Duration"), h("dd", { id: "run-duration" }, runDuration(r)),
        h("dt", {}, "Traces"), h("dd", { id: "run-traces" }, num(r.trace_count)),
        h("dt", {}, "Spans"), h("dd", { id: "run-spans" }, num(r.span_count)),
        h("dt", {}, "Errors"), h("dd", { class: r.error_count ? "error-text" : "" }, num(r.error_count)),
        h("dt", {}, "Tokens"), h("dd", {}, `${num(r.input_tokens)} in / ${num(r.output_tokens)} out`),
        h("dt", {}, "Agents"), h("dd", {}, r.agents.join(", ") || "—"),
        h("dt", {}, "Recorded"), h("dd", { id: "run-recording" }, recording(r.config))));
  }
  fillHeader(run);
  const tabs = h("nav", { class: "tabs" },
    ...[["traces", "Traces"], ["metrics", `Metrics${run.metrics.length ? ` (${run.metrics.length})` : ""}`], ["stats", "Latency & usage"]]
      .map(([key, label]) => h("a", { href: `#/run/${runId}?tab=${key}`, class: key === tab ? "active" : "" }, label)));
  const body = h("div", { id: "run-body" });
  app.replaceChildren(h("section", {}, header, tabs, body));

  const handlers = { run: fillHeader };
  if (tab === "metrics") Object.assign(handlers, await metricsView(runId, body));
  else if (tab === "stats") await statsView(runId, body);
  else {
    const traces = await tracesView(runId, body);
    Object.assign(handlers, { span: traces.span, run: (r) => { fillHeader(r); traces.span(); } });
  }
  live({ run_id: runId, after_run_ns: run.updated_ns }, handlers);
}

async function tracesView(runId, body) {
  const tbody = h("tbody", { id: "traces-body" });
  body.replaceChildren(h("table", { class: "traces" }, h("thead", {}, h("tr", {},
    ...["Trace", "Status", "Started", "Duration", "Spans", "Errors", "Tokens in/out"].map((t) => h("th", {}, t)))), tbody));
  async function load() {
    const data = await api(`/api/runs/${runId}/traces`, { limit: 1000 });
    tbody.replaceChildren(...data.traces.map((t) => h("tr", { "data-trace": t.trace_id, class: t.error_count ? "has-errors" : "" },
      h("td", {}, h("a", { href: `#/trace/${t.trace_id}`, class: "trace-link" }, t.name || "(running…)")),
      h("td", {}, statusBadge(t.status)), h("td", {}, when(t.start_ns)), h("td", {}, durNs(t.start_ns, t.end_ns)),
      h("td", { class: "num" }, num(t.span_count)),
      h("td", { class: t.error_count ? "num error-text" : "num" }, num(t.error_count)),
      h("td", { class: "num" }, `${num(t.input_tokens)} / ${num(t.output_tokens)}`))));
    if (!data.traces.length) tbody.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No traces in this run yet.")));
  }
  await load();
  return { span: debounce(load, 300) };
}

// What a run's metrics page leads with, and how it groups the rest: the one place that decides it. RL runs log
// these stable names (agentscope rl train); a run's other metrics land in "Other".
const METRIC_LAYOUT = {
  // The headline row, in this order; a chart shows when at least one of its metrics was recorded.
  headline: [
    { id: "heldout-success", title: "Held-out success", metrics: ["eval/success_rate", "eval_train/success_rate"] },
    { id: "training-success", title: "Training success", metrics: ["data/batch_success_rate", "data/task_success_rate"] },
    { id: "reward", title: "Reward", metrics: ["train/reward_mean"] },
    { id: "loss", title: "Policy loss", metrics: ["train/policy_loss"] },
    { id: "kl", title: "KL divergence", metrics: ["train/approx_kl", "train/rollout_kl"] },
    { id: "tokens-per-s", title: "Rollout tokens / s", metrics: ["rollout/tokens_per_s"] },
    { id: "episodes-per-s", title: "Env episodes / s", metrics: ["env/episodes_per_s"] },
    { id: "staleness", title: "Staleness (policy versions)", metrics: ["data/staleness"] },
  ],
  // Then one collapsible section per service, by name prefix; the last one takes what no prefix matches.
  groups: [
    { id: "train", title: "Trainer", prefix: "train/" },
    { id: "data", title: "Data manager", prefix: "data/" },
    { id: "env", title: "Environment cluster", prefix: "env/" },
    { id: "rollout", title: "Rollout service", prefix: "rollout/" },
    { id: "sched", title: "Schedule", prefix: "sched/" },
    { id: "checkpoint", title: "Checkpoints", prefix: "checkpoint/" },
    { id: "other", title: "Other", prefix: "" },
  ],
  // Series computed here when a run did not record them: name -> inputs and how (shown under the chart).
  derived: {
    "env/episodes_per_s": { from: ["env/episodes", "env/wall_s"], how: "Δ env/episodes ÷ Δ env/wall_s", fn: rate },
  },
  // Seconds since the run started, recorded at every step: the x axis of the wall-clock view.
  wallClock: "time/wall_s",
};

// Per-step rate of a cumulative count over a cumulative time (points matched by step).
function rate(counts, seconds) {
  const at = new Map(seconds.map(([step, s]) => [step, s]));
  const out = [];
  let prev = [0, 0];
  for (const [step, count] of counts) {
    const s = at.get(step);
    if (s === undefined) continue;
    if (s > prev[1]) out.push([step, (count - prev[0]) / (s - prev[1])]);
    prev = [count, s];
  }
  return out;
}

// Wall-clock axis ticks: seconds since the run started.
function clock(s) {
  if (s < 60) return `${+s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

// The page's sections for the recorded metric names: [{id, title, headline, charts: [{id, title, metrics, caption}]}].
function metricPlan(names) {
  const recorded = new Set(names);
  const derivable = (name) => {
    const d = METRIC_LAYOUT.derived[name];
    return d && d.from.every((n) => recorded.has(n));
  };
  const shown = new Set();
  const headline = [];
  for (const spec of METRIC_LAYOUT.headline) {
    const metrics = spec.metrics.filter((n) => recorded.has(n) || derivable(n));
    if (!metrics.length) continue;
    metrics.forEach((n) => shown.add(n));
    const how = metrics.filter((n) => !recorded.has(n)).map((n) => METRIC_LAYOUT.derived[n].how);
    headline.push({ id: spec.id, title: spec.title, metrics, caption: [...metrics.filter((n) => recorded.has(n)), ...how].join(" · ") });
  }
  const sections = headline.length ? [{ id: "headline", title: "Headline", headline: true, charts: headline }] : [];
  const groups = METRIC_LAYOUT.groups;
  const rest = names.filter((n) => !shown.has(n)).sort();
  for (const group of groups) {
    const last = group === groups[groups.length - 1];
    const mine = rest.filter((n) => (last ? !groups.some((g) => g.prefix && n.startsWith(g.prefix)) : n.startsWith(group.prefix)));
    if (mine.length) sections.push({ id: group.id, title: group.title, prefix: group.prefix, charts: mine.map((n) => ({ id: n, title: n, metrics: [n] })) });
  }
  return sections;
}

const collapsedGroups = {
  get() { try { return new Set(JSON.parse(localStorage.getItem("agentscope-collapsed-groups") || "[]")); } catch (e) { return new Set(); } },
  set(id, closed) {
    const ids = this.get();
    if (closed) ids.add(id); else ids.delete(id);
    localStorage.setItem("agentscope-collapsed-groups", JSON.stringify([...ids]));
  },
};

async function metricsView(runId, body) {
  const data = await api(`/api/runs/${runId}/metrics`);
  const series = data.series;
  let xAxis = localStorage.getItem("agentscope-metrics-x") === "wall" ? "wall" : "step";
  const toolbar = h("div", { class: "metric-toolbar", id: "metric-toolbar" });
  const root = h("div", { id: "charts" });
  body.replaceChildren(toolbar, root);
  let layout = "";
  const figures = new Map(); // chart id -> [figure, chart spec]

  function points(name) {
    const d = METRIC_LAYOUT.derived[name];
    if (!series[name] && d) return d.fn(...d.from.map((n) => series[n] || []));
    return series[name] || [];
  }

  // Step -> seconds since the run started, from the wall-clock metric (the latest record at or before a step).
  function wallOf() {
    const wall = series[METRIC_LAYOUT.wallClock] || [];
    return (step) => {
      let lo = 0, hi = wall.length - 1, found = null;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (wall[mid][0] <= step) { found = wall[mid][1]; lo = mid + 1; } else hi = mid - 1;
      }
      return found === null && step <= 0 ? 0 : found; // step 0 (before the first trainer step): the run's start
    };
  }

  // Against wall-clock time only where the run recorded it (the choice is kept across runs).
  const byWall = () => xAxis === "wall" && !!series[METRIC_LAYOUT.wallClock];

  function chart(spec) {
    const wall = byWall() ? wallOf() : null;
    const toX = (pts) => (wall ? pts.map(([step, v]) => [wall(step), v]).filter(([x]) => x !== null) : pts);
    const lines = spec.metrics.map((n) => ({ name: n, points: toX(points(n)) }));
    const size = spec.large ? { width: 460, height: 220 } : { width: 340, height: 160 };  // about the box's pixels
    return window.lineChart(lines.length === 1 ? lines[0].points : lines,
      { title: spec.title, xFormat: wall ? clock : undefined, ...size });
  }

  function drawToolbar() {
    const current = byWall() ? "wall" : "step";
    const choice = (value, label) => h("button", { type: "button", class: current === value ? "active" : "", "data-x": value,
      "aria-pressed": current === value ? "true" : "false", onclick: () => {
        xAxis = value;
        localStorage.setItem("agentscope-metrics-x", value);
        drawToolbar();
        redrawAll();
      } }, label);
    toolbar.replaceChildren(...(series[METRIC_LAYOUT.wallClock]
      ? [h("span", { class: "muted" }, "x axis"), h("span", { class: "segmented", role: "group", "aria-label": "x axis" },
        choice("step", "step"), choice("wall", "wall-clock time"))]
      : []));
  }

  function build(sections) {
    figures.clear();
    const closed = collapsedGroups.get();
    root.replaceChildren(...sections.map((section) => {
      const grid = h("div", { class: section.headline ? "charts large" : "charts" }, ...section.charts.map((spec) => {
        spec.large = !!section.headline;
        const figure = h("figure", { class: "chart-box", "data-chart": spec.id, "data-metric": spec.metrics.length === 1 ? spec.metrics[0] : null });
        figures.set(spec.id, [figure, spec]);
        return figure;
      }));
      if (section.headline) return h("section", { class: "metric-headline", id: "metric-headline" }, grid);
      const details = h("details", { class: "metric-group", "data-group": section.id, open: !closed.has(section.id) },
        h("summary", {}, h("h2", {}, section.title),
          h("span", { class: "muted" }, `${section.prefix ? `${section.prefix}* · ` : ""}${section.charts.length} chart${section.charts.length === 1 ? "" : "s"}`)),
        grid);
      details.addEventListener("toggle", () => collapsedGroups.set(section.id, !details.open));
      return details;
    }));
  }

  function draw(figure, spec) {
    const caption = spec.caption && spec.caption !== spec.title ? [h("figcaption", { class: "muted" }, spec.caption)] : [];
    figure.replaceChildren(chart(spec), ...caption);
  }

  // Rebuild the sections when a new metric name appears; otherwise redraw only the charts whose data changed.
  function render(dirty) {
    const names = Object.keys(series);
    if (!names.length) {
      root.replaceChildren(h("p", { class: "muted" }, "No metrics recorded in this run (agentscope.tracing.log_metrics)."));
      return;
    }
    const sections = metricPlan(names);
    const key = JSON.stringify(sections.map((s) => [s.id, s.charts.map((c) => c.id)]));
    if (key !== layout) {
      layout = key;
      build(sections);
      dirty = null;
    }
    const wallChanged = byWall() && dirty && dirty.has(METRIC_LAYOUT.wallClock);
    for (const [figure, spec] of figures.values()) {
      const inputs = spec.metrics.flatMap((n) => (series[n] || !METRIC_LAYOUT.derived[n] ? [n] : METRIC_LAYOUT.derived[n].from));
      if (!dirty || wallChanged || inputs.some((n) => dirty.has(n))) draw(figure, spec);
    }
  }

  function redrawAll() { render(null); }
  drawToolbar();
  render(null);
  let pending = new Set();
  const flush = debounce(() => {
    const dirty = pending;
    pending = new Set();
    if (dirty.has(METRIC_LAYOUT.wallClock) && !toolbar.childElementCount) drawToolbar();
    render(dirty);
  }, 200);
  return {
    metric: (point) => {
      const line = (series[point.name] = series[point.name] || []);
      const last = line[line.length - 1];
      if (last && last[0] === point.step) last[1] = point.value;
      else if (last && last[0] > point.step) {
        const at = line.findIndex(([s]) => s >= point.step);
        if (line[at][0] === point.step) line[at][1] = point.value; else line.splice(at, 0, [point.step, point.value]);
      } else line.push([point.step, point.value]);
      pending.add(point.name);
      flush();
    },
  };
}

async function statsView(runId, body) {
  const data = await api(`/api/runs/${runId}/stats`);
  body.replaceChildren(statsTable(data.stats));
}

function statsTable(stats) {
  return h("table", { class: "stats" }, h("thead", {}, h("tr", {},
    ...["Kind", "Name", "Calls", "Errors", "Mean", "p50", "p95", "Max", "Tokens in", "Tokens out"].map((t) => h("th", {}, t)))),
  h("tbody", {}, ...stats.map((s) => h("tr", { class: s.errors ? "has-errors" : "" },
    h("td", {}, badge(s.kind)), h("td", {}, s.name), h("td", { class: "num" }, num(s.count)),
    h("td", { class: s.errors ? "num error-text" : "num" }, num(s.errors)),
    h("td", { class: "num" }, ms(s.mean_ms)), h("td", { class: "num" }, ms(s.p50_ms)),
    h("td", { class: "num" }, ms(s.p95_ms)), h("td", { class: "num" }, ms(s.max_ms)),
    h("td", { class: "num" }, num(s.input_tokens)), h("td", { class: "num" }, num(s.output_tokens))))));
}

// ------------------------------------------------------------------ trace page: tree + waterfall, conversation

const ROW = 26;
const PAGE = 500;

async function tracePage(traceId, view, spanId) {
  const trace = await api(`/api/traces/${traceId}`);
  const run = await api(`/api/runs/${trace.run_id}`);
  crumbs({ text: "Runs", href: "#/" }, { text: run.name, href: `#/run/${run.id}` }, { text: trace.name || traceId.slice(-8) });
  const head = h("div", { class: "trace-header" });
  function fillHead(t) {
    head.replaceChildren(h("h1", {}, t.name || "(trace in progress)", " ", statusBadge(t.status)),
      h("p", { class: "muted" }, `${num(t.span_count)} spans · ${durNs(t.start_ns, t.end_ns)} · `,
        h("span", { class: t.error_count ? "error-text" : "" }, `${num(t.error_count)} errors`),
        ` · ${num(t.input_tokens)} tokens in / ${num(t.output_tokens)} out`));
  }
  fillHead(trace);
  const tabs = h("nav", { class: "tabs" },
    h("a", { href: `#/trace/${traceId}?view=tree`, class: view === "tree" ? "active" : "", id: "tab-tree" }, "Tree & timeline"),
    h("a", { href: `#/trace/${traceId}?view=chat`, class: view === "chat" ? "active" : "", id: "tab-chat" }, "Conversation"));
  const detail = h("aside", { class: "detail", id: "span-detail" }, h("p", { class: "muted" }, "Select a span to see its inputs, outputs, usage and latency."));
  const main = h("div", { class: "trace-main" });
  let tree = null;
  const plan = planPanel(traceId, (id) => (tree ? tree.select(id) : api(`/api/spans/${id}`, { trace_id: traceId }).then((s) => detail.replaceChildren(spanDetail(s)))));
  app.replaceChildren(h("section", { class: "trace-page" }, head, tabs, plan.node, h("div", { class: "split" }, main, detail)));
  await plan.refresh();

  const refreshHead = debounce(async () => fillHead(await api(`/api/traces/${traceId}`)), 300);
  const refreshPlan = debounce(plan.refresh, 300);
  if (view === "chat") {
    await conversationView(traceId, main, detail);
    live({ trace_id: traceId }, { span: () => { refreshHead(); refreshPlan(); } });
    return;
  }
  tree = await treeView(traceId, main, detail);
  if (spanId) tree.select(spanId);
  // Start the feed after the newest span the tree has read, so none written in between is missed.
  live({ trace_id: traceId, after_span: tree.cursor() }, { span: () => { refreshHead(); tree.refresh(); refreshPlan(); } });
}

function barLabel(left, width, text) {
  if (left + width < 82) return h("span", { class: "bar-label", style: `left:${left + width}%` }, text);
  if (left > 18) return h("span", { class: "bar-label before", style: `right:${100 - left}%` }, text);
  return h("span", { class: "bar-label inside", style: `right:${100 - left - width}%` }, text);
}

async function treeView(traceId, main, detail) {
  let rows = [];
  let total = 0;
  let selected = null;
  const collapsed = new Set();
  let loading = null;

  const scroller = h("div", { class: "tree-scroll", id: "tree" });
  const spacer = h("div", { class: "tree-spacer" });
  const layer = h("div", { class: "tree-rows" });
  scroller.append(spacer, layer);
  const axis = h("div", { class: "axis" });
  const count = h("span", { class: "muted", id: "tree-count" });
  main.replaceChildren(h("div", { class: "tree-head" }, h("span", { class: "tree-title" }, "Span"), axis), scroller,
    h("div", { class: "tree-foot" }, count));

  let t0 = 0, t1 = 1;
  function bounds() {
    t0 = Infinity; t1 = -Infinity;
    for (const r of rows) { if (r.start_ns < t0) t0 = r.start_ns; if (r.end_ns > t1) t1 = r.end_ns; }
    if (!(t1 > t0)) t1 = t0 + 1;
    const span = (t1 - t0) / 1e6;
    axis.replaceChildren(...[0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { style: `left:${f * 100}%` }, ms(span * f))));
  }

  function visible() {
    const out = [];
    let hideDepth = Infinity;
    for (const r of rows) {
      if (r.depth > hideDepth) continue;
      hideDepth = collapsed.has(r.span_id) ? r.depth : Infinity;
      out.push(r);
    }
    return out;
  }

  let shown = [];
  function render() {
    shown = visible();
    spacer.style.height = `${shown.length * ROW}px`;
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - 10);
    const last = Math.min(shown.length, first + Math.ceil(scroller.clientHeight / ROW) + 20);
    layer.style.transform = `translateY(${first * ROW}px)`;
    const range = t1 - t0;
    layer.replaceChildren(...shown.slice(first, last).map((r) => {
      const left = ((r.start_ns - t0) / range) * 100;
      const width = Math.max(((r.end_ns - r.start_ns) / range) * 100, 0.3);
      const toggle = r.child_count
        ? h("button", { class: "toggle", "aria-label": collapsed.has(r.span_id) ? "expand" : "collapse", onclick: (e) => {
          e.stopPropagation();
          if (collapsed.has(r.span_id)) collapsed.delete(r.span_id); else collapsed.add(r.span_id);
          render();
        } }, collapsed.has(r.span_id) ? "▸" : "▾")
        : h("span", { class: "toggle" }, "");
      return h("div", {
        class: `span-row kind-${r.kind}${r.status === "error" ? " error" : ""}${selected === r.span_id ? " selected" : ""}`,
        "data-span": r.span_id, "data-name": r.name, role: "treeitem", "aria-level": r.depth + 1,
        onclick: () => select(r.span_id),
      },
      h("div", { class: "label", style: `padding-left:${r.depth * 16 + 4}px` }, toggle, badge(r.kind),
        h("span", { class: "name" }, r.name), r.status === "error" ? h("span", { class: "err-dot", title: r.status_message || "error" }, "!") : null),
      h("div", { class: "bar-cell" }, h("div", { class: "bar", style: `left:${left}%;width:${width}%` }),
        barLabel(left, width, ms(r.duration_ms))));
    }));
    count.textContent = `${rows.length < total ? `${rows.length} of ` : ""}${total} spans${rows.length < total ? " loaded (scroll for more)" : ""}`;
    if (rows.length < total && last >= shown.length - 5) more();
  }

  async function fetchPage(offset, limit) {
    const data = await api(`/api/traces/${traceId}/tree`, { offset, limit });
    total = data.total;
    return data.spans;
  }

  function more() {
    if (loading || rows.length >= total) return;
    loading = fetchPage(rows.length, PAGE).then((page) => {
      rows = rows.concat(page);
      bounds();
      loading = null;
      render();
    });
  }

  async function refresh() {
    const page = await fetchPage(0, Math.max(rows.length, PAGE));
    rows = page;
    bounds();
    render();
  }

  async function select(spanId) {
    selected = spanId;
    render();
    const s = await api(`/api/spans/${spanId}`, { trace_id: traceId });
    detail.replaceChildren(spanDetail(s));
  }

  scroller.addEventListener("scroll", () => requestAnimationFrame(render));
  rows = await fetchPage(0, PAGE);
  bounds();
  render();
  const cursor = () => rows.reduce((m, r) => Math.max(m, r.id), 0);
  return { refresh: debounce(refresh, 300), select, cursor };
}

// ------------------------------------------------------------------ span detail

function spanDetail(s) {
  const a = s.attributes || {};
  const facts = [["Kind", badge(s.kind)], ["Status", statusBadge(s.status)], ["Duration", ms(s.duration_ms)], ["Started", when(s.start_ns)]];
  if (a["gen_ai.request.model"]) facts.push(["Model", a["gen_ai.response.model"] || a["gen_ai.request.model"]]);
  if (a["gen_ai.agent.name"]) facts.push(["Agent", a["gen_ai.agent.name"]]);
  if (a["gen_ai.tool.name"]) facts.push(["Tool", a["gen_ai.tool.name"]], ["Call id", a["gen_ai.tool.call.id"]]);
  if (a["gen_ai.usage.input_tokens"] !== undefined) facts.push(["Tokens", `${num(a["gen_ai.usage.input_tokens"])} in / ${num(a["gen_ai.usage.output_tokens"])} out`]);
  if (a["gen_ai.response.time_to_first_chunk"] !== undefined) facts.push(["First chunk", ms(a["gen_ai.response.time_to_first_chunk"] * 1000)]);
  if (a["gen_ai.response.finish_reasons"]) facts.push(["Finish", a["gen_ai.response.finish_reasons"].join(", ")]);
  if (a["agentscope.policy_version"] !== undefined) facts.push(["Policy version", a["agentscope.policy_version"]]);
  const sections = [];
  if (s.status === "error") sections.push(h("div", { class: "error-box", id: "span-error" }, h("strong", {}, a["error.type"] || "error"), ": ", s.status_message || ""));
  if (s.kind === "model") {
    sections.push(h("h3", {}, "Input"), messagesView(a["gen_ai.input.messages"] || []));
    sections.push(h("h3", {}, "Output"), messagesView([{ role: "assistant", content: a["gen_ai.output.messages"] || [] }]));
  } else if (s.kind === "tool") {
    sections.push(h("h3", {}, "Arguments"), h("pre", { class: "json" }, json(a["gen_ai.tool.call.arguments"])));
    sections.push(h("h3", {}, "Result"), h("pre", { class: `json${s.status === "error" ? " error-text" : ""}` }, resultText(a["gen_ai.tool.call.result"])));
  } else if (s.kind === "agent") {
    sections.push(h("h3", {}, "Input"), messagesView(a["gen_ai.input.messages"] || []));
    sections.push(h("h3", {}, "Reply"), messagesView(a["gen_ai.output.messages"] || []));
  }
  sections.push(h("details", { class: "raw" }, h("summary", {}, "All attributes"), h("pre", { class: "json" }, json(a))));
  return h("div", { class: "span-detail", "data-span": s.span_id },
    h("h2", {}, s.name),
    h("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("p", { class: "ids muted" }, `span ${s.span_id} · parent ${s.parent_id || "—"} · trace ${s.trace_id}`),
    ...sections);
}

function resultText(result) {
  if (typeof result === "string") return result;
  if (Array.isArray(result)) return result.map((b) => (b.type === "text" ? b.text : `[${b.type}]`)).join("");
  return json(result);
}

function blocksOf(content) {
  if (typeof content === "string") return [{ type: "text", text: content }];
  if (content && content.$blob) return [{ type: "text", text: `[large value ${content.size} bytes: /api/blobs/${content.$blob}]` }];
  return Array.isArray(content) ? content : [];
}

function messagesView(messages) {
  return h("div", { class: "messages compact" }, ...messages.map((m) => bubble(m, {})));
}

// ------------------------------------------------------------------ conversation

async function conversationView(traceId, main, detail, agentSpanId) {
  const data = await api(`/api/traces/${traceId}/conversation`, { agent_span_id: agentSpanId });
  const results = {};
  for (const m of data.messages) {
    if (m.role !== "tool") continue;
    for (const b of blocksOf(m.content)) if (b.type === "tool_result") results[b.id] = b;
  }
  const picker = data.agents.length > 1
    ? h("label", { class: "agent-picker" }, "Agent ", h("select", { onchange: (e) => conversationView(traceId, main, detail, e.target.value) },
      ...data.agents.map((a) => h("option", { value: a.span_id, selected: a.span_id === data.agent_span_id }, `${a.name} (${a.span_id.slice(0, 6)})`))))
    : null;
  const list = h("div", { class: "messages", id: "chat" },
    ...data.messages.filter((m) => m.role !== "tool").map((m) => bubble(m, { results, tools: data.tools, detail, traceId })));
  main.replaceChildren(h("div", { class: "chat-head" }, h("span", {}, `Conversation of ${data.agent}`), picker), list);
}

function bubble(m, ctx) {
  const blocks = blocksOf(m.content);
  const role = m.role || "assistant";
  const body = [];
  for (const b of blocks) {
    if (b.type === "text") body.push(h("div", { class: "text" }, b.text));
    else if (b.type === "thinking") body.push(h("details", { class: "thinking" }, h("summary", {}, "thinking"), h("div", { class: "text" }, b.thinking)));
    else if (b.type === "image") body.push(h("div", { class: "muted" }, "[image]"));
    else if (b.type === "tool_use") body.push(toolCall(b, ctx));
    else if (b.type === "tool_result") body.push(h("details", { class: `tool-call${b.is_error ? " error" : ""}` },
      h("summary", {}, `result of ${b.name}`), h("pre", { class: "json" }, resultText(b.output))));
  }
  const node = h("div", { class: `bubble role-${role}`, "data-role": role },
    h("div", { class: "who" }, role === "system" ? "system" : `${m.name || role}`), ...body);
  if (role === "system") return h("details", { class: "system-prompt" }, h("summary", {}, "System prompt"), node);
  return node;
}

function toolCall(b, ctx) {
  const result = ctx.results ? ctx.results[b.id] : undefined;
  const span = ctx.tools ? ctx.tools[b.id] : undefined;
  const args = Object.entries(b.input || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  const error = (result && result.is_error) || (span && span.status === "error");
  const summary = h("summary", {}, h("span", { class: "tool-name" }, `${b.name}(${short(args, 80)})`),
    result ? h("span", { class: "tool-result-preview" }, ` → ${short(resultText(result.output), 60)}`) : null,
    span ? h("span", { class: "muted" }, ` · ${ms(span.duration_ms)}`) : null);
  const inner = [h("div", { class: "muted" }, "arguments"), h("pre", { class: "json" }, json(b.input))];
  if (result) inner.push(h("div", { class: "muted" }, "result"), h("pre", { class: `json${result.is_error ? " error-text" : ""}` }, resultText(result.output)));
  if (span && ctx.detail) {
    inner.push(h("a", { href: "#", class: "span-link", onclick: async (e) => {
      e.preventDefault();
      ctx.detail.replaceChildren(spanDetail(await api(`/api/spans/${span.span_id}`, { trace_id: ctx.traceId })));
    } }, "open the tool span"));
  }
  return h("details", { class: `tool-call${error ? " error" : ""}`, "data-call": b.id }, summary, ...inner);
}

// ------------------------------------------------------------------ compare

async function comparePage(a, b) {
  const data = await api("/api/compare", { a, b });
  crumbs({ text: "Runs", href: "#/" }, { text: `Compare ${data.a.run.name} / ${data.b.run.name}` });
  const runs = [data.a, data.b];
  const facts = [
    ["Status", (r) => statusBadge(r.status)], ["Started", (r) => when(r.started_ns)],
    ["Duration", (r) => runDuration(r)], ["Traces", (r) => num(r.trace_count)],
    ["Spans", (r) => num(r.span_count)], ["Errors", (r) => num(r.error_count)],
    ["Tokens in", (r) => num(r.input_tokens)], ["Tokens out", (r) => num(r.output_tokens)], ["Agents", (r) => r.agents.join(", ")],
  ];
  const overview = h("table", { class: "compare", id: "compare-overview" }, h("thead", {}, h("tr", {}, h("th", {}, ""),
    ...runs.map((s) => h("th", {}, h("a", { href: `#/run/${s.run.id}` }, s.run.name))))),
  h("tbody", {}, ...facts.map(([label, f]) => h("tr", {}, h("th", {}, label), ...runs.map((s) => h("td", {}, f(s.run)))))));

  const keys = new Map();
  runs.forEach((side, i) => side.stats.forEach((s) => {
    const key = `${s.kind}\u0000${s.name}`;
    if (!keys.has(key)) keys.set(key, [null, null]);
    keys.get(key)[i] = s;
  }));
  const cell = (s, f) => (s ? f(s) : "—");
  const perName = h("table", { class: "compare stats" }, h("thead", {}, h("tr", {}, h("th", {}, "Kind"), h("th", {}, "Name"),
    ...["calls", "errors", "p50", "p95"].flatMap((m) => [h("th", {}, `${m} A`), h("th", {}, `${m} B`)]))),
  h("tbody", {}, ...[...keys.entries()].sort().map(([key, [x, y]]) => {
    const [kind, name] = key.split("\u0000");
    return h("tr", {}, h("td", {}, badge(kind)), h("td", {}, name),
      h("td", { class: "num" }, cell(x, (s) => num(s.count))), h("td", { class: "num" }, cell(y, (s) => num(s.count))),
      h("td", { class: "num" }, cell(x, (s) => num(s.errors))), h("td", { class: "num" }, cell(y, (s) => num(s.errors))),
      h("td", { class: "num" }, cell(x, (s) => ms(s.p50_ms))), h("td", { class: "num" }, cell(y, (s) => ms(s.p50_ms))),
      h("td", { class: "num" }, cell(x, (s) => ms(s.p95_ms))), h("td", { class: "num" }, cell(y, (s) => ms(s.p95_ms))));
  })));

  const metricNames = [...new Set(runs.flatMap((s) => s.metrics.map((m) => m.name)))].sort();
  const last = (side, name) => { const m = side.metrics.find((x) => x.name === name); return m ? m.last_value : null; };
  const metrics = metricNames.length ? h("table", { class: "compare" }, h("thead", {}, h("tr", {}, h("th", {}, "Metric (last value)"),
    ...runs.map((s) => h("th", {}, s.run.name)))),
  h("tbody", {}, ...metricNames.map((n) => h("tr", {}, h("th", {}, n), ...runs.map((s) => h("td", { class: "num" }, num(last(s, n)))))))) : null;

  app.replaceChildren(h("section", {}, h("h1", {}, "Compare runs"), overview, h("h2", {}, "Per span name"), perName,
    metrics ? h("h2", {}, "Metrics") : null, metrics));
}
