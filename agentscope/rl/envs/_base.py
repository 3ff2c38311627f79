"""The environment protocol: reset with a task, offer tools, judge the final answer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NoReturn

from pydantic import JsonValue

from agentscope.exceptions import AgentScopeError
from agentscope.message import Msg
from agentscope.rl._types import Task
from agentscope.tools import Toolkit

__all__ = ["EnvResult", "Environment", "EnvironmentCrashed", "Observation"]


class EnvironmentCrashed(AgentScopeError):
    """The environment broke (its sandbox died, its state is unusable): the episode is failed by infrastructure.

    Raised by :meth:`Environment.fail`. Inside a tool the toolkit turns it into an error result, but the cluster
    has already seen the failure: it stops the episode, marks it ``failed_infra`` and restarts the environment.
    """


@dataclass(slots=True)
class Observation:
    """What an episode starts with."""

    msg: Msg
    """The first message the agent receives (the task as the agent reads it)."""
    toolkit: Toolkit
    """The tools the environment offers for this episode; calling them is how the agent acts."""


@dataclass(slots=True)
class EnvResult:
    """The verifier's judgement of an episode."""

    reward: float
    """Final reward (per-step rewards added with :meth:`Environment.add_step_reward` come on top)."""
    success: bool
    """Whether the task was solved."""
    info: dict[str, JsonValue] = field(default_factory=dict[str, JsonValue])
    """Anything worth keeping about the judgement (stored in the trajectory's metrics when numeric)."""


class Environment(ABC):
    """An environment an agent acts in: reset with a task, act through its tools, judged at the end.

    One instance serves one episode at a time and is reused for the next (``reset`` starts over); the cluster
    creates one per slot and replaces it after a crash. Implement :meth:`reset` and :meth:`evaluate`; override
    :meth:`close` when the environment holds resources (a sandbox, a browser).

    Tools (usually bound methods registered in the toolkit that :meth:`reset` returns) may call
    :meth:`add_step_reward` to give a per-step reward for the turn that requested them, and :meth:`fail` when the
    environment itself broke. An exception raised by :meth:`reset` or :meth:`evaluate` counts as a crash too.
    The runner calls :meth:`begin_episode` before each reset and :meth:`take_step_rewards` after each tool call.
    """

    def __init__(self) -> None:
        self._step_rewards: list[float] = []
        self._failure: str | None = None

    @abstractmethod
    async def reset(self, task: Task) -> Observation:
        """Start an episode of ``task``: the first message and the tools the agent gets."""

    @abstractmethod
    async def evaluate(self, reply: Msg) -> EnvResult:
        """Judge the agent's final reply (and whatever state the episode left) with a verifiable reward."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most environments hold nothing
        """Release what the environment holds. Called once, when its slot shuts down or after a crash."""

    # ------------------------------------------------------------------ for tools

    def add_step_reward(self, reward: float) -> None:
        """Reward the turn that requested the running tool call (attached to that turn of the trajectory)."""
        self._step_rewards.append(float(reward))

    def fail(self, reason: str) -> NoReturn:
        """Declare the environment broken: the episode ends as ``failed_infra`` and the environment is replaced."""
        self._failure = reason
        raise EnvironmentCrashed(reason)

    @property
    def failure(self) -> str | None:
        """Why the environment declared itself broken, or None while it is healthy."""
        return self._failure

    # ------------------------------------------------------------------ for the runner

    def begin_episode(self) -> None:
        """Forget the previous episode's pending step rewards and failure.

        Called by whatever plays the environment (:class:`~agentscope.rl.envs.EnvCluster`) before each
        :meth:`reset`, so that a reused environment starts every episode clean.
        """
        self._step_rewards = []
        self._failure = None

    def take_step_rewards(self) -> list[float]:
        """Return the step rewards added since the last call, in order, and clear them.

        Called by whatever plays the environment after each tool call, to credit the turn that requested it.
        """
        rewards, self._step_rewards = self._step_rewards, []
        return rewards
