"""Which trajectory store a run uses: :func:`open_store` builds it from :class:`DataConfig`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from agentscope.rl._files import STORE_FILE
from agentscope.rl.data._config import DataConfig
from agentscope.rl.data._store import TrajectoryStore

if TYPE_CHECKING:
    from agentscope.rl.data._postgres import PostgresTrajectoryStore

__all__ = ["AnyTrajectoryStore", "open_store"]

AnyTrajectoryStore: TypeAlias = "TrajectoryStore | PostgresTrajectoryStore"
"""Either backend: the two have the same methods, with the same results."""


def open_store(config: DataConfig, run_dir: str | os.PathLike[str]) -> AnyTrajectoryStore:
    """The store of the run in ``run_dir``: ``run_dir/trajectories.db`` (``store: sqlite``), or the PostgreSQL
    namespace ``config.namespace`` at ``config.url`` (``store: postgres``). Nothing is opened yet: the store
    connects on first use (or ``async with``).

    Raises:
        ImportError: ``store: postgres`` without psycopg installed (naming the extra to install).
    """
    if config.store == "postgres":
        from agentscope.rl.data._postgres import PostgresTrajectoryStore

        if config.url is None:  # DataConfig refuses this; kept for configs built with model_construct
            raise ValueError("data.url: required with store: postgres")
        return PostgresTrajectoryStore(config.url, namespace=config.namespace)
    return TrajectoryStore(Path(run_dir) / STORE_FILE)
