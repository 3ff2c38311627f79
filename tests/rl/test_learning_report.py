"""The learning benchmark's schedule table (benchmarks/rl_learning/run.py): when async reached the sync run's final
held-out success, per seed, which is how issue 12's "async in at most half the sync time" is read off a run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rl_learning_run", REPO / "benchmarks/rl_learning/run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(seed: int, mode: str, curve: list[tuple[float, float]]) -> dict[str, Any]:
    points = [{"wall_s": wall, "success_rate": rate} for wall, rate in curve]
    return {"seed": seed, "mode": mode, "steps": 10 * len(curve), "points": points, "final": curve[-1][1]}


def test_the_table_says_when_async_reached_the_sync_runs_final_success() -> None:
    table = _run_module()._schedule_table(
        {
            "runs": [
                _run(0, "async", [(0, 0.1), (200, 0.15), (400, 0.2), (800, 0.25)]),
                _run(0, "sync-wave", [(0, 0.1), (500, 0.12), (1000, 0.2)]),
                _run(1, "async", [(0, 0.1), (300, 0.12), (900, 0.14)]),
                _run(1, "sync-wave", [(0, 0.1), (600, 0.2), (1000, 0.3)]),
            ]
        }
    )
    rows = [line for line in table.splitlines() if line.startswith(("| 0 ", "| 1 "))]
    # seed 0: async first reaches 20 % at 400 s of the sync run's 1,000 (0.40x); at 500 s (half) it had 20 %
    assert (
        rows[0]
        == "| 0 | sync-wave | 20.0% (30 steps, 1000 s) | 1.00x | 25.0% (40 steps) | 400 s (0.40x) | 20.0% |"
    )
    # seed 1: async never reaches the sync run's 30 %; its last checkpoint within 500 s had 12 %
    assert (
        rows[1] == "| 1 | sync-wave | 30.0% (30 steps, 1000 s) | 1.00x | 14.0% (30 steps) | never | 12.0% |"
    )


def test_no_table_without_both_an_async_and_a_sync_run_of_a_seed() -> None:
    module = _run_module()
    only_async = {"runs": [_run(0, "async", [(0, 0.1), (100, 0.2)])]}
    apart = {"runs": [_run(0, "async", [(0, 0.1)]), _run(1, "sync-wave", [(0, 0.1)])]}
    assert module._schedule_table(only_async) == ""
    assert module._schedule_table(apart) == ""


def test_a_trailing_rollout_window_of_a_few_episodes_is_not_read_as_the_runs_last_success() -> None:
    full_windows = _run_module()._full_windows
    windows = [
        {"versions_from": 0.0, "success_rate": 0.09, "episodes": 1800.0},
        {"versions_from": 20.0, "success_rate": 0.15, "episodes": 1900.0},
        {"versions_from": 40.0, "success_rate": 0.0, "episodes": 1.0},
    ]
    assert full_windows(windows) == windows[:2]
    assert full_windows(windows[:2]) == windows[:2]  # a full last window stays
