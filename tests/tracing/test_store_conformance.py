"""Conformance suite for trace stores: every store configuration runs every test here.

A store takes batches (:meth:`TraceStore.write`) and answers the studio's reads. The configurations: a WAL file on
disk, and a private in-memory database. A new backend adds itself to ``STORES``. Plain (sync) tests: store calls
block, which is fine outside an event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentscope.tracing import SCHEMA_VERSION, RunFilter, TraceStore
from agentscope.tracing._records import ExportBatch, MetricRecord, RunRecord, SpanRecord
from agentscope.tracing._schema import MIGRATIONS, migrate

STORES: dict[str, Callable[[Path], TraceStore]] = {
    "sqlite-file": lambda tmp: TraceStore(tmp / "nested" / "traces.db"),
    "sqlite-memory": lambda tmp: TraceStore(":memory:"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    opened = STORES[request.param](tmp_path)
    try:
        yield opened
    finally:
        opened.close()


T0 = 1_700_000_000_000_000_000


def run(run_id: str = "r1", **kw: Any) -> RunRecord:
    fields: dict[str, Any] = {"id": run_id, "project": "proj", "name": f"name-{run_id}", "started_ns": T0}
    fields.update(kw)
    return RunRecord(**fields)


def span(
    span_id: str,
    parent: str | None = None,
    *,
    trace: str = "t1",
    run_id: str = "r1",
    kind: str = "tool",
    name: str | None = None,
    start: int = 0,
    end: int = 10,
    status: str = "unset",
    attributes: dict[str, Any] | None = None,
    tokens: tuple[int, int] | None = None,
    agent: str | None = None,
) -> SpanRecord:
    return SpanRecord(
        run_id=run_id,
        trace_id=trace,
        span_id=span_id,
        parent_id=parent,
        kind=kind,
        name=name or f"{kind} {span_id}",
        start_ns=T0 + start * 1_000_000,
        end_ns=T0 + end * 1_000_000,
        status=status,
        status_message="it broke" if status == "error" else None,
        attributes=json.dumps(attributes or {}),
        is_root=parent is None,
        input_tokens=tokens[0] if tokens else None,
        output_tokens=tokens[1] if tokens else None,
        agent_name=agent,
    )


def batch(
    spans: list[SpanRecord] = [],  # noqa: B006 - never mutated
    *,
    the_run: RunRecord | None = None,
    metrics: list[MetricRecord] = [],  # noqa: B006
    blobs: dict[str, bytes] | None = None,
) -> ExportBatch:
    return ExportBatch(
        run=the_run or run(),
        spans=list(spans),
        metrics=list(metrics),
        blobs=blobs or {},
        resolve=lambda _: None,
    )


def test_a_new_store_is_at_the_current_schema_version(store: TraceStore) -> None:
    assert store.schema_version == SCHEMA_VERSION
    assert store.migrated_from == 0
    assert store.list_runs() == ([], 0)


def test_runs_are_created_updated_and_counted(store: TraceStore) -> None:
    store.write(batch())
    (row,), total = store.list_runs()
    assert total == 1
    assert row["status"] == "running"
    assert row["span_count"] == 0
    store.write(
        batch(
            [
                span("a", kind="agent", agent="calc", tokens=None),
                span("m", "a", kind="model", tokens=(100, 20)),
                span("x", "a", status="error"),
            ]
        )
    )
    store.write(
        batch(
            [span("m2", "a", trace="t2", kind="model", tokens=(5, 1))],
            the_run=run(status="finished", ended_ns=T0 + 5),
        )
    )
    got = store.get_run("r1")
    assert got is not None
    assert (got["status"], got["ended_ns"]) == ("finished", T0 + 5)
    assert (got["span_count"], got["error_count"], got["trace_count"]) == (4, 1, 2)
    assert (got["input_tokens"], got["output_tokens"]) == (105, 21)
    assert got["agents"] == ["calc"]
    assert got["kinds"] == {
        "agent": {"count": 1, "errors": 0},
        "model": {"count": 2, "errors": 0},
        "tool": {"count": 1, "errors": 1},
    }
    assert store.get_run("nope") is None


def test_run_filters_and_search(store: TraceStore) -> None:
    store.write(
        batch([span("a", kind="agent", agent="planner")], the_run=run("r1", project="alpha", started_ns=T0))
    )
    store.write(
        batch(
            [span("b", trace="t2", run_id="r2", kind="agent", agent="coder", status="error")],
            the_run=run("r2", project="beta", name="nightly 100%_done", started_ns=T0 + 10, status="failed"),
        )
    )
    store.write(batch(the_run=run("r3", project="beta", name="other", started_ns=T0 + 20, status="finished")))

    def ids(**kw: Any) -> list[str]:
        rows, total = store.list_runs(RunFilter(**kw))
        assert total == len(rows)
        return [r["id"] for r in rows]

    assert ids() == ["r3", "r2", "r1"]  # newest first
    assert ids(project="beta") == ["r3", "r2"]
    assert ids(agent="coder") == ["r2"]
    assert ids(agent="code") == []  # agent names match exactly
    assert ids(status="failed") == ["r2"]
    assert ids(status="error") == ["r2"]  # runs with failed spans
    assert ids(since_ns=T0 + 10) == ["r3", "r2"]
    assert ids(until_ns=T0 + 10) == ["r1"]
    assert ids(q="PLANNER") == ["r1"]
    assert ids(q="100%_") == ["r2"]  # LIKE wildcards in the search text are literal
    assert ids(q="0%x") == []
    assert store.projects() == ["alpha", "beta"]
    page, total = store.list_runs(offset=1, limit=1)
    assert total == 3
    assert [r["id"] for r in page] == ["r2"]


def test_traces_are_summarised_even_when_the_root_arrives_last(store: TraceStore) -> None:
    store.write(batch([span("m", "a", kind="model", start=1, end=3, tokens=(10, 2))]))
    trace = store.get_trace("t1")
    assert trace is not None
    assert trace["name"] is None
    assert trace["status"] == "running"
    assert trace["span_count"] == 1
    store.write(batch([span("a", kind="agent", name="invoke_agent calc", start=0, end=9)]))
    trace = store.get_trace("t1")
    assert trace is not None
    assert (trace["name"], trace["root_span_id"], trace["status"]) == ("invoke_agent calc", "a", "ok")
    assert (trace["span_count"], trace["input_tokens"]) == (2, 10)
    assert (trace["start_ns"], trace["end_ns"]) == (T0, T0 + 9_000_000)
    rows, total = store.list_traces("r1")
    assert total == 1
    assert rows[0]["trace_id"] == "t1"


def test_the_tree_is_depth_first_with_children_in_start_order(store: TraceStore) -> None:
    store.write(
        batch(
            [
                span("c2", "b", start=6, end=7),
                span("b", "a", start=5, end=8),
                span("c1", "b", start=5, end=6),
                span("d", "a", start=1, end=2),
                span("a", kind="agent", start=0, end=10),
                span("orphan", "missing-parent", start=3, end=4),
            ]
        )
    )
    rows, total = store.trace_tree("t1")
    assert total == 6
    assert [(r["span_id"], r["depth"], r["child_count"]) for r in rows] == [
        ("a", 0, 2),
        ("d", 1, 0),
        ("b", 1, 2),
        ("c1", 2, 0),
        ("c2", 2, 0),
        ("orphan", 0, 0),  # its parent is not stored (yet): shown as a root
    ]
    page, total = store.trace_tree("t1", offset=2, limit=2)
    assert total == 6
    assert [r["span_id"] for r in page] == ["b", "c1"]
    assert "attributes" not in rows[0]
    assert rows[0]["duration_ms"] == 10.0
    store.write(batch([span("e", "d", start=1, end=2)]))  # the cached tree is rebuilt when the trace grows
    assert [r["span_id"] for r in store.trace_tree("t1")[0]][:3] == ["a", "d", "e"]


def test_span_lists_filter_search_and_paginate(store: TraceStore) -> None:
    store.write(
        batch(
            [
                span(f"s{i}", "root", start=i, end=i + 1, attributes={"gen_ai.tool.name": f"tool{i % 3}"})
                for i in range(25)
            ]
            + [span("e", "root", status="error", kind="model", start=30, end=31)]
        )
    )
    rows, total = store.list_spans(run_id="r1", offset=20, limit=10)
    assert total == 26
    assert [r["span_id"] for r in rows] == ["s20", "s21", "s22", "s23", "s24", "e"]
    assert store.list_spans(trace_id="t1", status="error")[1] == 1
    assert store.list_spans(trace_id="t1", kind="model")[1] == 1
    assert store.list_spans(trace_id="t1", q="tool2")[1] == 8
    assert store.list_spans(trace_id="t1", q="it broke")[1] == 1  # status messages are searched too
    assert store.list_spans(trace_id="t1", name="tool s3")[1] == 1


def test_span_detail_resolves_blob_references(store: TraceStore) -> None:
    big = {"messages": ["x" * 5000]}
    blob = json.dumps(big).encode()
    attributes = {
        "gen_ai.tool.name": "t",
        "gen_ai.input.messages": [{"$blob": "h1", "size": len(blob)}],
        "n": {"$blob": "gone", "size": 3},
    }
    store.write(batch([span("s", attributes=attributes)], blobs={"h1": blob}))
    got = store.get_span("s")
    assert got is not None
    assert got["attributes"]["gen_ai.input.messages"] == [big]
    assert got["attributes"]["n"] == {"$blob": "gone", "size": 3, "missing": True}
    raw = store.get_span("s", resolve=False)
    assert raw is not None
    assert raw["attributes"] == attributes
    small = store.get_span("s", inline_limit=10)
    assert small is not None
    assert small["attributes"]["gen_ai.input.messages"][0]["truncated"] is True
    assert store.get_blob("h1") == blob
    assert store.get_span("nope") is None


def test_a_span_is_found_by_its_trace_and_id_and_span_ids_may_repeat_across_traces(store: TraceStore) -> None:
    # OpenTelemetry makes span ids unique within their trace only: the same id in two traces is two spans.
    store.write(
        batch(
            [span("s", trace="t1", attributes={"which": 1}), span("s", trace="t2", attributes={"which": 2})]
        )
    )
    first, second = store.get_span("s", trace_id="t1"), store.get_span("s", trace_id="t2")
    assert first is not None
    assert second is not None
    assert (first["trace_id"], first["attributes"]) == ("t1", {"which": 1})
    assert (second["trace_id"], second["attributes"]) == ("t2", {"which": 2})
    assert store.get_span("s", trace_id="t3") is None
    found = store.get_span("s")  # without the trace: the first written
    assert found is not None
    assert found["trace_id"] == "t1"


def test_a_span_lookup_with_its_trace_uses_the_trace_and_span_index(tmp_path: Path) -> None:
    with TraceStore(tmp_path / "traces.db") as opened:
        opened.write(batch([span("s")]))
        statements: list[str] = []
        conn = opened._conn()  # pyright: ignore[reportPrivateUsage]
        conn.set_trace_callback(statements.append)
        try:
            assert opened.get_span("s", trace_id="t1") is not None
        finally:
            conn.set_trace_callback(None)
        (query,) = [q for q in statements if q.lstrip().upper().startswith("SELECT") and "FROM spans" in q]
        plan = " ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "spans_trace_span" in plan, plan


def test_blobs_are_stored_once_and_compressed(store: TraceStore, tmp_path: Path) -> None:
    payload = json.dumps(["same text " * 2000]).encode()
    store.write(batch([span("a")], blobs={"h": payload}))
    store.write(batch([span("b")], blobs={"h": payload}))
    conn = store._conn()
    count, stored = conn.execute("SELECT COUNT(*), SUM(length(data)) FROM blobs").fetchone()
    assert count == 1
    assert stored < len(payload) / 10
    assert store.get_blob("h") == payload


def test_conversation_replays_the_last_model_call_of_an_agent(store: TraceStore) -> None:
    user = {"role": "user", "name": "u", "content": "hi"}
    call = {"type": "tool_use", "id": "c1", "name": "add", "input": {"a": 1}}
    result = {
        "role": "tool",
        "name": None,
        "content": [{"type": "tool_result", "id": "c1", "name": "add", "output": "2", "is_error": False}],
    }
    store.write(
        batch(
            [
                span(
                    "m1",
                    "a",
                    kind="model",
                    start=1,
                    end=2,
                    attributes={"gen_ai.input.messages": [user], "gen_ai.output.messages": [call]},
                ),
                span("t1", "a", kind="tool", start=2, end=4, attributes={"gen_ai.tool.call.id": "c1"}),
                span(
                    "m2",
                    "a",
                    kind="model",
                    start=4,
                    end=5,
                    attributes={
                        "gen_ai.input.messages": [
                            user,
                            {"role": "assistant", "name": "calc", "content": [call]},
                            result,
                        ],
                        "gen_ai.output.messages": [{"type": "text", "text": "2"}],
                    },
                ),
                span(
                    "a", kind="agent", agent="calc", start=0, end=6, attributes={"gen_ai.agent.name": "calc"}
                ),
            ]
        )
    )
    convo = store.conversation("t1")
    assert convo is not None
    assert convo["agent"] == "calc"
    assert convo["model_span_id"] == "m2"
    assert [m["role"] for m in convo["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert convo["messages"][-1]["content"] == [{"type": "text", "text": "2"}]
    assert convo["tools"] == {"c1": {"span_id": "t1", "status": "unset", "duration_ms": 2.0}}
    assert convo["agents"] == [{"span_id": "a", "name": "calc"}]
    assert store.conversation("no-such-trace") is None


def test_metric_series_in_step_order_and_downsampled(store: TraceStore) -> None:
    points = [MetricRecord("r1", "train/policy_loss", step, float(step), T0 + step) for step in range(1000)]
    points.append(MetricRecord("r1", "rollout/tokens_per_s", 0, 5.0, T0))
    store.write(batch(metrics=points[::-1]))
    names = store.metric_names("r1")
    assert [(m["name"], m["points"], m["last_step"], m["last_value"]) for m in names] == [
        ("rollout/tokens_per_s", 1, 0, 5.0),
        ("train/policy_loss", 1000, 999, 999.0),
    ]
    full = store.metric_series("r1", "train/policy_loss", max_points=5000)
    assert full[:3] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert len(full) == 1000
    small = store.metric_series("r1", "train/policy_loss", max_points=100)
    assert len(small) == 100
    assert small[0] == (9, 4.5)  # mean of steps 0..9, at the bucket's last step
    assert store.metric_series("r1", "nothing") == []


def test_live_feed_cursors(store: TraceStore) -> None:
    store.write(batch([span("a")]))
    cursor = store.cursor()
    assert cursor["span"] >= 1
    assert cursor["run"] > 0
    assert store.spans_after(cursor["span"]) == []
    store.write(batch([span("b"), span("c", trace="t2")], metrics=[MetricRecord("r1", "m", 0, 1.0, T0)]))
    new = store.spans_after(cursor["span"])
    assert [r["span_id"] for r in new] == ["b", "c"]
    assert [r["span_id"] for r in store.spans_after(cursor["span"], trace_id="t2")] == ["c"]
    assert [m["name"] for m in store.metrics_after(cursor["metric"], run_id="r1")] == ["m"]
    updated = store.runs_updated_since(cursor["run"])
    assert [r["id"] for r in updated] == ["r1"]


def test_run_stats_per_kind_and_name(store: TraceStore) -> None:
    spans = [span(f"s{i}", "a", name="execute_tool add", start=0, end=i + 1) for i in range(20)]
    spans.append(span("m", "a", kind="model", name="chat m", status="error", tokens=(7, 3)))
    store.write(batch(spans))
    stats = {(s["kind"], s["name"]): s for s in store.run_stats("r1")}
    tool = stats[("tool", "execute_tool add")]
    assert (tool["count"], tool["errors"], tool["p50_ms"], tool["max_ms"]) == (20, 0, 10.0, 20.0)
    assert tool["p95_ms"] == 19.0
    model = stats[("model", "chat m")]
    assert (model["errors"], model["input_tokens"], model["output_tokens"]) == (1, 7, 3)


def test_a_failed_batch_leaves_nothing_behind(store: TraceStore) -> None:
    store.write(batch([span("a")]))
    bad = batch([span("b"), span("c")])
    bad.spans[1].name = None  # type: ignore[assignment]  # NOT NULL violated half-way through the batch
    with pytest.raises(sqlite3.IntegrityError):
        store.write(bad)
    assert [r["span_id"] for r in store.list_spans(trace_id="t1")[0]] == ["a"]
    got = store.get_run("r1")
    assert got is not None
    assert got["span_count"] == 1


def test_concurrent_writers_and_readers(store: TraceStore) -> None:
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(20):
                store.write(batch([span(f"w{w}-{i}", trace=f"t{w}", run_id=f"r{w}")], the_run=run(f"r{w}")))
                store.list_runs()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.list_runs()[1] == 4
    assert sum(r["span_count"] for r in store.list_runs()[0]) == 80


# ---------------------------------------------------------------------- schema versions and migrations


def test_the_store_file_reopens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    with TraceStore(path) as first:
        first.write(batch([span("a")]))
    with TraceStore(path) as again:
        assert again.migrated_from == SCHEMA_VERSION
        assert again.list_spans(trace_id="t1")[1] == 1
        assert again._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_from_a_newer_agentscope_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        TraceStore(path)


def _steps(*extra: Callable[[sqlite3.Connection], None]) -> dict[int, Callable[[sqlite3.Connection], None]]:
    steps = dict(MIGRATIONS)
    for i, step in enumerate(extra, start=SCHEMA_VERSION + 1):
        steps[i] = step
    return steps


def test_migrations_run_in_order_and_keep_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with TraceStore(path) as old:
        old.write(batch([span("a", attributes={"k": 1})]))

    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE spans ADD COLUMN note TEXT")
        conn.execute("UPDATE spans SET note = 'migrated'")

    def add_index(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE INDEX spans_note ON spans (note)")

    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, _steps(add_column, add_index)) == SCHEMA_VERSION
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 2
    assert conn.execute("SELECT span_id, note FROM spans").fetchall() == [("a", "migrated")]
    assert migrate(conn, _steps(add_column, add_index)) == SCHEMA_VERSION + 2  # nothing left to do
    conn.close()


def test_a_failing_migration_rolls_back_to_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with TraceStore(path) as old:
        old.write(batch([span("a")]))

    def good(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE runs ADD COLUMN tags TEXT")

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE spans ADD COLUMN half TEXT")
        raise RuntimeError("step failed half-way")

    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(RuntimeError, match="half-way"):
        migrate(conn, _steps(good, bad))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    columns = {row[1] for row in conn.execute("PRAGMA table_info(spans)")}
    assert "half" not in columns
    assert conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 1
    conn.close()


def test_every_released_version_migrates_to_the_current_one(tmp_path: Path) -> None:
    for start in range(SCHEMA_VERSION):
        path = tmp_path / f"v{start}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        migrate(conn, {v: MIGRATIONS[v] for v in range(1, start + 1)} if start else {0: lambda _: None})
        if start:  # spans written at that version, one span id in two traces: found by trace after migrating
            for trace in ("old1", "old2"):
                conn.execute(
                    "INSERT INTO spans (run_id, trace_id, span_id, kind, name, start_ns, end_ns, status, attributes)"
                    " VALUES ('r0', ?, 'same', 'tool', ?, 0, 1, 'ok', '{}')",
                    (trace, f"in {trace}"),
                )
        conn.close()
        with TraceStore(path) as opened:
            assert opened.schema_version == SCHEMA_VERSION
            opened.write(batch([span("a")]))
            assert opened.list_spans(trace_id="t1")[1] == 1
            assert opened.get_span("a", trace_id="t1") is not None
            if start:
                for trace in ("old1", "old2"):
                    found = opened.get_span("same", trace_id=trace)
                    assert found is not None, (start, trace)
                    assert found["name"] == f"in {trace}"
        conn = sqlite3.connect(path)
        try:
            indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        finally:
            conn.close()
        assert "spans_trace_span" in indexes, start
        assert "spans_span_id" not in indexes, start


def test_a_run_whose_process_was_killed_becomes_lost(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    path = tmp_path / "traces.db"
    doomed = (
        "import os, agentscope\n"
        "from agentscope import tracing\n"
        f"agentscope.init({str(path)!r}, project='p', run_name='doomed')\n"
        "with tracing.span('work', 'env'):\n"
        "    pass\n"
        "tracing.flush()\n"
        "os.kill(os.getpid(), 9)\n"
    )
    killed = subprocess.run([sys.executable, "-c", doomed], timeout=60, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    with TraceStore(path) as store:
        store.upsert_run(  # a run of another machine: its pid means nothing here
            RunRecord("far", "p", "elsewhere", T0, config={"host": "not-" + socket.gethostname(), "pid": 1})
        )
        store.upsert_run(
            RunRecord("me", "p", "alive", T0, config={"host": socket.gethostname(), "pid": os.getpid()})
        )
        (before,) = store.list_runs(RunFilter(q="doomed"))[0]
        assert before["status"] == "running", "nobody recorded how it ended"

        assert store.mark_lost_runs() == [before["id"]]
        (after,) = store.list_runs(RunFilter(status="lost"))[0]
        assert after["id"] == before["id"]
        assert after["ended_ns"] == before["updated_ns"], "it ended at its last sign of life"
        assert after["span_count"] == 1, "what it wrote is kept"
        assert sorted(r["name"] for r in store.list_runs(RunFilter(status="running"))[0]) == [
            "alive",
            "elsewhere",
        ]
        assert store.mark_lost_runs() == []
