"""The scale projection (benchmarks/scale/project.py) runs: the schedule simulator with measured hop costs, one
small cell with hops and the same cell without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_projection_runs_with_and_without_hop_costs(tmp_path: Path) -> None:
    out = tmp_path / "projection.json"
    # A process of its own: the benchmark scripts import each other as top-level modules (run, sim, _harness).
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "scale" / "project.py"),
            "--envs",
            "lookup",
            "--workers",
            "8",
            "--replicas",
            "2",
            "--minutes",
            "0.25",
            "--baseline-replicas",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    with_hops, without = result["rows"]
    assert with_hops["hops"]
    assert not without["hops"]
    for row in (with_hops, without):
        assert row["steps"] > 0
        assert row["trained_tokens_per_hour"] > 0
        assert 0 < row["rollout_capacity_share"] <= 1
        assert 0 < row["trainer_utilisation"] <= 1
        assert set(row["staleness"]) <= {"0", "1", "2"}  # max_staleness 2
    assert with_hops["hop_share_of_slot_time"] > 0
    assert with_hops["publish_s"] > 0
    assert without["hop_share_of_slot_time"] == 0
    assert without["publish_s"] == 0
    assert result["hop_spec"]["frontend_s"] > 0  # from the committed measurement
    assert "| lookup | 8 | 2 |" in proc.stdout  # the Markdown table
