"""Trajectories built by hand for the data-manager tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agentscope.rl import Trajectory, Turn
from agentscope.rl.data import TrajectoryStore

MakeTraj = Callable[..., Trajectory]


def build_trajectory(
    *,
    task_id: str = "t0",
    group_id: str = "g0",
    reward: float = 0.0,
    success: bool | None = None,
    version: int = 0,
    turns: int = 2,
    completion: int = 3,
    logprob: float = -0.5,
    status: str = "ok",
) -> Trajectory:
    """A token-in/token-out episode: each turn's prompt extends the previous prompt + completion + a tool reply."""
    built: list[Turn] = []
    context = [1, 2, 3, 4]
    for i in range(turns):
        prompt = [*context, 100 + i, 101 + i] if i else context
        completion_ids = [10 * (i + 1) + k for k in range(completion)]
        built.append(
            Turn(
                prompt_ids=prompt,
                completion_ids=completion_ids,
                logprobs=[logprob - 0.01 * k for k in range(completion)],
                version_head=version,
                version_tail=version,
            )
        )
        context = prompt + completion_ids
    return Trajectory(
        task_id=task_id,
        group_id=group_id,
        turns=built,
        reward=reward,
        success=reward > 0 if success is None else success,
        status=status,  # pyright: ignore[reportArgumentType]
    )


@pytest.fixture
def make_traj() -> MakeTraj:
    return build_trajectory


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TrajectoryStore]:
    async with TrajectoryStore(tmp_path / "trajectories.db") as s:
        yield s
