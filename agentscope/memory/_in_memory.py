"""A list-backed memory: fast and per-process; it lasts only as long as the process, or a ``state_dict``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import JsonValue, ValidationError

from agentscope.exceptions import SessionError
from agentscope.memory._base import (
    MemoryBase,
    as_id_set,
    as_msg_list,
    check_limit,
    check_session_id,
    state_field,
    state_session_id,
)
from agentscope.message import Msg

__all__ = ["InMemoryMemory"]

_BACKEND = "in_memory"


class InMemoryMemory(MemoryBase):
    """Conversation memory held in a Python list.

    Each instance is its own store: two instances with the same ``session_id`` do not share messages (the id
    is a label carried into :meth:`state_dict`). ``add`` is O(1) per message and ``get`` O(n) in the messages
    returned. ``get`` returns a new list holding the same :class:`Msg` objects that were added.

    Example::

        mem = InMemoryMemory()
        await mem.add(Msg(role="user", content="hi"))
        history = await mem.get(limit=20)
    """

    __slots__ = ("_messages", "_session_id")

    def __init__(self, session_id: str = "default") -> None:
        self._session_id = check_session_id(session_id)
        self._messages: list[Msg] = []

    @property
    def session_id(self) -> str:
        """The session this memory belongs to."""
        return self._session_id

    async def add(self, msgs: Msg | Sequence[Msg] | None) -> None:
        """Append one message or several, in order. ``None`` adds nothing."""
        if isinstance(msgs, Msg):
            self._messages.append(msgs)
        elif msgs is not None:
            self._messages.extend(as_msg_list(msgs))

    async def get(self, *, limit: int | None = None) -> list[Msg]:
        """Return the messages oldest first (a new list); with ``limit``, only the last ``limit``."""
        if limit is None:
            return self._messages.copy()
        check_limit(limit)
        return self._messages[-limit:] if limit else []

    async def delete(self, ids: Sequence[str]) -> int:
        """Delete the messages whose id is in ``ids``; return how many were deleted."""
        wanted = as_id_set(ids)
        if not wanted:
            return 0
        kept = [m for m in self._messages if m.id not in wanted]
        removed = len(self._messages) - len(kept)
        self._messages = kept
        return removed

    async def clear(self) -> None:
        """Delete every message."""
        self._messages = []

    async def size(self) -> int:
        """Return the number of messages."""
        return len(self._messages)

    def state_dict(self) -> dict[str, JsonValue]:
        """Return ``{"backend": "in_memory", "session_id": ..., "messages": [<Msg as JSON dict>, ...]}``."""
        return {
            "backend": _BACKEND,
            "session_id": self._session_id,
            "messages": [m.model_dump(mode="json") for m in self._messages],
        }

    def load_state_dict(self, state: Mapping[str, JsonValue]) -> None:
        """Replace the session id and all messages with those of ``state``."""
        session_id = state_session_id(state, _BACKEND)
        raw = state_field(state, _BACKEND, "messages")
        if not isinstance(raw, list):
            raise SessionError(f"memory state field 'messages' must be a list, got {type(raw).__name__}")
        try:
            messages = [Msg.model_validate(item) for item in raw]
        except ValidationError as e:
            raise SessionError(f"memory state holds a message that is not a valid Msg: {e}") from e
        self._session_id = session_id
        self._messages = messages

    def __repr__(self) -> str:
        return f"InMemoryMemory(session_id={self._session_id!r}, size={len(self._messages)})"
