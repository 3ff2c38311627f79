"""The learning benchmark's report helpers (benchmarks/rl_learning/run.py): the schedule table, which is how issue
12's "async reaches the sync run's final success in at most half the time" is read off a run, and the training
rollouts' windows."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rl_learning_run", REPO / "benchmarks/rl_learning/run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(seed: int, mode: str, curve: list[tuple[float, float]]) -> dict[str, Any]:
    """A run whose first point is the warm start (step 0, 0 s), then a checkpoint every 10 steps."""
    points = [{"step": 10 * i, "wall_s": wall, "success_rate": rate} for i, (wall, rate) in enumerate(curve)]
    return {
        "seed": seed,
        "mode": mode,
        "steps": 10 * (len(curve) - 1),
        "points": points,
        "final": curve[-1][1],
        "train_wall_s": curve[-1][0],
    }


def _rows(table: str) -> list[str]:
    return [line for line in table.splitlines()[2:] if line]


def test_the_table_says_when_async_and_the_sync_run_itself_reached_the_sync_runs_final(
    run_module: ModuleType,
) -> None:
    table = run_module._schedule_table(
        {
            "runs": [
                _run(0, "async", [(0, 0.1), (200, 0.15), (400, 0.2), (800, 0.25)]),
                _run(0, "sync-wave", [(0, 0.1), (300, 0.2), (1000, 0.2)]),  # at its final from 300 s on
                _run(1, "async", [(0, 0.1), (300, 0.12), (900, 0.14)]),
                _run(1, "sync-wave", [(0, 0.1), (600, 0.2), (1000, 0.3)]),
            ]
        }
    )
    assert _rows(table) == [
        # async first reaches 20 % at 400 s of the sync run's 1,000 (0.40x), the sync run itself at 300 s (0.30x);
        # at 500 s (half) async had 20 %
        "| 0 | sync-wave | 20.0% (20 steps, 1000 s) | 0.30x | 25.0% (30 steps) | 400 s (0.40x) | 20.0% |",
        # async never reaches 30 %; its last checkpoint within 500 s had 12 %
        "| 1 | sync-wave | 30.0% (20 steps, 1000 s) | 1.00x | 14.0% (20 steps) | never | 12.0% |",
    ]


def test_every_sync_run_of_a_seed_gets_its_row(run_module: ModuleType) -> None:
    table = run_module._schedule_table(
        {
            "runs": [
                _run(0, "sync-wave", [(0, 0.1), (1000, 0.2)]),
                _run(0, "async", [(0, 0.1), (100, 0.3)]),
                _run(0, "sync-refill", [(0, 0.1), (800, 0.25)]),
            ]
        }
    )
    assert [row.split(" | ")[1] for row in _rows(table)] == ["sync-refill", "sync-wave"]
    assert "100 s (0.12x)" in _rows(table)[0]  # 100 of the refill run's 800 s


def test_a_sync_final_at_or_below_the_warm_start_is_not_reached_at_0_s(run_module: ModuleType) -> None:
    collapsed = _run(0, "sync-wave", [(0, 0.1), (500, 0.3), (1000, 0.05)])
    table = run_module._schedule_table({"runs": [_run(0, "async", [(0, 0.1), (900, 0.2)]), collapsed]})
    assert _rows(table) == [
        "| 0 | sync-wave | 5.0% (20 steps, 1000 s) | n/a (at or below the warm start's 10.0%) | | | |"
    ]


def test_a_sync_run_without_a_trained_checkpoint_or_a_recorded_time_does_not_break_the_report(
    run_module: ModuleType,
) -> None:
    untrained = _run(0, "sync-wave", [(0, 0.1)])
    untrained["train_wall_s"] = 0.0
    table = run_module._schedule_table({"runs": [_run(0, "async", [(0, 0.1), (900, 0.2)]), untrained]})
    assert "n/a (no trained checkpoint)" in _rows(table)[0]
    # The last checkpoint's time missing (NaN in results.json): the run's training time stands in for it.
    untimed = _run(1, "sync-wave", [(0, 0.1), (float("nan"), 0.2)])
    untimed["train_wall_s"] = 1000.0
    table = run_module._schedule_table({"runs": [_run(1, "async", [(0, 0.1), (300, 0.2)]), untimed]})
    assert "| 300 s (0.30x) |" in _rows(table)[0]


def test_no_table_without_both_an_async_and_a_sync_run_of_a_seed(run_module: ModuleType) -> None:
    only_async = {"runs": [_run(0, "async", [(0, 0.1), (100, 0.2)])]}
    apart = {"runs": [_run(0, "async", [(0, 0.1)]), _run(1, "sync-wave", [(0, 0.1)])]}
    assert run_module._schedule_table(only_async) == ""
    assert run_module._schedule_table(apart) == ""


def test_two_runs_of_one_seed_and_mode_are_refused_not_silently_dropped(run_module: ModuleType) -> None:
    twice = {"runs": [_run(0, "async", [(0, 0.1), (100, 0.2)]), _run(0, "async", [(0, 0.1), (100, 0.3)])]}
    with pytest.raises(SystemExit, match="two async runs of seed 0"):
        run_module._schedule_table(twice)


def test_a_trailing_rollout_window_of_a_few_episodes_is_not_read_as_the_runs_last_success(
    run_module: ModuleType,
) -> None:
    windows = [
        {"versions_from": 0.0, "success_rate": 0.09, "episodes": 1800.0},
        {"versions_from": 20.0, "success_rate": 0.15, "episodes": 1900.0},
        {"versions_from": 40.0, "success_rate": 0.0, "episodes": 1.0},
    ]
    assert run_module._full_windows(windows) == windows[:2]
    assert run_module._full_windows(windows[:2]) == windows[:2]  # a full last window stays
