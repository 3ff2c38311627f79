"""The data manager: a trajectory store (SQLite on one node, PostgreSQL for many writers) and DART-style curation
into training batches.

Light to import (SQLite and pydantic only): the trainer, not the data manager, needs torch, and the PostgreSQL
store loads psycopg on first use (``pip install -e '.[postgres]'``).
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.rl.data._config import DataConfig
from agentscope.rl.data._manager import DataManager, ResumeReport
from agentscope.rl.data._open import open_store
from agentscope.rl.data._store import Rollback, TrajectoryStore

if _typing.TYPE_CHECKING:
    from agentscope.rl.data._postgres import PostgresTrajectoryStore

__all__ = [
    "DataConfig",
    "DataManager",
    "PostgresTrajectoryStore",
    "ResumeReport",
    "Rollback",
    "TrajectoryStore",
    "open_store",
]

__getattr__ = _lazy_exports(
    __name__, {"PostgresTrajectoryStore": "_postgres"}, extras={"_postgres": "postgres"}
)
