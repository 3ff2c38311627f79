"""MsgHub: a group conversation in which every reply is heard by every other participant."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import anyio

from agentscope.agents import AgentBase
from agentscope.message import Msg, new_id

__all__ = ["MsgHub"]


class MsgHub:
    """Inside ``async with MsgHub(participants):``, each participant's reply is delivered to the others.

    Delivery goes through :meth:`AgentBase.observe` (the message lands in each peer's memory) and happens when the
    reply is returned, so the next speaker already knows what was said.

    >>> async with MsgHub([alice, bob], announcement=Msg(role="user", content="Debate: ...")) as hub:
    ...     await alice()
    ...     await bob()
    ...     hub.remove(bob)
    """

    def __init__(
        self,
        participants: Sequence[AgentBase],
        *,
        announcement: Msg | Sequence[Msg] | None = None,
        enable_auto_broadcast: bool = True,
    ) -> None:
        self.id = new_id()
        self.participants: list[AgentBase] = []
        for agent in participants:
            if agent not in self.participants:
                self.participants.append(agent)
        self.announcement = announcement
        self.enable_auto_broadcast = enable_auto_broadcast
        self._open = False

    async def __aenter__(self) -> MsgHub:
        self._open = True
        self._wire()
        if self.announcement is not None:
            await self.broadcast(self.announcement)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        for agent in self.participants:
            agent.remove_subscribers(self.id)

    def add(self, agents: AgentBase | Sequence[AgentBase]) -> None:
        """Add participants; they hear replies from now on (not earlier ones)."""
        for agent in [agents] if isinstance(agents, AgentBase) else agents:
            if agent not in self.participants:
                self.participants.append(agent)
        self._wire()

    def remove(self, agents: AgentBase | Sequence[AgentBase]) -> None:
        """Remove participants; they stop hearing and being heard."""
        for agent in [agents] if isinstance(agents, AgentBase) else agents:
            if agent in self.participants:
                self.participants.remove(agent)
                agent.remove_subscribers(self.id)
        self._wire()

    async def broadcast(self, msg: Msg | Sequence[Msg]) -> None:
        """Deliver ``msg`` to every participant."""
        async with anyio.create_task_group() as tg:
            for agent in self.participants:
                tg.start_soon(agent.observe, msg)

    def _wire(self) -> None:
        if not (self._open and self.enable_auto_broadcast):
            return
        for agent in self.participants:
            agent.reset_subscribers(self.id, self.participants)
