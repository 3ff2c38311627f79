"""The PostgreSQL trajectory store's tables: the SQLite store's two (``_store.py``'s docstring) with PostgreSQL's
types (``BYTEA`` blobs, ``DOUBLE PRECISION``, ``BIGINT``), plus ``store_info(version)``, made in a run's namespace
on first use by :class:`~agentscope.rl.data.PostgresTrajectoryStore`."""

from __future__ import annotations

from typing import Final

__all__ = ["SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION: Final = 1
"""Written to ``store_info``; a namespace of a newer version is refused."""
SCHEMA: Final = (
    "CREATE TABLE store_info (version INTEGER NOT NULL)",
    """CREATE TABLE blobs (
        id TEXT PRIMARY KEY,
        codec TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BYTEA NOT NULL
    )""",
    """CREATE TABLE trajectories (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        trajectory_id TEXT NOT NULL UNIQUE,
        task_id TEXT NOT NULL,
        group_id TEXT NOT NULL,
        status TEXT NOT NULL,
        reward DOUBLE PRECISION NOT NULL,
        success INTEGER NOT NULL,
        min_version BIGINT NOT NULL,
        max_version BIGINT NOT NULL,
        policy_versions TEXT NOT NULL,
        num_turns INTEGER NOT NULL,
        num_generated_tokens BIGINT NOT NULL,
        trained_at_step BIGINT,
        replay_of TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        stored_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        blob_id TEXT NOT NULL REFERENCES blobs (id),
        meta TEXT NOT NULL,
        stored_after BIGINT,
        marked_after BIGINT
    )""",
    "CREATE INDEX trajectories_group ON trajectories (group_id)",
    "CREATE INDEX trajectories_task_success ON trajectories (task_id, success, seq)",
    "CREATE INDEX trajectories_status_trained ON trajectories (status, trained_at_step)",
)
