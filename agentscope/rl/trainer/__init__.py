"""The trainer: verl-layout batches, policy-gradient updates with verl's algorithms, asynchronous checkpoints.

Two backends (``TrainerConfig.backend``): :class:`Trainer` (ours, single process, verl's loss functions) and
:class:`VerlFSDPTrainer` (verl's own FSDP actor worker, configured through :func:`verl_overrides`).

:class:`TrainerConfig`, :class:`CheckpointError` and :class:`TrainerLostError` are light; the rest loads torch, transformers and verl when
first used (``pip install -e '.[rl]'``, and verl as ``scripts/setup.d/30-verl.sh`` installs it).
"""

from __future__ import annotations

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.rl.trainer._config import TrainerConfig
from agentscope.rl.trainer._errors import CheckpointError, TrainerLostError

if _typing.TYPE_CHECKING:
    from agentscope.rl.trainer._batch import Batch, TrainBatch, build_batch
    from agentscope.rl.trainer._checkpoint import AsyncCheckpointer, CheckpointState
    from agentscope.rl.trainer._trainer import Trainer
    from agentscope.rl.trainer._verl_fsdp import VerlFSDPTrainer
    from agentscope.rl.trainer._verl_hydra import compose_verl_config, verl_overrides

__all__ = [
    "AsyncCheckpointer",
    "Batch",
    "CheckpointError",
    "CheckpointState",
    "TrainBatch",
    "Trainer",
    "TrainerConfig",
    "TrainerLostError",
    "VerlFSDPTrainer",
    "build_batch",
    "compose_verl_config",
    "verl_overrides",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "AsyncCheckpointer": "_checkpoint",
        "Batch": "_batch",
        "CheckpointState": "_checkpoint",
        "TrainBatch": "_batch",
        "Trainer": "_trainer",
        "VerlFSDPTrainer": "_verl_fsdp",
        "build_batch": "_batch",
        "compose_verl_config": "_verl_hydra",
        "verl_overrides": "_verl_hydra",
    },
    extras={"_batch": "rl", "_checkpoint": "rl", "_trainer": "rl", "_verl_fsdp": "rl", "_verl_hydra": "rl"},
    note=", then bash scripts/setup.d/30-verl.sh (verl==0.9.1 --no-deps and its CPU dependencies)",
)
