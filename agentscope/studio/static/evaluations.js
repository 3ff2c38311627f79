// Evaluations (agentscope eval): the list, one evaluation's per-task table, and two evaluations compared task by
// task (which tasks flipped). Uses app.js's helpers (h, api, crumbs, live, badge...); app.js routes here.
"use strict";

const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)} %`);
const fixed3 = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(3));
const dollars = (v) => (v === null || v === undefined ? "—" : `$${Number(v).toFixed(4)}`);

// Each episode of a task as a mark linking to its trace: ✓ solved, ✗ not.
function episodeMarks(task) {
  return task.runs.map((r) => {
    const mark = r.success ? "✓" : "✗";
    const label = `repeat ${r.repeat}: ${r.success ? "solved" : "not solved"} (${r.status})`;
    const cls = `episode ${r.success ? "solved" : "unsolved"}`;
    return r.trace_id
      ? h("a", { href: `#/trace/${r.trace_id}`, class: cls, title: label, "aria-label": label }, mark)
      : h("span", { class: cls, title: label, "aria-label": label }, mark);
  });
}

async function evaluationsPage() {
  crumbs({ text: "Evaluations" });
  const selected = new Set();
  const compareButton = h("button", { id: "eval-compare-button", type: "button", disabled: true, onclick: () => {
    const [a, b] = [...selected];
    location.hash = `#/eval-compare/${a}/${b}`;
  } }, "Compare 2 evaluations");
  const tbody = h("tbody", { id: "evals-body" });
  const summary = h("p", { class: "muted", id: "evals-summary" });
  app.replaceChildren(h("section", {}, h("h1", {}, "Evaluations"), h("div", { class: "filters" }, compareButton), summary,
    h("table", { class: "runs evals" }, h("thead", {}, h("tr", {},
      ...["", "Evaluation", "Status", "Started", "Tasks", "Episodes", "Success", "Reward"].map((t) => h("th", {}, t)))), tbody)));

  async function load() {
    const data = await api("/api/evaluations", { limit: 1000 });
    tbody.replaceChildren(...data.evaluations.map((e) => h("tr", { "data-eval": e.id },
      h("td", {}, h("input", { type: "checkbox", "aria-label": `select ${e.name}`, checked: selected.has(e.id), onchange: (ev) => {
        if (ev.target.checked) selected.add(e.id); else selected.delete(e.id);
        compareButton.disabled = selected.size !== 2;
      } })),
      h("td", {}, h("a", { href: `#/eval/${e.id}`, class: "eval-link" }, e.name)),
      h("td", {}, e.status ? statusBadge(e.status) : "—"), h("td", {}, when(e.started_ns)),
      h("td", { class: "num" }, num(e.tasks)), h("td", { class: "num" }, num(e.episodes)),
      h("td", { class: "num success-rate" }, pct(e.success_rate)), h("td", { class: "num" }, fixed3(e.reward_mean)))));
    summary.textContent = data.total
      ? `${data.total} evaluation${data.total === 1 ? "" : "s"}; tick two to compare them task by task`
      : "No evaluations yet. Run one with: agentscope eval AGENT_SPEC TASKS";
  }
  await load();
  live({}, { run: debounce(load, 300) });
}

async function evaluationPage(runId) {
  const data = await api(`/api/evaluations/${runId}`);
  const run = data.run;
  const spec = (run.config || {}).evaluation || {};
  crumbs({ text: "Evaluations", href: "#/evals" }, { text: run.name });
  const header = h("div", { class: "run-header", id: "eval-header" });
  const tbody = h("tbody", { id: "eval-tasks" });
  const onlyFailed = h("input", { type: "checkbox", id: "only-failed", onchange: () => fill(current) });
  app.replaceChildren(h("section", {}, header,
    h("div", { class: "filters" }, h("label", {}, onlyFailed, " only tasks not always solved"),
      h("a", { href: `#/run/${runId}` }, "traces and metrics of this run")),
    h("table", { class: "runs eval-tasks" }, h("thead", {}, h("tr", {},
      ...["Task", "Solved", "Success", "Reward", "Tokens in/out", "Latency", "Episodes"].map((t) => h("th", {}, t)))), tbody)));

  let current = data;
  function fill(d) {
    current = d;
    const s = d.summary;
    header.replaceChildren(
      h("h1", {}, d.run.name, " ", d.run.status ? statusBadge(d.run.status) : ""),
      h("dl", { class: "facts" },
        h("dt", {}, "Agent"), h("dd", {}, spec.agent || "—"),
        h("dt", {}, "Tasks"), h("dd", {}, spec.tasks || "—"),
        h("dt", {}, "Model"), h("dd", {}, spec.model || "the agent's own"),
        h("dt", {}, "Started"), h("dd", {}, when(d.run.started_ns)),
        h("dt", {}, "Episodes"), h("dd", { id: "eval-episodes" }, `${num(s.episodes)} (${num(s.tasks)} tasks)`),
        h("dt", {}, "Success"), h("dd", { id: "eval-success" }, `${pct(s.success_rate)} (${num(s.successes)} of ${num(s.episodes)})`),
        h("dt", {}, "Reward"), h("dd", {}, fixed3(s.reward_mean)),
        h("dt", {}, "Tokens"), h("dd", {}, `${num(s.input_tokens)} in / ${num(s.output_tokens)} out`),
        s.cost !== undefined ? [h("dt", {}, "Cost"), h("dd", {}, dollars(s.cost))] : null));
    const tasks = onlyFailed.checked ? d.tasks.filter((t) => t.successes < t.episodes) : d.tasks;
    tbody.replaceChildren(...tasks.map((t) => h("tr", { "data-task": t.task_key, class: t.successes ? "" : "has-errors" },
      h("td", { title: t.task_key }, t.task_id),
      h("td", { class: "num" }, `${t.successes}/${t.episodes}`),
      h("td", { class: "num" }, pct(t.success_rate)), h("td", { class: "num" }, fixed3(t.reward_mean)),
      h("td", { class: "num" }, `${num(t.input_tokens)} / ${num(t.output_tokens)}`),
      h("td", { class: "num" }, ms(t.latency_s_mean * 1000)),
      h("td", { class: "episodes" }, episodeMarks(t)))));
    if (!tasks.length) tbody.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No tasks to show.")));
  }
  fill(data);
  // A running evaluation logs its metrics after every episode: reload the table when they move.
  live({ run_id: runId, after_run_ns: run.updated_ns }, {
    metric: debounce(async () => fill(await api(`/api/evaluations/${runId}`)), 300),
  });
}

const CHANGE_LABELS = {
  fixed: "fixed", broken: "broken", better: "better", worse: "worse", same: "same", only_a: "only in A", only_b: "only in B",
};

async function evalComparePage(a, b) {
  const data = await api("/api/evaluations/compare", { a, b });
  const sides = [data.a, data.b];
  crumbs({ text: "Evaluations", href: "#/evals" }, { text: `Compare ${data.a.run.name} / ${data.b.run.name}` });
  const facts = [
    ["Success", (s) => pct(s.summary.success_rate)], ["Reward", (s) => fixed3(s.summary.reward_mean)],
    ["Episodes", (s) => num(s.summary.episodes)], ["Tasks", (s) => num(s.summary.tasks)],
    ["Tokens in", (s) => num(s.summary.input_tokens)], ["Tokens out", (s) => num(s.summary.output_tokens)],
  ];
  const overview = h("table", { class: "compare", id: "eval-compare-overview" }, h("thead", {}, h("tr", {}, h("th", {}, ""),
    ...sides.map((s, i) => h("th", {}, `${"AB"[i]}: `, h("a", { href: `#/eval/${s.run.id}` }, s.run.name))))),
  h("tbody", {}, ...facts.map(([label, f]) => h("tr", {}, h("th", {}, label), ...sides.map((s) => h("td", { class: "num" }, f(s)))))));
  const counts = h("p", { id: "eval-change-counts" }, ...Object.entries(data.counts).filter(([, n]) => n)
    .map(([change, n]) => h("span", { class: `change-count` }, badge(CHANGE_LABELS[change], `change-${change}`), ` ${n} `)));
  const side = (t) => (t ? [`${t.successes}/${t.episodes} `, ...episodeMarks(t)] : "—");
  const table = h("table", { class: "runs eval-compare" }, h("thead", {}, h("tr", {},
    ...["Task", "Change", "A", "B"].map((t) => h("th", {}, t)))),
  h("tbody", { id: "eval-compare-tasks" }, ...data.tasks.map((t) => h("tr", { "data-task": t.task_key, "data-change": t.change },
    h("td", { title: t.task_key }, t.task_id), h("td", {}, badge(CHANGE_LABELS[t.change], `change-${t.change}`)),
    h("td", { class: "episodes" }, side(t.a)), h("td", { class: "episodes" }, side(t.b))))));
  app.replaceChildren(h("section", {}, h("h1", {}, "Compare evaluations"), overview,
    h("h2", {}, "Tasks that changed first"), counts, table));
}
