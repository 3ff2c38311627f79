"""The trajectory store on PostgreSQL: the SQLite store's tables, methods and results, for many writers at once.

Processes on one node or many, each with a :class:`PostgresTrajectoryStore` of its own on the same database and
``namespace``, can add, mark and read one run's trajectories at once. ``rl train`` uses it as it uses SQLite: its
one data manager writes what its rollouts produce and trains from its own in-memory queue, never through
:meth:`~PostgresTrajectoryStore.claim`, so what other processes append meanwhile is stored but not trained by it
(but for success-replay copies; a ``--resume`` re-queues every pending trajectory of the namespace, theirs
included). ``claim`` is for consumers outside ``rl train``. The SQLite store serialises writers on the file's lock; here each method is one transaction,
and where the SQLite version relied on being the only writer, PostgreSQL's locks do the work:

- :meth:`~PostgresTrajectoryStore.add_many`: a token blob two writers store at once is inserted once (``ON
  CONFLICT DO NOTHING``); a trajectory id stored already fails the whole call (``ValueError``), as on SQLite.
- ``claim``: ``SELECT ... FOR UPDATE SKIP LOCKED``, so consumers take disjoint rows and never wait on one another;
  a trajectory is handed out once.
- :meth:`~PostgresTrajectoryStore.mark` and :meth:`~PostgresTrajectoryStore.rollback` lock the rows they change;
  a deadlock or serialisation failure between writers is retried (the transaction is redone from the start).
- :meth:`~PostgresTrajectoryStore.iter_all` reads one snapshot (``REPEATABLE READ`` on a connection of its own):
  every trajectory committed before it starts, in the order stored, whatever writers do meanwhile.
- A broken connection (server restart, failover, idle timeout) is replaced and the call redone once. Where its
  commit may have landed unacknowledged: ``add_many`` takes ids stored with the same content as its own, ``claim``
  returns the rows it stamped, ``rollback`` and ``unmark_trained_after`` then count nothing (their changes are
  made). ``iter_all``'s snapshot is not redone: a break fails it.

"The order stored" is ``seq`` (an identity column), taken when a row is inserted: with concurrent writers, a
trajectory inserted earlier may commit later.

Layout: ``_postgres_schema.py``, in the PostgreSQL schema ``namespace`` (one per run), created on first use. A
namespace with tables of some other program, or of a newer schema version, is refused.

Errors are :class:`~agentscope.exceptions.SessionError` naming the store by its URL without the password.
Every call runs in a worker thread (``anyio.to_thread.run_sync``), one at a time per store. Needs ``psycopg``
(``pip install -e '.[postgres]'``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Final, Self, TypeVar, cast

import anyio
import anyio.to_thread

from agentscope._lazy import install_hint
from agentscope.exceptions import SessionError
from agentscope.rl._types import Trajectory, TrajectoryStatus
from agentscope.rl.data._postgres_schema import SCHEMA, SCHEMA_VERSION
from agentscope.rl.data._rows import (
    INSERT_COLUMNS,
    NAMESPACE_PATTERN,
    NOT_REPLAYABLE,
    ROW_COLUMNS,
    TRAINABLE_STATUSES,
    Rollback,
    Row,
    from_row,
    to_rows,
)

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import TupleRow
except ImportError as e:  # pragma: no cover - the extra is installed wherever the tests run
    raise ImportError(f"the PostgreSQL trajectory store needs psycopg: {install_hint('postgres')}") from e

__all__ = ["PostgresTrajectoryStore", "redact_url"]

_T = TypeVar("_T")
_Conn = psycopg.Connection[TupleRow]

_RETRIES: Final = 8
"""Attempts at a transaction that PostgreSQL aborted for a deadlock or a serialisation failure."""
_JOIN: Final = f"SELECT {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
_PENDING: Final = "t.status = ANY(%s) AND t.trained_at_step IS NULL"


def redact_url(url: str) -> str:
    """``url`` (a libpq URL or ``key=value`` string) without its password, for messages and logs."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<a PostgreSQL connection string that does not parse>"
    if "password" not in params:
        return url
    params["password"] = "***"
    return make_conninfo("", **cast(dict[str, str], params))


class PostgresTrajectoryStore:
    """Every trajectory of a run in a PostgreSQL database, for several writers at once (see the module docstring).

    The same methods as :class:`~agentscope.rl.data.TrajectoryStore`, with the same results. ``url``: a libpq
    connection string (``postgresql://USER@HOST:PORT/DBNAME``); a password is best left to ``PGPASSWORD`` or
    ``~/.pgpass``, and never appears in a message. ``namespace``: the PostgreSQL schema holding the run's tables.

    Raises:
        ValueError: ``namespace`` is not a plain lower-case schema name.
        SessionError: from any method, when the database cannot be reached or written, the namespace holds
            tables of some other program, or was written by a newer AgentScope.
    """

    def __init__(self, url: str, *, namespace: str = "agentscope") -> None:
        if not NAMESPACE_PATTERN.fullmatch(namespace):
            raise ValueError(
                f"namespace {namespace!r}: expected a lower-case PostgreSQL schema name ({NAMESPACE_PATTERN.pattern})"
            )
        self._url = url
        self._namespace = namespace
        self._name = f"{redact_url(url)} (namespace {namespace})"
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: _Conn | None = None
        """Touched only in worker threads, under the limiter."""

    @property
    def url(self) -> str:
        """The database, without its password."""
        return redact_url(self._url)

    @property
    def namespace(self) -> str:
        """The PostgreSQL schema holding the tables."""
        return self._namespace

    async def add(
        self, traj: Trajectory, *, replay_of: str | None = None, after_step: int | None = None
    ) -> None:
        """Store one trajectory (see :meth:`TrajectoryStore.add <agentscope.rl.data.TrajectoryStore.add>`).

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

        def prepare_and_write() -> None:  # in the worker thread: encoding the token blobs is CPU work
            now = time.time()
            rows = [to_rows(t, replay_of, now, after_step) for t in items]
            # One row per blob, in one order: two writers inserting the same blobs wait instead of deadlocking.
            blobs = sorted({str(blob[0]): blob for blob, _ in rows}.items())

            def write(conn: _Conn) -> None:
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO blobs (id, codec, size, data) VALUES (%s, %s, %s, %s)"
                            " ON CONFLICT (id) DO NOTHING",
                            [blob for _, blob in blobs],
                        )
                        cur.executemany(
                            f"INSERT INTO trajectories ({INSERT_COLUMNS}) VALUES ({', '.join(['%s'] * 18)})".encode(),
                            [row for _, row in rows],
                        )
                except pg_errors.UniqueViolation as e:
                    raise ValueError(f"a trajectory with one of these ids is stored already: {e}") from e

            def write_again(conn: _Conn) -> None:
                """After a reconnect: the first attempt may have committed unheard. Every id stored with this call's
                content (blob, meta, replay_of, after_step) is that commit; anything else is a conflict."""
                try:
                    write(conn)
                except ValueError:
                    ours = {(r[0], r[15], r[16], r[11], r[17]) for _, r in rows}
                    stored = conn.execute(
                        "SELECT trajectory_id, blob_id, meta, replay_of, stored_after FROM trajectories"
                        " WHERE trajectory_id = ANY(%s)",
                        ([r[0] for _, r in rows],),
                    ).fetchall()
                    if {tuple(row) for row in stored} != ours:
                        raise

            self._call("add trajectories", write, write_again)

        await anyio.to_thread.run_sync(prepare_and_write, limiter=self._limiter)

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
        name = self._name

        def read(conn: _Conn) -> list[Trajectory]:
            rows = _fetch(conn, f"{_JOIN} WHERE t.trajectory_id = ANY(%s)", (sorted(set(ids)),))
            found = {row[0]: from_row(row, name)[0] for row in rows}
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

        ``after_step`` (with ``status``): the step of the newest checkpoint cursor (see :meth:`rollback`).
        """
        ids = sorted(set(trajectory_ids))
        if not ids or (status is None and trained_at_step is None):
            return 0
        sets = ["updated_at = %s"]
        values: list[object] = [time.time()]
        if status is not None:
            sets += ["status = %s", "marked_after = %s"]
            values += [status, after_step]
        if trained_at_step is not None:
            sets.append("trained_at_step = %s")
            values.append(trained_at_step)
        query = f"UPDATE trajectories SET {', '.join(sets)} WHERE trajectory_id = ANY(%s)"

        def write(conn: _Conn) -> int:
            with conn.transaction():
                # Lock the rows in one order, so two writers marking overlapping sets wait instead of deadlocking.
                conn.execute(
                    "SELECT 1 FROM trajectories WHERE trajectory_id = ANY(%s) ORDER BY trajectory_id FOR UPDATE",
                    (ids,),
                )
                return conn.execute(query.encode(), (*values, ids)).rowcount

        return await self._run("mark trajectories", write)

    async def unmark_trained_after(self, step: int) -> int:
        """Forget training after ``step`` (on resume from the checkpoint of ``step``); return rows changed."""

        def write(conn: _Conn) -> int:
            return conn.execute(
                "UPDATE trajectories SET trained_at_step = NULL, updated_at = %s WHERE trained_at_step > %s",
                (time.time(), step),
            ).rowcount

        return await self._run("unmark trajectories", write)

    async def rollback(self, step: int) -> Rollback:
        """Undo what happened after the checkpoint of ``step`` (resuming from it), in one transaction (see
        :meth:`TrajectoryStore.rollback <agentscope.rl.data.TrajectoryStore.rollback>`)."""

        def write(conn: _Conn) -> Rollback:
            now = time.time()
            with conn.transaction():
                untrained = conn.execute(
                    "UPDATE trajectories SET trained_at_step = NULL, updated_at = %s WHERE trained_at_step > %s",
                    (now, step),
                ).rowcount
                removed = conn.execute(
                    "DELETE FROM trajectories WHERE replay_of IS NOT NULL AND stored_after >= %s", (step,)
                ).rowcount
                restored = conn.execute(
                    "UPDATE trajectories SET status = meta::json ->> 'status', marked_after = NULL,"
                    " updated_at = %s WHERE marked_after >= %s",
                    (now, step),
                ).rowcount
            return Rollback(untrained=untrained, restored=restored, removed_replays=removed)

        return await self._run("roll back trajectories", write)

    async def max_version(self) -> int:
        """The newest policy version that generated any stored trajectory (-1: none)."""

        def read(conn: _Conn) -> int:
            return _scalar(conn, "SELECT COALESCE(MAX(max_version), -1) FROM trajectories", ())

        return await self._run("read the newest policy version", read)

    async def iter_all(self, *, page: int = 256) -> AsyncIterator[tuple[Trajectory, int | None]]:
        """Every trajectory committed before the call, in the order stored, with the step it was trained at
        (``None``: never): one snapshot, read ``page`` rows at a time on a connection of its own."""
        name = self._name
        await self._run("open", lambda _conn: None)  # the store's own connection creates missing tables
        snapshot = await anyio.to_thread.run_sync(self._snapshot)
        try:
            after = 0
            while True:

                def read(after: int = after) -> list[tuple[int, Trajectory, int | None]]:
                    with self._errors("read trajectories"):
                        rows = snapshot.execute(
                            f"SELECT t.seq, {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
                            " WHERE t.seq > %s ORDER BY t.seq LIMIT %s",
                            (after, page),
                        ).fetchall()
                    return [(_int(row[0]), *from_row(_row(row[1:]), name)) for row in rows]

                chunk = await anyio.to_thread.run_sync(read)
                for seq, traj, trained_at_step in chunk:
                    after = seq
                    yield traj, trained_at_step
                if len(chunk) < page:
                    return
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(snapshot.close)

    async def pending(self) -> list[Trajectory]:
        """Trajectories with a trainable status not trained yet, in the order stored (what a resume re-queues)."""
        name = self._name

        def read(conn: _Conn) -> list[Trajectory]:
            rows = _fetch(conn, f"{_JOIN} WHERE {_PENDING} ORDER BY t.seq", (list(TRAINABLE_STATUSES),))
            return [from_row(row, name)[0] for row in rows]

        return await self._run("read pending trajectories", read)

    async def claim(self, limit: int, *, step: int) -> list[Trajectory]:
        """Take up to ``limit`` of the trajectories :meth:`pending` lists, oldest first, and mark them trained at
        ``step`` in the same transaction. Rows another consumer holds are skipped (``FOR UPDATE SKIP LOCKED``):
        consumers never get one trajectory twice, nor wait on one another. For consumers outside ``rl train``,
        which trains from its data manager's queue and never claims."""
        name = self._name
        stamp = time.time()  # the claimed rows' updated_at: how a retry finds a claim that committed unheard

        def write(conn: _Conn) -> list[Trajectory]:
            with conn.transaction():
                rows = conn.execute(
                    "WITH taken AS (SELECT t.seq FROM trajectories t"
                    f" WHERE {_PENDING} ORDER BY t.seq LIMIT %s FOR UPDATE SKIP LOCKED)"
                    " UPDATE trajectories t SET trained_at_step = %s, updated_at = %s FROM taken, blobs b"
                    f" WHERE t.seq = taken.seq AND b.id = t.blob_id RETURNING t.seq, {ROW_COLUMNS}",
                    (list(TRAINABLE_STATUSES), limit, step, stamp),
                ).fetchall()
            rows.sort(key=lambda row: _int(row[0]))
            return [from_row(_row(row[1:]), name)[0] for row in rows]

        def write_again(conn: _Conn) -> list[Trajectory]:
            """After a reconnect: the rows the first attempt claimed, if it committed unheard; else claim anew."""
            rows = conn.execute(
                f"SELECT t.seq, {ROW_COLUMNS} FROM trajectories t JOIN blobs b ON b.id = t.blob_id"
                " WHERE t.trained_at_step = %s AND t.updated_at = %s ORDER BY t.seq",
                (step, stamp),
            ).fetchall()
            return [from_row(_row(row[1:]), name)[0] for row in rows] if rows else write(conn)

        return await self._run("claim trajectories", write, write_again)

    async def latest_success(
        self,
        task_id: str,
        *,
        min_version: int | None = None,
        exclude_versions: Sequence[tuple[int, int]] = (),
    ) -> Trajectory | None:
        """The most recently stored successful episode of ``task_id`` (see :meth:`TrajectoryStore.latest_success
        <agentscope.rl.data.TrajectoryStore.latest_success>`)."""
        name = self._name
        where = ["t.task_id = %s AND t.success = 1 AND t.replay_of IS NULL AND NOT (t.status = ANY(%s))"]
        values: list[object] = [task_id, list(NOT_REPLAYABLE)]
        if min_version is not None:
            where.append("t.min_version >= %s")
            values.append(min_version)
        for first, last in exclude_versions:
            where.append("NOT (t.max_version >= %s AND t.min_version <= %s)")
            values += [first, last]
        query = f"{_JOIN} WHERE {' AND '.join(where)} ORDER BY t.seq DESC LIMIT 1"

        def read(conn: _Conn) -> Trajectory | None:
            rows = _fetch(conn, query, tuple(values))
            return from_row(rows[0], name)[0] if rows else None

        return await self._run("find a success", read)

    async def count_replays(self, task_id: str) -> int:
        """Success-replay copies of ``task_id`` that are trained or may still be (a trainable status)."""

        def read(conn: _Conn) -> int:
            return _scalar(
                conn,
                "SELECT COUNT(*) FROM trajectories WHERE task_id = %s AND replay_of IS NOT NULL AND status = ANY(%s)",
                (task_id, list(TRAINABLE_STATUSES)),
            )

        return await self._run("count replays", read)

    async def count(self, *, status: TrajectoryStatus | None = None, trained: bool | None = None) -> int:
        """How many trajectories are stored, optionally only those with ``status`` and/or (not) trained."""
        where: list[str] = []
        values: list[object] = []
        if status is not None:
            where.append("status = %s")
            values.append(status)
        if trained is not None:
            where.append("trained_at_step IS NOT NULL" if trained else "trained_at_step IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""

        def read(conn: _Conn) -> int:
            return _scalar(conn, f"SELECT COUNT(*) FROM trajectories{clause}", tuple(values))

        return await self._run("count trajectories", read)

    async def exists(self) -> bool:
        """Whether the store was made already (by this run or an earlier one): its namespace has the store's
        tables. Creates nothing."""

        def probe() -> bool:
            with self._errors("look for the store"), psycopg.connect(self._url, autocommit=True) as conn:
                row = conn.execute("SELECT to_regclass(%s)", (f"{self._namespace}.store_info",)).fetchone()
            return row is not None and row[0] is not None

        return await anyio.to_thread.run_sync(probe)

    async def aclose(self) -> None:
        """Close the connection (idempotent); using the store again reopens it."""
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    async def __aenter__(self) -> Self:
        """Connect now (creating the namespace's tables if needed), so a bad URL fails here."""
        await self._run("open", lambda _conn: None)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"PostgresTrajectoryStore({self.url!r}, namespace={self._namespace!r})"

    # -- worker-thread side ---------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Generator[None]:
        """Turn psycopg errors into a :class:`SessionError` that names the store (never its password)."""
        try:
            yield
        except psycopg.Error as e:
            try:
                password = conninfo_to_dict(self._url).get("password")
            except psycopg.ProgrammingError:  # psycopg's message quotes the whole string, password and all
                raise SessionError(
                    f"trajectory store {self._name}: could not {action}: the connection string does not parse; "
                    "expected postgresql://USER@HOST:PORT/DBNAME"
                ) from None
            detail = str(e).strip()
            if password:
                detail = detail.replace(str(password), "***")
            raise SessionError(f"trajectory store {self._name}: could not {action}: {detail}") from e

    async def _run(
        self, action: str, fn: Callable[[_Conn], _T], again: Callable[[_Conn], _T] | None = None
    ) -> _T:
        return await anyio.to_thread.run_sync(self._call, action, fn, again, limiter=self._limiter)

    def _call(self, action: str, fn: Callable[[_Conn], _T], again: Callable[[_Conn], _T] | None = None) -> _T:
        """``fn(connection)``, redone on a deadlock or serialisation failure, and once on a new connection when the
        connection broke (a server restart, failover, idle timeout): then as ``again``, where ``fn``'s commit may
        have landed without its acknowledgement."""
        reconnected, attempt = False, 0
        with self._errors(action):
            while True:
                conn = self._connection()  # replaces a broken connection
                try:
                    return (again or fn)(conn) if reconnected else fn(conn)
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                    if attempt == _RETRIES - 1:
                        raise
                    time.sleep(0.01 * 2**attempt)
                    attempt += 1
                except psycopg.OperationalError:
                    if reconnected or not conn.broken:
                        raise
                    reconnected = True

    def _connection(self) -> _Conn:
        if self._conn is not None and self._conn.broken:
            self._close()
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> _Conn:
        """A connection in autocommit mode (methods open their transactions), its ``search_path`` the namespace,
        whose tables are created here when missing (under an advisory lock: writers may start at once)."""
        conn = psycopg.connect(self._url, autocommit=True)
        try:
            ns = sql.Identifier(self._namespace)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"agentscope:{self._namespace}",))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ns))
                # A session setting: it outlives this transaction's commit.
                conn.execute(sql.SQL("SET search_path TO {}").format(ns))
                tables = {
                    str(row[0])
                    for row in conn.execute(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                        (self._namespace,),
                    )
                }
                if "store_info" in tables:
                    version = _scalar(conn, "SELECT MAX(version) FROM store_info", ())
                    if version > SCHEMA_VERSION:
                        raise SessionError(
                            f"trajectory store {self._name} has schema version {version}, newer than this "
                            f"AgentScope reads ({SCHEMA_VERSION}); upgrade agentscope, or use another namespace."
                        )
                elif tables:
                    raise SessionError(
                        f"trajectory store {self._name}: the namespace holds tables of some other program "
                        f"({', '.join(sorted(tables))}); use another namespace."
                    )
                else:
                    for statement in SCHEMA:
                        conn.execute(statement.encode())
                    conn.execute("INSERT INTO store_info (version) VALUES (%s)", (SCHEMA_VERSION,))
        except BaseException:
            conn.close()
            raise
        return conn

    def _snapshot(self) -> _Conn:
        """A connection of its own inside one ``REPEATABLE READ`` read-only transaction (for :meth:`iter_all`)."""
        with self._errors("read trajectories"):
            conn = psycopg.connect(self._url, autocommit=True)
            try:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._namespace)))
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            except BaseException:
                conn.close()
                raise
            return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _row(values: Sequence[object]) -> Row:
    trajectory_id, status, trained_at_step, meta, codec, data = values
    assert isinstance(data, bytes)
    return (
        str(trajectory_id),
        str(status),
        None if trained_at_step is None else _int(trained_at_step),
        str(meta),
        str(codec),
        data,
    )


def _fetch(conn: _Conn, query: str, params: Sequence[object]) -> list[Row]:
    return [_row(row) for row in conn.execute(query.encode(), params).fetchall()]


def _scalar(conn: _Conn, query: str, params: Sequence[object]) -> int:
    row = conn.execute(query.encode(), params).fetchone()
    return 0 if row is None or row[0] is None else _int(row[0])
