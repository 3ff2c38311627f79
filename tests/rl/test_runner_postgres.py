"""``agentscope rl train`` with ``data.store: postgres``: a short run, a second run refused on the same namespace
or in a run directory holding a run (of either store), a resume that trains nothing twice, and ``rl export``
reading the store the run's config names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentscope.exceptions import UsageError
from agentscope.rl import load_config, train
from agentscope.rl._export import export_trajectories
from agentscope.rl.data import PostgresTrajectoryStore, TrajectoryStore
from agentscope.rl.trainer import CheckpointError

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

TINY = [
    "policy.tiny.vocab_size=512",
    "policy.tiny.hidden_size=32",
    "policy.tiny.intermediate_size=64",
    "policy.tiny.num_layers=1",
    "policy.tiny.num_heads=2",
    "policy.tiny.num_kv_heads=1",
    "policy.tiny.max_position_embeddings=512",
    "policy.tiny.corpus_conversations=100",
    "rollout.max_seq_len=512",
    "rollout.max_tokens=16",
    "tasks=arith:n=8,seed=0,max_operand=9",
    "env.slots=4",
    "env.max_turns=2",
    "agent.kwargs.max_iters=1",
    "data.group_size=2",
    "data.batch_groups=1",
    "data.drop_zero_variance=false",
    "data.success_replay=false",
    "schedule.steps=2",
    "threads=1",
]


async def test_train_resume_and_export_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    pg = ["data.store=postgres", f"data.url={postgres_url}", "data.namespace=runner_e2e"]
    run = tmp_path / "run"
    with pytest.raises(
        CheckpointError, match=r"holds no run to resume \(PostgresTrajectoryStore\(.*holds none\)"
    ):
        await train(load_config(None, [*TINY, *pg]), run, resume=True)

    result = await train(load_config(None, [*TINY, *pg]), run)
    assert result.steps == 2
    assert not (run / "trajectories.db").exists()
    with pytest.raises(UsageError, match=r"namespace='runner_e2e'\) already holds a run; .* data\.namespace"):
        await train(load_config(None, [*TINY, *pg]), tmp_path / "another")
    # The run directory holds this run: a new run there is refused on a fresh namespace, or on SQLite, before it
    # writes anything (it would overwrite config.yaml, mix checkpoints and append to the logs).
    config_before = (run / "config.yaml").read_text()
    fresh = ["data.store=postgres", f"data.url={postgres_url}", "data.namespace=runner_fresh"]
    for other in (fresh, []):
        with pytest.raises(
            UsageError,
            match=r"run already holds a run \(found checkpoints, metrics\.jsonl, batches\.jsonl\); continue it "
            r"with --resume or choose another --run-dir",
        ):
            await train(load_config(None, [*TINY, *other]), run)
    assert (run / "config.yaml").read_text() == config_before
    assert not (run / "trajectories.db").exists()
    assert not await PostgresTrajectoryStore(postgres_url, namespace="runner_fresh").exists()

    resumed = await train(load_config(None, [*TINY, *pg, "schedule.steps=3"]), run, resume=True)
    assert (resumed.resumed_from, resumed.steps) == (2, 3)
    batches = [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines()]
    assert [b["step"] for b in batches] == [1, 2, 3]
    ids = [i for b in batches for i in b["trajectory_ids"]]
    assert len(ids) == len(set(ids))  # nothing trained twice

    out = tmp_path / "out.jsonl"
    count = await export_trajectories(run, out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    async with PostgresTrajectoryStore(postgres_url, namespace="runner_e2e") as store:
        assert len(records) == count == await store.count() > 0
    trained = {r["trajectory_id"]: r["trained_at_step"] for r in records if r["trained_at_step"] is not None}
    assert set(trained) == set(ids)


async def test_a_new_run_refuses_a_run_dir_holding_a_sqlite_run(postgres_url: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    async with TrajectoryStore(run / "trajectories.db"):
        pass
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    pg = ["data.store=postgres", f"data.url={postgres_url}", "data.namespace=runner_beside_sqlite"]
    with pytest.raises(
        UsageError, match=r"run already holds a run \(found trajectories\.db, metrics\.jsonl\); .* --resume"
    ):
        await train(load_config(None, [*TINY, *pg]), run)
    assert not (run / "config.yaml").exists()
    assert not await PostgresTrajectoryStore(postgres_url, namespace="runner_beside_sqlite").exists()
