"""The trace store's schema and its migrations.

``PRAGMA user_version`` holds the schema version. :data:`MIGRATIONS` maps each version to the step that brings a
store from the version before it; opening a store runs the missing steps in order, each in its own transaction (a
failed step leaves the store at the version before it). A store written by a newer AgentScope is refused rather
than misread.

To change the schema: append a step (``MIGRATIONS[n + 1] = ...``) that alters existing stores, never edit a released
one; the conformance suite (``tests/tracing/test_store_conformance.py``) checks that a store created at every older
version migrates to the current one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping

from agentscope.tracing._evals import create_eval_results

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

logger = logging.getLogger("agentscope.tracing")

_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    ended_ns INTEGER,
    updated_ns INTEGER NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    span_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    trace_count INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    agents TEXT NOT NULL DEFAULT '|'
);
CREATE INDEX runs_started ON runs (started_ns);
CREATE INDEX runs_updated ON runs (updated_ns);

CREATE TABLE traces (
    trace_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    root_span_id TEXT,
    name TEXT,
    kind TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    span_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX traces_run ON traces (run_id, start_ns);

CREATE TABLE spans (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    agent_name TEXT,
    attributes TEXT NOT NULL
);
CREATE INDEX spans_trace ON spans (trace_id, start_ns);
CREATE INDEX spans_run ON spans (run_id, id);
CREATE INDEX spans_span_id ON spans (span_id);

CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE metrics (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE INDEX metrics_series ON metrics (run_id, name, step);
"""


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _index_spans_by_trace_and_id(conn: sqlite3.Connection) -> None:
    """Version 3: a span is found by its trace id and span id, as in OpenTelemetry (span ids are unique only
    within their trace), through an index led by the trace id. The index on span ids alone goes: its keys are
    random, so every span written dirtied a page anywhere in it, while trace ids now start with their time
    (:func:`agentscope.tracing._spans.new_trace_id`) and keep an index led by them growing at its end."""
    spans: int = conn.execute("SELECT coalesce(max(id), 0) FROM spans").fetchone()[0]
    if spans >= 1_000_000:
        logger.warning("trace store: indexing %d spans by trace and span id (schema version 3), once", spans)
    conn.execute("DROP INDEX IF EXISTS spans_span_id")
    conn.execute("CREATE INDEX IF NOT EXISTS spans_trace_span ON spans (trace_id, span_id)")


MIGRATIONS: Mapping[int, Callable[[sqlite3.Connection], None]] = {
    1: _create_v1,
    2: create_eval_results,
    3: _index_spans_by_trace_and_id,
}
"""Version -> the step that migrates a store from the version before (version 1: an empty database; version 2
adds ``eval_results``, the per-episode rows of evaluations; version 3 indexes spans by trace and span id instead of
span id alone)."""

SCHEMA_VERSION = max(MIGRATIONS)
"""The version this AgentScope writes."""


def migrate(
    conn: sqlite3.Connection, migrations: Mapping[int, Callable[[sqlite3.Connection], None]] = MIGRATIONS
) -> int:
    """Bring the database behind ``conn`` to the newest version in ``migrations``; return the version before.

    Each step runs in its own transaction, which also sets ``user_version``. Raises ``RuntimeError`` for a store of
    a newer version than ``migrations`` knows.
    """
    target = max(migrations)
    before: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if before > target:
        raise RuntimeError(
            f"this trace store has schema version {before}, newer than the {target} this AgentScope understands; "
            "upgrade agentscope to read it"
        )
    for version in range(before + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the write lock.
            current: int = conn.execute("PRAGMA user_version").fetchone()[0]
            if current >= version:
                conn.execute("COMMIT")
                continue
            migrations[version](conn)
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return before
