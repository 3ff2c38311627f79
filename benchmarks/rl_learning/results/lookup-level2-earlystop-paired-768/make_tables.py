"""Rebuild this directory's table.md (the RESULTS.md tables) and the pass@16 counts from the reports here.

.venv/bin/python benchmarks/rl_learning/results/lookup-level2-earlystop-paired-768/make_tables.py
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import json
import math
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("paired", HERE.parents[1] / "paired.py")
assert _spec is not None
assert _spec.loader is not None
paired = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired)

ARMS = [
    ("RL async T=1, 30 min", "rl1"),
    ("sft-more, 2,500 steps (equal CPU)", "sft"),
    ("RL async T=0.5, 45 min", "rl05"),
    ("RL async T=1, 60 min (resumed)", "rl1long"),
    ("RL async T=1, groups of 32, 30 min", "g32"),
    ("sft-more, 3,500 steps (equal CPU to groups of 32)", "sft32"),
    ("sft-more, 6,250 steps (equal CPU to RL 60 min)", "sft60"),
]

HEAD_TO_HEAD = [
    ("RL 30 min against sft-more, 2,500 steps", "sft", "rl1"),
    ("RL groups of 32 against sft-more, 3,500 steps", "sft32", "g32"),
    ("RL 60 min against sft-more, 6,250 steps", "sft60", "rl1long"),
]
"""Greedy, the same seed's two policies: (name, baseline tag, other tag)."""


@functools.cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((HERE / name).read_text())


@functools.cache
def _levels(spec: str) -> dict[str, str]:
    return paired.task_categories(spec, "level")


def _compare(tag: str, mode: str) -> dict[str, Any]:
    """``tag``'s report against the warm start's (``mode``: greedy or t1): keys "" (all tasks), "1", "2"."""
    base, other = _load(f"warm.{mode}.json"), _load(f"{tag}.{mode}.json")
    paired.check_comparable(base, other, tag)
    return paired.compare_reports(base, other, _levels(base["tasks"]))


def _cell(row: Any, interval: bool = False) -> str:
    change = 100 * (row["other"] - row["base"])
    if interval:
        low, high = row["interval"]
        return f"{100 * row['other']:.1f} ({change:+.1f}; 95 % CI {100 * low:+.1f} to {100 * high:+.1f})"
    return f"{100 * row['other']:.1f} ({change:+.1f}; {row['up']}↑ {row['down']}↓, p {row['p']:.2g})"


def tables() -> str:
    steps_cpu = _load("run_stats/steps_and_cpu.json")
    greedy, sampled = _load("warm.greedy.json"), _load("warm.t1.json")
    lines = [
        "| arm | seed | optimizer steps | CPU s | greedy: all tasks | greedy: level 1 | greedy: level 2 "
        "| sampled ×4: level 2 |",
        "|---|---:|---:|---:|---|---|---|---|",
        f"| warm start | | | | {100 * greedy['success_rate']:.1f} | {100 * greedy['success_by_level']['1']:.1f} "
        f"| {100 * greedy['success_by_level']['2']:.1f} | {100 * sampled['success_by_level']['2']:.1f} |",
    ]
    changes: dict[str, list[list[float]]] = {}
    for name, tag in ARMS:
        for seed in (0, 1, 2):
            key = f"{tag}-s{seed}"
            greedy_rows = _compare(key, "greedy")
            rows = [greedy_rows[""], greedy_rows["1"], greedy_rows["2"], _compare(key, "t1")["2"]]
            changes.setdefault(tag, []).append([100 * (r["other"] - r["base"]) for r in rows])
            run = steps_cpu[key]
            cells = [_cell(r) for r in rows[:3]] + [_cell(rows[3], interval=True)]
            lines.append(f"| {name} | {seed} | {run['steps']} | {run['cpu']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| arm | greedy: all tasks | greedy: level 1 | greedy: level 2 | sampled ×4: level 2 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, tag in ARMS:
        columns = list(zip(*changes[tag], strict=True))
        lines.append(
            f"| {name} | "
            + " | ".join(f"{statistics.fmean(c):+.1f} ± {statistics.stdev(c):.1f}" for c in columns)
            + " |"
        )
    return "\n".join(lines) + "\n"


def head_to_head() -> str:
    lines = [
        "| comparison | seed | greedy: all tasks | greedy: level 1 | greedy: level 2 |",
        "|---|---:|---|---|---|",
    ]
    for name, base_tag, other_tag in HEAD_TO_HEAD:
        for seed in (0, 1, 2):
            base, other = _load(f"{base_tag}-s{seed}.greedy.json"), _load(f"{other_tag}-s{seed}.greedy.json")
            paired.check_comparable(base, other, f"{other_tag}-s{seed}")
            rows = paired.compare_reports(base, other, _levels(base["tasks"]))
            cells: list[str] = []
            for key in ("", "1", "2"):
                row = rows[key]
                change = 100 * (row["other"] - row["base"])
                cells.append(f"{change:+.1f} ({row['up']}↑ {row['down']}↓, p {row['p']:.2g})")
            lines.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _kind(rate: float) -> str:
    return "never" if rate == 0 else "always" if rate == 1 else "sometimes"


def _group_has_gradient(rate: float, size: int, unbiased: bool = False) -> float:
    """Chance that ``size`` attempts at a task disagree: plugging the 16-attempt rate in, or (unbiased, for sizes
    up to 16) the chance that ``size`` of the 16 observed attempts, drawn without replacement, disagree."""
    if not unbiased:
        return 1 - rate**size - (1 - rate) ** size
    solved = round(16 * rate)
    return 1 - (math.comb(solved, size) + math.comb(16 - solved, size)) / math.comb(16, size)


def pass_at_16() -> str:
    warm, after = _load("pk-warm.t1x16.json")["per_task"], _load("pk-rl1final-s0.t1x16.json")["per_task"]
    greedy = _load("pk-warm.greedy.json")["per_task"]
    failed = [t for t in greedy if greedy[t] == 0]
    lines = [
        f"warm start: {sum(warm[t] == 0 for t in warm)} of {len(warm)} never solved in 16 attempts, "
        f"{sum(warm[t] == 0 for t in failed)} of the {len(failed)} it fails greedily",
    ]
    for name, rates in (("warm start", warm), ("RL 60 min, seed 0", after)):
        plug = statistics.fmean(_group_has_gradient(r, 8) for r in rates.values())
        unbiased = statistics.fmean(_group_has_gradient(r, 8, unbiased=True) for r in rates.values())
        lines.append(
            f"{name}: groups of 8 with a gradient {100 * plug:.1f} % (plug-in), {100 * unbiased:.1f} % (unbiased)"
        )
    at32 = statistics.fmean(_group_has_gradient(r, 32) for r in warm.values())
    lines.append(f"warm start, groups of 32 (plug-in, likely an underestimate): {100 * at32:.1f} %")
    moves = collections.Counter((_kind(warm[t]), _kind(after[t])) for t in warm)
    lines += [f"{a} -> {b}: {n}" for (a, b), n in sorted(moves.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    (HERE / "table.md").write_text(tables() + "\n" + head_to_head())
    print(tables())
    print(head_to_head())
    print(pass_at_16())
