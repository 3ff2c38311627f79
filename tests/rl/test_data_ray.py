"""The data manager as a Ray actor (``data.placement: ray``) on a real local Ray cluster: the same answers as the
in-process manager on the same inputs (SQLite and PostgreSQL), the same trajectories and batches in a training
run of the same seed, a clear and prompt error when its process is killed, and a resume that goes on from there."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agentscope.exceptions import ConfigError, UsageError
from agentscope.rl import Trajectory, Turn
from agentscope.rl._config import load_config
from agentscope.rl._data_ray import DataManagerLost, RayDataManager, data_actor_name, open_data_manager
from agentscope.rl._resume import check_config
from agentscope.rl._rollout_ray import local_cpus
from agentscope.rl._runner import train
from agentscope.rl._schedule import DataPort
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore, open_store
from agentscope.testing import TINY_RL_OVERRIDES

ray = pytest.importorskip("ray", reason="the Ray backend needs the scale extra: pip install -e '.[scale]'")

TINY = [
    *TINY_RL_OVERRIDES,
    "env.slots=1",  # one episode at a time: the rollout server's sampler sees the same request order every run
    "schedule.mode=sync-wave",
    "schedule.steps=2",
]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray cluster for the module (~2 s and ~0.6 GB to start)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def stored(run: Path) -> list[Trajectory]:
    async with TrajectoryStore(run / "trajectories.db") as store:
        return [t async for t, _ in store.iter_all()]


def tokens(traj: Trajectory) -> list[list[int]]:
    return [turn.prompt_ids + turn.completion_ids for turn in traj.turns]


# ---------------------------------------------------------------------- config


def test_placement_and_cpus_are_checked_at_load_and_counted_and_resumable() -> None:
    with pytest.raises(ConfigError, match=r"data\.placement: Input should be 'inprocess' or 'ray'"):
        load_config(None, ["data.placement=actor"])
    with pytest.raises(ConfigError, match=r"data\.cpus: Input should be greater than or equal to 0"):
        load_config(None, ["data.placement=ray", "data.cpus=-1"])
    with pytest.raises(
        ConfigError, match=r"data: cpus: 2 is used by placement ray only .* data\.placement=ray"
    ):
        load_config(None, ["data.cpus=2"])
    on_ray = load_config(None, ["data.placement=ray", "data.cpus=3"])
    assert (on_ray.data.placement, on_ray.data.cpus) == ("ray", 3.0)
    assert load_config(None, []).data.placement == "inprocess"
    # A local cluster declares the CPUs the actor reserves (or it would never be placed).
    assert local_cpus(load_config(None, ["data.placement=ray", "data.cpus=64"])) == 64
    # A config as the run saves it (every field written out) loads again, as rl export reads its data section.
    saved = load_config(None, []).model_dump(mode="json")
    assert DataConfig.model_validate(saved["data"]) == DataConfig()
    # Where the data manager runs is a deployment choice: a resume may change it.
    changes = check_config(saved, on_ray, allow=False, source="checkpoint")
    assert set(changes) == {"data.placement", "data.cpus"}


def test_a_lost_data_manager_is_said_once_by_the_error_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = RayDataManager(DataConfig(), tmp_path, actor=object(), pid=7)
    with caplog.at_level("DEBUG", logger="agentscope"):
        lost = manager._lose(RuntimeError("gone"))  # pyright: ignore[reportPrivateUsage]
    assert caplog.records == []  # rl train prints the error raised: no log line says it again
    assert str(lost).startswith("the data manager (the Ray actor of data.placement: ray, process 7) died")
    assert str(lost).endswith("continue the run with --resume")
    with pytest.raises(DataManagerLost) as raised:
        manager.ready_groups()
    assert raised.value is lost


# ---------------------------------------------------------------------- the port, on the same inputs


def trajectory(tid: str, task: str, group: str, reward: float, version: int) -> Trajectory:
    turns = [
        Turn(
            prompt_ids=[1, 2, 3, i],
            completion_ids=[10 + i, 11 + i],
            logprobs=[-0.5, -0.25],
            version_head=version,
            version_tail=version,
        )
        for i in range(2)
    ]
    return Trajectory(
        trajectory_id=tid, task_id=task, group_id=group, turns=turns, reward=reward, success=reward > 0
    )


async def play_script(data: DataPort) -> list[Any]:
    """Groups in, batches out, through the port only; everything the scheduler would read, in order."""
    seen: list[Any] = []
    script = [  # (task, rewards, policy version), each a group
        ("easy", [1.0, 0.0], 0),
        ("hard", [0.0, 0.0], 0),  # zero variance: dropped
        ("easy", None, 1),  # sized by the task's success rate (adaptive rollouts)
    ]
    for n, (task, rewards, version) in enumerate(script):
        gid, size = data.open_group(task)
        rewards = rewards or [1.0, 1.0, 0.0][:size] + [0.0] * (size - 3)
        for i, reward in enumerate(rewards):
            await data.put(trajectory(f"a{n}-{i}", task, gid, reward, version))
        seen.append((size, data.ready_groups(), data.group_size_for("easy"), data.group_size_for("hard")))
    batch = await data.next_batch(policy_version=1, step=1)
    assert batch is not None
    seen.append(([t.trajectory_id for t in batch], [t.turns for t in batch], data.ready_groups()))
    for n, version in enumerate([0, 3]):  # the first group is 3 versions behind: dropped as stale
        gid, size = data.open_group("other")
        for i, reward in enumerate([1.0, 0.0][:size]):
            await data.put(trajectory(f"b{n}-{i}", "other", gid, reward, version))
    seen.append((data.ready_groups(), await data.next_batch(policy_version=3, step=2), data.ready_groups()))
    seen.append(data.stats())
    return seen


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_actor_answers_as_the_in_process_manager_does(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {
        "group_size": 2,
        "batch_groups": 2,
        "max_staleness": 1,
        "drop_zero_variance": True,
        "success_replay": False,
        "adaptive_rollouts": True,
        "min_rollouts": 2,
        "max_rollouts": 4,
        "adaptive_min_episodes": 2,
    }

    def config(name: str) -> DataConfig:
        if backend == "postgres":
            url: str = request.getfixturevalue("postgres_url")
            extra = {"store": "postgres", "url": url, "namespace": f"dr_{name}_{uuid.uuid4().hex[:12]}"}
            return DataConfig.model_validate(settings | extra)
        return DataConfig.model_validate(settings)

    local_cfg, remote_cfg = config("local"), config("remote")
    await anyio.to_thread.run_sync(lambda: [(tmp_path / d).mkdir() for d in ("local", "remote")])
    local = DataManager(open_store(local_cfg, tmp_path / "local"), local_cfg)
    try:
        expected = await play_script(local)
        local_cursor = await local.checkpoint_state()
        local_rows = {t.trajectory_id: (t.status, s) async for t, s in local.store.iter_all()}
    finally:
        await local.aclose()
    remote = await RayDataManager.start(remote_cfg, tmp_path / "remote")
    try:
        assert remote.pid != os.getpid()
        got = await play_script(remote)
        remote_cursor = await remote.checkpoint_state()
    finally:
        await remote.aclose()
    # Groups sized by their task's success rate (adaptive rollouts): the proxy's mirror of the sizes is exercised.
    assert (expected[1][3], expected[2][0]) == (4, 3)
    assert got == expected
    assert remote_cursor == local_cursor
    reopened = open_store(remote_cfg, tmp_path / "remote")  # what the actor wrote, read from here
    async with reopened:
        remote_rows = {t.trajectory_id: (t.status, s) async for t, s in reopened.iter_all()}
    assert remote_rows == local_rows
    assert {status for status, _ in remote_rows.values()} == {"ok", "dropped_zero_variance", "dropped_stale"}


# ---------------------------------------------------------------------- training runs


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
async def test_a_run_stores_and_trains_the_same_on_ray_as_in_process(tmp_path: Path) -> None:
    results: dict[str, tuple[list[tuple[str, str, list[list[int]]]], list[list[list[list[int]]]]]] = {}
    for placement in ("inprocess", "ray"):
        run = tmp_path / placement
        result = await train(load_config(None, [*TINY, f"data.placement={placement}"]), run)
        assert result.steps == 2
        trajectories = await stored(run)
        by_id = {t.trajectory_id: t for t in trajectories}
        batches = [[tokens(by_id[i]) for i in b["trajectory_ids"]] for b in lines(run / "batches.jsonl")]
        results[placement] = ([(t.task_id, t.status, tokens(t)) for t in trajectories], batches)
    assert results["inprocess"][0]  # episodes were stored, with tokens
    assert all(turns for _, _, turns in results["inprocess"][0])
    assert results["ray"] == results["inprocess"]


async def eventually(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling files the run writes
            await anyio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
async def test_a_killed_data_manager_fails_the_run_at_once_and_resume_goes_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = load_config(
        None, [*TINY, "data.placement=ray", "schedule.steps=12", "schedule.checkpoint_every=1"]
    )
    failure: list[BaseException] = []
    killed_at = 0.0

    async def first_attempt() -> None:
        try:
            await train(config, run)
        except Exception as exc:
            failure.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_attempt)
        name = data_actor_name(config.data, run.resolve())
        pids: list[int] = []

        async def find_actor() -> bool:
            try:
                actor = await anyio.to_thread.run_sync(ray.get_actor, name)
            except ValueError:  # not started yet
                return False
            pids.append(await actor.pid.remote())
            return True

        with anyio.fail_after(60):
            while not await find_actor():  # noqa: ASYNC110 - polling Ray for the named actor
                await anyio.sleep(0.05)
        assert pids[0] != os.getpid()  # a process of its own
        # ``latest`` appears once the first checkpoint is complete: a kill before it leaves nothing to resume
        await eventually((run / "checkpoints" / "latest" / "meta.json").is_file)
        os.kill(pids[0], signal.SIGKILL)  # mid-run: later steps are still to come
        killed_at = time.monotonic()
    assert time.monotonic() - killed_at < 15  # at once, not at the end of the run
    [error] = failure
    assert isinstance(error, DataManagerLost)
    assert "the data manager" in str(error)
    assert "--resume" in str(error)
    assert "trajectories.db" in str(error)
    assert 1 <= len(lines(run / "batches.jsonl")) < 12
    kept = {t.trajectory_id for t in await stored(run)}

    resumed = await train(config, run, resume=True)
    assert resumed.resumed_from is not None
    assert resumed.resumed_from >= 1
    assert resumed.steps == 12
    batches_after = lines(run / "batches.jsonl")
    assert [b["step"] for b in batches_after] == list(range(1, 13))
    ids = [i for b in batches_after for i in b["trajectory_ids"]]
    assert len(ids) == len(set(ids))  # nothing trained twice
    rows = {t.trajectory_id for t in await stored(run)}
    assert set(ids) <= rows
    assert kept <= rows  # nothing the killed actor stored was lost


async def test_the_factory_builds_the_in_process_manager_by_default(tmp_path: Path) -> None:
    data = await open_data_manager(load_config(None, TINY), tmp_path)
    try:
        assert isinstance(data, DataManager)
    finally:
        await data.aclose()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
async def test_a_run_on_postgres_with_the_data_manager_on_ray_resumes_in_process(
    postgres_url: str, tmp_path: Path
) -> None:
    """The actor opens the PostgreSQL namespace itself; the resume moves the data manager back into the training
    process (``data.placement`` may change on resume) and trains nothing twice."""
    pg = ["data.store=postgres", f"data.url={postgres_url}", f"data.namespace=dr_run_{uuid.uuid4().hex[:12]}"]
    run = tmp_path / "run"
    result = await train(load_config(None, [*TINY, *pg, "data.placement=ray"]), run)
    assert result.steps == 2
    assert not (run / "trajectories.db").exists()
    resumed = await train(load_config(None, [*TINY, *pg, "schedule.steps=3"]), run, resume=True)
    assert (resumed.resumed_from, resumed.steps) == (2, 3)
    [record] = lines(run / "resumes.jsonl")
    assert record["config_changes"] == {"schedule.steps": [2, 3], "data.placement": ["ray", "inprocess"]}
    batches = lines(run / "batches.jsonl")
    assert [b["step"] for b in batches] == [1, 2, 3]
    ids = [i for b in batches for i in b["trajectory_ids"]]
    assert len(ids) == len(set(ids))  # nothing trained twice
    async with open_store(load_config(None, [*TINY, *pg]).data, run) as store:
        trained = {t.trajectory_id: step async for t, step in store.iter_all() if step is not None}
    assert trained == {i: b["step"] for b in batches for i in b["trajectory_ids"]}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("local_ray")
async def test_one_data_manager_per_store(tmp_path: Path) -> None:
    config = DataConfig()
    first = await RayDataManager.start(config, tmp_path)
    try:
        with pytest.raises(UsageError, match="another data manager already serves this run's store"):
            await RayDataManager.start(config, tmp_path)
        other = await RayDataManager.start(config, tmp_path / "other")  # another run directory: another store
        await other.aclose()
    finally:
        await first.aclose()
