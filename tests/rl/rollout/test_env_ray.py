"""Environment workers as Ray actors (``env.backend: ray``) on a real local Ray cluster, their agents talking to a
rollout server that is itself a Ray actor: they play exactly the episodes the in-process cluster plays, and a worker
killed under an episode ends it as ``failed_infra`` (its session dropped) and is restarted by Ray.

(Here rather than under ``tests/rl/envs`` for this directory's tiny policies: the workers need a real policy.)"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from agentscope.rl import Trajectory, load_config
from agentscope.rl._components import build_agent_factory, build_env_cluster, build_env_factory
from agentscope.rl._config import RLConfig
from agentscope.rl._env_ray import RayEnvCluster
from agentscope.rl._rollout_ray import RayRolloutServer
from agentscope.rl.rollout import WeightPublisher
from agentscope.rl.tasks import load_tasks

ray = pytest.importorskip("ray", reason="the Ray backend needs the scale extra: pip install -e '.[scale]'")

pytestmark = [
    pytest.mark.usefixtures("allow_model_requests", "local_ray"),
    pytest.mark.timeout(300),
    pytest.mark.slow,
    pytest.mark.integration,
]

OVERRIDES = [
    "seed=5",
    "tasks=arith:n=8,seed=3",
    "rollout.max_batch=4",
    "rollout.max_seq_len=1024",
    "rollout.max_tokens=24",
    "rollout.backend=ray",
    "env.max_turns=2",
]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray cluster for the module (~2 s and ~0.6 GB to start)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def config(*extra: str) -> RLConfig:
    return load_config(None, [*OVERRIDES, *extra])


def rollout_server(cfg: RLConfig, model_dir: Path, tmp_path: Path, tokenizer: Any) -> RayRolloutServer:
    return RayRolloutServer(
        cfg,
        model_dir,
        index=0,
        version=0,
        publisher=WeightPublisher(tmp_path / "weights"),
        tokenizer=tokenizer,
    )


async def eventually(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling what the cluster's poller updates
            await anyio.sleep(0.05)


def tokens(trajectories: list[Trajectory]) -> list[list[list[int]]]:
    return [[turn.prompt_ids + turn.completion_ids for turn in t.turns] for t in trajectories]


async def test_ray_workers_play_exactly_what_the_in_process_cluster_plays(
    memorized_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    """Same seed, same tasks, one slot: token for token the same trajectories (each side on a fresh server, whose
    sampling generator starts from the server's seed)."""
    local_cfg = config("env.slots=1")
    ray_cfg = config("env.slots=2", "env.backend=ray", "env.workers=2")
    tasks = load_tasks(local_cfg.tasks)[:4]
    async with rollout_server(local_cfg, memorized_dir, tmp_path / "a", tokenizer) as server:
        cluster = build_env_cluster(
            local_cfg, server, build_env_factory(local_cfg), build_agent_factory(local_cfg)
        )
        async with cluster:
            expected = [await cluster.run_episode(task, f"g{i}") for i, task in enumerate(tasks)]
    async with (
        rollout_server(ray_cfg, memorized_dir, tmp_path / "b", tokenizer) as server,
        RayEnvCluster(ray_cfg, memorized_dir, [server]) as workers,
    ):
        pids = await workers.worker_pids()
        got = [
            await workers.run_episode(task, f"g{i}", worker=i % 2) for i, task in enumerate(tasks)
        ]  # one at a time, alternating workers: the server sees the requests in the same order
        stats = workers.stats()
    assert len(set(pids)) == 2
    assert os.getpid() not in pids
    assert all(t.turns for t in expected)
    assert tokens(got) == tokens(expected)
    assert [(t.task_id, t.status, t.reward, t.success) for t in got] == [
        (t.task_id, t.status, t.reward, t.success) for t in expected
    ]
    for mine, theirs in zip(got, expected, strict=True):
        for a, b in zip(mine.turns, theirs.turns, strict=True):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    assert stats["env/workers"] == 2
    assert stats["env/worker_deaths"] == 0


async def test_a_killed_worker_fails_its_episode_as_infra_and_ray_restarts_it(
    memorized_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    cfg = config("env.slots=1", "env.backend=ray", "env.workers=1")
    task = load_tasks(cfg.tasks)[0]
    async with (
        rollout_server(cfg, memorized_dir, tmp_path, tokenizer) as server,
        RayEnvCluster(cfg, memorized_dir, [server]) as workers,
    ):
        [worker_pid] = await workers.worker_pids()
        server_pid = await server.actor.pid.remote()
        results: list[Trajectory] = []

        async def play() -> None:
            results.append(await workers.run_episode(task, "killed"))

        os.kill(server_pid, signal.SIGSTOP)  # the episode's first model call hangs until the worker is killed
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(play)
                await eventually(lambda: bool(workers.live()))
                await anyio.sleep(1.0)  # the worker has the episode and waits on the server
                os.kill(worker_pid, signal.SIGKILL)
                os.kill(server_pid, signal.SIGCONT)
        finally:
            os.kill(server_pid, signal.SIGCONT)
        [lost] = results
        assert lost.status == "failed_infra"
        assert lost.error is not None
        assert "environment worker 0 died" in lost.error
        assert lost.turns == []

        again = await workers.run_episode(task, "after")  # Ray restarted it; it plays again
        [new_pid] = await workers.worker_pids()
        assert new_pid != worker_pid
        assert again.status in ("ok", "truncated")
        assert again.turns
        await eventually(lambda: workers.stats()["env/episodes"] >= 2)  # the poller read the new worker
        stats = workers.stats()
        assert stats["env/worker_deaths"] == 1
        assert stats["env/episodes_failed_infra"] == 1

        # The dead episode's session is gone from the server, as is the finished one's.
        url, token = server.connection()
        async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}) as client:

            async def sessions_left() -> float:
                return float((await client.get(f"{url}/stats")).json()["rollout/sessions"])

            with anyio.fail_after(10):
                while await sessions_left() > 0:  # noqa: ASYNC110 - polling the server
                    await anyio.sleep(0.1)


async def test_an_abort_stops_the_episode_on_its_worker_and_is_counted_once(
    memorized_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    """The scheduler's staleness aborts: the worker stops the episode (status ``aborted``, the reason kept),
    whether it is still starting (first: the worker waits on the stopped server to start) or waits in a model
    call (then), and an episode already asked to stop is not picked again at the next step."""
    cfg = config("env.slots=2", "env.backend=ray", "env.workers=1")
    task = load_tasks(cfg.tasks)[0]
    async with (
        rollout_server(cfg, memorized_dir, tmp_path, tokenizer) as server,
        RayEnvCluster(cfg, memorized_dir, [server]) as workers,
    ):
        server_pid = await server.actor.pid.remote()
        for attempt in ("while the worker starts", "in a model call"):
            results: list[Trajectory] = []

            async def play() -> None:
                results.append(await workers.run_episode(task, "doomed"))  # noqa: B023 - awaited in this round

            os.kill(server_pid, signal.SIGSTOP)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(play)
                    await eventually(lambda: bool(workers.live()))
                    await anyio.sleep(1.0)
                    assert workers.abort(lambda episode: episode.task.id == task.id, "too stale") == 1
                    assert workers.abort(lambda episode: True, "too stale") == 0  # asked already
                    os.kill(server_pid, signal.SIGCONT)
            finally:
                os.kill(server_pid, signal.SIGCONT)
            [aborted] = results
            assert (attempt, aborted.status, aborted.error) == (attempt, "aborted", "too stale")
        stats = workers.stats()
        assert stats["env/episodes_aborted"] == 2
        assert stats["env/worker_deaths"] == 0
        assert not workers.live()
