"""Reinforcement learning for agents: trajectories captured at the model boundary, a rollout service, an
environment cluster, a data manager and a trainer, run by ``agentscope rl train``.

Only the data model is imported eagerly; the services load torch, transformers and verl when they are used
(``pip install 'agentscope[rl]'``).
"""

from agentscope.rl._types import FlatSample, Task, Trajectory, TrajectoryStatus, Turn

__all__ = ["FlatSample", "Task", "Trajectory", "TrajectoryStatus", "Turn"]
