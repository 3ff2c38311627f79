"""AgentBase: calling, streaming, interrupting, hooks, broadcasting and state for every agent."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, cast, overload

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from agentscope.events import AgentEvent, ReplyEvent
from agentscope.exceptions import UsageError
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock, new_id
from agentscope.tracing import agent_call, switch
from agentscope.types import ChatResponse, Hook, HookType, ReplyArguments

if TYPE_CHECKING:
    from agentscope.memory import MemoryBase

__all__ = ["AgentBase", "StatePart"]

logger = logging.getLogger("agentscope.agents")

_event_sink: contextvars.ContextVar[MemoryObjectSendStream[AgentEvent] | None] = contextvars.ContextVar(
    "agentscope_event_sink", default=None
)


class AgentBase(ABC):
    """Base class for agents.

    Subclasses implement :meth:`reply`. Callers use ``await agent(msg)`` (which runs hooks, supports
    :meth:`interrupt` and broadcasts the reply to :class:`~agentscope.pipelines.MsgHub` peers) or
    ``agent.stream(msg)`` for typed events. An agent answers one message at a time; calling it again while it is
    replying raises :class:`UsageError`.
    """

    hook_types: ClassVar[tuple[HookType, ...]] = (
        "pre_reply",
        "post_reply",
        "pre_reasoning",
        "post_reasoning",
        "pre_acting",
        "post_acting",
        "pre_observe",
    )

    def __init__(self, name: str, *, memory: MemoryBase | None = None, description: str = "") -> None:
        if not name:
            raise ValueError("an agent needs a non-empty name")
        if memory is None:
            from agentscope.memory import InMemoryMemory

            memory = InMemoryMemory()
        self.name = name
        """How the agent is called in conversations and traces."""
        self.id = new_id()
        """Unique id of this agent instance."""
        self.description = description
        """What the agent does, used when it is offered to another agent as a tool."""
        self.memory: MemoryBase = memory
        """The agent's conversation memory."""
        self._hooks: dict[HookType, dict[str, Hook[Any, Any]]] = {}
        self._reply_scope: anyio.CancelScope | None = None
        self._subscribers: dict[str, list[AgentBase]] = {}
        self._state_parts: dict[str, StatePart] = {}

    # ------------------------------------------------------------------ replying

    @abstractmethod
    async def reply(self, msg: Msg | Sequence[Msg] | None = None, **kwargs: Any) -> Msg:
        """Produce the agent's answer to ``msg``. Subclasses implement this; callers use ``await agent(msg)``."""

    async def handle_interrupt(self, msg: Msg | Sequence[Msg] | None = None, **kwargs: Any) -> Msg:
        """Return the reply given when :meth:`interrupt` stops a reply. Memory must already be consistent."""
        reply = Msg(
            role="assistant",
            name=self.name,
            content="I was interrupted before I could finish. What would you like me to do next?",
            metadata={"interrupted": True},
        )
        await self.memory.add(reply)
        return reply

    async def __call__(self, msg: Msg | Sequence[Msg] | None = None, **kwargs: Any) -> Msg:
        """Reply to ``msg`` (a message, several, or None to continue), running hooks and honouring interrupts."""
        if switch.ON:  # an ``invoke_agent`` span around the reply
            return await agent_call(self, self._call, msg, kwargs)
        return await self._call(msg, **kwargs)

    async def _call(self, msg: Msg | Sequence[Msg] | None = None, **kwargs: Any) -> Msg:
        if self._reply_scope is not None:
            raise UsageError(
                f"agent {self.name!r} is already replying; await that reply or create another agent"
            )
        kwargs["msg"] = msg
        arguments = await self._run_hooks("pre_reply", cast(ReplyArguments, kwargs))
        reply: Msg | None = None
        with anyio.CancelScope() as scope:
            self._reply_scope = scope
            try:
                reply = await self.reply(**arguments)
            finally:
                self._reply_scope = None
        if reply is None:  # interrupt() cancelled the scope
            reply = await self.handle_interrupt(**arguments)
        final: Msg = await self._run_hooks("post_reply", reply)
        await self._broadcast(final)
        return final

    def interrupt(self) -> None:
        """Stop the reply in progress. The call returns :meth:`handle_interrupt`'s message; memory stays consistent.

        Does nothing when the agent is idle. Cancelling the task that awaits the agent also stops it, and then the
        cancellation propagates as usual.
        """
        if self._reply_scope is not None:
            self._reply_scope.cancel()

    async def stream(
        self, msg: Msg | Sequence[Msg] | None = None, **kwargs: Any
    ) -> AsyncIterator[AgentEvent]:
        """Reply to ``msg``, yielding typed events as they happen and a :class:`ReplyEvent` last.

        Events of agents this agent calls (as tools) are forwarded too; their ``agent`` field tells them apart.
        Leaving the loop early stops the reply.
        """
        send, receive = anyio.create_memory_object_stream[AgentEvent](max_buffer_size=256)

        async def produce() -> Msg:
            async with send:
                return await self(msg, **kwargs)

        # A plain task rather than a task group: an async generator may be closed from another task (or never), and
        # a task group spanning a ``yield`` would then break; cancelling a task in ``finally`` is always safe.
        context = contextvars.copy_context()
        context.run(_event_sink.set, send)
        producer = asyncio.get_running_loop().create_task(produce(), context=context)
        try:
            async with receive:
                async for event in receive:
                    yield event
            yield ReplyEvent(await producer)
        finally:
            if not producer.done():
                producer.cancel()
                with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                    await producer

    async def emit(self, event: AgentEvent) -> None:
        """Deliver ``event`` to the stream consuming this reply, if any (a no-op for plain ``await agent(...)``)."""
        sink = _event_sink.get()
        if sink is not None:
            await sink.send(event)

    @property
    def streaming(self) -> bool:
        """True while a :meth:`stream` consumer is listening for this reply's events."""
        return _event_sink.get() is not None

    # ------------------------------------------------------------------ observing and broadcasting

    async def observe(self, msg: Msg | Sequence[Msg] | None) -> None:
        """Take in ``msg`` without replying (MsgHub broadcasts arrive here)."""
        if msg is None:
            return
        msgs = [msg] if isinstance(msg, Msg) else list(msg)
        for m in msgs:
            observed = await self._run_hooks("pre_observe", m)
            await self.memory.add(observed)

    def reset_subscribers(self, hub_id: str, peers: Sequence[AgentBase]) -> None:
        """Send each reply to ``peers`` (this agent left out) on behalf of hub ``hub_id``, replacing the hub's
        earlier list. :class:`~agentscope.pipelines.MsgHub` calls this; a reply goes once to each peer, however
        many hubs they share."""
        self._subscribers[hub_id] = [p for p in peers if p is not self]

    def remove_subscribers(self, hub_id: str) -> None:
        """Stop sending replies to the peers of hub ``hub_id``. Safe to call for a hub that set none."""
        self._subscribers.pop(hub_id, None)

    async def _broadcast(self, reply: Msg) -> None:
        if not self._subscribers:
            return
        peers = {id(p): p for group in self._subscribers.values() for p in group}
        async with anyio.create_task_group() as tg:
            for peer in peers.values():
                tg.start_soon(peer.observe, reply)

    # ------------------------------------------------------------------ hooks

    @overload
    def register_hook(
        self, hook_type: Literal["pre_reply"], name: str, hook: Hook[Self, ReplyArguments]
    ) -> None: ...
    @overload
    def register_hook(self, hook_type: Literal["post_reply"], name: str, hook: Hook[Self, Msg]) -> None: ...
    @overload
    def register_hook(
        self, hook_type: Literal["pre_reasoning"], name: str, hook: Hook[Self, list[Msg]]
    ) -> None: ...
    @overload
    def register_hook(
        self, hook_type: Literal["post_reasoning"], name: str, hook: Hook[Self, ChatResponse]
    ) -> None: ...
    @overload
    def register_hook(
        self, hook_type: Literal["pre_acting"], name: str, hook: Hook[Self, ToolUseBlock]
    ) -> None: ...
    @overload
    def register_hook(
        self, hook_type: Literal["post_acting"], name: str, hook: Hook[Self, ToolResultBlock]
    ) -> None: ...
    @overload
    def register_hook(self, hook_type: Literal["pre_observe"], name: str, hook: Hook[Self, Msg]) -> None: ...
    def register_hook(self, hook_type: HookType, name: str, hook: Hook[Any, Any]) -> None:
        """Run ``hook`` at ``hook_type``; hooks of one type run in registration order. Names are unique per type.

        A hook is called as ``hook(agent, payload)``, sync or async; returning None keeps the payload, returning a
        value replaces it. Each hook type has its payload (:class:`~agentscope.types.HookPayloads`):

        ========================  ==========================================================================
        ``pre_reply``             :class:`~agentscope.types.ReplyArguments`: the reply's keyword arguments
        ``post_reply``            :class:`~agentscope.message.Msg`: the reply
        ``pre_reasoning``         ``list[Msg]``: the messages about to be sent to the model
        ``post_reasoning``        :class:`~agentscope.types.ChatResponse`: the model's response
        ``pre_acting``            :class:`~agentscope.message.ToolUseBlock`: the tool call about to run
        ``post_acting``           :class:`~agentscope.message.ToolResultBlock`: the tool call's result
        ``pre_observe``           :class:`~agentscope.message.Msg`: the observed message
        ========================  ==========================================================================

        The overloads let a type checker reject a hook whose signature does not fit its hook type; nothing is
        checked at run time beyond the hook type's name.
        """
        if hook_type not in self.hook_types:
            raise ValueError(f"unknown hook type {hook_type!r}; expected one of {', '.join(self.hook_types)}")
        self._hooks.setdefault(hook_type, {})[name] = hook

    def remove_hook(self, hook_type: HookType, name: str) -> None:
        """Remove the hook registered under ``name``. Raises KeyError when there is none."""
        del self._hooks[hook_type][name]

    @overload
    async def _run_hooks(
        self, hook_type: Literal["pre_reply"], payload: ReplyArguments
    ) -> ReplyArguments: ...
    @overload
    async def _run_hooks(self, hook_type: Literal["post_reply", "pre_observe"], payload: Msg) -> Msg: ...
    @overload
    async def _run_hooks(self, hook_type: Literal["pre_reasoning"], payload: list[Msg]) -> list[Msg]: ...
    @overload
    async def _run_hooks(
        self, hook_type: Literal["post_reasoning"], payload: ChatResponse
    ) -> ChatResponse: ...
    @overload
    async def _run_hooks(self, hook_type: Literal["pre_acting"], payload: ToolUseBlock) -> ToolUseBlock: ...
    @overload
    async def _run_hooks(
        self, hook_type: Literal["post_acting"], payload: ToolResultBlock
    ) -> ToolResultBlock: ...
    async def _run_hooks(self, hook_type: HookType, payload: Any) -> Any:
        hooks = self._hooks.get(hook_type)
        if not hooks:
            return payload
        for hook in list(hooks.values()):
            result = hook(self, payload)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                payload = result
        return payload

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The agent's state as JSON-compatible data (memory and registered state parts included)."""
        state: dict[str, Any] = {"name": self.name, "id": self.id, "memory": self.memory.state_dict()}
        if self._state_parts:
            state["parts"] = {name: part.state_dict() for name, part in self._state_parts.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state saved by :meth:`state_dict` (a registered part missing from ``state`` is left as is)."""
        self.id = state.get("id", self.id)
        self.memory.load_state_dict(state["memory"])
        parts: dict[str, Any] = state.get("parts", {})
        for name, part in self._state_parts.items():
            if name in parts:
                part.load_state_dict(parts[name])

    def register_state(self, name: str, part: StatePart) -> None:
        """Save ``part`` with the agent: :meth:`state_dict` holds ``part.state_dict()`` under ``parts[name]``.

        For what is attached to an agent and must survive with its session (e.g. a
        :class:`~agentscope.plan.PlanNotebook`). Raises ValueError when ``name`` is taken by another part.
        """
        held = self._state_parts.get(name)
        if held is not None and held is not part:
            raise ValueError(f"agent {self.name!r} already saves a state part named {name!r}")
        self._state_parts[name] = part

    # ------------------------------------------------------------------ as a tool

    def as_tool(
        self, *, name: str | None = None, description: str | None = None
    ) -> Callable[[str], Awaitable[str]]:
        """This agent as a function another agent can call: ``toolkit.register(expert.as_tool())``.

        The calling model sends a ``task`` string; this agent replies to it and the reply's text is the result.
        """
        agent = self
        tool_name = name or f"ask_{_identifier(self.name)}"
        doc = description or self.description or f"Ask the agent {self.name!r} to handle a task."

        async def call_agent(task: str) -> str:
            reply = await agent(Msg(role="user", content=task, name="caller"))
            return reply.text

        call_agent.__name__ = tool_name
        call_agent.__qualname__ = tool_name
        call_agent.__doc__ = f"{doc}\n\nArgs:\n    task: The complete task or question for {self.name}."
        return call_agent

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class StatePart(Protocol):
    """Anything saved with an agent through :meth:`AgentBase.register_state`."""

    def state_dict(self) -> dict[str, Any]:
        """The part's state as JSON-compatible data."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state saved by :meth:`state_dict`."""
        ...


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    return cleaned or "agent"
