"""RolloutRouter: several rollout servers behind one front, sticky per session and aware of weight versions.

The environment cluster and the agents' models talk to the router exactly as to one
:class:`~agentscope.rl.rollout.RolloutService`. Each episode's session is placed on one server when it opens and
stays there: the server holds the session's token ids and, in its KV cache, the prefix the next turn extends, so
moving a session would re-tokenize and re-prefill its whole history. A new session goes to the least loaded
server among those serving the newest weights, so during a rolling weight sync (servers updated one after
another, none waiting for the others) new episodes start on the newest policy and old ones finish where they
began. When the newest servers are already ``max_imbalance`` sessions busier than the least loaded one, the least
loaded one takes it anyway: version preference never starves a server. A server known to be down (its process
or actor died and is being replaced) takes no new sessions while another is up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from agentscope.exceptions import SessionError
from agentscope.message import Msg, new_id
from agentscope.models import ChatResponse, ModelSettings, ToolSchema
from agentscope.rl._types import Turn

if TYPE_CHECKING:
    import torch

__all__ = ["RolloutRouter", "RolloutServer"]

logger = logging.getLogger(__name__)


@runtime_checkable
class RolloutServer(Protocol):
    """One rollout server as a router sees it: a :class:`RolloutService` in this process, or a
    :class:`~agentscope.rl.rollout.RemoteRolloutServer` in another (a :class:`RolloutRouter` is one too)."""

    model_name: str

    @property
    def version(self) -> int:
        """Version of the weights now serving."""
        ...

    @property
    def sessions(self) -> list[str]:
        """Ids of the open sessions."""
        ...

    @property
    def available(self) -> bool:
        """Whether new sessions should come here (False while the server is known to be down)."""
        ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: Any) -> Any: ...

    def open_session(self, session_id: str | None = None) -> str:
        """Start recording a conversation; returns its id."""
        ...

    def close_session(self, session_id: str) -> list[Turn]:
        """Stop recording; the session's turns in order."""
        ...

    def session_turns(self, session_id: str) -> list[Turn]:
        """The turns recorded so far."""
        ...

    async def chat(
        self,
        session_id: str | None,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """The policy's next message (recorded in the session)."""
        ...

    def count_tokens(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] | None = None) -> int:
        """Token ids in the prompt of such a call."""
        ...

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Serve these weights as ``version`` from now on."""
        ...

    def stats(self) -> dict[str, float]:
        """Metrics under ``rollout/*`` names."""
        ...


_SUMMED = (
    "rollout/tokens_per_s",
    "rollout/generated_tokens",
    "rollout/prefill_tokens",
    "rollout/prefix_cache_hit_tokens",
    "rollout/decode_steps",
    "rollout/requests_running",
    "rollout/requests_waiting",
    "rollout/sessions",
    "rollout/turns",
    "rollout/prompt_tokens",
    "rollout/new_prompt_tokens",
    "rollout/incremental_turns",
    "rollout/server_restarts",
)
"""Counters and rates that add up over servers."""


class RolloutRouter:
    """Routes chat calls over several rollout servers (see the module docstring).

    Args:
        servers: The servers (:class:`RolloutService` over an engine of its own, or
            :class:`~agentscope.rl.rollout.RemoteRolloutServer`), all with the same tokenizer and chat format.
        max_imbalance: How many more open sessions the newest-version servers may hold than the least loaded
            server before a new session goes to the least loaded one regardless of its version.

    Use it as an async context manager to start and stop every server's engine.
    """

    def __init__(self, servers: Sequence[RolloutServer], *, max_imbalance: int = 4) -> None:
        if not servers:
            raise ValueError("a rollout router needs at least one server")
        if max_imbalance < 0:
            raise ValueError(f"max_imbalance must be non-negative, got {max_imbalance}")
        self.servers = list(servers)
        """The servers, in the order their stats are numbered."""
        self.max_imbalance = max_imbalance
        self.model_name = self.servers[0].model_name
        """Reported as ``model`` in responses."""
        self._placement: dict[str, int] = {}
        self._load = [0] * len(self.servers)
        """Per server: open sessions plus sessionless calls in flight."""
        self._placed = [0] * len(self.servers)
        self._placed_on_newest = 0

    async def __aenter__(self) -> RolloutRouter:
        started: list[RolloutServer] = []

        async def start(server: RolloutServer) -> None:
            await server.__aenter__()
            started.append(server)

        try:
            async with (
                anyio.create_task_group() as tg
            ):  # at once: a server may take a while to load its model
                for server in self.servers:
                    tg.start_soon(start, server)
        except BaseException:
            await self._stop(started)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop(self.servers)

    async def _stop(self, servers: Sequence[RolloutServer]) -> None:
        """Stop each server, whatever the others do (a failure is logged, not allowed to leak the rest)."""
        with anyio.CancelScope(shield=True):
            for server in reversed(servers):
                try:
                    await server.__aexit__(None, None, None)
                except Exception:
                    logger.exception("stopping rollout server %r failed", server)

    @property
    def available(self) -> bool:
        """Whether any server takes new sessions."""
        return any(server.available for server in self.servers)

    # ------------------------------------------------------------------ placement

    def pick(self) -> int:
        """The server a new session goes to (see the module docstring): among the available servers (all, when
        none is), the least loaded one serving the newest weights, unless it is ``max_imbalance`` sessions busier
        than the least loaded one."""
        up = [i for i, server in enumerate(self.servers) if server.available] or list(
            range(len(self.servers))
        )
        newest = max(self.servers[i].version for i in up)
        least = min(self._load[i] for i in up)
        candidates = [i for i in up if self.servers[i].version == newest]
        best = min(candidates, key=lambda i: (self._load[i], i))
        if self._load[best] - least > self.max_imbalance:
            return min(up, key=lambda i: (self._load[i], -self.servers[i].version, i))
        return best

    def server_of(self, session_id: str) -> int:
        """Index of the server holding ``session_id``.

        Raises:
            SessionError: no such session.
        """
        index = self._placement.get(session_id)
        if index is None:
            raise SessionError(f"no rollout session {session_id!r}; open it with open_session()")
        return index

    # ------------------------------------------------------------------ sessions

    def open_session(self, session_id: str | None = None) -> str:
        """Start recording a conversation on the server :meth:`pick` chooses; returns its id. Opening an open id
        is a no-op."""
        sid = session_id or new_id()
        if sid in self._placement:
            return sid
        index = self.pick()
        self.servers[index].open_session(sid)
        self._placement[sid] = index
        self._load[index] += 1
        self._placed[index] += 1
        if self.servers[index].version == max(server.version for server in self.servers):
            self._placed_on_newest += 1
        return sid

    def close_session(self, session_id: str) -> list[Turn]:
        """Stop recording and return the session's turns in order.

        Raises:
            SessionError: no such session.
        """
        index = self.server_of(session_id)
        del self._placement[session_id]
        self._load[index] -= 1
        return self.servers[index].close_session(session_id)

    def session_turns(self, session_id: str) -> list[Turn]:
        """The turns recorded so far (the session stays open)."""
        return self.servers[self.server_of(session_id)].session_turns(session_id)

    @property
    def sessions(self) -> list[str]:
        """Ids of the open sessions."""
        return list(self._placement)

    # ------------------------------------------------------------------ chat

    async def chat(
        self,
        session_id: str | None,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """:meth:`RolloutService.chat` on the session's server; a call without a session (an evaluation) goes to
        the server :meth:`pick` chooses. The response's ``metadata`` adds ``server`` (its index)."""
        if session_id is not None:
            index = self.server_of(session_id)
            response = await self.servers[index].chat(session_id, messages, tools=tools, settings=settings)
        else:
            index = self.pick()
            self._load[index] += 1
            try:
                response = await self.servers[index].chat(None, messages, tools=tools, settings=settings)
            finally:
                self._load[index] -= 1
        response.metadata["server"] = index
        return response

    def count_tokens(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] | None = None) -> int:
        """How many token ids a call's prompt has (the servers share one tokenizer)."""
        return self.servers[0].count_tokens(messages, tools)

    # ------------------------------------------------------------------ weights and stats

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Give every server the new weights at once (a global sync). A rolling sync updates
        :attr:`servers` one by one instead (the scheduler does, with ``weight_sync: rolling``)."""
        async with anyio.create_task_group() as tg:
            for server in self.servers:
                tg.start_soon(server.update_weights, state_dict, version)

    @property
    def version(self) -> int:
        """The newest version any server serves."""
        return max(server.version for server in self.servers)

    def stats(self) -> dict[str, float]:
        """The servers' stats combined: counters and rates summed, ``rollout/batch_occupancy`` averaged,
        ``rollout/policy_version`` the oldest serving, the fractions recomputed over all turns; plus
        ``rollout/servers``, ``rollout/version_spread`` (newest minus oldest version serving),
        ``rollout/sessions_on_newest_fraction`` (sessions opened on a newest-version server),
        ``rollout/session_imbalance`` (most minus fewest sessions open on a server now) and per
        server ``rollout/server<i>/{sessions,sessions_opened,policy_version,tokens_per_s,turns}`` (``sessions_opened``
        counts the sessions this router placed; ``turns`` the model calls the server answered, whoever asked)."""
        each = [server.stats() for server in self.servers]
        stats: dict[str, float] = {key: sum(s.get(key, 0.0) for s in each) for key in _SUMMED}
        stats["rollout/batch_occupancy"] = sum(s.get("rollout/batch_occupancy", 0.0) for s in each) / len(
            each
        )
        versions = [server.version for server in self.servers]
        stats["rollout/policy_version"] = float(min(versions))
        turns, prompt = stats["rollout/turns"], stats["rollout/prompt_tokens"]
        stats["rollout/incremental_fraction"] = stats["rollout/incremental_turns"] / turns if turns else 0.0
        stats["rollout/prompt_tokens_reused_fraction"] = (
            1.0 - stats["rollout/new_prompt_tokens"] / prompt if prompt else 0.0
        )
        placed = sum(self._placed)
        stats["rollout/servers"] = float(len(self.servers))
        stats["rollout/version_spread"] = float(max(versions) - min(versions))
        stats["rollout/sessions_on_newest_fraction"] = self._placed_on_newest / placed if placed else 0.0
        stats["rollout/session_imbalance"] = float(max(self._load) - min(self._load))
        for i, (server, s) in enumerate(zip(self.servers, each, strict=True)):
            stats[f"rollout/server{i}/sessions"] = s.get("rollout/sessions", 0.0)
            stats[f"rollout/server{i}/sessions_opened"] = float(self._placed[i])
            stats[f"rollout/server{i}/policy_version"] = float(server.version)
            stats[f"rollout/server{i}/tokens_per_s"] = s.get("rollout/tokens_per_s", 0.0)
            stats[f"rollout/server{i}/turns"] = s.get("rollout/turns", 0.0)
        return stats
