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

Both reports must hold the same tasks (same spec, so same task ids); attempts and temperature may differ, but a
comparison is only a comparison of policies when they do not. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path
from typing import Any


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (McNemar's exact test on the
    discordant pairs; the sign test)."""
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    p = 2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2**n
    return min(1.0, p)


def bootstrap_interval(changes: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``changes`` (tasks resampled with replacement)."""
    rng = random.Random(seed)
    n = len(changes)
    means = sorted(sum(rng.choices(changes, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def compare(base: dict[str, float], other: dict[str, float], sampled: bool) -> dict[str, Any]:
    """The paired statistics of ``other`` against ``base`` (per-task success fractions, same task ids)."""
    if base.keys() != other.keys():
        missing = sorted(base.keys() ^ other.keys())[:5]
        raise ValueError(f"the reports hold different tasks (e.g. {missing}): evaluate both on one spec")
    changes = [other[t] - base[t] for t in base]
    up = sum(c > 0 for c in changes)
    down = sum(c < 0 for c in changes)
    row: dict[str, Any] = {
        "tasks": len(changes),
        "base": statistics.fmean(base.values()),
        "other": statistics.fmean(other.values()),
        "up": up,
        "down": down,
        "p": binomial_two_sided(up, up + down),
    }
    if sampled:
        row["interval"] = bootstrap_interval(changes)
    return row


def _categories(spec: str, key: str) -> dict[str, str]:
    from agentscope.rl.tasks import load_tasks

    return {t.id: str(t.metadata.get(key, "?")) for t in load_tasks(spec)}


def _cell(row: dict[str, Any]) -> str:
    text = (
        f"{100 * row['base']:.1f} → {100 * row['other']:.1f} % ({100 * (row['other'] - row['base']):+.1f}); "
        f"{row['up']} up, {row['down']} down, p = {row['p']:.2g}"
    )
    if "interval" in row:
        low, high = row["interval"]
        text += f"; 95 % CI of the change {100 * low:+.1f} to {100 * high:+.1f}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("base", type=Path, help="The baseline's report (e.g. the warm start's).")
    parser.add_argument("others", type=Path, nargs="+", help="Reports to compare with it.")
    parser.add_argument(
        "--by", default=None, help="Also compare per value of this task metadata key (level)."
    )
    args = parser.parse_args()
    base = json.loads(args.base.read_text())
    categories = _categories(base["tasks"], args.by) if args.by else {}
    groups = sorted(set(categories.values()))
    header = ["report", "all tasks", *(f"{args.by} {g}" for g in groups)]
    print(
        f"Baseline: `{args.base}` ({base['attempts']} attempt(s) per task, temperature {base['temperature']:g})\n"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in args.others:
        other = json.loads(path.read_text())
        if other["tasks"] != base["tasks"]:
            raise SystemExit(f"{path}: tasks {other['tasks']!r}, the baseline's are {base['tasks']!r}")
        sampled = base["attempts"] > 1 or other["attempts"] > 1
        cells = [_cell(compare(base["per_task"], other["per_task"], sampled))]
        for group in groups:
            keep = [t for t in base["per_task"] if categories.get(t) == group]
            cells.append(
                _cell(
                    compare(
                        {t: base["per_task"][t] for t in keep},
                        {t: other["per_task"][t] for t in keep},
                        sampled,
                    )
                )
            )
        print(f"| `{path}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
