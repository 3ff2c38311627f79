"""The memory seam: the one interface through which agents keep their conversation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self, cast

from pydantic import JsonValue

from agentscope.exceptions import SessionError
from agentscope.message import Msg

__all__ = ["MemoryBase"]


class MemoryBase(ABC):
    """An ordered conversation memory, keyed by a session id.

    Every method that touches storage is async so that persistent backends never block the event loop.
    Messages come back oldest first and equal (``==``) to what was added.

    Backends are async context managers: ``async with SQLiteMemory(...) as mem`` opens the store up front
    and closes it on exit. Without ``async with``, a backend opens lazily on first use; call :meth:`aclose`
    when done.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def session_id(self) -> str:
        """The session this memory reads and writes."""

    @abstractmethod
    async def add(self, msgs: Msg | Sequence[Msg] | None) -> None:
        """Append one message or several, in order. ``None`` (or an empty sequence) adds nothing.

        Raises:
            TypeError: something other than a :class:`Msg`, a sequence of them or ``None`` was passed.
        """

    @abstractmethod
    async def get(self, *, limit: int | None = None) -> list[Msg]:
        """Return the messages oldest first; with ``limit``, only the last ``limit`` of them.

        The list is new on every call: callers may mutate it freely.

        Raises:
            ValueError: ``limit`` is negative.
        """

    @abstractmethod
    async def delete(self, ids: Sequence[str]) -> int:
        """Delete the messages whose id is in ``ids`` and return how many were deleted.

        Unknown ids are ignored.

        Raises:
            TypeError: ``ids`` is a single string rather than a sequence of them.
        """

    @abstractmethod
    async def clear(self) -> None:
        """Delete every message of this session."""

    @abstractmethod
    async def size(self) -> int:
        """Return the number of messages in this session."""

    @abstractmethod
    def state_dict(self) -> dict[str, JsonValue]:
        """Return a JSON-safe snapshot that :meth:`load_state_dict` restores (for agent checkpoints)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, JsonValue]) -> None:
        """Restore a snapshot taken by :meth:`state_dict` of the same backend.

        Raises:
            SessionError: ``state`` was not produced by this backend's :meth:`state_dict`.
        """

    async def aclose(self) -> None:  # noqa: B027 - an optional hook; most backends hold nothing to close
        """Release what the backend holds open (connections, files). The default does nothing."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# Helpers shared by the backends (so every backend validates arguments the same way).


def as_msg_list(msgs: object) -> list[Msg]:
    """Normalise the argument of :meth:`MemoryBase.add` to a list, checking every item is a :class:`Msg`."""
    if msgs is None:
        return []
    if isinstance(msgs, Msg):
        return [msgs]
    if isinstance(msgs, str | bytes) or not isinstance(msgs, Sequence):
        raise TypeError(f"add() takes a Msg, a sequence of Msg or None, not {type(msgs).__name__}")
    items = list(cast(Sequence[object], msgs))
    checked = [item for item in items if isinstance(item, Msg)]
    if len(checked) != len(items):
        bad = next(item for item in items if not isinstance(item, Msg))
        raise TypeError(f"add() takes a Msg, a sequence of Msg or None; got of type {type(bad).__name__}")
    return checked


def check_limit(limit: int) -> None:
    """Raise ``ValueError`` for a negative ``limit``."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")


def as_id_set(ids: Sequence[str]) -> frozenset[str]:
    """Normalise the argument of :meth:`MemoryBase.delete`, refusing a bare string (a common slip)."""
    if isinstance(ids, str):
        raise TypeError(
            "delete() takes a sequence of message ids; wrap a single id in a list: delete([msg.id])"
        )
    return frozenset(ids)


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is a non-empty string, else raise ``ValueError``."""
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
    return session_id


def state_field(state: Mapping[str, JsonValue], backend: str, key: str) -> JsonValue:
    """Read one field of a backend's state dict, raising :class:`SessionError` when the dict is not ours."""
    found = state.get("backend")
    if found != backend:
        raise SessionError(f"cannot load memory state of backend {found!r} into a {backend!r} memory")
    if key not in state:
        raise SessionError(f"memory state of backend {backend!r} lacks the {key!r} field")
    return state[key]


def state_session_id(state: Mapping[str, JsonValue], backend: str) -> str:
    """Read and check the ``session_id`` field of a backend's state dict."""
    value = state_field(state, backend, "session_id")
    if not isinstance(value, str) or not value:
        raise SessionError(f"memory state has an invalid session_id: {value!r}")
    return value
