"""The run's reward curve as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from agentscope.rl._plots import plot_run, read_metrics


def test_a_run_with_steps_gets_its_curves_and_one_without_none(tmp_path: Path) -> None:
    assert plot_run(tmp_path) is None
    lines = [
        {
            "step": step,
            "train/reward_mean": step / 10,
            "data/batch_success_rate": step / 20,
            "train/policy_loss": -0.1,
        }
        for step in range(1, 11)
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 10
    out = plot_run(tmp_path)
    assert out == tmp_path / "reward.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000  # three panels were drawn, not an empty canvas
