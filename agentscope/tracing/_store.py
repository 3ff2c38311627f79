"""The SQLite trace store: runs, traces, spans, blobs and metrics in one WAL-mode database file.

The tracer's writer thread writes batches (:meth:`TraceStore.write`); the studio reads (every other method). All
methods block: call them from a worker thread (``anyio.to_thread.run_sync``), never on an event loop. One store
object may be used from many threads; each thread gets its own connection. Several processes may write to one
store file at once (an RL trainer and its environment workers): WAL mode and a busy timeout serialise them.
A batch goes in with a few multi-row statements (``_writes``): SQLite works through it in a few long steps with
the GIL released, not in one short step per row.

Rows come back as plain dicts, ready for JSON. Span ``attributes`` hold blob references (``{"$blob": hash}``) for
large values; :meth:`TraceStore.get_span` resolves them.

One file because it is one class, each of whose methods is one query (or one transaction) on the per-thread
connection under the same in-memory lock (``_serialised``); the batch writer's SQL is already in ``_writes.py`` and
the schema in ``_schema.py``, and cutting the remaining reads into mixins would scatter one class's methods.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

from agentscope._sqlite import enable_wal
from agentscope.tracing._evals import list_evaluations, read_eval_results, write_eval_results
from agentscope.tracing._records import ExportBatch, RunRecord
from agentscope.tracing._schema import migrate
from agentscope.tracing._writes import insert_rows, write_metrics, write_spans

__all__ = ["Row", "RunFilter", "TraceStore"]

Row: TypeAlias = dict[str, Any]
"""One result row as JSON-ready data."""

_ZLIB_MIN = 4096
_WRITER_CACHE_KIB = 65536
"""Page cache of the connection that writes batches (SQLite's default is 2 MiB): a batch touches the pages of
several indexes (and, in a store migrated from schema 2, pages all over the index led by trace ids, whose older keys
are random), and re-reading them from the OS costs more than the insert."""
_MIGRATION_BUSY_MS = 30 * 60 * 1000
"""How long opening a store waits for another process that is migrating it."""
_TREE_CACHE = 8
_SPAN_LIGHT = (
    "id, run_id, trace_id, span_id, parent_id, kind, name, start_ns, end_ns, status, status_message, "
    "input_tokens, output_tokens, agent_name"
)
_RUN_COLUMNS = (
    "id, project, name, status, started_ns, ended_ns, updated_ns, config, span_count, error_count, trace_count, "
    "input_tokens, output_tokens, agents"
)


_F = TypeVar("_F", bound=Callable[..., Any])


logger = logging.getLogger("agentscope.tracing")


@dataclass(slots=True)
class RunFilter:
    """Filters for :meth:`TraceStore.list_runs`; every field set must match."""

    project: str | None = None
    """Exact project name."""
    agent: str | None = None
    """An agent of this name ran in the run."""
    status: str | None = None
    """``running``, ``finished``, ``failed``, ``lost`` (its process is gone), or ``error`` (runs with at least one
    failed span)."""
    since_ns: int | None = None
    """Started at or after."""
    until_ns: int | None = None
    """Started before."""
    q: str | None = None
    """Text in the run's name, project or agent names (case-insensitive)."""


class TraceStore:
    """A trace store in one SQLite file (``":memory:"`` for a private in-memory store, for tests).

    Opening creates the file (and its folder) and migrates the schema to :data:`SCHEMA_VERSION`.
    """

    @staticmethod
    def _serialised(method: _F) -> _F:
        """Store methods hold the store's lock for an in-memory store: its shared-cache connections lock whole
        tables (``SQLITE_LOCKED``, which busy timeouts do not cover), so they take turns instead."""

        @functools.wraps(method)
        def wrapper(self: TraceStore, *args: Any, **kwargs: Any) -> Any:
            if not self._memory:
                return method(self, *args, **kwargs)
            with self._memory_lock:
                return method(self, *args, **kwargs)

        return cast(_F, wrapper)

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = str(path)
        """Where the database lives."""
        self._busy_ms = int(busy_timeout_s * 1000)
        self._memory = self.path == ":memory:"
        if self._memory:
            self._uri = f"file:agentscope-traces-{id(self)}-{time.time_ns()}?mode=memory&cache=shared"
        else:
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._uri = Path(self.path).expanduser().resolve().as_uri()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._memory_lock = threading.RLock()
        self._tree_cache: OrderedDict[str, tuple[tuple[int, int], list[Row]]] = OrderedDict()
        self._closed = False
        conn = self._conn()  # keeps a shared in-memory database alive for the store's lifetime
        # A migration may build an index over every span (minutes for hundreds of millions): a process opening the
        # store meanwhile waits for it rather than give up after the usual busy timeout.
        conn.execute(f"PRAGMA busy_timeout = {max(self._busy_ms, _MIGRATION_BUSY_MS)}")
        try:
            migrated_from = migrate(conn)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        self.migrated_from = migrated_from
        """The schema version the file had when opened (0: new)."""

    # -------------------------------------------------------------- connections

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError(f"trace store {self.path} is closed")
            conn = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            if not self._memory:
                enable_wal(conn, self._busy_ms / 1000)
                conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection. Safe to call more than once."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    @property
    @_serialised
    def schema_version(self) -> int:
        """The store's schema version (always :data:`SCHEMA_VERSION` once open)."""
        version: int = self._conn().execute("PRAGMA user_version").fetchone()[0]
        return version

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -------------------------------------------------------------- writing

    @_serialised
    def upsert_run(self, run: RunRecord) -> None:
        """Create the run's row, or update its name, status, end and config."""
        conn = self._conn()
        now = time.time_ns()
        conn.execute(
            "INSERT INTO runs (id, project, name, status, started_ns, ended_ns, updated_ns, config)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            " status = excluded.status, ended_ns = excluded.ended_ns, updated_ns = excluded.updated_ns,"
            " config = excluded.config",
            (
                run.id,
                run.project,
                run.name,
                run.status,
                run.started_ns,
                run.ended_ns,
                now,
                json.dumps(run.config),
            ),
        )

    @_serialised
    def mark_lost_runs(self) -> list[str]:
        """Mark ``lost`` the running runs of this machine whose process is gone (killed, or crashed before its
        tracer could record how the run ended); return their ids. ``ended_ns`` becomes the run's last update.

        Only runs recorded on this host (``config.host``) are checked, by their ``config.pid``: a run of another
        machine, or whose pid a new process has taken, stays ``running``.
        """
        if os.name != "posix":  # os.kill(pid, 0) probes only on POSIX (elsewhere it would kill)
            return []
        conn = self._conn()
        host = socket.gethostname()
        lost = [
            run_id
            for run_id, config in conn.execute(
                "SELECT id, config FROM runs WHERE status = 'running'"
            ).fetchall()
            if _process_gone(json.loads(config), host)
        ]
        if lost:
            try:
                conn.executemany(  # autocommit: one short write transaction per run
                    "UPDATE runs SET status = 'lost', ended_ns = updated_ns, updated_ns = ?"
                    " WHERE id = ? AND status = 'running'",
                    [(time.time_ns(), run_id) for run_id in lost],
                )
            except sqlite3.OperationalError as exc:  # a read-only store, or a writer holding it: next time
                logger.warning("could not mark runs %s lost in %s: %s", lost, self.path, exc)
                return []
        return lost

    @_serialised
    def write(self, batch: ExportBatch) -> None:
        """Write a batch (run row, blobs, spans, metrics and the run/trace counters) in one transaction."""
        conn = self._conn()
        if not getattr(self._local, "writer", False):
            conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")  # grows on demand, up to this
            self._local.writer = True
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.upsert_run(batch.run)
            if batch.blobs:
                insert_rows(
                    conn,
                    "INSERT OR IGNORE INTO blobs (hash, size, data) VALUES {rows}",
                    [(digest, len(data), _pack(data)) for digest, data in batch.blobs.items()],
                )
            if batch.spans:
                write_spans(conn, batch.spans)
            if batch.metrics:
                write_metrics(conn, batch.metrics)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -------------------------------------------------------------- runs

    @_serialised
    def list_runs(
        self, filters: RunFilter | None = None, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[Row], int]:
        """Runs matching ``filters``, newest first (each with its ``duration_ns``), and how many match in all."""
        f = filters or RunFilter()
        where: list[str] = []
        args: list[Any] = []
        if f.project:
            where.append("project = ?")
            args.append(f.project)
        if f.agent:
            where.append("instr(agents, ?) > 0")
            args.append(f"|{f.agent}|")
        if f.status == "error":
            where.append("error_count > 0")
        elif f.status:
            where.append("status = ?")
            args.append(f.status)
        if f.since_ns is not None:
            where.append("started_ns >= ?")
            args.append(f.since_ns)
        if f.until_ns is not None:
            where.append("started_ns < ?")
            args.append(f.until_ns)
        if f.q:
            where.append(
                "(name LIKE ? ESCAPE '\\' OR project LIKE ? ESCAPE '\\' OR agents LIKE ? ESCAPE '\\')"
            )
            pattern = f"%{_escape_like(f.q)}%"
            args.extend([pattern, pattern, pattern])
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        conn = self._conn()
        total: int = conn.execute(f"SELECT COUNT(*) FROM runs{clause}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs{clause} ORDER BY started_ns DESC, id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_run_row(r) for r in rows], total

    @_serialised
    def get_run(self, run_id: str) -> Row | None:
        """One run with its counters, its ``duration_ns`` (until now while it runs) and the names of its metrics,
        or None."""
        conn = self._conn()
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        run = _run_row(row)
        run["metrics"] = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT name FROM metrics WHERE run_id = ? ORDER BY name", (run_id,)
            )
        ]
        run["kinds"] = {
            r[0]: {"count": r[1], "errors": r[2]}
            for r in conn.execute(
                "SELECT kind, COUNT(*), SUM(status = 'error') FROM spans WHERE run_id = ? GROUP BY kind",
                (run_id,),
            )
        }
        return run

    @_serialised
    def projects(self) -> list[str]:
        """Every project name, sorted."""
        return [r[0] for r in self._conn().execute("SELECT DISTINCT project FROM runs ORDER BY project")]

    @_serialised
    def runs_updated_since(self, updated_ns: int) -> list[Row]:
        """Runs whose row changed after ``updated_ns`` (for live feeds)."""
        rows = self._conn().execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE updated_ns > ? ORDER BY updated_ns", (updated_ns,)
        )
        return [_run_row(r) for r in rows]

    # -------------------------------------------------------------- traces

    @_serialised
    def list_traces(self, run_id: str, *, offset: int = 0, limit: int = 100) -> tuple[list[Row], int]:
        """A run's traces in start order, and how many it has."""
        conn = self._conn()
        total: int = conn.execute("SELECT COUNT(*) FROM traces WHERE run_id = ?", (run_id,)).fetchone()[0]
        rows = conn.execute(
            "SELECT * FROM traces WHERE run_id = ? ORDER BY start_ns, trace_id LIMIT ? OFFSET ?",
            (run_id, limit, offset),
        ).fetchall()
        return [dict(r) for r in rows], total

    @_serialised
    def get_trace(self, trace_id: str) -> Row | None:
        """One trace's summary row, or None."""
        row = self._conn().execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
        return None if row is None else dict(row)

    @_serialised
    def trace_tree(self, trace_id: str, *, offset: int = 0, limit: int = 500) -> tuple[list[Row], int]:
        """A trace's spans flattened depth-first (children in start order), one page of them, and the total.

        Each row is a light span (no attributes) plus ``depth`` and ``child_count``. A span whose parent is not in
        the store (yet: parents end after their children) is shown as a root.
        """
        rows = self._tree(trace_id)
        return rows[offset : offset + limit], len(rows)

    def _tree(self, trace_id: str) -> list[Row]:
        conn = self._conn()
        count, max_id = conn.execute(
            "SELECT COUNT(*), MAX(id) FROM spans WHERE trace_id = ?", (trace_id,)
        ).fetchone()
        key = (int(count), int(max_id or 0))
        with self._lock:
            cached = self._tree_cache.get(trace_id)
            if cached is not None and cached[0] == key:
                self._tree_cache.move_to_end(trace_id)
                return cached[1]
        spans = [
            _span_row(r)
            for r in conn.execute(
                f"SELECT {_SPAN_LIGHT} FROM spans WHERE trace_id = ? ORDER BY start_ns, id", (trace_id,)
            )
        ]
        by_id = {s["span_id"]: s for s in spans}
        children: dict[str | None, list[Row]] = {}
        for s in spans:
            parent = s["parent_id"] if s["parent_id"] in by_id else None
            children.setdefault(parent, []).append(s)
        ordered: list[Row] = []
        stack: list[tuple[Row, int]] = [(s, 0) for s in reversed(children.get(None, []))]
        while stack:
            s, depth = stack.pop()
            kids = children.get(s["span_id"], [])
            s["depth"] = depth
            s["child_count"] = len(kids)
            ordered.append(s)
            stack.extend((k, depth + 1) for k in reversed(kids))
        with self._lock:
            self._tree_cache[trace_id] = (key, ordered)
            while len(self._tree_cache) > _TREE_CACHE:
                self._tree_cache.popitem(last=False)
        return ordered

    # -------------------------------------------------------------- spans

    @_serialised
    def list_spans(
        self,
        *,
        run_id: str | None = None,
        trace_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        name: str | None = None,
        q: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[Row], int]:
        """Light spans (no attributes) in start order, filtered, one page, and how many match.

        ``q`` searches span names, status messages and attribute text (case-insensitive).
        """
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("run_id", run_id), ("trace_id", trace_id), ("kind", kind), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if name:
            where.append("name = ?")
            args.append(name)
        if q:
            pattern = f"%{_escape_like(q)}%"
            where.append(
                "(name LIKE ? ESCAPE '\\' OR status_message LIKE ? ESCAPE '\\' OR attributes LIKE ? ESCAPE '\\')"
            )
            args.extend([pattern, pattern, pattern])
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        conn = self._conn()
        total: int = conn.execute(f"SELECT COUNT(*) FROM spans{clause}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT {_SPAN_LIGHT} FROM spans{clause} ORDER BY start_ns, id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [_span_row(r) for r in rows], total

    @_serialised
    def get_span(
        self,
        span_id: str,
        *,
        trace_id: str | None = None,
        resolve: bool = True,
        inline_limit: int = 1 << 20,
    ) -> Row | None:
        """One span with its attributes; blob references resolved when ``resolve`` (those over ``inline_limit``
        bytes stay references, with ``"truncated": true``).

        Give its ``trace_id`` where you know it: a span is found through its trace (span ids are unique only within
        their trace, as in OpenTelemetry). Without one, every span of the store is read to find it (the first
        match wins), which takes seconds on a store of millions of spans.
        """
        where, args = (
            ("trace_id = ? AND span_id = ?", (trace_id, span_id)) if trace_id else ("span_id = ?", (span_id,))
        )
        query = f"SELECT {_SPAN_LIGHT}, attributes FROM spans WHERE {where} ORDER BY id LIMIT 1"
        row = self._conn().execute(query, args).fetchone()
        if row is None:
            return None
        span = _span_row(row)
        attributes: Any = json.loads(row["attributes"])
        span["attributes"] = self.resolve(attributes, inline_limit=inline_limit) if resolve else attributes
        return span

    @_serialised
    def spans_after(
        self, after_id: int, *, run_id: str | None = None, trace_id: str | None = None, limit: int = 500
    ) -> list[Row]:
        """Light spans written after row ``after_id`` (each row has its ``id``), oldest first (for live feeds)."""
        where = "id > ?"
        args: list[Any] = [after_id]
        if run_id:
            where += " AND run_id = ?"
            args.append(run_id)
        if trace_id:
            where += " AND trace_id = ?"
            args.append(trace_id)
        rows = self._conn().execute(
            f"SELECT {_SPAN_LIGHT} FROM spans WHERE {where} ORDER BY id LIMIT ?", [*args, limit]
        )
        return [_span_row(r) for r in rows]

    @_serialised
    def cursor(self) -> dict[str, int]:
        """The newest span row id, metric row id and run update time (a live feed starts after these)."""
        conn = self._conn()
        span_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM spans").fetchone()[0]
        metric_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM metrics").fetchone()[0]
        run_ns = conn.execute("SELECT COALESCE(MAX(updated_ns), 0) FROM runs").fetchone()[0]
        return {"span": int(span_id), "metric": int(metric_id), "run": int(run_ns)}

    # -------------------------------------------------------------- blobs

    @_serialised
    def get_blob(self, digest: str) -> bytes | None:
        """A blob's payload (JSON bytes), or None."""
        row = self._conn().execute("SELECT data FROM blobs WHERE hash = ?", (digest,)).fetchone()
        return None if row is None else _unpack(row[0])

    def resolve(self, value: Any, *, inline_limit: int = 1 << 20) -> Any:
        """``value`` with every blob reference replaced by the value it stands for."""
        if isinstance(value, dict):
            mapping: dict[str, Any] = value  # type: ignore[assignment]
            digest = mapping.get("$blob")
            if isinstance(digest, str) and len(mapping) <= 3:
                if int(mapping.get("size", 0)) > inline_limit:
                    return {**mapping, "truncated": True}
                data = self.get_blob(digest)
                if data is None:
                    return {**mapping, "missing": True}
                return self.resolve(json.loads(data), inline_limit=inline_limit)
            return {k: self.resolve(v, inline_limit=inline_limit) for k, v in mapping.items()}
        if isinstance(value, list):
            items: list[Any] = value  # type: ignore[assignment]
            return [self.resolve(v, inline_limit=inline_limit) for v in items]
        return value

    # -------------------------------------------------------------- conversations

    @_serialised
    def conversation(self, trace_id: str, agent_span_id: str | None = None) -> Row | None:
        """The conversation of one agent invocation in a trace (default: the root agent), for replay.

        ``messages`` is the prompt of the agent's last model call followed by that call's answer (the whole
        exchange, tool calls and results included); an agent that made no model call shows its input and reply.
        ``tools`` maps tool call ids to their spans; ``agents`` lists the agent invocations in the trace.
        """
        conn = self._conn()
        agents = [
            dict(r)
            for r in conn.execute(
                "SELECT span_id, agent_name AS name, parent_id, start_ns, end_ns, status FROM spans"
                " WHERE trace_id = ? AND kind = 'agent' ORDER BY start_ns LIMIT 1000",
                (trace_id,),
            )
        ]
        if not agents:
            return None
        if agent_span_id is None:
            ids = {a["span_id"] for a in agents}
            roots = [a for a in agents if a["parent_id"] not in ids]
            agent_span_id = str((roots or agents)[0]["span_id"])
        agent = self.get_span(agent_span_id, trace_id=trace_id)
        if agent is None:
            return None
        last_model = conn.execute(
            "SELECT span_id FROM spans WHERE trace_id = ? AND parent_id = ? AND kind = 'model'"
            " ORDER BY start_ns DESC, id DESC LIMIT 1",
            (trace_id, agent_span_id),
        ).fetchone()
        messages: list[Any] = []
        model_span_id: str | None = None
        if last_model is not None:
            model = self.get_span(last_model[0], trace_id=trace_id)
            assert model is not None
            model_span_id = model["span_id"]
            attributes: Row = model["attributes"]
            messages = list(attributes.get("gen_ai.input.messages") or [])
            output = attributes.get("gen_ai.output.messages")
            if output:
                messages.append({"role": "assistant", "name": agent["agent_name"], "content": output})
        else:
            attributes = agent["attributes"]
            messages = [
                *(attributes.get("gen_ai.input.messages") or []),
                *(attributes.get("gen_ai.output.messages") or []),
            ]
        tools: dict[str, Row] = {}
        for r in conn.execute(
            "SELECT span_id, name, status, start_ns, end_ns, json_extract(attributes, '$.\"gen_ai.tool.call.id\"')"
            " AS call_id FROM spans WHERE trace_id = ? AND parent_id = ? AND kind = 'tool'",
            (trace_id, agent_span_id),
        ):
            if r["call_id"]:
                tools[r["call_id"]] = {
                    "span_id": r["span_id"],
                    "status": r["status"],
                    "duration_ms": (r["end_ns"] - r["start_ns"]) / 1e6,
                }
        return {
            "agent_span_id": agent_span_id,
            "agent": agent["agent_name"],
            "model_span_id": model_span_id,
            "messages": messages,
            "tools": tools,
            "agents": [{"span_id": a["span_id"], "name": a["name"]} for a in agents],
        }

    # -------------------------------------------------------------- metrics

    @_serialised
    def metric_names(self, run_id: str) -> list[Row]:
        """The run's metrics: name, number of points, last step and last value."""
        rows = self._conn().execute(
            "SELECT name, COUNT(*) AS points, MAX(step) AS last_step FROM metrics WHERE run_id = ? GROUP BY name"
            " ORDER BY name",
            (run_id,),
        )
        result: list[Row] = []
        for r in rows:
            last = (
                self._conn()
                .execute(
                    "SELECT value FROM metrics WHERE run_id = ? AND name = ? ORDER BY step DESC, id DESC LIMIT 1",
                    (run_id, r["name"]),
                )
                .fetchone()
            )
            result.append({**dict(r), "last_value": None if last is None else last[0]})
        return result

    @_serialised
    def metric_series(self, run_id: str, name: str, *, max_points: int = 1000) -> list[tuple[int, float]]:
        """``(step, value)`` points in step order, averaged into at most ``max_points`` buckets of steps."""
        rows: list[tuple[int, float]] = [
            (int(r[0]), float(r[1]))
            for r in self._conn().execute(
                "SELECT step, value FROM metrics WHERE run_id = ? AND name = ? ORDER BY step, id",
                (run_id, name),
            )
        ]
        if len(rows) <= max_points or max_points < 1:
            return rows
        size = -(-len(rows) // max_points)
        out: list[tuple[int, float]] = []
        for start in range(0, len(rows), size):
            bucket = rows[start : start + size]
            out.append((bucket[-1][0], sum(v for _, v in bucket) / len(bucket)))
        return out

    @_serialised
    def metrics_after(self, after_id: int, *, run_id: str | None = None, limit: int = 1000) -> list[Row]:
        """Metric points written after row ``after_id``, oldest first (for live feeds)."""
        where, args = "id > ?", [after_id]
        if run_id:
            where += " AND run_id = ?"
            args.append(run_id)  # type: ignore[arg-type]
        rows = self._conn().execute(
            f"SELECT id, run_id, name, step, value, time_ns FROM metrics WHERE {where} ORDER BY id LIMIT ?",
            [*args, limit],
        )
        return [dict(r) for r in rows]

    # -------------------------------------------------------------- evaluations

    @_serialised
    def write_eval_results(self, run_id: str, rows: list[Row]) -> None:
        """Insert or replace evaluation rows of ``run_id`` (one per task key and repeat; see ``agentscope eval``):
        each has ``task_key``, ``repeat``, ``task_id``, ``status``, ``success``, ``reward`` and ``trace_id``, and
        any other JSON-ready metrics."""
        write_eval_results(self._conn(), run_id, rows)

    @_serialised
    def eval_results(self, run_id: str) -> list[Row]:
        """The evaluation rows of ``run_id``, by task key and repeat (empty for a run that is no evaluation)."""
        return read_eval_results(self._conn(), run_id)

    @_serialised
    def list_evaluations(self, *, offset: int = 0, limit: int = 100) -> tuple[list[Row], int]:
        """Runs holding evaluation rows, newest first, each its run row with ``episodes``, ``tasks``,
        ``successes``, ``success_rate`` and ``reward_mean``; and how many there are."""
        conn = self._conn()
        summaries, total = list_evaluations(conn, offset=offset, limit=limit)
        out: list[Row] = []
        for summary in summaries:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (summary["run_id"],)
            ).fetchone()
            run = _run_row(row) if row is not None else {"id": summary["run_id"], "name": summary["run_id"]}
            out.append({**run, **{k: v for k, v in summary.items() if k != "run_id"}})
        return out, total

    # -------------------------------------------------------------- comparing

    @_serialised
    def run_stats(self, run_id: str) -> list[Row]:
        """Per (kind, name): calls, errors, latency (mean, p50, p95, max in ms) and tokens, over the run's spans."""
        conn = self._conn()
        groups: dict[tuple[str, str], list[Any]] = {}
        for kind, name, duration, status, tokens_in, tokens_out in conn.execute(
            "SELECT kind, name, end_ns - start_ns, status, input_tokens, output_tokens FROM spans WHERE run_id = ?",
            (run_id,),
        ):
            g = groups.get((kind, name))
            if g is None:
                g = groups[(kind, name)] = [[], 0, 0, 0]
            g[0].append(duration)
            g[1] += status == "error"
            g[2] += tokens_in or 0
            g[3] += tokens_out or 0
        stats: list[Row] = []
        for (kind, name), (durations, errors, tokens_in, tokens_out) in sorted(groups.items()):
            durations.sort()
            n = len(durations)
            stats.append(
                {
                    "kind": kind,
                    "name": name,
                    "count": n,
                    "errors": errors,
                    "mean_ms": sum(durations) / n / 1e6,
                    "p50_ms": durations[(n - 1) // 2] / 1e6,
                    "p95_ms": durations[min(n - 1, round(0.95 * (n - 1)))] / 1e6,
                    "max_ms": durations[-1] / 1e6,
                    "input_tokens": tokens_in,
                    "output_tokens": tokens_out,
                }
            )
        return stats


# ---------------------------------------------------------------------- helpers


def _pack(data: bytes) -> bytes:
    """Blobs over a few KB are stored zlib-compressed, marked by a leading ``z`` (JSON never starts with one)."""
    if len(data) >= _ZLIB_MIN:
        packed = zlib.compress(data, 1)
        if len(packed) < len(data):
            return b"z" + packed
    return data


def _unpack(data: bytes) -> bytes:
    return zlib.decompress(data[1:]) if data[:1] == b"z" else data


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _process_gone(config: Any, host: str) -> bool:
    """True when ``config`` (a run's) names this host and a pid that no process has."""
    if not isinstance(config, dict):
        return False
    recorded = cast("dict[str, Any]", config)
    pid = recorded.get("pid")
    if recorded.get("host") != host or type(pid) is not int or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's) or cannot be probed
        return False
    return False


def _run_row(row: sqlite3.Row) -> Row:
    run = dict(row)
    run["config"] = json.loads(run["config"])
    run["agents"] = [a for a in run["agents"].split("|") if a]
    run["duration_ns"] = _run_duration(run)
    return run


def _run_duration(run: Row) -> int:
    """From the run's start to its end; a run still going has lasted until now, not until its last write (an
    agent waiting for its user writes nothing for minutes)."""
    end: int | None = run["ended_ns"]
    if run["status"] == "running" or end is None:
        end = max(time.time_ns(), run["updated_ns"])
    return max(0, end - run["started_ns"])


def _span_row(row: sqlite3.Row) -> Row:
    span = {k: row[k] for k in row.keys() if k != "attributes"}  # noqa: SIM118 - sqlite3.Row has no items()
    span["duration_ms"] = (span["end_ns"] - span["start_ns"]) / 1e6
    return span
