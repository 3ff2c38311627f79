"""The paired comparison of held-out evaluations (benchmarks/rl_learning/paired.py): the exact McNemar / sign test
p-values, the bootstrap interval, and refusing reports made on different tasks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks/rl_learning/paired.py"


@pytest.fixture(scope="module")
def paired() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rl_learning_paired", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_binomial_p_values_match_the_exact_test(paired: ModuleType) -> None:
    # Reference values: scipy.stats.binomtest(k, n, 0.5).pvalue (two-sided).
    assert paired.binomial_two_sided(0, 0) == 1.0
    assert paired.binomial_two_sided(0, 5) == pytest.approx(0.0625)
    assert paired.binomial_two_sided(1, 15) == pytest.approx(0.0009765625)
    assert paired.binomial_two_sided(13, 23) == pytest.approx(0.6776394844055176)
    assert paired.binomial_two_sided(10, 20) == 1.0
    assert (
        paired.binomial_two_sided(17, 20) == paired.binomial_two_sided(3, 20) == pytest.approx(0.0025768280)
    )


def test_greedy_comparison_counts_changed_tasks(paired: ModuleType) -> None:
    base = {f"t{i}": 1.0 if i < 50 else 0.0 for i in range(100)}
    other = dict(base)
    for i in range(50, 62):  # 12 gained
        other[f"t{i}"] = 1.0
    other["t0"] = 0.0  # 1 lost
    row = paired.compare(base, other, sampled=False)
    assert (row["tasks"], row["up"], row["down"]) == (100, 12, 1)
    assert row["base"] == pytest.approx(0.50)
    assert row["other"] == pytest.approx(0.61)
    assert row["p"] == pytest.approx(paired.binomial_two_sided(1, 13))
    assert row["p"] < 0.01
    assert "interval" not in row


def test_sampled_comparison_has_an_interval_around_the_mean_change(paired: ModuleType) -> None:
    base = {f"t{i}": 0.25 for i in range(200)}
    other = {f"t{i}": 0.5 if i % 2 else 0.25 for i in range(200)}  # mean change +0.125
    row = paired.compare(base, other, sampled=True)
    low, high = row["interval"]
    assert low < 0.125 < high
    assert low > 0.0
    unchanged = paired.compare(base, dict(base), sampled=True)
    assert unchanged["interval"] == (0.0, 0.0)
    assert unchanged["p"] == 1.0


def test_reports_on_different_tasks_are_refused(paired: ModuleType) -> None:
    with pytest.raises(ValueError, match="different tasks"):
        paired.compare({"a": 1.0, "b": 0.0}, {"a": 1.0, "c": 0.0}, sampled=False)


def test_command_prints_a_row_per_report_with_the_level_breakdown(tmp_path: Path) -> None:
    spec = "lookup:n=8,seed=1,level=1-2,split=eval"
    from agentscope.rl.tasks import load_tasks

    ids = [t.id for t in load_tasks(spec)]

    def report(name: str, solved: set[int]) -> Path:
        path = tmp_path / f"{name}.json"
        per_task = {task: float(i in solved) for i, task in enumerate(ids)}
        path.write_text(json.dumps({"tasks": spec, "attempts": 1, "temperature": 0, "per_task": per_task}))
        return path

    base = report("warm", {0, 1})
    after = report("rl", {0, 1, 2, 3, 5})
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(base), str(after), "--by", "level"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith(f"| `{after}`"))
    assert "25.0 → 62.5 % (+37.5); 3 up, 0 down, p = 0.25" in row
    assert row.count("up,") == 3  # all tasks, level 1, level 2
