"""Reinforcement learning for agents: trajectories captured at the model boundary, a rollout service, an
environment cluster, a data manager and a trainer, run by ``agentscope rl train``.

From Python::

    from agentscope.rl import load_config, train

    config = load_config("examples/rl/quickstart.yaml", ["schedule.time_limit_s=60"])
    await sft(config, "runs/qs")  # optional: train() warm-starts the policy itself when it has to
    result = await train(config, "runs/qs")

Only the data model is imported eagerly; the runner (``RLConfig``, ``train``, ``sft``, ``evaluate``,
``export_trajectories``) loads on first use, and the services load torch, transformers and verl when they run
(``pip install -e '.[rl]'``).
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.rl._types import FlatSample, Task, Trajectory, TrajectoryStatus, Turn

if _typing.TYPE_CHECKING:
    from agentscope.rl._config import RLConfig, load_config
    from agentscope.rl._evaluation import evaluate
    from agentscope.rl._export import export_trajectories
    from agentscope.rl._runner import TrainResult, sft, train

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

# The runner imports the environment cluster, the data manager and the scheduler (~0.5 s): load on use.
__getattr__ = _lazy_exports(
    __name__,
    {
        "RLConfig": "_config",
        "load_config": "_config",
        "TrainResult": "_runner",
        "evaluate": "_evaluation",
        "export_trajectories": "_export",
        "sft": "_runner",
        "train": "_runner",
    },
    extras={"_evaluation": "rl", "_export": "rl", "_runner": "rl"},
)
