"""What every trajectory store backend shares: how a trajectory becomes a row and a token blob, and back.

:class:`~agentscope.rl.data.TrajectoryStore` (SQLite) and
:class:`~agentscope.rl.data.PostgresTrajectoryStore` keep the same columns (see ``_store.py``'s docstring for
the layout) and read and write them through these helpers, so both give the same trajectories back.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final, cast

from pydantic import ValidationError

from agentscope.exceptions import SessionError
from agentscope.rl._types import Trajectory, TrajectoryStatus
from agentscope.rl.data._token_blob import CODEC, decode_turns, encode_turns

__all__ = [
    "INSERT_COLUMNS",
    "NAMESPACE_PATTERN",
    "NOT_REPLAYABLE",
    "ROW_COLUMNS",
    "TRAINABLE_STATUSES",
    "Rollback",
    "Row",
    "from_row",
    "to_rows",
]

TRAINABLE_STATUSES: Final[tuple[TrajectoryStatus, ...]] = ("ok", "truncated")
"""Statuses a trainer may learn from; every other status is final (never trained)."""
NOT_REPLAYABLE: Final[tuple[TrajectoryStatus, ...]] = ("failed_infra", "failed_agent", "aborted")
"""Statuses of episodes that success replay never copies, whatever their reward."""

_TOKEN_ARRAYS: Final = {"prompt_ids", "completion_ids", "logprobs"}

NAMESPACE_PATTERN: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""A PostgreSQL store's namespace (``data.namespace``): a schema name that needs no quoting (lower-case letters,
digits and ``_``, at most 63 characters). Checked by :class:`~agentscope.rl.data.DataConfig` at load and by
:class:`~agentscope.rl.data.PostgresTrajectoryStore`."""

INSERT_COLUMNS: Final = (
    "trajectory_id, task_id, group_id, status, reward, success, min_version, max_version, policy_versions,"
    " num_turns, num_generated_tokens, replay_of, created_at, stored_at, updated_at, blob_id, meta, stored_after"
)
"""The columns of a trajectory row that :func:`to_rows` fills, in its order."""
ROW_COLUMNS: Final = "t.trajectory_id, t.status, t.trained_at_step, t.meta, b.codec, b.data"
"""What :func:`from_row` reads: ``trajectories t JOIN blobs b ON b.id = t.blob_id``."""
Row = tuple[str, str, int | None, str, str, bytes]


def to_rows(
    traj: Trajectory, replay_of: str | None, now: float, after_step: int | None
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """The (blob row: id, codec, size, data; trajectory row: :data:`INSERT_COLUMNS`) that store ``traj``."""
    data = encode_turns(traj.turns)
    blob_id = hashlib.blake2b(data, digest_size=16).hexdigest()
    meta = traj.model_dump(mode="json", exclude={"turns": {"__all__": _TOKEN_ARRAYS}})
    versions = traj.policy_versions
    trajectory = (
        traj.trajectory_id,
        traj.task_id,
        traj.group_id,
        traj.status,
        traj.reward,
        int(traj.success),
        traj.min_version,
        max(versions, default=-1),
        json.dumps(versions),
        len(traj.turns),
        traj.num_generated_tokens,
        replay_of,
        traj.created_at,
        now,
        now,
        blob_id,
        json.dumps(meta, separators=(",", ":")),
        after_step,
    )
    return (blob_id, CODEC, len(data), data), trajectory


def from_row(row: Row, store: str) -> tuple[Trajectory, int | None]:
    """The trajectory of a :data:`ROW_COLUMNS` row and the step it was trained at (``store``: its name, for
    errors).

    Raises:
        SessionError: the row or its blob cannot be read (written by an incompatible version).
    """
    trajectory_id, status, trained_at_step, meta_json, codec, data = row
    try:
        if codec != CODEC:
            raise ValueError(f"unknown blob codec {codec!r}")
        meta: dict[str, Any] = json.loads(meta_json)
        turns = cast(list[dict[str, Any]], meta["turns"])
        arrays = decode_turns(bytes(data))
        if len(arrays) != len(turns):
            raise ValueError(f"the blob holds {len(arrays)} turns, the row {len(turns)}")
        for turn, (prompt_ids, completion_ids, logprobs) in zip(turns, arrays, strict=True):
            turn["prompt_ids"], turn["completion_ids"], turn["logprobs"] = (
                prompt_ids,
                completion_ids,
                logprobs,
            )
        meta["status"] = status
        return Trajectory.model_validate(meta), trained_at_step
    except (ValueError, KeyError, zlib.error, struct.error, ValidationError) as e:
        raise SessionError(
            f"trajectory store {store!r}: stored trajectory {trajectory_id!r} cannot be read "
            f"(written by an incompatible version?): {e}"
        ) from e


@dataclass(frozen=True, slots=True)
class Rollback:
    """What :meth:`TrajectoryStore.rollback` undid."""

    untrained: int
    """Trajectories trained after the step, untrained again."""
    restored: int
    """Trajectories whose curation status (dropped or aborted after the checkpoint) was given back."""
    removed_replays: int
    """Success-replay copies made after the checkpoint, removed (curation makes them again if still due)."""
