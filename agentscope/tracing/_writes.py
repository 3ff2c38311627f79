"""How a batch goes into the SQLite trace store: few statements, each doing a lot of rows.

Python's ``sqlite3`` releases the GIL around every ``sqlite3_step`` and takes it back afterwards. ``executemany``
steps once per row, so a writer thread that inserts row by row hands the GIL back and forth with the event loop
thousands of times per batch and waits, each time, until the loop gives it up again. Here every statement covers
many rows: spans, blobs and metrics go in as multi-row ``INSERT ... VALUES`` of up to :data:`CHUNK_ROWS` rows, and
the per-trace and per-run counters are computed by SQLite from the rows just inserted. SQLite then does the work in
C without the GIL (on another core, while the event loop runs), and Python only binds the values.

The rows written and the counters are exactly those of one ``INSERT`` per row followed by the counter updates.
Optional span columns are bound as ``''`` / ``-1`` and turned into NULL by SQLite (``NULLIF``): ``sqlite3`` binds
a Python ``None`` only after two failed attribute lookups (adapter protocol), each formatting an error message,
and most spans have three or four empty columns.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence
from itertools import chain

from agentscope.tracing._records import MetricRecord, SpanRecord

__all__ = ["CHUNK_ROWS", "insert_rows", "write_metrics", "write_spans"]

CHUNK_ROWS = 256
"""Rows per multi-row statement (SQLite allows 32,766 bound values per statement; spans have 14 columns)."""

_SPANS = (
    "INSERT INTO spans (run_id, trace_id, span_id, parent_id, kind, name, start_ns, end_ns, status,"
    " status_message, input_tokens, output_tokens, agent_name, attributes) VALUES {rows}"
)
_SPAN_ROW = "(?,?,?,NULLIF(?,''),?,?,?,?,?,NULLIF(?,''),NULLIF(?,-1),NULLIF(?,-1),NULLIF(?,''),?)"
"""One span's values; parent_id, status_message, the token counts and agent_name are sent as '' or -1 for NULL."""

_TRACES = (
    "INSERT INTO traces (trace_id, run_id, root_span_id, name, kind, status, start_ns, end_ns, span_count,"
    " error_count, input_tokens, output_tokens)"
    " SELECT g.trace_id, f.run_id, NULL, NULL, NULL, 'running', g.start_ns, g.end_ns, g.spans, g.errors,"
    " g.tokens_in, g.tokens_out FROM ("
    "   SELECT trace_id, min(id) AS first_id, min(start_ns) AS start_ns, max(end_ns) AS end_ns, count(*) AS spans,"
    "   sum(status = 'error') AS errors, sum(coalesce(input_tokens, 0)) AS tokens_in,"
    "   sum(coalesce(output_tokens, 0)) AS tokens_out FROM spans NOT INDEXED WHERE id > ? GROUP BY trace_id"
    " ) AS g JOIN spans AS f ON f.id = g.first_id WHERE true"
    " ON CONFLICT (trace_id) DO UPDATE SET"
    " start_ns = min(start_ns, excluded.start_ns), end_ns = max(end_ns, excluded.end_ns),"
    " span_count = span_count + excluded.span_count, error_count = error_count + excluded.error_count,"
    " input_tokens = input_tokens + excluded.input_tokens,"
    " output_tokens = output_tokens + excluded.output_tokens"
)
"""Each trace's counters over the spans inserted after row ``?`` (its run: that of its first span there)."""

_NEW_TRACES = (
    "SELECT f.run_id, count(*) FROM ("
    "   SELECT trace_id, min(id) AS first_id FROM spans NOT INDEXED WHERE id > ? GROUP BY trace_id"
    " ) AS g JOIN spans AS f ON f.id = g.first_id"
    " WHERE NOT EXISTS (SELECT 1 FROM traces WHERE traces.trace_id = g.trace_id) GROUP BY f.run_id"
)
"""Per run, the traces that the spans inserted after row ``?`` start (run before :data:`_TRACES` inserts them): a
run's ``trace_count`` grows by these, instead of being counted again over all of the run's traces with every batch,
which cost a served run 30 ms per batch at a million traces, and grew with it."""

_ROOTS = (
    "WITH r (trace_id, span_id, name, kind, status) AS (VALUES {rows})"
    " UPDATE traces SET root_span_id = r.span_id, name = r.name, kind = r.kind, status = r.status"
    " FROM r WHERE traces.trace_id = r.trace_id"
)

_RUNS = (
    "SELECT run_id, count(*), sum(status = 'error'), sum(coalesce(input_tokens, 0)),"
    " sum(coalesce(output_tokens, 0)) FROM spans NOT INDEXED WHERE id > ? GROUP BY run_id"
)

_AGENTS = "SELECT DISTINCT run_id, agent_name FROM spans NOT INDEXED WHERE id > ? AND agent_name IS NOT NULL"

_METRICS = "INSERT INTO metrics (run_id, name, step, value, time_ns) VALUES {rows}"


@functools.lru_cache(maxsize=64)
def _statement(template: str, one: str, rows: int) -> str:
    return template.format(rows=",".join([one] * rows))


def insert_rows(
    conn: sqlite3.Connection, template: str, rows: Sequence[tuple[object, ...]], row: str | None = None
) -> None:
    """Run ``template`` (a statement with ``{rows}`` where its ``VALUES`` rows go) over ``rows``, in order.

    ``row`` is one row's placeholders (default ``(?,?,...)``). Chunks have :data:`CHUNK_ROWS` rows, the last ones a
    power of two fewer, so that few distinct statements exist and ``sqlite3``'s statement cache keeps them prepared.
    """
    if not rows:
        return
    one = row or "(" + ",".join("?" * len(rows[0])) + ")"
    start, total = 0, len(rows)
    while start < total:
        left = total - start
        size = CHUNK_ROWS if left >= CHUNK_ROWS else 1 << (left.bit_length() - 1)
        conn.execute(_statement(template, one, size), list(chain.from_iterable(rows[start : start + size])))
        start += size


def write_spans(conn: sqlite3.Connection, spans: Sequence[SpanRecord]) -> None:
    """Insert spans and add them to their traces' and runs' counters (inside the caller's transaction)."""
    last: int = conn.execute("SELECT coalesce(max(id), 0) FROM spans").fetchone()[0]
    insert_rows(
        conn,
        _SPANS,
        [
            (
                s.run_id,
                s.trace_id,
                s.span_id,
                s.parent_id or "",
                s.kind,
                s.name,
                s.start_ns,
                s.end_ns,
                s.status,
                s.status_message or "",
                -1 if s.input_tokens is None else s.input_tokens,
                -1 if s.output_tokens is None else s.output_tokens,
                s.agent_name or "",
                s.attributes,
            )
            for s in spans
        ],
        _SPAN_ROW,
    )
    new_traces: dict[str, int] = dict(conn.execute(_NEW_TRACES, (last,)).fetchall())
    conn.execute(_TRACES, (last,))
    # A trace's root span names the trace and decides its status; the last root of a trace in the batch wins.
    roots = {s.trace_id: s for s in spans if s.is_root}
    if roots:
        insert_rows(
            conn,
            _ROOTS,
            [
                (s.trace_id, s.span_id, s.name, s.kind, "error" if s.status == "error" else "ok")
                for s in roots.values()
            ],
        )
    agents: dict[str, set[str]] = {}
    for run_id, agent_name in conn.execute(_AGENTS, (last,)):
        agents.setdefault(run_id, set()).add(agent_name)
    now = time.time_ns()
    for run_id, count, errors, tokens_in, tokens_out in conn.execute(_RUNS, (last,)).fetchall():
        row = conn.execute("SELECT agents FROM runs WHERE id = ?", (run_id,)).fetchone()
        names: str = row[0] if row is not None else "|"
        for name in sorted(agents.get(run_id, ())):
            if f"|{name}|" not in names:
                names += f"{name}|"
        conn.execute(
            "UPDATE runs SET span_count = span_count + ?, error_count = error_count + ?,"
            " input_tokens = input_tokens + ?, output_tokens = output_tokens + ?, agents = ?,"
            " trace_count = trace_count + ?, updated_ns = ? WHERE id = ?",
            (count, errors, tokens_in, tokens_out, names, new_traces.get(run_id, 0), now, run_id),
        )


def write_metrics(conn: sqlite3.Connection, metrics: Sequence[MetricRecord]) -> None:
    """Insert metric points and mark their runs updated (inside the caller's transaction)."""
    insert_rows(conn, _METRICS, [(m.run_id, m.name, m.step, m.value, m.time_ns) for m in metrics])
    now = time.time_ns()
    conn.executemany(
        "UPDATE runs SET updated_ns = ? WHERE id = ?",
        [(now, run_id) for run_id in {m.run_id for m in metrics}],
    )
