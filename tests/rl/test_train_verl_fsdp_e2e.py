"""``agentscope rl train`` end to end with ``trainer.backend: verl_fsdp`` (verl's FSDP actor worker on CPU), as a
subprocess on the smoke config: a run of 2 steps, then ``--resume`` to step 3 from its checkpoint (verl's optimizer
state restored), each step's metrics under the torch backend's names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "rl" / "smoke.yaml"


def train(run_dir: Path, cache: Path, *overrides: str, resume: bool = False) -> dict[str, Any]:
    args = ["rl", "train", str(SMOKE), "--run-dir", str(run_dir), "--set", f"policy.cache_dir={cache}"]
    for item in ("trainer.backend=verl_fsdp", *overrides):
        args += ["--set", item]
    if resume:
        args.append("--resume")
    result = subprocess.run(
        [sys.executable, "-m", "agentscope.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_smoke_run_and_resume_with_verls_fsdp_actor(tmp_path: Path) -> None:
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    first = train(run_dir, cache, "schedule.steps=2")
    assert first["steps"] == 2
    resumed = train(run_dir, cache, "schedule.steps=3", resume=True)
    assert resumed["steps"] == 3
    assert resumed["resumed_from"] == 2
    metrics = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["train/optimizer_steps"] == 1.0
        assert m["train/grad_norm"] >= 0.0  # 0 when every group's rewards are equal (GRPO: no advantage)
        for key in ("train/policy_loss", "train/entropy", "train/approx_kl", "train/tis_ratio_mean"):
            assert key in m, key
    state_files = sorted((run_dir / "checkpoints").glob("*/trainer_state.pt"))
    assert state_files
    import torch

    state = torch.load(state_files[-1], weights_only=True)
    assert state["backend"] == "verl_fsdp"
    assert state["optimizer"]["state"]  # Adam's moments, keyed by parameter name


def test_two_ranks_on_ray_then_resume_on_one_in_process(tmp_path: Path) -> None:
    """``trainer.placement: ray`` with ``trainer.ranks: 2``: verl's two FSDP ranks as Ray actors of a local
    cluster, driven by the run; its checkpoint (the full optimizer state) resumes with one rank in process."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    on_ray = ("trainer.placement=ray", "trainer.ranks=2")
    first = train(run_dir, cache, "schedule.steps=2", *on_ray)
    assert first["steps"] == 2
    resumed = train(run_dir, cache, "schedule.steps=3", resume=True)
    assert (resumed["steps"], resumed["resumed_from"]) == (3, 2)
    metrics = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["train/optimizer_steps"] == 1.0 for m in metrics)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["trainer"]["placement"], saved["trainer"]["ranks"]) == ("inprocess", 1)
