"""Simulated components for the schedule simulator: rollout servers, rollout service, environments, trainer.

Everything here only awaits ``anyio.sleep`` / events, so on a virtual-time loop the whole system (our real
Scheduler, EnvCluster, ReActAgent and DataManager, plus these) runs in simulated time.

- :class:`SimServer`: a rollout server with continuous batching. A decode step for B running sequences takes
  ``t0 * (1 + (B - 1) / half)`` seconds, so throughput ``B / step(B)`` is concave in B and saturates at
  ``half / t0`` tokens/s. Simulated as processor sharing with events only at arrivals, departures and pauses.
  A weight update pauses decoding for ``sync_s``.
- :class:`SimRollout`: the rollout service (sessions, token-in/token-out turns, a new session goes to the least
  loaded server among those serving the newest weights). It plays the policy: each episode's plan (tool calls, tokens per turn) is drawn when it starts.
- :class:`SimEnv`: each tool call takes a :class:`LatencyModel` draw; the verifier succeeds with the task's
  probability.
- :class:`SimTrainer`: a step costs ``fixed_s + per_token_s * tokens`` (all tokens of the flattened samples).
- :class:`HopSpec`: what crossing a process boundary costs (zero by default: everything in one process).
  ``benchmarks/scale/project.py`` sets it from ``benchmarks/scale/hops.py``'s measurements.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from agentscope.message import Msg, TextBlock, ToolUseBlock, new_id
from agentscope.models import (
    ChatModel,
    ChatResponse,
    ChatUsage,
    ModelSettings,
    ResponseFormat,
    ToolChoice,
    ToolSchema,
)
from agentscope.rl import Task, Trajectory, Turn
from agentscope.rl.envs import Environment, EnvResult, Observation
from agentscope.testing import LatencyModel
from agentscope.tools import Toolkit


@dataclass
class ServerSpec:
    t0: float = 0.015
    """Seconds per decode step at batch 1."""
    half: float = 48.0
    """Batch size at which a decode step takes twice as long as at batch 1."""
    max_batch: int = 64
    """Most sequences decoded together; more wait."""
    prefill_ratio: float = 16.0
    """Prompt tokens processed in the time of one decode token (chunked prefill)."""
    sync_s: float = 6.0
    """Decoding pauses this long while new weights are loaded."""


@dataclass
class HopSpec:
    """Costs of the hops between processes (all zero: the servers, environments and data manager in one process)."""

    call_s: float = 0.0
    """Latency each model call adds on the client's side and the wire (HTTP to an out-of-process server)."""
    frontend_s: float = 0.0
    """Server time per model call spent outside the engine (HTTP app, chat rendering, JSON), one call at a time
    per server: it caps a server at ``1 / frontend_s`` calls per second."""
    trajectory_s: float = 0.0
    """A finished trajectory's trip to the data manager (a Ray actor call from a remote env worker)."""
    publish_s: float = 0.0
    """Writing one weight version (once per version; the first server to load it waits for it). The load itself
    is :attr:`ServerSpec.sync_s`, per server."""


class SimPublisher:
    """Writes each weight version once (``publish_s``), as :class:`~agentscope.rl.rollout.WeightPublisher`."""

    def __init__(self, publish_s: float) -> None:
        self.publish_s = publish_s
        self.busy_s = 0.0
        self._written: dict[int, anyio.Event] = {}

    async def publish(self, version: int) -> None:
        written = self._written.get(version)
        if written is not None:
            await written.wait()
            return
        written = self._written[version] = anyio.Event()
        await anyio.sleep(self.publish_s)
        self.busy_s += self.publish_s
        written.set()


@dataclass(eq=False)
class _Request:
    work: float
    version_head: int
    done: anyio.Event = field(default_factory=anyio.Event)
    version_tail: int = 0


class SimServer:
    """One rollout server (see the module docstring)."""

    def __init__(self, spec: ServerSpec, name: str, publisher: SimPublisher | None = None) -> None:
        self.spec = spec
        self.name = name
        self.publisher = publisher
        self.frontend = anyio.Lock()
        """One call at a time through the server's front end (:attr:`HopSpec.frontend_s`)."""
        self.version = 0
        self._running: list[_Request] = []
        self._waiting: list[_Request] = []
        self._paused = 0
        self._changed = anyio.Event()
        self._last = 0.0
        self.busy_s = 0.0
        self.batch_integral = 0.0
        self.paused_s = 0.0
        self.tokens = 0.0
        self.sessions = 0

    # ---- the processor-sharing engine

    def step_time(self, batch: int) -> float:
        return self.spec.t0 * (1 + (batch - 1) / self.spec.half)

    def _advance(self) -> None:
        """Account progress since the last event."""
        now = anyio.current_time()
        elapsed = now - self._last
        self._last = now
        if elapsed <= 0:
            return
        if self._paused:
            self.paused_s += elapsed
            return
        if not self._running:
            return
        batch = len(self._running)
        progress = elapsed / self.step_time(batch)
        self.busy_s += elapsed
        self.batch_integral += batch * elapsed
        self.tokens += progress * batch
        for request in self._running:
            request.work -= progress
        finished = [r for r in self._running if r.work <= 1e-9]
        if finished:
            self._running = [r for r in self._running if r.work > 1e-9]
            for request in finished:
                request.version_tail = self.version
                request.done.set()
        while self._waiting and len(self._running) < self.spec.max_batch:
            self._running.append(self._waiting.pop(0))

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def serve(self) -> None:
        """The engine loop (run it as a task)."""
        self._last = anyio.current_time()
        while True:
            self._advance()
            changed = self._changed
            if self._paused or not self._running:
                await changed.wait()
                continue
            batch = len(self._running)
            next_done = min(r.work for r in self._running) * self.step_time(batch)
            with anyio.move_on_after(max(next_done, 1e-9)):
                await changed.wait()

    async def generate(self, work: float) -> tuple[int, int]:
        """Decode ``work`` token-steps; returns the (head, tail) policy versions."""
        self._advance()
        request = _Request(work=max(work, 1e-6), version_head=self.version)
        if len(self._running) < self.spec.max_batch:
            self._running.append(request)
        else:
            self._waiting.append(request)
        self._poke()
        await request.done.wait()
        return request.version_head, request.version_tail

    async def update_weights(self, state_dict: Any, version: int) -> None:
        if self.publisher is not None:
            await self.publisher.publish(version)
        self._advance()
        self._paused += 1
        self._poke()
        try:
            await anyio.sleep(self.spec.sync_s)
        finally:
            self._advance()
            self._paused -= 1
            self.version = version
            self._poke()

    def load(self) -> int:
        return len(self._running) + len(self._waiting)

    def stats(self, wall_s: float) -> dict[str, float]:
        self._advance()
        return {
            "utilisation": self.busy_s / wall_s,
            "batch_occupancy": (self.batch_integral / self.busy_s / self.spec.max_batch)
            if self.busy_s
            else 0.0,
            "mean_batch": self.batch_integral / self.busy_s if self.busy_s else 0.0,
            "paused_share": self.paused_s / wall_s,
            "tokens": self.tokens,
        }


# ---------------------------------------------------------------------- policy plans and the rollout service


@dataclass
class PolicySpec:
    mean_tool_calls: float = 3.0
    """Mean tool calls per episode (1 + geometric, capped at max_tool_calls)."""
    max_tool_calls: int = 8
    completion_median: float = 120.0
    """Median tokens the policy generates per turn (lognormal)."""
    completion_sigma: float = 0.6
    completion_max: int = 1024
    prompt_tokens: int = 150
    """System prompt + task."""
    obs_tokens: tuple[int, int] = (30, 200)
    """Tool-result tokens per step (uniform range)."""


@dataclass
class _Plan:
    tool_calls: int
    completions: list[int]
    observations: list[int]


@dataclass
class _Session:
    server: SimServer
    turns: list[Turn] = field(default_factory=list[Turn])
    plan: _Plan | None = None


class SimRollout:
    """The rollout service over several :class:`SimServer` (sessions stick to the least loaded server)."""

    def __init__(
        self,
        servers: Sequence[SimServer],
        policy: PolicySpec,
        rng: random.Random,
        hops: HopSpec | None = None,
    ) -> None:
        self.servers = list(servers)
        self.policy = policy
        self.rng = rng
        self.hops = hops or HopSpec()
        self.sessions: dict[str, _Session] = {}
        self.hop_s = 0.0
        """Time model calls spent in hops: the call latency, and waiting for and passing the server's front end."""

    def open_session(self, session_id: str | None = None) -> str:
        sid = session_id or new_id()
        # Version-aware routing: while weights roll from server to server, new episodes start on servers that
        # already serve the newest version (so rolling sync does not age them); otherwise the least loaded.
        newest = max(s.version for s in self.servers)
        server = min(self.servers, key=lambda s: (s.version < newest, s.sessions, s.name))
        server.sessions += 1
        self.sessions[sid] = _Session(server)
        return sid

    def close_session(self, session_id: str) -> list[Turn]:
        session = self.sessions.pop(session_id)
        session.server.sessions -= 1
        return session.turns

    def _plan(self) -> _Plan:
        p = self.policy
        k = 1
        while k < p.max_tool_calls and self.rng.random() < 1 - 1 / p.mean_tool_calls:
            k += 1
        completions = [
            max(
                8,
                min(
                    p.completion_max,
                    round(p.completion_median * math.exp(p.completion_sigma * self.rng.gauss(0, 1))),
                ),
            )
            for _ in range(k + 1)
        ]
        observations = [self.rng.randint(*p.obs_tokens) for _ in range(k)]
        return _Plan(k, completions, observations)

    async def chat(self, session_id: str, messages: Sequence[Msg]) -> ChatResponse:
        session = self.sessions[session_id]
        if session.plan is None:
            session.plan = self._plan()
        plan = session.plan
        index = len(session.turns)
        if index == 0:
            new_prompt = [1] * self.policy.prompt_tokens
            prompt_ids = new_prompt
        else:
            last = session.turns[-1]
            new_prompt = [3] * plan.observations[min(index - 1, len(plan.observations) - 1)]
            prompt_ids = last.prompt_ids + last.completion_ids + new_prompt
        length = plan.completions[min(index, len(plan.completions) - 1)]
        if self.hops.call_s or self.hops.frontend_s:
            hop_start = anyio.current_time()
            await anyio.sleep(self.hops.call_s)
            if self.hops.frontend_s:
                async with session.server.frontend:
                    await anyio.sleep(self.hops.frontend_s)
            self.hop_s += anyio.current_time() - hop_start
        head, tail = await session.server.generate(
            length + len(new_prompt) / session.server.spec.prefill_ratio
        )
        completion = [2] * length
        session.turns.append(
            Turn(
                prompt_ids=prompt_ids,
                completion_ids=completion,
                logprobs=[-1.0] * length,
                version_head=head,
                version_tail=tail,
            )
        )
        if index < plan.tool_calls:
            content: list[Any] = [ToolUseBlock(id=new_id(), name="act", input={})]
            finish = "tool_calls"
        else:
            content = [TextBlock(text="final answer")]
            finish = "stop"
        return ChatResponse(
            content=content,
            finish_reason=finish,
            usage=ChatUsage(input_tokens=len(prompt_ids), output_tokens=length),
            policy_version=tail,
            metadata={"version_head": head},
        )


class SimModel(ChatModel):
    """The agent's model: a session of :class:`SimRollout` (what RolloutChatModel is for the real service)."""

    def __init__(self, rollout: SimRollout, session_id: str) -> None:
        self.rollout = rollout
        self.session_id = session_id

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        return await self.rollout.chat(self.session_id, messages)


# ---------------------------------------------------------------------- environment and trainer


class SimEnv(Environment):
    """One tool (``act``) whose calls take a latency draw; success with the task's probability."""

    def __init__(self, latency: LatencyModel, rng: random.Random, reset_s: float = 0.2) -> None:
        super().__init__()
        self.latency = latency
        self.rng = rng
        self.reset_s = reset_s
        self.task: Task | None = None

    async def reset(self, task: Task) -> Observation:
        self.task = task
        await anyio.sleep(self.reset_s)
        toolkit = Toolkit()
        toolkit.register(self.act)
        return Observation(msg=Msg(role="user", content=task.prompt), toolkit=toolkit)

    async def act(self) -> str:
        """Take one action in the environment."""
        await anyio.sleep(self.latency.sample(self.rng))
        return "ok"

    async def evaluate(self, reply: Msg) -> EnvResult:
        assert self.task is not None
        p = self.task.metadata.get("p_success", 0.5)
        assert isinstance(p, float)
        success = self.rng.random() < p
        return EnvResult(reward=1.0 if success else 0.0, success=success)


@dataclass
class TrainerSpec:
    fixed_s: float = 5.0
    per_token_s: float = 0.0006


class SimTrainer:
    """The scheduler's TrainerPort: a step costs time proportional to the batch's tokens."""

    def __init__(self, spec: TrainerSpec) -> None:
        self.spec = spec
        self.steps = 0
        self.busy_s = 0.0

    async def train(self, batch: list[Trajectory], *, step: int) -> dict[str, float]:
        tokens = sum(len(s.prompt_ids) + len(s.response_ids) for t in batch for s in t.flatten())
        cost = self.spec.fixed_s + self.spec.per_token_s * tokens
        await anyio.sleep(cost)
        self.steps += 1
        self.busy_s += cost
        return {"train/policy_loss": 0.0, "train/tokens": float(tokens), "train/step_s": cost}

    async def weights(self) -> Any:
        return {"step": self.steps}


def sim_tasks(n: int, rng: random.Random, beta: tuple[float, float] = (1.2, 1.2)) -> list[Task]:
    """Tasks with success probabilities drawn from Beta(``beta``) (default Beta(1.2, 1.2): spread over (0, 1), some
    easy, some hard)."""
    return [
        Task(id=f"sim-{i}", prompt=f"task {i}", metadata={"p_success": rng.betavariate(*beta)})
        for i in range(n)
    ]
