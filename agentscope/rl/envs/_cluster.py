"""EnvCluster: up to E episodes at once, scheduled per trajectory, with timeouts and crash recovery.

What an episode can end as::

    the agent replied, the verifier judged it          -> ok (truncated when the agent hit its step limit)
    more model calls than max_turns                     -> truncated (the last answer is judged)
    the conversation outgrew the context window
      (ContextLengthExceeded)                            -> truncated (the last answer is judged; ``error`` says
                                                            why, and ``env/context_exceeded`` counts it); when
                                                            the first prompt already does not fit: failed_infra
    reset/evaluate raised, a tool called env.fail(),
      a model call or env step ran past step_timeout_s,
      the episode ran past episode_timeout_s,
      the rollout service failed (any other ModelError) -> failed_infra, the environment is replaced
    the agent itself raised                             -> failed_agent
    abort() picked it (it can no longer be trained)     -> aborted

Every finished episode (whatever its status) goes to the sink, so the store keeps a record of each one.
The clock is the event loop's (``anyio.current_time()``), so the cluster runs unchanged on a virtual-time loop.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

import anyio

from agentscope import tracing
from agentscope._errors import unwrap_group
from agentscope.agents import AgentBase
from agentscope.exceptions import ContextLengthExceeded, ModelError
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock, new_id
from agentscope.models import ChatModel, ChatResponse
from agentscope.rl._types import Task, Trajectory, TrajectoryStatus, Turn
from agentscope.rl.envs._agent import AgentFactory
from agentscope.rl.envs._base import Environment, EnvironmentCrashed, EnvResult

if TYPE_CHECKING:
    from agentscope.rl.envs._base import Observation

__all__ = ["EnvCluster", "EnvFactory", "LiveEpisode", "ModelFactory", "RolloutClient", "TrajectorySink"]

logger = logging.getLogger("agentscope.rl.envs")

_T = TypeVar("_T")

EnvFactory: TypeAlias = Callable[[], Environment | Awaitable[Environment]]
"""Builds one environment (sync or async); called once per slot and again after each crash."""

TrajectorySink: TypeAlias = Callable[[Trajectory], Awaitable[None]]
"""Receives every finished episode (the data manager's ``put``)."""

ModelFactory: TypeAlias = Callable[[str], ChatModel]
"""Builds the policy model an agent uses for one rollout session (default: ``RolloutChatModel(service, sid)``)."""


class RolloutClient(Protocol):
    """What the cluster needs of the rollout service: sessions that capture the turns of one episode."""

    def open_session(self, session_id: str | None = None) -> str:
        """Start capturing an episode's turns; returns the session id."""
        ...

    def close_session(self, session_id: str) -> list[Turn]:
        """Stop capturing and return the turns, in order."""
        ...


@dataclass(slots=True, eq=False)
class LiveEpisode:
    """An episode in progress, as :meth:`EnvCluster.abort` predicates and :meth:`EnvCluster.live` see it."""

    task: Task
    """The task being played."""
    group_id: str
    """Its group."""
    trajectory_id: str
    """Id the finished trajectory will carry."""
    started_at: float
    """Event-loop time the episode started."""
    first_version: int | None = None
    """Policy version of its first generated token (None before the first model call returns)."""
    model_calls: int = 0
    """Model calls made so far."""
    tool_calls: int = 0
    """Tool calls made so far."""


@dataclass(slots=True, eq=False)
class _EpisodeRun:
    """The cluster's own bookkeeping for one live episode: what stops it, why, and what it has cost so far.

    :class:`LiveEpisode` is the part schedulers see; this record stays inside the cluster.
    """

    episode: LiveEpisode
    """The public view (what :meth:`EnvCluster.live` returns and abort predicates see)."""
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    """Cancelled to stop the episode (abort, fault, turn limit)."""
    task_group: anyio.abc.TaskGroup | None = None
    """Where the step timers run (None until the episode starts)."""
    timers: dict[str, anyio.CancelScope] = field(default_factory=dict[str, anyio.CancelScope])
    """Running step timers by key (``model``, ``tool:<call id>``)."""
    fault: str | None = None
    """Why infrastructure failed the episode (the first reason wins)."""
    aborted: str | None = None
    """Why :meth:`EnvCluster.abort` stopped it."""
    truncated: bool = False
    """The agent hit its step limit or the cluster's ``max_turns``."""
    last_response: ChatResponse | None = None
    """The policy's latest answer (judged when the turn limit stops the agent)."""
    turn_rewards: dict[int, float] = field(default_factory=dict[int, float])
    """Step rewards by the index of the turn that requested the tool call."""
    env_ops: int = 0
    """Environment operations in progress (tool calls may overlap)."""
    busy_since: float = 0.0
    """Loop time the environment last became busy."""
    busy_s: float = 0.0
    """Environment busy time so far."""

    def stop(self, *, fault: str | None = None, abort: str | None = None, truncate: bool = False) -> None:
        """Stop the episode, keeping the first fault and abort reason given."""
        if fault is not None and self.fault is None:
            self.fault = fault
        if abort is not None and self.aborted is None:
            self.aborted = abort
        self.truncated = self.truncated or truncate
        self.scope.cancel()


class _Gauge:
    """A time-weighted counter: integral of its value over loop time."""

    def __init__(self) -> None:
        self.value = 0
        self.integral = 0.0
        self._since: float | None = None

    def add(self, delta: int) -> None:
        now = anyio.current_time()
        if self._since is not None:
            self.integral += self.value * (now - self._since)
        self._since = now
        self.value += delta

    def total(self) -> float:
        if self._since is None:
            return 0.0
        return self.integral + self.value * (anyio.current_time() - self._since)


class EnvCluster:
    """Runs up to ``slots`` episodes at once; a finished episode's slot takes the next task at once (per-trajectory
    scheduling, as DART does), so one slow episode never holds the others back.

    Each slot keeps an environment and reuses it (``reset`` per episode); a crashed one is closed and replaced.
    An episode opens a rollout session, builds the agent with ``agent_factory(model=..., toolkit=...)`` around
    the policy model of that session, runs it on the environment's first message, has the environment judge the
    reply, and closes the session, whose turns (token ids, log-probs, versions) become the trajectory.

    Args:
        env_factory: Builds one environment (sync or async).
        agent_factory: Builds the agent of an episode (see :data:`AgentFactory`).
        rollout: The rollout service (sessions capture the turns).
        slots: Most episodes at once (E).
        step_timeout_s: Longest a model call or an environment operation (reset, a tool call, evaluate) may
            take; past it the episode is failed by infrastructure and the environment replaced. None: no limit.
        episode_timeout_s: Longest an episode may take, with the same consequence. None: no limit.
        max_turns: Most model calls per episode; past it the episode ends as ``truncated``. None: no limit.
        model_factory: Builds the policy model of a session; default ``RolloutChatModel(rollout, session_id)``.
    """

    def __init__(
        self,
        env_factory: EnvFactory,
        agent_factory: AgentFactory,
        rollout: RolloutClient,
        *,
        slots: int,
        step_timeout_s: float | None = None,
        episode_timeout_s: float | None = None,
        max_turns: int | None = None,
        model_factory: ModelFactory | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        for name, value in (("step_timeout_s", step_timeout_s), ("episode_timeout_s", episode_timeout_s)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.env_factory = env_factory
        self.agent_factory = agent_factory
        self.rollout = rollout
        self.slots = slots
        self.step_timeout_s = step_timeout_s
        self.episode_timeout_s = episode_timeout_s
        self.max_turns = max_turns
        self._model_factory = model_factory
        self._limiter = anyio.CapacityLimiter(slots)
        self._idle_envs: list[Environment] = []
        self._all_envs: set[Environment] = set()
        self._live: dict[str, _EpisodeRun] = {}
        self._occupied = _Gauge()
        self._busy = _Gauge()
        self._started_at: float | None = None
        self._counts: dict[str, int] = {}
        self._closed = False

    # ------------------------------------------------------------------ public API

    async def run(self, tasks: AsyncIterator[tuple[Task, str]], sink: TrajectorySink) -> None:
        """Play ``(task, group_id)`` pairs from ``tasks`` on all slots until it is exhausted, sending every
        finished trajectory to ``sink``. The iterator may wait (that is how the runner throttles generation);
        a slot pulls its next task the moment its episode ends."""
        pull_lock = anyio.Lock()
        self._mark_started()

        async def slot() -> None:
            while True:
                async with pull_lock:
                    try:
                        task, group_id = await anext(tasks)
                    except StopAsyncIteration:
                        return
                trajectory = await self.run_episode(task, group_id)
                await sink(trajectory)

        async with anyio.create_task_group() as tg:
            for _ in range(self.slots):
                tg.start_soon(slot)

    async def run_episode(self, task: Task, group_id: str, trajectory_id: str | None = None) -> Trajectory:
        """Play one episode of ``task`` in a free slot (waiting for one) and return its trajectory (with id
        ``trajectory_id``, default a new one; it is also the episode's rollout session id)."""
        if self._closed:
            raise RuntimeError("the cluster is closed")
        self._mark_started()
        async with self._limiter:
            episode = LiveEpisode(
                task=task,
                group_id=group_id,
                trajectory_id=trajectory_id or new_id(),
                started_at=anyio.current_time(),
            )
            run = _EpisodeRun(episode)
            self._live[episode.trajectory_id] = run
            self._occupied.add(1)
            env: Environment | None = None
            try:
                env = await self._acquire_env()
                attributes = {"agentscope.rl.task_id": task.id, "agentscope.rl.group_id": group_id}
                with tracing.span(f"episode {task.id}", "env", attributes) as span:
                    trajectory, healthy = await self._play(env, run)
                    if span.recording:
                        trajectory.trace_id = span.trace_id_hex
                        span.set_attributes(
                            {
                                "agentscope.rl.trajectory_id": trajectory.trajectory_id,
                                "agentscope.rl.status": trajectory.status,
                                "agentscope.rl.reward": trajectory.reward,
                                "agentscope.rl.turns": len(trajectory.turns),
                            }
                        )
                        if trajectory.error is not None and trajectory.status not in ("ok", "truncated"):
                            span.set_status("error", trajectory.error)
            except BaseException:
                if env is not None:  # cancelled from outside: the environment's state is unknown
                    await self._discard_env(env)
                raise
            finally:
                self._occupied.add(-1)
                del self._live[episode.trajectory_id]
        if healthy:
            self._idle_envs.append(env)
        else:
            self._count("env/restarts")
            await self._discard_env(env)
        self._count("env/episodes")
        self._count(f"env/episodes_{trajectory.status}")
        return trajectory

    def live(self) -> list[LiveEpisode]:
        """Episodes in progress."""
        return [run.episode for run in self._live.values()]

    def abort(
        self, predicate: Callable[[LiveEpisode], bool], reason: str = "aborted by the scheduler"
    ) -> int:
        """Stop the live episodes ``predicate`` picks (status ``aborted``); returns how many. Their slots are
        refilled at once. Used to stop episodes that could no longer be trained (too stale)."""
        picked = [run for run in self._live.values() if run.aborted is None and predicate(run.episode)]
        for run in picked:
            run.stop(abort=reason)
        return len(picked)

    def stats(self) -> dict[str, float]:
        """Cumulative measurements since the cluster started.

        ``env/slot_occupancy``: time-average fraction of slots holding a live episode. ``env/utilisation``:
        environment busy time (reset, tool calls, evaluate) over slots × wall time. ``env/episodes`` and
        ``env/episodes_<status>``: finished episodes. ``env/restarts``: environments replaced after a crash.
        ``env/live``: episodes in progress. ``env/slot_s`` and ``env/busy_s``: the raw integrals.
        """
        elapsed = 0.0 if self._started_at is None else anyio.current_time() - self._started_at
        capacity = self.slots * elapsed
        occupied = self._occupied.total()
        busy = self._busy.total()
        out: dict[str, float] = {
            "env/slot_occupancy": occupied / capacity if capacity > 0 else 0.0,
            "env/utilisation": busy / capacity if capacity > 0 else 0.0,
            "env/live": float(len(self._live)),
            "env/slot_s": occupied,
            "env/busy_s": busy,
            "env/wall_s": elapsed,
            "env/episodes": 0.0,
            "env/restarts": 0.0,
        }
        out.update({k: float(v) for k, v in self._counts.items()})
        return out

    async def aclose(self) -> None:
        """Close every idle environment (call once no episode runs)."""
        self._closed = True
        envs, self._idle_envs = self._idle_envs, []
        for env in envs:
            await self._discard_env(env)

    async def __aenter__(self) -> EnvCluster:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ environments

    def _mark_started(self) -> None:
        if self._started_at is None:
            self._started_at = anyio.current_time()
            self._occupied.add(0)
            self._busy.add(0)

    def _count(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    async def _acquire_env(self) -> Environment:
        if self._idle_envs:
            return self._idle_envs.pop()
        env = self.env_factory()
        if inspect.isawaitable(env):
            env = await env
        self._all_envs.add(env)
        return env

    async def _discard_env(self, env: Environment) -> None:
        self._all_envs.discard(env)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.step_timeout_s or 30.0):
            try:
                await env.close()
            except Exception:
                logger.warning("closing an environment failed", exc_info=True)

    # ------------------------------------------------------------------ one episode

    def _model(self, session_id: str) -> ChatModel:
        if self._model_factory is not None:
            return self._model_factory(session_id)
        from agentscope.rl.rollout import RolloutChatModel  # the rollout package loads torch lazily

        return RolloutChatModel(self.rollout, session_id)  # type: ignore[arg-type]

    async def _play(self, env: Environment, run: _EpisodeRun) -> tuple[Trajectory, bool]:
        """Run the episode; returns its trajectory and whether the environment is still healthy."""
        episode = run.episode
        env.begin_episode()
        session_id = self.rollout.open_session(episode.trajectory_id)  # one id for the session and trajectory
        try:
            model = self._model(session_id)
        except BaseException:
            self.rollout.close_session(session_id)
            raise
        reply: Msg | None = None
        result: EnvResult | None = None
        error: str | None = None
        status: TrajectoryStatus = "ok"
        healthy = True
        try:
            with run.scope:
                with anyio.move_on_after(self.episode_timeout_s or math.inf) as deadline:
                    async with anyio.create_task_group() as tg:
                        run.task_group = tg
                        observation: Observation = await self._env_op(run, "reset", env.reset(episode.task))
                        agent = self.agent_factory(model=model, toolkit=observation.toolkit)
                        if inspect.isawaitable(agent):
                            agent = await agent
                        self._instrument(agent, env, run)
                        reply = await agent(observation.msg)
                        if reply.metadata.get("max_iters_reached"):
                            run.truncated = True
                        result = await self._env_op(run, "evaluate", env.evaluate(reply))
                        tg.cancel_scope.cancel()  # stop the step timers
                if deadline.cancelled_caught:
                    run.stop(fault=f"episode timed out after {self.episode_timeout_s:g}s")
        except Exception as exc:
            inner = unwrap_group(exc)
            if isinstance(inner, _EpisodeStopped):
                pass  # the run record says what happened
            elif isinstance(inner, ContextLengthExceeded) and run.fault is None:
                if run.last_response is None:  # not even the first prompt fits: nothing to judge or train
                    run.fault = (
                        f"{type(inner).__name__}: {inner} (the episode's first prompt: raise the context)"
                    )
                else:  # out of room, as at max_turns: judged below on what the agent did
                    run.truncated = True
                    error = f"{type(inner).__name__}: {inner}"
            elif isinstance(inner, ModelError | EnvironmentCrashed):
                run.fault = run.fault or f"{type(inner).__name__}: {inner}"
            elif run.fault is None:
                status, error = "failed_agent", f"{type(inner).__name__}: {inner}"
                logger.info("episode %s: the agent raised", episode.trajectory_id, exc_info=inner)
        finally:
            turns = self.rollout.close_session(session_id)
            for scope in run.timers.values():
                scope.cancel()
            self._end_env_ops(run)

        if run.fault is None and env.failure is not None:
            run.fault = f"environment failed: {env.failure}"
        if run.aborted is not None:
            status, error = "aborted", run.aborted
        elif run.fault is not None:
            status, error, healthy = "failed_infra", run.fault, False
        elif status == "ok" and run.truncated and result is None:
            # Stopped at max_turns: judge the last answer the policy gave.
            last = run.last_response
            reply = last.to_msg("agent") if last is not None else Msg(role="assistant", content="")
            with anyio.CancelScope() as scope:
                run.scope = scope
                try:
                    result = await self._env_op(run, "evaluate", env.evaluate(reply))
                except Exception as exc:
                    run.fault = f"evaluate raised {type(exc).__name__}: {exc}"
            if run.fault is not None:
                status, error, healthy = "failed_infra", run.fault, False
        if status == "ok" and run.truncated:
            status = "truncated"
        return self._trajectory(run, turns, status, error, result), healthy

    async def _env_op(self, run: _EpisodeRun, what: str, op: Awaitable[_T]) -> _T:
        """Await an environment operation within the step timeout, counting it as environment busy time.

        A timeout or an exception is a fault of the environment: the episode is stopped and the exception (or
        the cancellation of the episode's scope) propagates."""
        self._begin_env_op(run)
        try:
            with anyio.move_on_after(self.step_timeout_s or math.inf):
                try:
                    return await op
                except Exception as exc:
                    run.stop(fault=f"{what} raised {type(exc).__name__}: {exc}")
                    raise
            run.stop(fault=f"{what} timed out after {self.step_timeout_s:g}s")
            raise _EpisodeStopped(what)
        finally:
            self._end_env_op(run)

    def _begin_env_op(self, run: _EpisodeRun) -> None:
        run.env_ops += 1
        if run.env_ops == 1:
            run.busy_since = anyio.current_time()
            self._busy.add(1)

    def _end_env_op(self, run: _EpisodeRun) -> None:
        if run.env_ops == 0:
            return
        run.env_ops -= 1
        if run.env_ops == 0:
            run.busy_s += anyio.current_time() - run.busy_since
            self._busy.add(-1)

    def _end_env_ops(self, run: _EpisodeRun) -> None:
        while run.env_ops:
            self._end_env_op(run)

    def _start_timer(self, run: _EpisodeRun, key: str, what: str) -> None:
        if self.step_timeout_s is None or run.task_group is None:
            return
        scope = anyio.CancelScope()
        run.timers[key] = scope
        run.task_group.start_soon(self._timer, run, scope, what, self.step_timeout_s)

    @staticmethod
    async def _timer(run: _EpisodeRun, scope: anyio.CancelScope, what: str, delay_s: float) -> None:
        with scope:
            await anyio.sleep(delay_s)
            run.stop(fault=f"{what} timed out after {delay_s:g}s")

    def _stop_timer(self, run: _EpisodeRun, key: str) -> None:
        scope = run.timers.pop(key, None)
        if scope is not None:
            scope.cancel()

    def _instrument(self, agent: AgentBase, env: Environment, run: _EpisodeRun) -> None:
        """Watch the agent's model and tool calls through its hooks: turn limit, step timeouts, busy time,
        per-step rewards, policy versions, environment failures."""
        episode = run.episode
        max_turns = self.max_turns

        def pre_reasoning(_agent: AgentBase, messages: list[Msg]) -> None:
            if run.scope.cancel_called:
                raise _EpisodeStopped("stopped")
            if max_turns is not None and episode.model_calls >= max_turns:
                run.truncated = True
                raise _EpisodeStopped("turn limit")
            episode.model_calls += 1
            self._start_timer(run, "model", "a model call")

        def post_reasoning(_agent: AgentBase, response: ChatResponse) -> None:
            self._stop_timer(run, "model")
            run.last_response = response
            head = response.metadata.get("version_head", response.policy_version)
            if isinstance(head, int) and (episode.first_version is None or head < episode.first_version):
                episode.first_version = head

        def pre_acting(_agent: AgentBase, call: ToolUseBlock) -> None:
            episode.tool_calls += 1
            self._begin_env_op(run)
            self._start_timer(run, f"tool:{call.id}", f"tool call {call.name!r}")

        def post_acting(_agent: AgentBase, result: ToolResultBlock) -> None:
            self._stop_timer(run, f"tool:{result.id}")
            self._end_env_op(run)
            rewards = env.take_step_rewards()
            if rewards:
                turn = max(episode.model_calls - 1, 0)
                run.turn_rewards[turn] = run.turn_rewards.get(turn, 0.0) + sum(rewards)
            if env.failure is not None:
                run.stop(fault=f"environment failed: {env.failure}")
                raise _EpisodeStopped("environment failed")

        agent.register_hook("pre_reasoning", "rl_cluster", pre_reasoning)
        agent.register_hook("post_reasoning", "rl_cluster", post_reasoning)
        agent.register_hook("pre_acting", "rl_cluster", pre_acting)
        agent.register_hook("post_acting", "rl_cluster", post_acting)

    def _trajectory(
        self,
        run: _EpisodeRun,
        turns: list[Turn],
        status: TrajectoryStatus,
        error: str | None,
        result: EnvResult | None,
    ) -> Trajectory:
        episode = run.episode
        final = result.reward if result is not None and status in ("ok", "truncated") else 0.0
        step_total = sum(run.turn_rewards.values())
        if run.turn_rewards and turns:
            last = len(turns) - 1
            for index, reward in run.turn_rewards.items():
                turn = turns[min(index, last)]
                turn.reward = (turn.reward or 0.0) + reward
            turns[last].reward = (turns[last].reward or 0.0) + final
        metrics: dict[str, float] = {
            "env/episode_s": anyio.current_time() - episode.started_at,
            "env/busy_s": run.busy_s,
            "env/steps": float(episode.tool_calls),
            "rollout/turns": float(len(turns)),
            "env/context_exceeded": float(status == "truncated" and error is not None),
        }
        if result is not None:
            metrics.update(
                {f"env/{k}": float(v) for k, v in result.info.items() if isinstance(v, int | float)}
            )
        return Trajectory(
            trajectory_id=episode.trajectory_id,
            task_id=episode.task.id,
            group_id=episode.group_id,
            turns=turns,
            reward=final + step_total if status in ("ok", "truncated") else 0.0,
            success=bool(result is not None and result.success and status in ("ok", "truncated")),
            status=status,
            error=error,
            metrics=metrics,
        )


class _EpisodeStopped(Exception):
    """Internal: the episode was stopped (turn limit, step timeout); its :class:`_EpisodeRun` says why."""
