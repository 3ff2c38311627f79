"""What ``agentscope rl train --resume`` checks and repairs before a run goes on from its checkpoint.

- The config: compared with the one the checkpoint was trained under, field by field. Only
  :data:`RESUMABLE_FIELDS` (how long to run, how often to checkpoint, threads, tracing) may change silently; any
  other change is refused with a :class:`~agentscope.exceptions.ConfigError` listing the fields, unless the caller
  allows it (``--allow-config-change``).
- The logs: ``metrics.jsonl`` and ``batches.jsonl`` lose the lines of the steps after the checkpoint (those steps
  are trained again) and any line cut short by the crash, so each step appears once.
- The record: one line per resume in ``resumes.jsonl`` (the checkpoint, what was refused and why, the config
  changes, what the data manager undid).

Plain file I/O: call these in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import anyio.to_thread
import yaml
from pydantic import JsonValue

from agentscope.exceptions import ConfigError
from agentscope.rl._config import RLConfig
from agentscope.rl._files import write_text_atomically
from agentscope.rl.trainer import CheckpointError

if TYPE_CHECKING:
    from agentscope.rl.trainer import CheckpointState

__all__ = [
    "RESUMABLE_FIELDS",
    "STORE_FIELDS",
    "check_config",
    "config_changes",
    "load_for_resume",
    "saved_config",
    "truncate_log",
]

RESUMABLE_FIELDS: Final = frozenset(
    {
        "schedule.steps",
        "schedule.checkpoint_every",
        "schedule.keep_checkpoints",
        "schedule.time_limit_s",
        "evaluation.attempts",
        "evaluation.temperature",
        "evaluation.before_after",
        "evaluation.breakdown",
        "evaluation.training_tasks",
        "threads",
        "rollout.threads",
        "rollout.servers",
        "rollout.backend",
        "data.placement",  # where the data manager runs: the store and the cursor are the same either way
        "data.cpus",
        "env.backend",
        "env.workers",
        "env.worker_cpus",
        "trainer.placement",  # where the trainer runs, not what it computes (the same updates either way)
        "trainer.cpus",
        "trainer.gpus",
        "trainer.ranks",  # verl's data-parallel ranks: the same updates on any number (the state is saved full)
        "sft.threads",  # the warm start is not re-run on resume
        "trace",
        "trace_sample_rate",
        "policy.cache_dir",
    }
)
"""Config fields a resumed run may change without ``--allow-config-change``: none changes what is learned."""

STORE_FIELDS: Final = frozenset({"data.store", "data.namespace"})
"""Config fields no resume may change, even with ``--allow-config-change``: the run's trajectories stay in the store
it was trained with (``data.url`` may change with that flag: the same database, reached at another address)."""

_ABSENT: Final = "<absent>"

Change = tuple[JsonValue, JsonValue]


def _flatten(data: Mapping[str, JsonValue], prefix: str = "") -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_changes(saved: Mapping[str, JsonValue], config: RLConfig) -> dict[str, Change]:
    """Dotted field -> (saved value, new value) for every field that differs.

    A field the saved config lacks (added to AgentScope since) counts as changed only when the new value is not
    its default.
    """
    before = _flatten(saved)
    after = _flatten(config.model_dump(mode="json"))
    defaults = _flatten(RLConfig.model_construct().model_dump(mode="json"))
    changes: dict[str, Change] = {}
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name, _ABSENT), after.get(name, _ABSENT)
        if old == new or (old == _ABSENT and name in defaults and new == defaults[name]):
            continue
        changes[name] = (old, new)
    return changes


def check_config(
    saved: Mapping[str, JsonValue], config: RLConfig, *, allow: bool, source: str
) -> dict[str, Change]:
    """The changes of ``config`` against ``saved`` (the config of the checkpoint in ``source``).

    Raises:
        ConfigError: a field outside :data:`RESUMABLE_FIELDS` changed and ``allow`` is False, or a field of
            :data:`STORE_FIELDS` changed (whatever ``allow``); the message lists each change.
    """
    changes = config_changes(saved, config)
    moved = [f"{name}: {old!r} -> {new!r}" for name, (old, new) in changes.items() if name in STORE_FIELDS]
    if moved:
        raise ConfigError(
            f"--resume: the run's trajectories are in the store it was trained with ({source}), and a resume "
            f"cannot move them: {'; '.join(moved)}. Resume with that store, or start a new run."
        )
    refused = {name: change for name, change in changes.items() if name not in RESUMABLE_FIELDS}
    if refused and not allow:
        listed = "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in refused.items())
        raise ConfigError(
            f"--resume: the config differs from the one the checkpoint was trained with ({source}) in "
            f"{len(refused)} field(s): {listed}. Resume with that config, or pass --allow-config-change to go on "
            "with the new one."
        )
    return changes


def saved_config(
    extra: Mapping[str, JsonValue], config_file: Path
) -> tuple[dict[str, JsonValue], str] | None:
    """The config a checkpoint was trained with (its ``extra["config"]``, else the run's ``config.yaml``) and
    where it came from; ``None`` when neither exists."""
    saved = extra.get("config")
    if isinstance(saved, dict):
        return saved, "the checkpoint's extra.json"
    if config_file.is_file():
        try:
            loaded: object = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"--resume: {config_file} cannot be read: {e}") from e
        if isinstance(loaded, dict):
            return cast(dict[str, JsonValue], loaded), str(config_file)
    return None


def truncate_log(path: Path, step: int) -> int:
    """Keep the lines of ``path`` (JSON lines with a ``step``) up to ``step``; drop later steps and lines cut
    short or unreadable. Rewritten atomically; returns how many lines were dropped (0: file untouched)."""
    if not path.is_file():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            record: object = json.loads(line)
            keep = (
                line.endswith("\n")
                and isinstance(record, dict)
                and int(cast(dict[str, Any], record)["step"]) <= step
            )
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomically(path, "".join(kept))
    return dropped


async def load_for_resume(
    config: RLConfig, run_dir: Path, config_file: Path, *, allow_config_change: bool
) -> tuple[CheckpointState, dict[str, Change]]:
    """The checkpoint ``--resume`` goes on from, and the config changes allowed against it.

    Raises:
        CheckpointError: the run has no checkpoint, or none of its checkpoints loads (naming each and why).
        ConfigError: the config changed outside :data:`RESUMABLE_FIELDS` and ``allow_config_change`` is False.
    """
    from agentscope.rl.trainer import AsyncCheckpointer

    checkpoint = await anyio.to_thread.run_sync(AsyncCheckpointer.load_latest, run_dir)
    if checkpoint is None:
        raise CheckpointError(
            f"--resume: {run_dir / 'checkpoints'} holds no checkpoint (the run stopped before its first one): "
            "start it again without --resume, in a new --run-dir"
        )
    found = await anyio.to_thread.run_sync(saved_config, checkpoint.extra, config_file)
    if found is None:
        return checkpoint, {}
    saved, source = found
    changes = check_config(saved, config, allow=allow_config_change, source=f"{checkpoint.path}: {source}")
    return checkpoint, changes
