"""Trajectories built by hand for the data-manager tests, and the stores they run on.

The ``store`` fixture runs each test on both backends: SQLite (a file in ``tmp_path``) and PostgreSQL (a
namespace of its own on the server of ``postgres_url``, in ``tests/rl/conftest.py``; the PostgreSQL cases skip,
saying why, where the server's binaries or psycopg are missing).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agentscope.rl import Trajectory, Turn
from agentscope.rl.data import TrajectoryStore
from agentscope.rl.data._open import AnyTrajectoryStore

MakeTraj = Callable[..., Trajectory]
NewStore = Callable[[], AnyTrajectoryStore]
"""Another store on the same file or PostgreSQL namespace as the test's ``store`` (a second writer)."""


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


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> NewStore:
    """Makes stores on this test's file (SQLite) or namespace (PostgreSQL); every backend is a test case."""
    if request.param == "postgres":
        from agentscope.rl.data import PostgresTrajectoryStore

        url: str = request.getfixturevalue("postgres_url")
        namespace = f"t_{uuid.uuid4().hex}"
        return lambda: PostgresTrajectoryStore(url, namespace=namespace)
    return lambda: TrajectoryStore(tmp_path / "trajectories.db")


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[AnyTrajectoryStore]:
    async with new_store() as s:
        yield s


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[TrajectoryStore]:
    """A store on SQLite only, for the tests that read the file itself."""
    async with TrajectoryStore(tmp_path / "trajectories.db") as s:
        yield s
