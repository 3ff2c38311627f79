"""A trained checkpoint evaluated as it is: ``agentscope eval ... --checkpoint DIR`` serves the policy with the
embedded rollout engine (a real tiny Qwen2 policy, built offline) and hands it to the agent factory as model=."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentscope.evaluation import EvaluationReport
from agentscope.evaluation._checkpoint import resolve_checkpoint
from agentscope.exceptions import UsageError

ROOT = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).with_name("arith_agent.py")


def test_a_directory_without_a_policy_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no policy there \(looked for config.json"):
        resolve_checkpoint(tmp_path)
    latest = tmp_path / "checkpoints" / "latest"
    latest.mkdir(parents=True)
    (latest / "config.json").write_text("{}")
    assert resolve_checkpoint(tmp_path) == latest, "a run directory means its latest checkpoint"


@pytest.mark.integration
def test_a_checkpoint_is_evaluated_on_the_rollout_engine(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from agentscope.rl.policy import TinyPolicyConfig, build_tiny_policy

    small = TinyPolicyConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=1024,
        corpus_conversations=300,
    )
    policy = build_tiny_policy(small, tmp_path / "run" / "checkpoints" / "latest")
    out = tmp_path / "results.json"
    process = subprocess.run(
        [sys.executable, "-m", "agentscope.cli", "eval", str(AGENT), "arith:n=3,seed=0", "--concurrency", "3",
         "--checkpoint", str(tmp_path / "run"), "--max-tokens", "24", "--no-trace", "--out", str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    report = EvaluationReport.model_validate_json(out.read_text())
    assert report.model == f"checkpoint:{tmp_path / 'run'}"
    assert len(report.episodes) == 3
    for episode in report.episodes:  # an untrained policy: whatever it says, the policy said it
        assert episode.status in ("ok", "truncated"), episode.error
        assert episode.model_calls >= 1
        assert episode.input_tokens > 0
        assert episode.output_tokens > 0
    assert policy == resolve_checkpoint(tmp_path / "run")
