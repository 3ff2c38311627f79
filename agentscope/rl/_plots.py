"""Curves of a training run as PNG files (matplotlib, part of the ``rl`` extra; drawn without a display)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

__all__ = ["plot_run", "read_metrics"]

_PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("reward", "reward of the trained batch", ("train/reward_mean",)),
    ("success", "success of the trained batch", ("data/batch_success_rate",)),
    ("loss", "policy loss", ("train/policy_loss",)),
)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The lines of a run's ``metrics.jsonl`` (one per trainer step); malformed lines are skipped."""
    rows: list[dict[str, float]] = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            items = cast("dict[str, object]", row).items()
            rows.append({k: float(v) for k, v in items if isinstance(v, int | float)})
    return rows


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out: list[float] = []
    total = 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_run(run_dir: Path, out: Path | None = None, *, title: str | None = None) -> Path | None:
    """Draw the reward, success and loss curves of the run in ``run_dir`` (against trainer steps, with a moving
    average) into ``out`` (default ``run_dir/reward.png``); returns the file, or None when no step was logged.

    Blocking (file I/O and drawing): call it from a worker thread in async code.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        return None
    target = out or run_dir / "reward.png"
    figure, axes = plt.subplots(1, len(_PANELS), figsize=(4.2 * len(_PANELS), 3.2), constrained_layout=True)
    window = max(1, len(rows) // 20)
    for axis, (_, label, keys) in zip(axes, _PANELS, strict=True):
        for key in keys:
            points = [(row["step"], row[key]) for row in rows if key in row and "step" in row]
            if not points:
                continue
            steps = [p[0] for p in points]
            values = [p[1] for p in points]
            axis.plot(steps, values, alpha=0.35, linewidth=1)
            axis.plot(steps, _moving_average(values, window), linewidth=2, label=f"{key} (mean of {window})")
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("trainer step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.suptitle(title or run_dir.name, fontsize=11)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
