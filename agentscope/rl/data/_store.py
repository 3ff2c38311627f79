"""The trajectory store: every episode of a run in one SQLite file, token arrays kept by reference.

Layout (schema version 1, kept in ``PRAGMA user_version``)::

    blobs(id TEXT PRIMARY KEY, codec TEXT, size INTEGER, data BLOB)
    trajectories(seq INTEGER PRIMARY KEY, trajectory_id TEXT UNIQUE, task_id, group_id, status, reward, success,
                 min_version, max_version, policy_versions (JSON), num_turns, num_generated_tokens,
                 trained_at_step (NULL until trained), replay_of (the original of a success-replay copy),
                 created_at (episode finished), stored_at, updated_at, blob_id -> blobs.id, meta (JSON),
                 stored_after, marked_after (see "Resume" below))

A row holds what curation and export query (task, group, versions, reward, status, ``trained_at_step``,
timestamps) plus the trajectory's JSON without its token arrays (``meta``). The token arrays (every turn's
prompt ids, completion ids and log-probs) live in ``blobs``, referenced by ``blob_id``: a content hash, so a
success-replay copy shares its original's blob. A blob is compact (``_token_blob.py``): each turn's prompt is
stored as the length of the prefix it shares with the previous turn's prompt + completion plus the new tokens
only, zlib-compressed.

Resume: a run that dies after its checkpoint of step C goes on from that checkpoint, so whatever curation did
after it must be undone (:meth:`TrajectoryStore.rollback`). The data manager tags each row it stores with
``stored_after`` and each status it sets (``dropped_stale``, ``dropped_zero_variance``, ``aborted``) with
``marked_after``: the step of the newest checkpoint cursor taken before. Rolling back to C forgets training after
step C, gives every status marked after C's cursor back the status the episode was stored with (in ``meta``),
and removes the success-replay copies made after it. Files written before these two columns existed get them
when opened (NULL: never rolled back).

Every SQLite call runs in a worker thread (``anyio.to_thread.run_sync``), one at a time per store; the file is in
WAL mode, so several stores (threads or processes) can write it at once, taking turns on its write lock (each
write, :meth:`TrajectoryStore.claim` included, is one ``BEGIN IMMEDIATE`` transaction). For writers on several
nodes, ``_postgres.py`` keeps the same tables in PostgreSQL, behind the same methods.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

import anyio
import anyio.to_thread

from agentscope._sqlite import SQLiteSchema, connect, sqlite_errors, write_transaction
from agentscope.rl._types import Trajectory, TrajectoryStatus
from agentscope.rl.data._rows import (
    INSERT_COLUMNS,
    NOT_REPLAYABLE,
    ROW_COLUMNS,
    TRAINABLE_STATUSES,
    Rollback,
    Row,
    from_row,
    to_rows,
)

__all__ = ["TRAINABLE_STATUSES", "Rollback", "TrajectoryStore"]

_T = TypeVar("_T")

_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS blobs (
        id TEXT PRIMARY KEY,
        codec TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS trajectories (
        seq INTEGER PRIMARY KEY,
        trajectory_id TEXT NOT NULL UNIQUE,
        task_id TEXT NOT NULL,
        group_id TEXT NOT NULL,
        status TEXT NOT NULL,
        reward REAL NOT NULL,
        success INTEGER NOT NULL,
        min_version INTEGER NOT NULL,
        max_version INTEGER NOT NULL,
        policy_versions TEXT NOT NULL,
        num_turns INTEGER NOT NULL,
        num_generated_tokens INTEGER NOT NULL,
        trained_at_step INTEGER,
        replay_of TEXT,
        created_at REAL NOT NULL,
        stored_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        blob_id TEXT NOT NULL REFERENCES blobs (id),
        meta TEXT NOT NULL,
        stored_after INTEGER,
        marked_after INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS trajectories_group ON trajectories (group_id)",
    "CREATE INDEX IF NOT EXISTS trajectories_task_success ON trajectories (task_id, success, seq)",
    "CREATE INDEX IF NOT EXISTS trajectories_status_trained ON trajectories (status, trained_at_step)",
)
_FILE: Final = SQLiteSchema(
    kind="trajectory store",
    marker_table="trajectories",
    version=_SCHEMA_VERSION,
    statements=_SCHEMA,
    busy_timeout_s=30.0,
)
_ADDED_COLUMNS: Final = {"stored_after": "INTEGER", "marked_after": "INTEGER"}
"""Columns added to schema version 1 after its first release (nullable: old rows are never rolled back)."""
_CHUNK: Final = 500
"""Ids per statement, well under SQLite's limit on bound parameters."""


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a file written before :data:`_ADDED_COLUMNS` existed those columns."""

    def missing() -> list[str]:
        have = {row[1] for row in conn.execute("PRAGMA table_info(trajectories)")}
        return [name for name in _ADDED_COLUMNS if name not in have]

    if not missing():
        return
    with write_transaction(conn):
        for name in missing():  # again under the write lock: another connection may have added them
            conn.execute(f"ALTER TABLE trajectories ADD COLUMN {name} {_ADDED_COLUMNS[name]}")


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class TrajectoryStore:
    """Every trajectory of a run, in an SQLite file (see the module docstring for the layout).

    Use it with ``async with TrajectoryStore(run_dir / "trajectories.db") as store:`` or let it open on first use
    and call :meth:`aclose`. Several stores (in threads or processes) may use one file at once. ``":memory:"``
    gives a throwaway store in memory (simulations, tests).

    Raises:
        SessionError: from any method, when the file cannot be created, read or written, is not a trajectory
            store, or was written by a newer AgentScope.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        """Touched only in worker threads, under the limiter."""

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def add(
        self, traj: Trajectory, *, replay_of: str | None = None, after_step: int | None = None
    ) -> None:
        """Store one trajectory (``replay_of``: the id of the success it copies, for success replay;
        ``after_step``: the step of the newest checkpoint cursor, see :meth:`rollback`).

        Raises:
            ValueError: a trajectory with this id is stored already, or a turn's log-probs and completion ids
                differ in length.
        """
        await self.add_many([traj], replay_of=replay_of, after_step=after_step)

    async def add_many(
        self, trajs: Sequence[Trajectory], *, replay_of: str | None = None, after_step: int | None = None
    ) -> None:
        """Store several trajectories in one transaction (all or none)."""
        if not trajs:
            return
        items = list(trajs)

        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            rows = [to_rows(t, replay_of, now, after_step) for t in items]
            try:
                with write_transaction(conn):
                    conn.executemany(
                        "INSERT OR IGNORE INTO blobs (id, codec, size, data) VALUES (?, ?, ?, ?)",
                        [blob for blob, _ in rows],
                    )
                    conn.executemany(
                        f"INSERT INTO trajectories ({INSERT_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                        [row for _, row in rows],
                    )
            except sqlite3.IntegrityError as e:
                raise ValueError(f"a trajectory with one of these ids is stored already: {e}") from e

        await self._run("add trajectories", write)

    async def get(self, trajectory_id: str) -> Trajectory:
        """The stored trajectory (its ``status`` as last marked).

        Raises:
            KeyError: no trajectory has this id.
        """
        found = await self.get_many([trajectory_id])
        return found[0]

    async def get_many(self, trajectory_ids: Sequence[str]) -> list[Trajectory]:
        """The stored trajectories, in the order of ``trajectory_ids``.

        Raises:
            KeyError: one of the ids is not stored.
        """
        ids = list(trajectory_ids)
        path = str(self._path)

        def read(conn: sqlite3.Connection) -> list[Trajectory]:
            found: dict[str, Trajectory] = {}
            for chunk in _chunks(sorted(set(ids))):
                marks = ", ".join("?" * len(chunk))
                rows: list[Row] = conn.execute(
                    f"SELECT {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
                    f" WHERE t.trajectory_id IN ({marks})",
                    tuple(chunk),
                ).fetchall()
                for row in rows:
                    found[row[0]] = from_row(row, path)[0]
            missing = [i for i in ids if i not in found]
            if missing:
                raise KeyError(f"no stored trajectory with id {missing[0]!r}")
            return [found[i] for i in ids]

        return await self._run("read trajectories", read)

    async def mark(
        self,
        trajectory_ids: Sequence[str],
        *,
        status: TrajectoryStatus | None = None,
        trained_at_step: int | None = None,
        after_step: int | None = None,
    ) -> int:
        """Set the status and/or the step a trajectory was trained at (``None``: leave it); return rows changed.

        ``after_step`` (with ``status``): the step of the newest checkpoint cursor, so that :meth:`rollback` to an
        earlier checkpoint gives the trajectory its stored status back. ``None``: a final mark.
        """
        ids = sorted(set(trajectory_ids))
        if not ids or (status is None and trained_at_step is None):
            return 0
        sets = ["updated_at = ?"]
        values: list[object] = [time.time()]
        if status is not None:
            sets += ["status = ?", "marked_after = ?"]
            values += [status, after_step]
        if trained_at_step is not None:
            sets.append("trained_at_step = ?")
            values.append(trained_at_step)
        assignment = ", ".join(sets)

        def write(conn: sqlite3.Connection) -> int:
            changed = 0
            with write_transaction(conn):
                for chunk in _chunks(ids):
                    marks = ", ".join("?" * len(chunk))
                    cursor = conn.execute(
                        f"UPDATE trajectories SET {assignment} WHERE trajectory_id IN ({marks})",
                        (*values, *chunk),
                    )
                    changed += cursor.rowcount
            return changed

        return await self._run("mark trajectories", write)

    async def unmark_trained_after(self, step: int) -> int:
        """Forget training after ``step`` (on resume from the checkpoint of ``step``); return rows changed.

        Trajectories trained at a later step become untrained again, so they are trained once more from the
        restored weights: no sample is lost and none counts twice.
        """

        def write(conn: sqlite3.Connection) -> int:
            with write_transaction(conn):
                cursor = conn.execute(
                    "UPDATE trajectories SET trained_at_step = NULL, updated_at = ? WHERE trained_at_step > ?",
                    (time.time(), step),
                )
            return cursor.rowcount

        return await self._run("unmark trajectories", write)

    async def rollback(self, step: int) -> Rollback:
        """Undo what happened after the checkpoint of ``step`` (resuming from it), in one transaction.

        Trajectories trained after ``step`` become untrained (they are trained again from the restored weights:
        no sample is lost and none counts twice); statuses marked at or after ``step``'s cursor (``marked_after
        >= step``) go back to the status the episode was stored with; success-replay copies stored at or after
        it are removed (their token blob stays: the original references it).
        """

        def write(conn: sqlite3.Connection) -> Rollback:
            now = time.time()
            with write_transaction(conn):
                untrained = conn.execute(
                    "UPDATE trajectories SET trained_at_step = NULL, updated_at = ? WHERE trained_at_step > ?",
                    (now, step),
                ).rowcount
                removed = conn.execute(
                    "DELETE FROM trajectories WHERE replay_of IS NOT NULL AND stored_after >= ?", (step,)
                ).rowcount
                restored = conn.execute(
                    "UPDATE trajectories SET status = json_extract(meta, '$.status'), marked_after = NULL,"
                    " updated_at = ? WHERE marked_after >= ?",
                    (now, step),
                ).rowcount
            return Rollback(untrained=untrained, restored=restored, removed_replays=removed)

        return await self._run("roll back trajectories", write)

    async def max_version(self) -> int:
        """The newest policy version that generated any stored trajectory (-1: none)."""

        def read(conn: sqlite3.Connection) -> int:
            result: int | None = conn.execute("SELECT MAX(max_version) FROM trajectories").fetchone()[0]
            return -1 if result is None else result

        return await self._run("read the newest policy version", read)

    async def iter_all(self, *, page: int = 256) -> AsyncIterator[tuple[Trajectory, int | None]]:
        """Every stored trajectory in the order stored, with the step it was trained at (``None``: never)."""
        path = str(self._path)
        after = 0
        while True:

            def read(
                conn: sqlite3.Connection, after: int = after
            ) -> list[tuple[int, Trajectory, int | None]]:
                rows: list[tuple[int, str, str, int | None, str, str, bytes]] = conn.execute(
                    f"SELECT t.seq, {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
                    " WHERE t.seq > ? ORDER BY t.seq LIMIT ?",
                    (after, page),
                ).fetchall()
                return [(row[0], *from_row(row[1:], path)) for row in rows]

            chunk = await self._run("read trajectories", read)
            for seq, traj, trained_at_step in chunk:
                after = seq
                yield traj, trained_at_step
            if len(chunk) < page:
                return

    async def pending(self) -> list[Trajectory]:
        """Trajectories with a trainable status not trained yet, in the order stored (what a resume re-queues)."""
        path = str(self._path)
        marks = ", ".join("?" * len(TRAINABLE_STATUSES))

        def read(conn: sqlite3.Connection) -> list[Trajectory]:
            rows: list[Row] = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
                f" WHERE t.status IN ({marks}) AND t.trained_at_step IS NULL ORDER BY t.seq",
                TRAINABLE_STATUSES,
            ).fetchall()
            return [from_row(row, path)[0] for row in rows]

        return await self._run("read pending trajectories", read)

    async def claim(self, limit: int, *, step: int) -> list[Trajectory]:
        """Take up to ``limit`` of the trajectories :meth:`pending` lists, oldest first, and mark them trained at
        ``step`` in the same transaction: consumers in several processes, each with a store of its own, never get
        one trajectory twice."""
        path = str(self._path)
        marks = ", ".join("?" * len(TRAINABLE_STATUSES))

        def write(conn: sqlite3.Connection) -> list[Trajectory]:
            with write_transaction(conn):
                rows: list[Row] = conn.execute(
                    f"SELECT {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
                    f" WHERE t.status IN ({marks}) AND t.trained_at_step IS NULL ORDER BY t.seq LIMIT ?",
                    (*TRAINABLE_STATUSES, limit),
                ).fetchall()
                taken = [from_row(row, path)[0] for row in rows]
                conn.executemany(
                    "UPDATE trajectories SET trained_at_step = ?, updated_at = ? WHERE trajectory_id = ?",
                    [(step, time.time(), t.trajectory_id) for t in taken],
                )
            return taken

        return await self._run("claim trajectories", write)

    async def latest_success(
        self,
        task_id: str,
        *,
        min_version: int | None = None,
        exclude_versions: Sequence[tuple[int, int]] = (),
    ) -> Trajectory | None:
        """The most recently stored successful episode of ``task_id`` (not itself a replay copy, not failed or
        aborted), if any.

        ``min_version``: only episodes whose oldest policy version is at least this (within a staleness bound).
        ``exclude_versions``: inclusive ``(first, last)`` version ranges; an episode whose versions reach into one
        is skipped (versions lost by a resume).
        """
        path = str(self._path)
        marks = ", ".join("?" * len(NOT_REPLAYABLE))
        where = [f"t.task_id = ? AND t.success = 1 AND t.replay_of IS NULL AND t.status NOT IN ({marks})"]
        values: list[object] = [task_id, *NOT_REPLAYABLE]
        if min_version is not None:
            where.append("t.min_version >= ?")
            values.append(min_version)
        for first, last in exclude_versions:
            where.append("NOT (t.max_version >= ? AND t.min_version <= ?)")
            values += [first, last]
        query = (
            f"SELECT {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
            f" WHERE {' AND '.join(where)} ORDER BY t.seq DESC LIMIT 1"
        )

        def read(conn: sqlite3.Connection) -> Trajectory | None:
            row: Row | None = conn.execute(query, values).fetchone()
            return None if row is None else from_row(row, path)[0]

        return await self._run("find a success", read)

    async def count_replays(self, task_id: str) -> int:
        """Success-replay copies of ``task_id`` that are trained or may still be (a trainable status): what the
        data manager's per-task replay cap counts."""
        marks = ", ".join("?" * len(TRAINABLE_STATUSES))

        def read(conn: sqlite3.Connection) -> int:
            result: int = conn.execute(
                "SELECT COUNT(*) FROM trajectories"
                f" WHERE task_id = ? AND replay_of IS NOT NULL AND status IN ({marks})",
                (task_id, *TRAINABLE_STATUSES),
            ).fetchone()[0]
            return result

        return await self._run("count replays", read)

    async def count(self, *, status: TrajectoryStatus | None = None, trained: bool | None = None) -> int:
        """How many trajectories are stored, optionally only those with ``status`` and/or (not) trained."""
        where: list[str] = []
        values: list[object] = []
        if status is not None:
            where.append("status = ?")
            values.append(status)
        if trained is not None:
            where.append("trained_at_step IS NOT NULL" if trained else "trained_at_step IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""

        def read(conn: sqlite3.Connection) -> int:
            result: int = conn.execute(f"SELECT COUNT(*) FROM trajectories{clause}", values).fetchone()[0]
            return result

        return await self._run("count trajectories", read)

    async def exists(self) -> bool:
        """Whether the store was made already (by this run or an earlier one); opens nothing, creates nothing."""
        return str(self._path) != ":memory:" and await anyio.to_thread.run_sync(self._path.exists)

    async def aclose(self) -> None:
        """Close the connection (idempotent); using the store again reopens it."""
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    async def __aenter__(self) -> Self:
        """Open the file now, so a bad path fails here rather than on first use."""
        await self._run("open", lambda _conn: None)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"TrajectoryStore({os.fspath(self._path)!r})"

    # -- worker-thread side ---------------------------------------------------------------------------------

    async def _run(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self._call, action, fn, limiter=self._limiter)

    def _call(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with sqlite_errors(_FILE.kind, self._path, action):
            if self._conn is None:
                conn = connect(self._path, _FILE)
                try:
                    _add_columns(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            return fn(self._conn)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with sqlite_errors(_FILE.kind, self._path, "close"):
                conn.close()
