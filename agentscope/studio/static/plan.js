// The plan panel of a trace page: the plans a PlanNotebook made in the trace (its update_plan spans, each holding
// the whole plan as JSON), each with its subtasks as they stand after the selected change (the last by default)
// and the list of changes over time. Uses app.js's helpers (h, api, badge, when); app.js's tracePage mounts it.
"use strict";

const PLAN_SPAN = "update_plan";
const SUBTASK_MARK = { todo: "○", in_progress: "▶", done: "✓", abandoned: "✗" };

// The plan spans of a trace, oldest first, with their attributes.
async function planChanges(traceId) {
  const page = await api("/api/spans", { trace_id: traceId, name: PLAN_SPAN, limit: 1000 });
  const spans = await Promise.all(page.spans.map((s) => api(`/api/spans/${s.span_id}`, { trace_id: traceId })));
  return spans.filter((s) => s.attributes && s.attributes["agentscope.plan"]);
}

function subtaskList(plan) {
  if (!plan.subtasks.length) return h("p", { class: "muted" }, "No subtasks.");
  return h("ol", { class: "plan-subtasks", start: 0 }, ...plan.subtasks.map((s) =>
    h("li", { class: `plan-subtask ${s.state}`, "data-state": s.state },
      h("span", { class: "plan-mark", "aria-hidden": "true" }, SUBTASK_MARK[s.state] || "?"), " ",
      h("span", { class: "plan-subtask-name" }, s.name), " ", badge(s.state.replace("_", " "), `plan-${s.state}`),
      s.description ? h("div", { class: "muted plan-description" }, s.description) : null,
      s.outcome ? h("div", { class: "plan-outcome" }, "Outcome: ", s.outcome) : null)));
}

function planVersion(span) {
  const plan = span.attributes["agentscope.plan"];
  return h("div", { class: "plan-version", "data-span": span.span_id },
    h("h3", {}, plan.name, " ", badge(plan.state.replace("_", " "), `plan-${plan.state}`)),
    plan.description ? h("p", { class: "muted" }, plan.description) : null,
    plan.expected_outcome ? h("p", { class: "plan-expected" }, "Expected: ", plan.expected_outcome) : null,
    subtaskList(plan),
    plan.outcome ? h("p", { class: "plan-outcome plan-final-outcome" }, "Outcome: ", plan.outcome) : null);
}

// One plan: its version after the chosen change, and the changes (each a row of subtask marks) to choose from.
function planBlock(changes, onSelect) {
  const version = h("div", { class: "plan-current" });
  const items = [];
  function choose(index) {
    version.replaceChildren(planVersion(changes[index]));
    items.forEach((item, i) => item.classList.toggle("active", i === index));
  }
  changes.forEach((span, i) => {
    const plan = span.attributes["agentscope.plan"];
    const marks = plan.subtasks.map((s) => h("span", { class: `plan-chip ${s.state}`, title: `${s.name}: ${s.state}` }, SUBTASK_MARK[s.state] || "?"));
    const item = h("li", { class: "plan-change", "data-change": span.attributes["agentscope.plan.change"] },
      h("button", { type: "button", onclick: () => { choose(i); if (onSelect) onSelect(span.span_id); } },
        h("span", { class: "plan-change-name" }, span.attributes["agentscope.plan.change"]), " ", ...marks,
        h("span", { class: "muted plan-change-time" }, " ", when(span.start_ns))));
    items.push(item);
  });
  choose(changes.length - 1);
  return h("div", { class: "plan-block", "data-plan": changes[0].attributes["agentscope.plan.id"] },
    version, h("details", { class: "plan-history", open: true }, h("summary", {}, `Changes (${changes.length})`),
      h("ol", { class: "plan-changes" }, ...items)));
}

// The panel: empty (hidden) while the trace has no plan; refresh() reads the spans again (live updates).
function planPanel(traceId, onSelect) {
  const node = h("section", { class: "plan-panel", id: "plan-panel", hidden: true });
  async function refresh() {
    const changes = await planChanges(traceId);
    if (!changes.length) { node.hidden = true; return; }
    const byPlan = new Map();
    for (const span of changes) {
      const id = span.attributes["agentscope.plan.id"];
      if (!byPlan.has(id)) byPlan.set(id, []);
      byPlan.get(id).push(span);
    }
    node.replaceChildren(h("h2", {}, byPlan.size === 1 ? "Plan" : `Plans (${byPlan.size})`),
      ...[...byPlan.values()].map((c) => planBlock(c, onSelect)));
    node.hidden = false;
  }
  return { node, refresh };
}
