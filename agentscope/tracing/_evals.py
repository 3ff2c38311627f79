"""Evaluation results in the trace store: one row per (task, repeat) of an evaluation run.

An evaluation (``agentscope eval``) is a run: its episodes are traces like any agent's, its aggregate metrics
(``eval/success_rate``...) are metric points, and its per-episode results live in ``eval_results``, keyed by
``(run_id, task_key, repeat)``, so that writing a row twice (a resumed evaluation re-sends what it kept)
replaces it and nothing is counted twice. The studio reads the table through :class:`TraceStore`'s methods.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "EVAL_COLUMNS",
    "create_eval_results",
    "list_evaluations",
    "read_eval_results",
    "write_eval_results",
]

EVAL_COLUMNS = ("task_key", "repeat", "task_id", "status", "success", "reward", "trace_id")
"""The columns every row has (the rest of a row is kept as JSON in ``data`` and merged back on reading)."""

_V2 = """
CREATE TABLE eval_results (
    run_id TEXT NOT NULL,
    task_key TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    status TEXT NOT NULL,
    success INTEGER NOT NULL,
    reward REAL NOT NULL,
    trace_id TEXT,
    time_ns INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, task_key, repeat)
) WITHOUT ROWID
"""


def create_eval_results(conn: sqlite3.Connection) -> None:
    """Schema step 2: the ``eval_results`` table."""
    conn.execute(_V2)


def write_eval_results(conn: sqlite3.Connection, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace ``rows`` (each with at least the keys of :data:`EVAL_COLUMNS`) under ``run_id``."""
    now = time.time_ns()
    values: list[tuple[Any, ...]] = []
    for row in rows:
        missing = [c for c in EVAL_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"an evaluation row lacks {', '.join(missing)}: {dict(row)!r}")
        extra = {k: v for k, v in row.items() if k not in EVAL_COLUMNS}
        values.append(
            (
                run_id,
                str(row["task_key"]),
                int(row["repeat"]),
                str(row["task_id"]),
                str(row["status"]),
                int(bool(row["success"])),
                float(row["reward"]),
                row["trace_id"],
                now,
                json.dumps(extra),
            )
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT OR REPLACE INTO eval_results (run_id, task_key, repeat, task_id, status, success, reward,"
            " trace_id, time_ns, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def read_eval_results(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """The run's rows, by task key and repeat, each its columns merged with its JSON ``data``."""
    rows = conn.execute(
        "SELECT task_key, repeat, task_id, status, success, reward, trace_id, data FROM eval_results"
        " WHERE run_id = ? ORDER BY task_key, repeat",
        (run_id,),
    ).fetchall()
    out: list[dict[str, Any]] = []
    for r in rows:
        row: dict[str, Any] = json.loads(r["data"])
        row.update({c: r[c] for c in EVAL_COLUMNS})
        row["success"] = bool(row["success"])
        out.append(row)
    return out


def list_evaluations(
    conn: sqlite3.Connection, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Each run holding evaluation rows, newest first: ``run_id``, ``episodes``, ``tasks``, ``successes``,
    ``success_rate`` and ``reward_mean`` over its rows; and how many such runs there are."""
    total: int = conn.execute("SELECT COUNT(DISTINCT run_id) FROM eval_results").fetchone()[0]
    rows = conn.execute(
        "SELECT e.run_id, COUNT(*) AS episodes, COUNT(DISTINCT e.task_key) AS tasks, SUM(e.success) AS successes,"
        " AVG(e.reward) AS reward_mean FROM eval_results AS e LEFT JOIN runs ON runs.id = e.run_id"
        " GROUP BY e.run_id ORDER BY MAX(runs.started_ns) DESC, e.run_id LIMIT ? OFFSET ?",
        (limit, offset),
    ).fetchall()
    out = [dict(r) for r in rows]
    for row in out:
        row["success_rate"] = row["successes"] / row["episodes"]
    return out, total
