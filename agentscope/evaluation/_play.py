"""How an evaluation plays episodes: the RL system's environment cluster, the agent built per episode around the
model under evaluation, its steps and tokens counted through the agent's hooks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from agentscope.agents import AgentBase, AgentFactory, build_agent
from agentscope.evaluation._results import EpisodeResult
from agentscope.exceptions import UsageError
from agentscope.message import Msg, ToolUseBlock
from agentscope.models import ChatModel, ChatResponse, ModelSettings, ResponseFormat, ToolChoice, ToolSchema
from agentscope.rl import Task, Trajectory, Turn
from agentscope.rl.envs import EnvCluster, EnvFactory
from agentscope.tools import Toolkit

__all__ = ["Price", "play"]


@dataclass(frozen=True, slots=True)
class Price:
    """What a model's tokens cost, in dollars per million tokens."""

    input_per_million: float
    """Dollars per million prompt tokens."""
    output_per_million: float
    """Dollars per million generated tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The cost of that many tokens."""
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6

    @classmethod
    def parse(cls, text: str) -> Price:
        """``"INPUT,OUTPUT"`` (dollars per million tokens), e.g. ``"0.15,0.6"``. Raises UsageError otherwise."""
        parts = [p.strip() for p in text.split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 2 or any(v < 0 for v in values):
            raise UsageError(
                f"price {text!r}: expected INPUT,OUTPUT in dollars per million tokens, e.g. 0.15,0.6"
            )
        return cls(values[0], values[1])


@dataclass(slots=True)
class _Counts:
    """What an episode's agent did, counted through its hooks."""

    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class _EpisodeModel(ChatModel):
    """What the cluster hands the agent factory for one episode: the model under evaluation (when there is one)
    and the episode's session id, which ties the agent's hooks to the episode's result."""

    def __init__(self, session_id: str, inner: ChatModel | None) -> None:
        self.session_id = session_id
        self.inner = inner
        self.model_name = inner.model_name if inner is not None else "none"

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        if self.inner is None:  # the factory was handed this carrier instead of its own model: a bug of ours
            raise RuntimeError("no model was given to the evaluation")
        return await self.inner.generate(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format, settings=settings
        )


class _NoCapture:
    """The rollout client of an evaluation: sessions only name episodes (no token ids are captured)."""

    def open_session(self, session_id: str | None = None) -> str:
        return session_id or uuid.uuid4().hex

    def close_session(self, session_id: str) -> list[Turn]:
        return []


async def play(
    todo: list[tuple[Task, int]],
    factory: AgentFactory,
    env_factory: EnvFactory,
    model: ChatModel | None,
    concurrency: int,
    max_turns: int | None,
    episode_timeout_s: float | None,
    price: Price | None,
    record: Callable[[EpisodeResult], Awaitable[None]],
) -> None:
    """Play ``todo`` (task, repeat) pairs on an environment cluster of ``concurrency`` slots, the agent built by
    ``factory`` around ``model`` per episode; hand each finished episode's result to ``record``."""
    counts: dict[str, _Counts] = {}
    repeats: dict[str, tuple[Task, int]] = {}

    async def build(*, model: ChatModel, toolkit: Toolkit) -> AgentBase:
        carrier = model
        assert isinstance(carrier, _EpisodeModel)
        agent = await build_agent(
            factory, toolkit=toolkit, **({} if carrier.inner is None else {"model": carrier.inner})
        )
        tally = counts.setdefault(carrier.session_id, _Counts())

        def count_model(_agent: AgentBase, response: ChatResponse) -> None:
            tally.model_calls += 1
            if response.usage is not None:
                tally.input_tokens += response.usage.input_tokens
                tally.output_tokens += response.usage.output_tokens

        def count_tool(_agent: AgentBase, _call: ToolUseBlock) -> None:
            tally.tool_calls += 1

        agent.register_hook("post_reasoning", "evaluation", count_model)
        agent.register_hook("pre_acting", "evaluation", count_tool)
        return agent

    cluster = EnvCluster(
        env_factory,
        build,
        _NoCapture(),
        slots=concurrency,
        episode_timeout_s=episode_timeout_s,
        max_turns=max_turns,
        model_factory=lambda session_id: _EpisodeModel(session_id, model),
    )

    async def feed() -> AsyncIterator[tuple[Task, str]]:
        for task, repeat in todo:
            group = f"{task.content_key}#{repeat}"
            repeats[group] = (task, repeat)
            yield task, group

    async def sink(trajectory: Trajectory) -> None:
        task, repeat = repeats[trajectory.group_id]
        tally = counts.pop(trajectory.trajectory_id, _Counts())
        await record(_result(task, repeat, trajectory, tally, price))

    try:
        await cluster.run(feed(), sink)
    finally:
        await cluster.aclose()


def _result(
    task: Task, repeat: int, trajectory: Trajectory, tally: _Counts, price: Price | None
) -> EpisodeResult:
    metrics = trajectory.metrics
    return EpisodeResult(
        task_key=task.content_key,
        repeat=repeat,
        task_id=task.id,
        status=trajectory.status,
        success=trajectory.success,
        reward=trajectory.reward,
        model_calls=tally.model_calls,
        tool_calls=tally.tool_calls,
        input_tokens=tally.input_tokens,
        output_tokens=tally.output_tokens,
        latency_s=round(metrics.get("env/episode_s", 0.0), 4),
        cost=price.cost(tally.input_tokens, tally.output_tokens) if price is not None else None,
        trace_id=trajectory.trace_id,
        error=trajectory.error,
        info={k: v for k, v in metrics.items() if k.startswith("env/") and k not in _CLUSTER_METRICS},
    )


_CLUSTER_METRICS = frozenset({"env/episode_s", "env/busy_s", "env/steps"})
"""Trajectory metrics the cluster adds itself (the rest under ``env/`` are the verifier's)."""
