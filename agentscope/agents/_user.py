"""UserAgent: a human at the terminal (or any input function) taking part in a conversation."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from agentscope.agents._base import AgentBase
from agentscope.message import Msg

if TYPE_CHECKING:
    from agentscope.memory import MemoryBase

__all__ = ["InputFunction", "UserAgent"]

InputFunction: TypeAlias = Callable[[str], str | Awaitable[str]]
"""Reads one line from the human: receives the prompt, returns the text (sync or async)."""


class UserAgent(AgentBase):
    """Asks a human for each reply.

    By default it reads a line from the terminal with :func:`input` in a worker thread, so other agents keep
    running meanwhile. Pass ``input_fn`` to read from elsewhere (a web form, a queue, a test).
    """

    def __init__(
        self,
        name: str = "user",
        *,
        input_fn: InputFunction | None = None,
        prompt: str | None = None,
        memory: MemoryBase | None = None,
    ) -> None:
        super().__init__(name, memory=memory, description="A human user.")
        self.input_fn: InputFunction = input_fn or input
        """Where the text comes from."""
        self.prompt = prompt if prompt is not None else f"{name}: "
        """Shown before reading."""

    async def reply(self, msg: Msg | Sequence[Msg] | None = None, **kwargs: Any) -> Msg:
        if msg is not None:
            await self.memory.add(msg)
        if inspect.iscoroutinefunction(self.input_fn):
            text = await self.input_fn(self.prompt)
        else:
            text = await anyio.to_thread.run_sync(self.input_fn, self.prompt, abandon_on_cancel=True)
            if inspect.isawaitable(text):
                text = await text
        reply = Msg(role="user", name=self.name, content=str(text))
        await self.memory.add(reply)
        return reply
