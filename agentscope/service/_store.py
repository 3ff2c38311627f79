"""The session store: each session's agent state in an SQLite file, and a lease that serialises its requests.

Layout (schema version 1, in ``PRAGMA user_version``)::

    service_sessions(id TEXT PRIMARY KEY, state TEXT, created_ns INTEGER, updated_ns INTEGER, turns INTEGER,
                     lease_owner TEXT, lease_until_ns INTEGER)

``state`` is the agent's ``state_dict()`` as JSON (NULL until a first request on the session completes). The lease
(``lease_owner`` until ``lease_until_ns``) is what keeps two requests on one session apart when they reach
different processes (``agentscope serve --workers N``, or two servers on one file): a request takes it before
building the agent and gives it back with the new state. A lease whose holder died expires on its own.

Every call blocks (SQLite): :class:`SessionStore` runs them in a worker thread, one at a time per store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from agentscope._sqlite import SQLiteSchema, connect, sqlite_errors, write_transaction
from agentscope.exceptions import SessionError

__all__ = ["A2A_TASK_TABLE", "BUSY_TIMEOUT_S", "SessionInfo", "SessionStore"]

_T = TypeVar("_T")

_FILE = SQLiteSchema(
    kind="session store",
    marker_table="service_sessions",
    version=1,
    statements=(
        """CREATE TABLE IF NOT EXISTS service_sessions (
            id TEXT PRIMARY KEY,
            state TEXT,
            created_ns INTEGER NOT NULL,
            updated_ns INTEGER NOT NULL,
            turns INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until_ns INTEGER
        )""",
    ),
)


BUSY_TIMEOUT_S = _FILE.busy_timeout_s
"""How long a write waits for another connection to the session file (every connection to it uses this)."""

A2A_TASK_TABLE = "tasks"
"""The A2A SDK's task table in the session file (its ``DatabaseTaskStore``); a deleted session's tasks go too."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A stored session, as ``GET /v1/sessions`` lists it."""

    id: str
    """The session id (``X-Session-Id`` or the OpenAI ``user`` field)."""
    created_ns: int
    """When the session's first request arrived (nanoseconds since the epoch)."""
    updated_ns: int
    """When its last completed request was stored."""
    turns: int
    """Completed requests."""

    def to_json(self) -> dict[str, Any]:
        """The session as the API shows it (``created``/``updated`` in seconds, like OpenAI objects)."""
        return {
            "id": self.id,
            "object": "session",
            "created": self.created_ns // 1_000_000_000,
            "updated": self.updated_ns // 1_000_000_000,
            "turns": self.turns,
        }


class SessionStore:
    """Agent states and leases by session id, in an SQLite file (created on first use).

    Args:
        path: The file, e.g. ``.agentscope/sessions.db``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    # -- leases and state --------------------------------------------------------------------------------------

    async def try_acquire(
        self, session_id: str, owner: str, lease_s: float
    ) -> tuple[bool, dict[str, Any] | None]:
        """Take the session's lease for ``lease_s`` seconds unless another owner holds it.

        Returns ``(True, state)`` when taken (``state`` is None for a new session, which gets its row now), and
        ``(False, None)`` while another owner's unexpired lease stands.
        """
        return await self._run("take a session lease", _try_acquire, session_id, owner, lease_s)

    async def renew(self, session_id: str, owner: str, lease_s: float) -> None:
        """Extend a lease this owner holds (a long request keeps its session)."""
        await self._run("renew a session lease", _renew, session_id, owner, lease_s)

    async def release(self, session_id: str, owner: str, state: dict[str, Any] | None) -> None:
        """Give the lease back; with ``state``, store it as the session's new state (one more turn).

        Without ``state`` (the request failed or was cancelled) the session stays as it was, and a session that
        never completed a request is removed.
        """
        await self._run("store a session", _release, session_id, owner, state)

    async def get_state(self, session_id: str) -> dict[str, Any] | None:
        """The session's stored state, read without its lease (a request running on it may change it); None for
        a session that has none."""
        return await self._run("read a session", _get_state, session_id)

    # -- listing and deleting ------------------------------------------------------------------------------------

    async def list_sessions(
        self, *, after: str | None = None, limit: int = 100
    ) -> tuple[list[SessionInfo], bool]:
        """Sessions that completed a request, by id, after ``after``; and whether more follow."""
        return await self._run("list sessions", _list, after, limit)

    async def delete_session(self, session_id: str, owner: str) -> bool | None:
        """Delete a session unless another owner's lease stands (then None); False when there was none."""
        return await self._run("delete a session", _delete, session_id, owner)

    # -- the connection ----------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the file (idempotent); using the store again reopens it."""
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    async def _run(self, action: str, fn: Callable[..., _T], *args: Any) -> _T:
        return await anyio.to_thread.run_sync(self._call, action, fn, *args, limiter=self._limiter)

    def _call(self, action: str, fn: Callable[..., _T], *args: Any) -> _T:
        with self._lock, sqlite_errors(_FILE.kind, self.path, action):
            if self._conn is None:
                self._conn = connect(self.path, _FILE)
            return fn(self._conn, *args)


# -- in the worker thread ------------------------------------------------------------------------------------


def _try_acquire(
    conn: sqlite3.Connection, session_id: str, owner: str, lease_s: float
) -> tuple[bool, dict[str, Any] | None]:
    now = time.time_ns()
    until = now + int(lease_s * 1e9)
    with write_transaction(conn):
        row = conn.execute(
            "SELECT state, lease_owner, lease_until_ns FROM service_sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO service_sessions (id, state, created_ns, updated_ns, turns, lease_owner, lease_until_ns)"
                " VALUES (?, NULL, ?, ?, 0, ?, ?)",
                (session_id, now, now, owner, until),
            )
            return True, None
        state, holder, holder_until = row
        if holder is not None and holder != owner and holder_until is not None and holder_until > now:
            return False, None
        conn.execute(
            "UPDATE service_sessions SET lease_owner = ?, lease_until_ns = ? WHERE id = ?",
            (owner, until, session_id),
        )
    return True, None if state is None else json.loads(state)


def _renew(conn: sqlite3.Connection, session_id: str, owner: str, lease_s: float) -> None:
    until = time.time_ns() + int(lease_s * 1e9)
    conn.execute(
        "UPDATE service_sessions SET lease_until_ns = ? WHERE id = ? AND lease_owner = ?",
        (until, session_id, owner),
    )


def _release(conn: sqlite3.Connection, session_id: str, owner: str, state: dict[str, Any] | None) -> None:
    with write_transaction(conn):
        if state is not None:
            stored = conn.execute(
                "UPDATE service_sessions SET state = ?, updated_ns = ?, turns = turns + 1, lease_owner = NULL,"
                " lease_until_ns = NULL WHERE id = ? AND lease_owner = ?",
                (json.dumps(state, ensure_ascii=False), time.time_ns(), session_id, owner),
            ).rowcount
            if not stored:
                raise SessionError(
                    f"session {session_id!r} was deleted or taken over while this request ran (its lease "
                    "expired); the request's turn was not stored"
                )
            return
        conn.execute(
            "DELETE FROM service_sessions WHERE id = ? AND state IS NULL AND lease_owner = ?",
            (session_id, owner),
        )
        conn.execute(
            "UPDATE service_sessions SET lease_owner = NULL, lease_until_ns = NULL WHERE id = ? AND lease_owner = ?",
            (session_id, owner),
        )


def _get_state(conn: sqlite3.Connection, session_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT state FROM service_sessions WHERE id = ?", (session_id,)).fetchone()
    return None if row is None or row[0] is None else json.loads(row[0])


def _list(conn: sqlite3.Connection, after: str | None, limit: int) -> tuple[list[SessionInfo], bool]:
    rows = conn.execute(
        "SELECT id, created_ns, updated_ns, turns FROM service_sessions WHERE state IS NOT NULL AND id > ?"
        " ORDER BY id LIMIT ?",
        (after or "", limit + 1),
    ).fetchall()
    sessions = [SessionInfo(*row) for row in rows[:limit]]
    return sessions, len(rows) > limit


def _delete(conn: sqlite3.Connection, session_id: str, owner: str) -> bool | None:
    with write_transaction(conn):
        row = conn.execute(
            "SELECT lease_owner, lease_until_ns FROM service_sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            return _delete_a2a_tasks(conn, session_id) > 0
        holder, holder_until = row
        if (
            holder is not None
            and holder != owner
            and holder_until is not None
            and holder_until > time.time_ns()
        ):
            return None
        conn.execute("DELETE FROM service_sessions WHERE id = ?", (session_id,))
        _delete_a2a_tasks(conn, session_id)
    return True


def _delete_a2a_tasks(conn: sqlite3.Connection, session_id: str) -> int:
    """Delete the A2A tasks of the session (their history is the conversation too); how many there were."""
    if conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (A2A_TASK_TABLE,)
    ).fetchone():
        return conn.execute(f"DELETE FROM {A2A_TASK_TABLE} WHERE context_id = ?", (session_id,)).rowcount
    return 0
