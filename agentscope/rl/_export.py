"""``agentscope rl export``: every stored trajectory of a run as JSON lines, in verl's layout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import yaml
from pydantic import ValidationError

from agentscope.exceptions import UsageError
from agentscope.rl._files import CONFIG_FILE, STORE_FILE
from agentscope.rl._types import Trajectory
from agentscope.rl.data import DataConfig, TrajectoryStore, open_store

if TYPE_CHECKING:
    from agentscope.rl.data import PostgresTrajectoryStore

__all__ = ["EXPORT_KEYS", "export_record", "export_trajectories"]

EXPORT_KEYS = (
    "uid",
    "trajectory_id",
    "task_id",
    "prompt_ids",
    "response_ids",
    "response_mask",
    "response_logprobs",
    "reward",
    "policy_versions",
    "trained_at_step",
    "status",
)
"""Keys of each ``agentscope rl export`` line (verl-aligned: ``uid`` is the group id)."""


def export_record(trajectory: Trajectory, trained_at_step: int | None) -> dict[str, Any]:
    """One ``rl export`` line: the trajectory flattened in verl's layout (the first sample when the agent rewrote
    its history; the others under ``more_samples``)."""
    samples = trajectory.flatten()
    first = samples[0] if samples else None
    record: dict[str, Any] = {
        "uid": trajectory.group_id,
        "trajectory_id": trajectory.trajectory_id,
        "task_id": trajectory.task_id,
        "prompt_ids": first.prompt_ids if first else [],
        "response_ids": first.response_ids if first else [],
        "response_mask": first.response_mask if first else [],
        "response_logprobs": first.response_logprobs if first else [],
        "reward": trajectory.reward,
        "policy_versions": trajectory.policy_versions,
        "trained_at_step": trained_at_step,
        "status": trajectory.status,
    }
    if len(samples) > 1:
        record["more_samples"] = [s.model_dump(mode="json") for s in samples[1:]]
    return record


def _run_store(run_dir: Path) -> TrajectoryStore | PostgresTrajectoryStore:
    """The store of the run in ``run_dir``: ``trajectories.db``, else the PostgreSQL store its ``config.yaml``
    names (blocking: call it in a worker thread)."""
    path = run_dir / STORE_FILE
    config = run_dir / CONFIG_FILE
    if path.is_file() or not config.is_file():
        return TrajectoryStore(path)
    try:
        saved = yaml.safe_load(config.read_text(encoding="utf-8"))
        data = DataConfig.model_validate(saved.get("data", {}) if isinstance(saved, dict) else {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError):
        return TrajectoryStore(path)  # not a config this AgentScope reads: no PostgreSQL store to name
    return open_store(data, run_dir)


async def export_trajectories(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Write every stored trajectory of ``run_dir`` to ``out`` as JSON lines (:data:`EXPORT_KEYS`); returns how
    many."""
    store = await anyio.to_thread.run_sync(_run_store, Path(run_dir))
    if not await store.exists():
        raise UsageError(
            f"{run_dir} holds no trajectory store ({STORE_FILE}, or the PostgreSQL one of its config)"
        )
    target = Path(out)
    count = 0
    lines: list[str] = []

    def flush(text: str, mode: str) -> None:
        with target.open(mode, encoding="utf-8") as f:
            f.write(text)

    await anyio.to_thread.run_sync(flush, "", "w")
    async with store:
        async for trajectory, step in store.iter_all():
            lines.append(json.dumps(export_record(trajectory, step), separators=(",", ":")))
            count += 1
            if len(lines) >= 256:
                await anyio.to_thread.run_sync(flush, "\n".join(lines) + "\n", "a")
                lines = []
    if lines:
        await anyio.to_thread.run_sync(flush, "\n".join(lines) + "\n", "a")
    return count
