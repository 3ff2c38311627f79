"""The runner closes what a training run opened (the data manager, the trainer: on Ray, actors that hold a CPU, a GPU
and a name the next attempt needs) however the run ends, including a failure while the run is still being set up;
and a trainer or data manager lost while the scheduler waits on something else fails the run at once, with its own
error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentscope.rl import _runner
from agentscope.rl._config import load_config
from agentscope.rl._data_ray import DataManagerLost, RayDataManager
from agentscope.rl.data import DataConfig
from agentscope.rl.envs import react_agent_factory
from agentscope.rl.tasks import ArithEnv, load_tasks
from agentscope.rl.trainer import TrainerLostError


class _Opened:
    """Stands for the data manager or the trainer: records its closing."""

    def __init__(self, name: str, closed: list[str]) -> None:
        self.name = name
        self._closed = closed

    async def aclose(self) -> None:
        self._closed.append(self.name)


async def _train(tmp_path: Path) -> None:
    config = load_config(None, [])
    await _runner._train(  # pyright: ignore[reportPrivateUsage]
        config,
        tmp_path,
        load_tasks(config.tasks),
        ArithEnv,
        react_agent_factory,
        tmp_path / "model",
        None,
        0,
        None,
        time.perf_counter(),
        {},
    )


async def test_a_failure_while_setting_up_closes_the_data_manager_and_the_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []

    async def open_data_manager(*_: Any) -> _Opened:
        return _Opened("data", closed)

    async def open_trainer(*_: Any) -> tuple[_Opened, None]:
        return _Opened("trainer", closed), None

    def build_rollout(*_: Any) -> Any:
        raise RuntimeError("no rollout server")

    monkeypatch.setattr(_runner, "open_data_manager", open_data_manager)
    monkeypatch.setattr(_runner, "open_trainer", open_trainer)
    monkeypatch.setattr(_runner, "build_rollout", build_rollout)
    with pytest.raises(RuntimeError, match="no rollout server"):
        await _train(tmp_path)
    # The data manager last: when its actor was lost, that is the run's error (RayDataManager.aclose).
    assert closed == ["trainer", "data"]


async def test_a_trainer_that_fails_to_open_closes_the_data_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []

    async def open_data_manager(*_: Any) -> _Opened:
        return _Opened("data", closed)

    async def open_trainer(*_: Any) -> Any:
        raise RuntimeError("the trainer actor was not placed")

    monkeypatch.setattr(_runner, "open_data_manager", open_data_manager)
    monkeypatch.setattr(_runner, "open_trainer", open_trainer)
    with pytest.raises(RuntimeError, match="not placed"):
        await _train(tmp_path)
    assert closed == ["data"]


class _Idle:
    """A scheduler waiting on something that never comes, or a service that is never lost."""

    async def run(self) -> None:
        await anyio.sleep_forever()

    async def watch(self) -> None:
        await anyio.sleep_forever()


class _DyingActor:
    """The handle of a data manager's actor whose process dies shortly: its pending ``until_closed`` fails."""

    class until_closed:  # as Ray names the method
        @staticmethod
        async def remote() -> None:
            from ray.exceptions import RayActorError

            await anyio.sleep(0.1)
            raise RayActorError()


async def _run_watched(trainer: Any, data: Any) -> None:
    with anyio.fail_after(10):
        await _runner._run_watched(_Idle(), trainer, data)  # pyright: ignore[reportPrivateUsage, reportArgumentType]


async def test_a_data_manager_lost_while_the_scheduler_waits_fails_the_run_at_once(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the data manager's actor needs Ray")
    data = RayDataManager(DataConfig(), tmp_path, actor=_DyingActor(), pid=7)
    with pytest.raises(DataManagerLost, match=r"process 7\) died"):
        await _run_watched(_Idle(), data)


async def test_a_trainer_lost_while_the_scheduler_waits_fails_the_run_at_once() -> None:
    class Dying:
        async def watch(self) -> None:
            await anyio.sleep(0.1)
            raise TrainerLostError("the trainer died")

    with pytest.raises(TrainerLostError, match="the trainer died"):
        await _run_watched(Dying(), _Idle())
