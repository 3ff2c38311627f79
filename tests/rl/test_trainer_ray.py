"""The trainer as a Ray actor (``trainer.placement: ray``) on a real local Ray cluster: a run trains exactly what
the in-process trainer trains (same losses, same checkpoint weights, bit for bit on the CPU), and a trainer whose
process is killed ends the run at once with an error that names it and says ``--resume``, which then finishes the
run from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from safetensors.torch import load_file  # pyright: ignore[reportUnknownVariableType]

from agentscope.rl._config import load_config
from agentscope.rl._rollout_ray import local_cpus
from agentscope.rl._runner import train
from agentscope.rl._trainer_ray import RayTrainer, trainer_actor_name
from agentscope.rl.data import TrajectoryStore
from agentscope.rl.trainer import TrainerLostError
from agentscope.testing import TINY_RL_OVERRIDES

ray = pytest.importorskip("ray", reason="the Ray backend needs the scale extra: pip install -e '.[scale]'")

pytestmark = [
    pytest.mark.usefixtures("local_ray"),
    pytest.mark.timeout(300),
    pytest.mark.slow,
    pytest.mark.integration,
]

TINY = [
    *TINY_RL_OVERRIDES,
    "env.slots=1",  # one episode at a time: the rollout engine batches nothing, so each run samples alike
    "trainer.entropy_coef=0.01",  # a gradient even when every reward is 0 (the untrained policy's)
    "trainer.lr=0.001",
    "schedule.mode=sync",  # one group at a time, trained before the next is played: the same batches each run
    "schedule.steps=3",
    "trace=false",
]
ON_RAY = ["trainer.placement=ray"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray cluster for the module (~2 s and ~0.6 GB to start)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny policy, built once for the module's runs."""
    return tmp_path_factory.mktemp("policy-cache")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def learned(path: Path) -> list[dict[str, float]]:
    """Each step's training metrics, timings left out."""
    return [
        {k: v for k, v in m.items() if k.startswith("train/") and not k.endswith("_s")}
        for m in lines(path / "metrics.jsonl")
    ]


async def played(run: Path) -> list[tuple[Any, ...]]:
    """Every stored episode in the order stored: task, status, reward, each turn's tokens, the step trained at."""
    async with TrajectoryStore(run / "trajectories.db") as store:
        return [
            (t.task_id, t.status, t.reward, [turn.prompt_ids + turn.completion_ids for turn in t.turns], step)
            async for t, step in store.iter_all()
        ]


def weights(run: Path) -> dict[str, Any]:
    return load_file(run / "checkpoints" / "latest" / "model.safetensors")


async def test_the_trainer_actor_trains_exactly_what_the_in_process_trainer_trains(
    cache: Path, tmp_path: Path
) -> None:
    overrides = [*TINY, f"policy.cache_dir={cache}"]
    local = await train(load_config(None, overrides), tmp_path / "inprocess")
    on_ray = await train(load_config(None, [*overrides, *ON_RAY]), tmp_path / "ray")
    assert local.steps == on_ray.steps == 3
    expected, got = learned(tmp_path / "inprocess"), learned(tmp_path / "ray")
    assert len(got) == 3
    assert all("train/policy_loss" in step and "train/grad_norm" in step for step in got)
    assert got == expected  # same batches, same float operations in another process: bit for bit
    episodes = await played(tmp_path / "ray")
    assert len(episodes) >= 6
    assert episodes == await played(tmp_path / "inprocess")  # the weights it sent back were served the same
    mine, theirs = weights(tmp_path / "ray"), weights(tmp_path / "inprocess")
    assert mine.keys() == theirs.keys()
    assert all(mine[name].equal(theirs[name]) for name in mine)
    assert local.initial_policy is not None
    start = load_file(local.initial_policy / "model.safetensors")
    assert any(not mine[name].equal(start[name]) for name in mine)  # it did learn
    # The checkpoint was written by the actor, with what the driver knows (data cursor, version, config).
    extra = json.loads((tmp_path / "ray" / "checkpoints" / "latest" / "extra.json").read_text())
    assert extra["version"] == 3
    assert extra["config"]["trainer"]["placement"] == "ray"
    assert "checkpoint/snapshot_s" in lines(tmp_path / "ray" / "metrics.jsonl")[-1]


async def test_a_killed_trainer_fails_the_run_at_once_and_resume_finishes_it(
    cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "killed"
    steps = 8
    config = load_config(None, [*TINY, f"policy.cache_dir={cache}", *ON_RAY, f"schedule.steps={steps}"])
    killed_at: list[float] = []
    killed_pid: list[int] = []

    async def kill_after_first_checkpoint() -> None:
        latest = run / "checkpoints" / "latest" / "meta.json"
        with anyio.fail_after(120):
            while not await anyio.to_thread.run_sync(latest.is_file):  # noqa: ASYNC110 - a file the actor writes
                await anyio.sleep(0.05)
        actor = await anyio.to_thread.run_sync(ray.get_actor, trainer_actor_name(run.resolve()))
        pid = await actor.pid.remote()
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        killed_at.append(time.monotonic())
        killed_pid.append(pid)

    message, failed_after = "", float("inf")
    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_after_first_checkpoint)
        with pytest.raises(TrainerLostError) as caught:
            await train(config, run)
        message, failed_after = str(caught.value), time.monotonic() - killed_at[0]
    assert failed_after < 10, f"the run took {failed_after:.1f} s to notice its trainer died"
    assert message.startswith("the trainer (trainer.placement: ray")
    assert f"process {killed_pid[0]}) died" in message
    assert message.endswith("continue it from its last checkpoint with --resume")
    done = len(lines(run / "metrics.jsonl"))
    assert 1 <= done < steps

    resumed = await train(config, run, resume=True)
    assert resumed.resumed_from is not None
    assert 1 <= resumed.resumed_from <= done
    assert resumed.steps == steps
    assert [m["step"] for m in lines(run / "metrics.jsonl")] == list(range(1, steps + 1))
    assert (run / "checkpoints" / "latest" / "model.safetensors").is_file()


@pytest.mark.timeout(60)
async def test_a_trainer_that_cannot_be_placed_fails_its_start_promptly_and_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentscope.rl._rollout_ray.PLACE_TIMEOUT_S", 1.0)
    config = load_config(None, [*ON_RAY, "trainer.cpus=64"])  # the module's cluster has 2
    began = time.monotonic()
    with pytest.raises(TrainerLostError, match=r"not placed within 1 s: .* no 64 CPUs and 0 GPUs free"):
        await RayTrainer(config, tmp_path / "run").start(tmp_path / "model")  # not loaded: never placed
    assert time.monotonic() - began < 20  # killed, not asked to close (an actor not placed answers no call)
    name = trainer_actor_name((tmp_path / "run").resolve())
    with anyio.fail_after(10):  # the kill is asynchronous: the name is freed soon after
        while name in await anyio.to_thread.run_sync(ray.util.list_named_actors):  # noqa: ASYNC110 - Ray state
            await anyio.sleep(0.1)


def test_a_trainer_actor_that_reserves_no_gpu_sees_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray sets CUDA_VISIBLE_DEVICES only for an actor that reserves GPUs; the actor hides the others itself."""
    from agentscope.rl._trainer_ray import _TrainerActor  # pyright: ignore[reportPrivateUsage]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # a GPU node's, as Ray leaves it for trainer.gpus=0
    _TrainerActor(load_config(None, ON_RAY).model_dump_json(), str(tmp_path))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what Ray sets for an actor that reserved one
    _TrainerActor(load_config(None, [*ON_RAY, "trainer.gpus=1"]).model_dump_json(), str(tmp_path))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_the_local_cluster_declares_the_trainer_actors_cpus() -> None:
    config = load_config(None, [*ON_RAY, "trainer.cpus=64"])
    assert local_cpus(config) == 64
    assert local_cpus(load_config(None, [])) == os.cpu_count()
