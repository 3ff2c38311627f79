"""The trainer: verl-layout batches, policy-gradient updates with verl's algorithms, asynchronous checkpoints.

:class:`TrainerConfig` and :class:`CheckpointError` are light; the rest loads torch, transformers and verl when
first used (``pip install 'agentscope[rl]'``, and verl as ``scripts/setup.d/30-verl.sh`` installs it).
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from agentscope.rl.trainer._config import TrainerConfig
from agentscope.rl.trainer._errors import CheckpointError

if _typing.TYPE_CHECKING:
    from agentscope.rl.trainer._batch import Batch, TrainBatch, build_batch
    from agentscope.rl.trainer._checkpoint import AsyncCheckpointer, CheckpointState
    from agentscope.rl.trainer._trainer import Trainer

__all__ = [
    "AsyncCheckpointer",
    "Batch",
    "CheckpointError",
    "CheckpointState",
    "TrainBatch",
    "Trainer",
    "TrainerConfig",
    "build_batch",
]

_LAZY = {
    "AsyncCheckpointer": "agentscope.rl.trainer._checkpoint",
    "Batch": "agentscope.rl.trainer._batch",
    "CheckpointState": "agentscope.rl.trainer._checkpoint",
    "TrainBatch": "agentscope.rl.trainer._batch",
    "Trainer": "agentscope.rl.trainer._trainer",
    "build_batch": "agentscope.rl.trainer._batch",
}
_EXTRA_HINT = (
    "agentscope.rl.trainer needs torch, transformers and verl: pip install 'agentscope[rl]', then "
    "bash scripts/setup.d/30-verl.sh (verl==0.9.1 --no-deps and its CPU dependencies)"
)


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = _importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"{_EXTRA_HINT} ({e})", name=e.name) from e
    value = getattr(module, name)
    globals()[name] = value
    return value
