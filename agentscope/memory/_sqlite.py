"""A memory persisted in an SQLite file, shared safely by many sessions, instances and processes.

Layout (schema version 1, kept in ``PRAGMA user_version``)::

    messages(session_id TEXT, seq INTEGER PRIMARY KEY, id TEXT, json TEXT, created_at REAL)
    index messages_session_seq ON messages(session_id, seq)

``seq`` is the row id: it grows with every insert, so ordering by it gives insertion order within a session
even when several connections write to the same session. ``json`` is ``Msg.model_dump_json()``.

Every SQLite call runs in a worker thread (``anyio.to_thread.run_sync``) behind a per-instance limiter of one,
so one instance's calls run one at a time, and the event loop never waits on the disk. The database
is in WAL mode: readers never block writers, and writers from other instances or processes wait (up to
10 s) for each other's short transactions.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Self, TypeVar

import anyio
import anyio.to_thread
from pydantic import JsonValue, ValidationError

from agentscope._sqlite import SQLiteSchema, connect, read_version, sqlite_errors, write_transaction
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

__all__ = ["SQLiteMemory"]

_T = TypeVar("_T")

_BACKEND = "sqlite"
_DEFAULT_PATH = ".agentscope/memory.db"
_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        session_id TEXT NOT NULL,
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        json TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS messages_session_seq ON messages (session_id, seq)",
)
_DELETE_CHUNK = 500
"""Ids per DELETE statement, well under SQLite's limit on bound parameters."""
_FILE = SQLiteSchema(
    kind="memory database", marker_table="messages", version=_SCHEMA_VERSION, statements=_SCHEMA
)


def _session_errors(path: Path, action: str) -> AbstractContextManager[None]:
    return sqlite_errors(_FILE.kind, path, action)


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a memory database and bring its schema up to date. In a worker thread."""
    return connect(path, _FILE)


def _list_sessions(path: Path) -> list[str]:
    """Return the session ids stored in ``path`` (none if there is no such file). In a worker thread."""
    if not path.exists():
        return []
    with _session_errors(path, "list sessions"):
        conn = sqlite3.connect(path, timeout=_FILE.busy_timeout_s, isolation_level=None)
        try:
            if read_version(conn, path, _FILE) == 0:
                return []
            rows = conn.execute("SELECT DISTINCT session_id FROM messages ORDER BY session_id").fetchall()
            return [session_id for (session_id,) in rows]
        finally:
            conn.close()


class SQLiteMemory(MemoryBase):
    """Conversation memory stored in an SQLite file, one row per message, keyed by session id.

    Many instances (in one process or several) may use the same file at once, for different sessions or
    the same one; every instance with the same ``path`` and ``session_id`` sees the same messages. The file
    and its parent directory are created on first use. Open it up front and close it with ``async with``::

        async with SQLiteMemory(".agentscope/memory.db", session_id="alice") as mem:
            await mem.add(Msg(role="user", content="hi"))

    or let it open lazily on first use and call :meth:`aclose` when done (a closed memory reopens when used
    again).

    Raises:
        SessionError: from any method, when the file cannot be created, read or written, is not a database, or
            was written by a newer AgentScope. The message names the file and what to do.
    """

    def __init__(self, path: str | os.PathLike[str] = _DEFAULT_PATH, *, session_id: str = "default") -> None:
        self._path = Path(path)
        self._session_id = check_session_id(session_id)
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: tuple[Path, sqlite3.Connection] | None = None
        """The open connection and its path; touched only in worker threads, under the limiter."""

    @property
    def session_id(self) -> str:
        """The session this memory reads and writes."""
        return self._session_id

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @staticmethod
    async def list_sessions(path: str | os.PathLike[str] = _DEFAULT_PATH) -> list[str]:
        """Return the ids of the sessions that hold at least one message in ``path``, sorted.

        A missing file holds no sessions (and is not created).

        Raises:
            SessionError: the file is not a memory database or cannot be read.
        """
        return await anyio.to_thread.run_sync(_list_sessions, Path(path))

    async def add(self, msgs: Msg | Sequence[Msg] | None) -> None:
        """Append one message or several, in order, in one transaction. ``None`` adds nothing."""
        items = as_msg_list(msgs)
        if not items:
            return
        session_id = self._session_id

        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            rows = [(session_id, m.id, m.model_dump_json(), now) for m in items]
            with write_transaction(conn):
                conn.executemany(
                    "INSERT INTO messages (session_id, id, json, created_at) VALUES (?, ?, ?, ?)", rows
                )

        await self._run("add messages", write)

    async def get(self, *, limit: int | None = None) -> list[Msg]:
        """Return the messages oldest first; with ``limit``, only the last ``limit``."""
        if limit is not None:
            check_limit(limit)
            if limit == 0:
                return []
        session_id, path = self._session_id, self._path

        def read(conn: sqlite3.Connection) -> list[Msg]:
            if limit is None:
                cursor = conn.execute(
                    "SELECT json FROM messages WHERE session_id = ? ORDER BY seq", (session_id,)
                )
            else:
                cursor = conn.execute(
                    "SELECT json FROM (SELECT seq, json FROM messages WHERE session_id = ?"
                    " ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                    (session_id, limit),
                )
            rows: list[tuple[str]] = cursor.fetchall()
            try:
                return [Msg.model_validate_json(text) for (text,) in rows]
            except ValidationError as e:
                raise SessionError(
                    f"memory database {str(path)!r}: a stored message of session {session_id!r} is not "
                    f"a valid Msg (written by an incompatible version?): {e}"
                ) from e

        return await self._run("read messages", read)

    async def delete(self, ids: Sequence[str]) -> int:
        """Delete this session's messages whose id is in ``ids``; return how many were deleted."""
        wanted = sorted(as_id_set(ids))
        if not wanted:
            return 0
        session_id = self._session_id

        def remove(conn: sqlite3.Connection) -> int:
            removed = 0
            with write_transaction(conn):
                for start in range(0, len(wanted), _DELETE_CHUNK):
                    chunk = wanted[start : start + _DELETE_CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    cursor = conn.execute(
                        f"DELETE FROM messages WHERE session_id = ? AND id IN ({marks})", (session_id, *chunk)
                    )
                    removed += cursor.rowcount
            return removed

        return await self._run("delete messages", remove)

    async def clear(self) -> None:
        """Delete every message of this session (other sessions in the file are untouched)."""
        session_id = self._session_id

        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))

        await self._run("clear the session", clear)

    async def size(self) -> int:
        """Return the number of messages in this session."""
        session_id = self._session_id

        def count(conn: sqlite3.Connection) -> int:
            result: int = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            return result

        return await self._run("count messages", count)

    def state_dict(self) -> dict[str, JsonValue]:
        """Return ``{"backend": "sqlite", "session_id": ..., "path": ...}``: where the rows are, not rows."""
        return {"backend": _BACKEND, "session_id": self._session_id, "path": os.fspath(self._path)}

    def load_state_dict(self, state: Mapping[str, JsonValue]) -> None:
        """Point this memory at the session and file of ``state`` (the next call opens that file)."""
        session_id = state_session_id(state, _BACKEND)
        path = state_field(state, _BACKEND, "path")
        if not isinstance(path, str) or not path:
            raise SessionError(f"memory state has an invalid path: {path!r}")
        self._path = Path(path)
        self._session_id = session_id

    async def aclose(self) -> None:
        """Close the connection (idempotent). Using the memory again reopens it."""
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    async def __aenter__(self) -> Self:
        """Open the database now, so a bad path fails here rather than on first use."""
        await self._run("open", lambda _conn: None)
        return self

    def __repr__(self) -> str:
        return f"SQLiteMemory({os.fspath(self._path)!r}, session_id={self._session_id!r})"

    # -- worker-thread side ---------------------------------------------------------------------------------

    async def _run(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` with this instance's connection in a worker thread, one call at a time."""
        return await anyio.to_thread.run_sync(self._call, action, fn, limiter=self._limiter)

    def _call(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        path = self._path
        with _session_errors(path, action):
            current = self._conn
            if current is None or current[0] != path:
                # First use, or load_state_dict() pointed this memory at another file.
                self._close()
                self._conn = current = (path, _connect(path))
            return fn(current[1])

    def _close(self) -> None:
        current, self._conn = self._conn, None
        if current is not None:
            with _session_errors(current[0], "close"):
                current[1].close()
