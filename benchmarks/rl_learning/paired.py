"""Paired comparison of held-out evaluations made on the same tasks (``agentscope rl eval`` JSON reports).

Two policies evaluated on the same held-out tasks differ only where some task's outcome changed. Counting those
tasks is far more sensitive than comparing two success rates as if they were independent samples: on 128 tasks
at about 50 % success, two independent rates must differ by about 12 points to be told apart at 95 %, while a
policy that gains 10 tasks and loses none is a clear change. For each report after the first (the baseline):

- success rate and the difference in points, overall and per ``--by`` category (task metadata, e.g. ``level``);
- **greedy reports** (one attempt per task): the tasks gained (failed before, solved after) and lost, and the
  exact two-sided McNemar p-value (a binomial test on the gained/lost counts);
- **sampled reports** (several attempts per task): per task the change of its success fraction; tasks that went
  up and down, the sign test's p-value on them, and a 95 % bootstrap interval of the mean change (tasks resampled
  with replacement, 10,000 times, fixed seed).

    .venv/bin/python benchmarks/rl_learning/paired.py BASE.json OTHER.json [OTHER.json ...] [--by level]

Every report must hold the same tasks (same spec, so same task ids) and be made with the same attempts per task
and temperature as the baseline: a one-attempt outcome and a four-attempt fraction of one policy are not symmetric
around each other, and the sign test would call the difference significant. Reports that differ are refused before
anything is printed. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict


class Comparison(TypedDict):
    """The paired statistics of one report against the baseline, on one set of tasks."""

    tasks: int
    base: float
    """The baseline's mean success (over tasks, each task's fraction of attempts solved)."""
    other: float
    up: int
    """Tasks whose success (fraction) rose."""
    down: int
    p: float
    """Exact two-sided p-value of ``up`` against ``down`` (McNemar's exact test; the sign test when sampled)."""
    interval: NotRequired[tuple[float, float]]
    """95 % bootstrap interval of the mean change (sampled reports only)."""


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (McNemar's exact test on the
    discordant pairs; the sign test)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    p = 2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2**n
    return min(1.0, p)


def bootstrap_interval(changes: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``changes`` (tasks resampled with replacement)."""
    if not changes:
        raise ValueError("no tasks to resample")
    if resamples < 40:
        raise ValueError(f"resamples must be at least 40 for a 95 % interval, got {resamples}")
    rng = random.Random(seed)
    n = len(changes)
    means = sorted(sum(rng.choices(changes, k=n)) / n for _ in range(resamples))
    return means[resamples * 25 // 1000], means[resamples * 975 // 1000 - 1]


def compare(base: dict[str, float], other: dict[str, float], sampled: bool) -> Comparison:
    """The paired statistics of ``other`` against ``base`` (per-task success fractions, same task ids)."""
    if base.keys() != other.keys():
        missing = sorted(base.keys() ^ other.keys())[:5]
        raise ValueError(f"the reports hold different tasks (e.g. {missing}): evaluate both on one spec")
    if not base:
        raise ValueError("no tasks to compare")
    changes = [other[t] - base[t] for t in base]
    up = sum(c > 0 for c in changes)
    down = sum(c < 0 for c in changes)
    row = Comparison(
        tasks=len(changes),
        base=statistics.fmean(base.values()),
        other=statistics.fmean(other.values()),
        up=up,
        down=down,
        p=binomial_two_sided(up, up + down),
    )
    if sampled:
        row["interval"] = bootstrap_interval(changes)
    return row


def check_comparable(base: dict[str, Any], other: dict[str, Any], name: str) -> None:
    """Raise ValueError, naming the field, unless ``other`` was evaluated like ``base``: same task spec, attempts
    per task and temperature."""
    for field in ("tasks", "attempts", "temperature"):
        if other.get(field) != base.get(field):
            raise ValueError(f"{name}: {field} {other.get(field)!r}, the baseline's is {base.get(field)!r}")


def task_categories(spec: str, key: str) -> dict[str, str]:
    """Each task's value of metadata ``key`` (``level``), by task id, from a report's task spec."""
    from agentscope.rl.tasks import load_tasks

    return {t.id: str(t.metadata.get(key, "?")) for t in load_tasks(spec)}


def _group_order(value: str) -> tuple[int, float | str]:
    try:
        return 0, float(value)
    except ValueError:
        return 1, value


def compare_reports(
    base: dict[str, Any], other: dict[str, Any], categories: Mapping[str, str] | None = None
) -> dict[str, Comparison]:
    """``other`` against ``base``, two reports made alike (:func:`check_comparable`): over all tasks (key ``""``),
    then per value of ``categories`` (task id to value, from :func:`task_categories`) among the reports' tasks, in
    order. Raises ValueError for a task that ``categories`` does not know."""
    sampled = base["attempts"] > 1
    rows = {"": compare(base["per_task"], other["per_task"], sampled)}
    if categories is None:
        return rows
    unknown = [t for t in base["per_task"] if t not in categories]
    if unknown:
        raise ValueError(
            f"tasks {unknown[:5]} have no category: they are not in the spec the categories came from"
        )
    for group in sorted({categories[t] for t in base["per_task"]}, key=_group_order):
        keep = [t for t in base["per_task"] if categories[t] == group]
        rows[group] = compare(
            {t: base["per_task"][t] for t in keep}, {t: other["per_task"][t] for t in keep}, sampled
        )
    return rows


def _cell(row: Comparison) -> str:
    """One table cell: rates, change, tasks up and down, p (and the interval, sampled)."""
    text = (
        f"{100 * row['base']:.1f} → {100 * row['other']:.1f} % ({100 * (row['other'] - row['base']):+.1f}); "
        f"{row['up']} up, {row['down']} down, p = {row['p']:.2g}"
    )
    if "interval" in row:
        low, high = row["interval"]
        text += f"; 95 % CI of the change {100 * low:+.1f} to {100 * high:+.1f}"
    return text


def main() -> None:
    """Print the comparison table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("base", type=Path, help="The baseline's report (e.g. the warm start's).")
    parser.add_argument("others", type=Path, nargs="+", help="Reports to compare with it.")
    parser.add_argument(
        "--by", default=None, help="Also compare per value of this task metadata key (level)."
    )
    args = parser.parse_args()
    base = json.loads(args.base.read_text())
    others = [(path, json.loads(path.read_text())) for path in args.others]
    categories = task_categories(base["tasks"], args.by) if args.by else None
    try:
        for path, other in others:
            check_comparable(base, other, str(path))
        tables = [(path, compare_reports(base, other, categories)) for path, other in others]
    except ValueError as exc:
        raise SystemExit(f"not comparable: {exc}") from None
    header = ["report", "all tasks", *(f"{args.by} {group}" for group in tables[0][1] if group)]
    print(
        f"Baseline: `{args.base}` ({base['attempts']} attempt(s) per task, temperature {base['temperature']:g}; "
        f"every report alike)\n"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path, rows in tables:
        print(f"| `{path}` | " + " | ".join(map(_cell, rows.values())) + " |")


if __name__ == "__main__":
    main()
