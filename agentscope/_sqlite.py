"""What every SQLite file of AgentScope shares: opening it with its schema up to date, write transactions, and
errors that name the file and say what to do.

A file is identified by its schema (:class:`SQLiteSchema`): the version in ``PRAGMA user_version`` and a table
that only it has. Opening refuses a newer version (written by a newer AgentScope) and a file of some other
program, instead of writing into either. All of it is blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentscope.exceptions import SessionError

__all__ = ["SQLiteSchema", "connect", "enable_wal", "read_version", "sqlite_errors", "write_transaction"]


@dataclass(frozen=True, slots=True)
class SQLiteSchema:
    """The schema of one kind of AgentScope database file."""

    kind: str
    """What the file is, for error messages: ``"memory database"``, ``"trajectory store"``..."""
    marker_table: str
    """A table every file of this kind has: a file with a version but without it belongs to another program."""
    version: int
    """The schema version this code writes and reads (``PRAGMA user_version``)."""
    statements: tuple[str, ...]
    """``CREATE ... IF NOT EXISTS`` statements that build the schema in a new file."""
    busy_timeout_s: float = 10.0
    """How long a write waits for another connection's transaction on the same file before giving up."""


_LOCKED_HINT = "Another connection held a lock on the file for too long; retry, or use a file of its own."
_HINTS: dict[int, str] = {
    sqlite3.SQLITE_NOTADB: "The file is not an SQLite database; move it away or pass another path.",
    sqlite3.SQLITE_CORRUPT: "The file is corrupt; restore it from a backup, or move it away to start afresh.",
    sqlite3.SQLITE_CANTOPEN: "Check that the path names a file in a directory you can write to.",
    sqlite3.SQLITE_READONLY: "The file or its directory is read-only; make it writable or pass another path.",
    sqlite3.SQLITE_PERM: "Permission denied; make the file writable or pass another path.",
    sqlite3.SQLITE_BUSY: _LOCKED_HINT,
    sqlite3.SQLITE_LOCKED: _LOCKED_HINT,
    sqlite3.SQLITE_FULL: "The disk is full; free some space.",
    sqlite3.SQLITE_IOERR: "The disk could not be read or written; check the file system.",
}


@contextmanager
def sqlite_errors(kind: str, path: Path, action: str) -> Generator[None]:
    """Turn SQLite and OS errors into a :class:`SessionError` that names the file, the action and the fix."""
    try:
        yield
    except sqlite3.Error as e:
        code: int | None = getattr(e, "sqlite_errorcode", None)
        hint = _HINTS.get(code & 0xFF, "") if code is not None else ""
        raise SessionError(f"{kind} {str(path)!r}: could not {action}: {e}. {hint}".rstrip()) from e
    except OSError as e:
        raise SessionError(
            f"{kind} {str(path)!r}: could not {action}: {e}. Pass a path in a directory you can write to."
        ) from e


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Generator[None]:
    """Run the block in one transaction that takes the write lock up front (no deadlock on lock upgrade)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")


def read_version(conn: sqlite3.Connection, path: Path, schema: SQLiteSchema) -> int:
    """The schema version of an open file (0: new), refusing files this code cannot read."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > schema.version:
        raise SessionError(
            f"{schema.kind} {str(path)!r} has schema version {version}, newer than this AgentScope reads "
            f"({schema.version}); upgrade agentscope, or pass another path."
        )
    if (
        version > 0
        and conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (schema.marker_table,)
        ).fetchone()
        is None
    ):
        raise SessionError(
            f"{schema.kind} {str(path)!r} belongs to some other program (it has schema version {version} but no "
            f"{schema.marker_table!r} table); pass another path."
        )
    return version


def enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put the file behind ``conn`` in WAL mode, waiting up to ``timeout_s`` for other connections.

    Switching a file to WAL needs its exclusive lock, and SQLite answers "database is locked" at once, without
    calling the busy handler, when another connection is opening the same new file (it would deadlock otherwise):
    several processes or threads opening one fresh file hit it. Retried with backoff; a file already in WAL mode
    is left alone.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def connect(path: Path, schema: SQLiteSchema) -> sqlite3.Connection:
    """Open (creating if needed) a file in WAL mode with its schema up to date; usable from any one thread at a
    time (``check_same_thread=False``), in autocommit mode (use :func:`write_transaction`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=schema.busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        version = read_version(conn, path, schema)
        enable_wal(conn, schema.busy_timeout_s)
        conn.execute("PRAGMA synchronous = NORMAL")
        if version < schema.version:
            with write_transaction(conn):
                # Another connection may have created the schema between our read and taking the write lock.
                if read_version(conn, path, schema) == 0:
                    for statement in schema.statements:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {schema.version}")
    except BaseException:
        conn.close()
        raise
    return conn
