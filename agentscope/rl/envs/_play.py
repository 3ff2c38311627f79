"""Play tasks with a scripted policy through the real environment cluster and agent (experts, baselines, tests)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import anyio

from agentscope.rl._types import Task, Trajectory
from agentscope.rl.envs._agent import react_agent_factory
from agentscope.rl.envs._cluster import EnvCluster, EnvFactory
from agentscope.rl.envs._scripted import ScriptedPolicy, ScriptedRollout

__all__ = ["play_scripted"]


async def play_scripted(
    env_factory: EnvFactory,
    policy: ScriptedPolicy,
    tasks: Sequence[Task],
    *,
    slots: int = 4,
    max_iters: int = 4,
    step_timeout_s: float = 60.0,
) -> list[Trajectory]:
    """Play every task once with ``policy`` (a task set's ``expert`` or ``random_policy``, say) as the model of the
    default ReAct agent, ``slots`` episodes at once; returns the trajectories in task order. With one slot the
    episodes run one after another, so a seeded random policy makes the same moves every run."""
    rollout = ScriptedRollout(policy)
    cluster = EnvCluster(
        env_factory,
        functools.partial(react_agent_factory, max_iters=max_iters),
        rollout,
        slots=slots,
        step_timeout_s=step_timeout_s,
        model_factory=rollout.model,
    )
    done: dict[str, Trajectory] = {}

    async def one(task: Task) -> None:
        done[task.id] = await cluster.run_episode(task, task.id)

    try:
        async with anyio.create_task_group() as tg:
            for task in tasks:
                tg.start_soon(one, task)
    finally:
        await cluster.aclose()
    return [done[task.id] for task in tasks]
