"""The studio's evaluation pages: the JSON API over the trace store's evaluation rows (``agentscope eval``).

``GET /api/evaluations`` lists evaluations (runs holding rows), ``GET /api/evaluations/{run_id}`` gives one with its
per-task table, and ``GET /api/evaluations/compare?a=&b=`` compares two task by task: which tasks one solves and
the other does not. Tasks are matched by their content key (what the task *is*), not their id or position.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from agentscope.tracing import Row, TraceStore

if TYPE_CHECKING:
    from fastapi import FastAPI, HTTPException
    from fastapi.params import Depends

__all__ = ["Change", "add_evaluation_routes", "compare_tasks", "per_task"]

Change = Literal["fixed", "broken", "better", "worse", "same", "only_a", "only_b"]
"""How a task changed from evaluation A to B: ``fixed`` (A never solved it, B always does), ``broken`` (the
reverse), ``better``/``worse`` (its success rate over repeats rose or fell otherwise), ``same``, or present in
only one of them."""

Read = Callable[..., Awaitable[Any]]


def per_task(rows: Sequence[Row]) -> list[Row]:
    """An evaluation's rows (one per task and repeat) grouped by task, in first-seen order: episodes, successes,
    success rate, mean reward, tokens, mean latency, and each episode's outcome and trace id."""
    tasks: dict[str, Row] = {}
    for row in rows:
        task = tasks.get(row["task_key"])
        if task is None:
            task = tasks[row["task_key"]] = {
                "task_key": row["task_key"],
                "task_id": row["task_id"],
                "episodes": 0,
                "successes": 0,
                "reward_sum": 0.0,
                "input_tokens": 0,
                "output_tokens": 0,
                "latency_sum": 0.0,
                "runs": [],
            }
        task["episodes"] += 1
        task["successes"] += int(bool(row["success"]))
        task["reward_sum"] += float(row["reward"])
        task["input_tokens"] += int(row.get("input_tokens") or 0)
        task["output_tokens"] += int(row.get("output_tokens") or 0)
        task["latency_sum"] += float(row.get("latency_s") or 0.0)
        task["runs"].append(
            {
                "repeat": row["repeat"],
                "success": bool(row["success"]),
                "status": row["status"],
                "trace_id": row["trace_id"],
            }
        )
    out: list[Row] = []
    for task in tasks.values():
        n = task["episodes"]
        out.append(
            {
                **{k: v for k, v in task.items() if k not in ("reward_sum", "latency_sum")},
                "success_rate": task["successes"] / n,
                "reward_mean": task["reward_sum"] / n,
                "latency_s_mean": task["latency_sum"] / n,
            }
        )
    return out


def _change(a: Row | None, b: Row | None) -> Change:
    if a is None:
        return "only_b"
    if b is None:
        return "only_a"
    rate_a, rate_b = a["success_rate"], b["success_rate"]
    if rate_a == rate_b:
        return "same"
    if rate_a == 0 and rate_b == 1:
        return "fixed"
    if rate_a == 1 and rate_b == 0:
        return "broken"
    return "better" if rate_b > rate_a else "worse"


def compare_tasks(a: Sequence[Row], b: Sequence[Row]) -> tuple[list[Row], dict[str, int]]:
    """Two evaluations' per-task tables (:func:`per_task`) matched by content key: each task with both sides and
    its :data:`Change` (changed tasks first: fixed, broken, better, worse, then the others), and how many of each."""
    left = {t["task_key"]: t for t in a}
    right = {t["task_key"]: t for t in b}
    order = {"fixed": 0, "broken": 1, "better": 2, "worse": 3, "only_a": 4, "only_b": 5, "same": 6}
    keys = list(left) + [k for k in right if k not in left]
    tasks: list[Row] = []
    counts = dict.fromkeys(order, 0)
    for key in keys:
        x, y = left.get(key), right.get(key)
        change = _change(x, y)
        counts[change] += 1
        tasks.append(
            {"task_key": key, "task_id": (x or y or {}).get("task_id"), "change": change, "a": x, "b": y}
        )
    tasks.sort(key=lambda t: order[t["change"]])
    return tasks, counts


def _evaluation(store: TraceStore, run_id: str) -> Row | None:
    run = store.get_run(run_id)
    rows = store.eval_results(run_id)
    if run is None and not rows:
        return None
    tasks = per_task(rows)
    episodes = len(rows)
    successes = sum(1 for r in rows if r["success"])
    summary = {
        "episodes": episodes,
        "tasks": len(tasks),
        "successes": successes,
        "success_rate": successes / episodes if episodes else None,
        "reward_mean": sum(float(r["reward"]) for r in rows) / episodes if episodes else None,
        "input_tokens": sum(int(r.get("input_tokens") or 0) for r in rows),
        "output_tokens": sum(int(r.get("output_tokens") or 0) for r in rows),
    }
    costs = [r.get("cost") for r in rows]
    if rows and all(isinstance(c, int | float) for c in costs):
        summary["cost"] = sum(float(c) for c in costs if isinstance(c, int | float))
    return {"run": run or {"id": run_id, "name": run_id}, "summary": summary, "tasks": tasks}


def add_evaluation_routes(
    app: FastAPI,
    read: Read,
    dependencies: Sequence[Depends],
    not_found: Callable[[str], HTTPException],
) -> None:
    """Mount the evaluation API on the studio's ``app`` (``read`` runs a store method in a worker thread)."""
    from fastapi import Query

    deps = list(dependencies)

    @app.get("/api/evaluations", dependencies=deps)
    async def evaluations(  # pyright: ignore[reportUnusedFunction]
        offset: int = Query(0, ge=0, le=2**63 - 1), limit: int = Query(100, ge=1, le=1000)
    ) -> dict[str, Any]:
        await read(TraceStore.mark_lost_runs)
        rows, total = await read(TraceStore.list_evaluations, offset=offset, limit=limit)
        return {"evaluations": rows, "total": total, "offset": offset}

    @app.get("/api/evaluations/compare", dependencies=deps)
    async def compare(a: str, b: str) -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        sides: list[Row] = []
        for run_id in (a, b):
            side = await read(_evaluation, run_id)
            if side is None:
                raise not_found(f"evaluation {run_id}")
            sides.append(side)
        tasks, counts = compare_tasks(sides[0]["tasks"], sides[1]["tasks"])
        strip = [{k: v for k, v in side.items() if k != "tasks"} for side in sides]
        return {"a": strip[0], "b": strip[1], "tasks": tasks, "counts": counts}

    @app.get("/api/evaluations/{run_id}", dependencies=deps)
    async def evaluation(run_id: str) -> Row:  # pyright: ignore[reportUnusedFunction]
        await read(TraceStore.mark_lost_runs)
        side = await read(_evaluation, run_id)
        if side is None:
            raise not_found("evaluation")
        return side
