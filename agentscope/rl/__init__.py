"""Reinforcement learning for agents: trajectories captured at the model boundary, a rollout service, an
environment cluster, a data manager and a trainer, run by ``agentscope rl train``.

From Python::

    from agentscope.rl import load_config, train

    config = load_config("examples/rl/quickstart.yaml", ["schedule.time_limit_s=60"])
    await sft(config, "runs/qs")  # optional: train() warm-starts the policy itself when it has to
    result = await train(config, "runs/qs")

Only the data model is imported eagerly; the runner (``RLConfig``, ``train``, ``sft``, ``evaluate``,
``export_trajectories``) loads on first use, and the services load torch, transformers and verl when they run
(``pip install 'agentscope[rl]'``).
"""

import typing as _typing

from agentscope.rl._types import FlatSample, Task, Trajectory, TrajectoryStatus, Turn

if _typing.TYPE_CHECKING:
    from agentscope.rl._config import RLConfig, load_config
    from agentscope.rl._runner import TrainResult, evaluate, export_trajectories, sft, train

__all__ = [
    "FlatSample",
    "RLConfig",
    "Task",
    "TrainResult",
    "Trajectory",
    "TrajectoryStatus",
    "Turn",
    "evaluate",
    "export_trajectories",
    "load_config",
    "sft",
    "train",
]

_LAZY = {
    "RLConfig": "agentscope.rl._config",
    "load_config": "agentscope.rl._config",
    "TrainResult": "agentscope.rl._runner",
    "evaluate": "agentscope.rl._runner",
    "export_trajectories": "agentscope.rl._runner",
    "sft": "agentscope.rl._runner",
    "train": "agentscope.rl._runner",
}


def __getattr__(name: str) -> _typing.Any:
    # The runner imports the environment cluster, the data manager and the scheduler (~0.5 s): load on use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentscope.rl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
