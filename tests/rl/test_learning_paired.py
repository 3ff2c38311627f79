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
    assert (row["up"], row["down"]) == (100, 0)
    low, high = row["interval"]
    assert low < 0.125 < high
    # The changes are 0 or 0.25, half each: the mean's standard error is 0.125 / sqrt(200), so a 95 % interval
    # is about 2 * 1.96 * 0.00884 = 0.035 wide (not the range of the resampled means, nor a fixed width).
    assert high - low == pytest.approx(2 * 1.96 * 0.125 / 200**0.5, rel=0.15)
    assert paired.compare(base, other, sampled=True)["interval"] == (low, high)  # seeded: reproducible
    unchanged = paired.compare(base, dict(base), sampled=True)
    assert unchanged["interval"] == (0.0, 0.0)
    assert unchanged["p"] == 1.0


def test_bad_counts_and_empty_sets_are_refused(paired: ModuleType) -> None:
    with pytest.raises(ValueError, match="0 <= k <= n"):
        paired.binomial_two_sided(7, 5)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        paired.binomial_two_sided(-1, 5)
    with pytest.raises(ValueError, match="no tasks"):
        paired.compare({}, {}, sampled=False)
    with pytest.raises(ValueError, match="no tasks"):
        paired.bootstrap_interval([])


def test_reports_on_different_tasks_are_refused(paired: ModuleType) -> None:
    with pytest.raises(ValueError, match="different tasks"):
        paired.compare({"a": 1.0, "b": 0.0}, {"a": 1.0, "c": 0.0}, sampled=False)


def _write_reports(tmp_path: Path) -> tuple[str, list[str]]:
    spec = "lookup:n=8,seed=1,level=1-2,split=eval"
    from agentscope.rl.tasks import load_tasks

    return spec, [t.id for t in load_tasks(spec)]


def _report(tmp_path: Path, name: str, spec: str, per_task: dict[str, float], attempts: int = 1) -> Path:
    path = tmp_path / f"{name}.json"
    temperature = 0 if attempts == 1 else 1.0
    body = {"tasks": spec, "attempts": attempts, "temperature": temperature, "per_task": per_task}
    path.write_text(json.dumps(body))
    return path


def _command(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def test_command_prints_a_row_per_report_with_the_level_breakdown(tmp_path: Path) -> None:
    spec, ids = _write_reports(tmp_path)
    levels = [task.split("-")[1] for task in ids]
    level1 = [i for i, level in enumerate(levels) if level == "L1"]
    level2 = [i for i, level in enumerate(levels) if level == "L2"]
    assert len(level1) >= 2, levels
    assert len(level2) >= 3, levels

    def solved(indices: set[int]) -> dict[str, float]:
        return {task: float(i in indices) for i, task in enumerate(ids)}

    # The baseline solves one task of each level; the other report one more of level 1 and two more of level 2.
    base = _report(tmp_path, "warm", spec, solved({level1[0], level2[0]}))
    after = _report(tmp_path, "rl", spec, solved({*level1[:2], *level2[:3]}))
    out = _command(base, after, "--by", "level")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(f"| `{after}`"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    n, n1, n2 = len(ids), len(level1), len(level2)

    def cell(before: int, now: int, total: int, p: float) -> str:
        rate, new_rate = 100 * before / total, 100 * now / total
        return (
            f"{rate:.1f} → {new_rate:.1f} % ({new_rate - rate:+.1f}); {now - before} up, 0 down, p = {p:.2g}"
        )

    assert cells == [cell(2, 5, n, 0.25), cell(1, 2, n1, 1.0), cell(1, 3, n2, 0.5)]


def test_command_gives_sampled_reports_an_interval(tmp_path: Path) -> None:
    spec, ids = _write_reports(tmp_path)
    base = _report(tmp_path, "warm", spec, dict.fromkeys(ids, 0.25), attempts=4)
    after = _report(tmp_path, "rl", spec, dict.fromkeys(ids, 0.5), attempts=4)
    out = _command(base, after)
    assert out.returncode == 0, out.stderr
    assert (
        "25.0 → 50.0 % (+25.0); 8 up, 0 down, p = 0.0078; 95 % CI of the change +25.0 to +25.0" in out.stdout
    )


def test_command_refuses_reports_made_differently_before_printing_any_row(tmp_path: Path) -> None:
    spec, ids = _write_reports(tmp_path)
    per_task = dict.fromkeys(ids, 0.0)
    base = _report(tmp_path, "warm", spec, per_task)
    fine = _report(tmp_path, "fine", spec, per_task)
    sampled = _report(tmp_path, "sampled", spec, per_task, attempts=4)
    out = _command(base, fine, sampled)
    assert out.returncode != 0
    assert "attempts 4, the baseline's is 1" in out.stderr
    assert "| `" not in out.stdout  # not half a table
    other_spec = _report(tmp_path, "other", "lookup:n=8,seed=2,level=1-2,split=eval", per_task)
    out = _command(base, other_spec)
    assert out.returncode != 0
    assert "tasks 'lookup:n=8,seed=2,level=1-2,split=eval'" in out.stderr
