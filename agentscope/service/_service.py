"""The run layer every protocol shares: an agent per request or per session, sessions kept apart and stored.

A protocol router (OpenAI Chat Completions today; A2A and AG-UI can sit next to it) decodes its request into
messages and a session id, then::

    async with service.open_agent(session_id) as agent:     # built by the factory, state restored
        mark = await memory_mark(agent)
        reply = await agent(message)                         # or agent.stream(message)
        record = await turn_record(agent, mark, reply)       # tool steps and token usage of this turn

and encodes the reply in its own wire format. Nothing here knows HTTP.

Human approval: a reply that pauses (a tool asked for approval) lists the waiting calls, :func:`waiting_calls`;
the session stores the paused agent, and a later request passes the human's decisions
(:class:`~agentscope.types.ApprovalDecision`), checked first with :func:`check_decisions` (or, before the
request's run, :meth:`AgentService.check_approvals`), to ``agent(message_or_None, decisions=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

import anyio

from agentscope.agents import AgentBase, AgentFactory, ReActAgent, build_agent, takes_argument
from agentscope.exceptions import UsageError
from agentscope.formatters import dump_tool_arguments, tool_result_text
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatModel, model_from_spec
from agentscope.service._config import ServeConfig
from agentscope.service._store import SessionInfo, SessionStore
from agentscope.types import ApprovalDecision, ChatUsage

__all__ = [
    "MAX_SESSION_ID",
    "AgentService",
    "Step",
    "TurnInput",
    "TurnRecord",
    "call_step",
    "check_decisions",
    "fits_session_id",
    "memory_mark",
    "result_step",
    "split_turn",
    "turn_record",
    "waiting_calls",
]

logger = logging.getLogger("agentscope.service")

Step: TypeAlias = dict[str, Any]
"""One intermediate step of a reply, as the API shows it: a ``tool_call`` or a ``tool_result`` (see
docs/serving.md)."""

_LEASE_POLL_S = (0.005, 0.2)

MAX_SESSION_ID = 256
"""Longest session id (characters), whichever protocol names it (header, ``user``, A2A context, AG-UI thread)."""


def fits_session_id(session_id: str) -> bool:
    """Whether ``session_id`` is short enough (:data:`MAX_SESSION_ID`) and printable to name a session; each
    protocol words the refusal for its own field."""
    return len(session_id) <= MAX_SESSION_ID and session_id.isprintable()


"""First and largest pause between tries to take a session another process holds."""


@dataclass(frozen=True, slots=True)
class TurnInput:
    """A request's messages, split as the agent takes them."""

    history: list[Msg]
    """The messages before the last user message: the conversation so far, for a request without a session."""
    message: Msg
    """The last user message: what the agent replies to."""


def split_turn(messages: Sequence[Msg]) -> TurnInput:
    """Split a request's conversation into its history and the last user message.

    Raises:
        ValueError: there are no messages, or the last one is not from the user.
    """
    if not messages:
        raise ValueError("messages must hold at least one message")
    last = messages[-1]
    if last.role != "user":
        raise ValueError(
            f"the last message must be a user message (the agent replies to it), not {last.role!r}"
        )
    return TurnInput(history=list(messages[:-1]), message=last)


@dataclass(slots=True)
class TurnRecord:
    """What one reply did besides answering."""

    steps: list[Step] = field(default_factory=list[Step])
    """The tool calls and their results, in order."""
    usage: ChatUsage = field(default_factory=ChatUsage)
    """Tokens of every model call of the reply, summed."""


def call_step(call: ToolUseBlock, agent: str | None) -> Step:
    """A tool call as a step: ``{"type": "tool_call", "id", "name", "arguments", "agent"}``."""
    return {
        "type": "tool_call",
        "id": call.id,
        "name": call.name,
        "arguments": dump_tool_arguments(call),
        "agent": agent,
    }


def result_step(result: ToolResultBlock, agent: str | None) -> Step:
    """A tool result as a step: ``{"type": "tool_result", "id", "name", "output", "is_error", "agent"}``."""
    return {
        "type": "tool_result",
        "id": result.id,
        "name": result.name,
        "output": tool_result_text(result),
        "is_error": result.is_error,
        "agent": agent,
    }


async def memory_mark(agent: AgentBase) -> int:
    """Where the agent's memory ends now: :func:`turn_record` reads what the reply adds after it."""
    return await agent.memory.size()


async def turn_record(agent: AgentBase, mark: int, reply: Msg) -> TurnRecord:
    """The steps and usage of the reply that began at ``mark``, read from what it added to the agent's memory."""
    added = (await agent.memory.get())[mark:]
    record = TurnRecord()
    usage_seen = False
    for msg in added:
        if msg.role == "assistant":
            record.steps.extend(call_step(call, msg.name) for call in msg.blocks_of(ToolUseBlock))
            usage_seen = _add_usage(record.usage, msg.metadata.get("usage")) or usage_seen
        elif msg.role == "tool":
            record.steps.extend(result_step(result, agent.name) for result in msg.blocks_of(ToolResultBlock))
    if not usage_seen and not any(msg is reply or msg.id == reply.id for msg in added):
        _add_usage(record.usage, reply.metadata.get("usage"))
    return record


def _add_usage(total: ChatUsage, usage: object) -> bool:
    if not isinstance(usage, Mapping):
        return False
    fields = cast("Mapping[str, object]", usage)
    for key in ("input_tokens", "output_tokens"):
        value = fields.get(key)
        if isinstance(value, int):
            setattr(total, key, getattr(total, key) + value)
    return True


def waiting_calls(reply: Msg) -> list[dict[str, Any]]:
    """The tool calls a paused reply waits on, as the API shows them: ``{"call_id", "name", "arguments",
    "reason"}`` each (``arguments`` a JSON object); empty when the reply did not pause."""
    listed = reply.metadata.get("approval_required")
    if not isinstance(listed, list):
        return []
    calls: list[dict[str, Any]] = []
    for entry in cast("list[Mapping[str, Any]]", listed):  # written by ReActAgent._approval_reply
        calls.append(
            {
                "call_id": entry.get("id"),
                "name": entry.get("name"),
                "arguments": entry.get("input", {}),
                "reason": entry.get("reason", ""),
            }
        )
    return calls


def check_decisions(agent: AgentBase, decisions: Sequence[ApprovalDecision]) -> None:
    """Check that ``decisions`` apply to the calls ``agent`` waits on, changing nothing.

    Raises:
        ValueError: the agent cannot pause for approvals, nothing waits, an unknown or repeated call id, or
            edited arguments the tool would refuse (the message names each problem).
    """
    if not isinstance(agent, ReActAgent):
        raise ValueError(f"agent {agent.name!r} ({type(agent).__name__}) does not wait for approvals")
    agent.check_decisions(decisions)


@dataclass(slots=True)
class _LocalLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class AgentService:
    """Agents for requests: a fresh one per stateless request; per session, one restored from the session store.

    Two requests on one session never run at once: within a process they queue on a lock (first come, first
    served); across processes the session store's lease keeps them apart. A session's new state is stored only
    when its request completes: a request that fails or is cancelled (the client went away) leaves the session as
    it was, so that the client can simply retry.

    Args:
        factory: Builds a fresh agent (see :func:`~agentscope.agents.load_agent_factory`).
        config: Sessions file, lease length and the rest (:class:`ServeConfig`).
        agent_kwargs: Offered to the factory (it takes those it declares), e.g. ``model=``.
    """

    def __init__(
        self,
        factory: AgentFactory,
        config: ServeConfig | None = None,
        *,
        agent_kwargs: Mapping[str, object] | None = None,
    ) -> None:
        self.factory = factory
        self.config = config or ServeConfig()
        self.store = SessionStore(self.config.sessions_db)
        """Where sessions live."""
        self.in_flight = 0
        """Agent runs in progress."""
        self._agent_kwargs = dict(agent_kwargs or {})
        self._owned_models: list[ChatModel] = []
        if self.config.model is not None:
            if "model" in self._agent_kwargs:
                raise UsageError("pass the model either as config.model or in agent_kwargs, not both")
            if not takes_argument(factory, "model"):
                raise UsageError(
                    f"the agent factory {getattr(factory, '__name__', factory)!r} takes no 'model' parameter, so "
                    f"the served model {self.config.model!r} cannot be handed to it; add `model=None` to it"
                )
            model = model_from_spec(self.config.model, base_url=self.config.model_base_url)
            self._agent_kwargs["model"] = model
            self._owned_models.append(model)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._locks: dict[str, _LocalLock] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def call_on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Have :meth:`aclose` await ``close()`` first (a protocol's own store, e.g. the A2A tasks)."""
        self._closers.append(close)

    async def aclose(self) -> None:
        """Close what was registered with :meth:`call_on_close`, the session store (it reopens if used again) and
        the models this service made."""
        for close in self._closers:
            try:
                await close()
            except Exception:  # the rest must still close
                logger.exception("closing %r failed", close)
        await self.store.aclose()
        for model in self._owned_models:
            await model.aclose()

    async def new_agent(self) -> AgentBase:
        """A fresh agent from the factory."""
        return await build_agent(self.factory, **self._agent_kwargs)

    @contextlib.asynccontextmanager
    async def open_agent(self, session_id: str | None) -> AsyncGenerator[AgentBase]:
        """The agent for one request: fresh without a session; with one, restored, and stored again on success.

        Waits while another request holds the session. The block's normal end stores the agent's state as the
        session's; an exception (cancellation included) leaves the stored session untouched.
        """
        self.in_flight += 1
        try:
            if session_id is None:
                yield await self.new_agent()
                return
            async with self._session_lock(session_id):
                state = await self._take_lease(session_id)
                heartbeat = asyncio.get_running_loop().create_task(self._keep_lease(session_id))
                new_state: dict[str, Any] | None = None
                try:
                    agent = await self.new_agent()
                    if state is not None:
                        agent.load_state_dict(state)
                    yield agent
                    new_state = agent.state_dict()
                finally:
                    heartbeat.cancel()
                    with anyio.CancelScope(shield=True):
                        with contextlib.suppress(asyncio.CancelledError):
                            await heartbeat
                        await self.store.release(session_id, self._owner, new_state)
        finally:
            self.in_flight -= 1

    async def check_approvals(self, session_id: str, decisions: Sequence[ApprovalDecision]) -> None:
        """Check ``decisions`` against the calls the stored session waits on, before its request runs (a stream
        must refuse them before it starts). The request's run checks them again, as the session may change
        meanwhile.

        Raises:
            ValueError: as :func:`check_decisions`; nothing waits in a session that does not exist.
        """
        state = await self.store.get_state(session_id)
        agent = await self.new_agent()
        if state is not None:
            agent.load_state_dict(state)
        check_decisions(agent, decisions)

    async def list_sessions(
        self, *, after: str | None = None, limit: int = 100
    ) -> tuple[list[SessionInfo], bool]:
        """Stored sessions by id, after ``after``, and whether more follow."""
        return await self.store.list_sessions(after=after, limit=limit)

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session once no request holds it; False when there was none."""
        async with self._session_lock(session_id):
            pause, longest = _LEASE_POLL_S
            while (deleted := await self.store.delete_session(session_id, self._owner)) is None:
                await anyio.sleep(pause)  # a request in another process holds it
                pause = min(pause * 2, longest)
            return deleted

    # -- sessions ------------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session_lock(self, session_id: str) -> AsyncGenerator[None]:
        entry = self._locks.get(session_id)
        if entry is None:
            entry = self._locks[session_id] = _LocalLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[session_id]

    async def _take_lease(self, session_id: str) -> dict[str, Any] | None:
        pause, longest = _LEASE_POLL_S
        while True:
            taken, state = await self.store.try_acquire(session_id, self._owner, self.config.session_lease_s)
            if taken:
                return state
            await anyio.sleep(pause)  # another process holds it: its request is running
            pause = min(pause * 2, longest)

    async def _keep_lease(self, session_id: str) -> None:
        every = self.config.session_lease_s / 3
        while True:
            await anyio.sleep(every)
            try:
                await self.store.renew(session_id, self._owner, self.config.session_lease_s)
            except Exception:  # the release will report a lost lease; keep the request running meanwhile
                logger.warning("could not renew the lease of session %r", session_id, exc_info=True)
