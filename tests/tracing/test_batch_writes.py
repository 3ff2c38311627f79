"""The store's multi-row batch writes and the encoder's per-conversation cache give what the uncached paths give."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.tracing import TraceStore
from agentscope.tracing._genai import ModelSpan
from agentscope.tracing._records import Encoder, ExportBatch, RunRecord, SpanRecord
from agentscope.tracing._writes import CHUNK_ROWS

T0 = 1_700_000_000_000_000_000


def record(i: int, *, trace: str, root: bool = False, status: str = "ok", run_id: str = "r1") -> SpanRecord:
    return SpanRecord(
        run_id=run_id,
        trace_id=trace,
        span_id=f"{i:016x}",
        parent_id=None if root else "p",
        kind="agent" if root else "tool",
        name=f"span {i}",
        start_ns=T0 + i,
        end_ns=T0 + 2 * i + 5,
        status=status,
        status_message="broke" if status == "error" else None,
        attributes=json.dumps({"i": i}),
        is_root=root,
        input_tokens=i if i % 3 == 0 else None,
        output_tokens=1 if i % 3 == 0 else None,
        agent_name=f"agent{i % 4}" if i % 5 == 0 else None,
    )


def test_spans_in_many_chunks_keep_their_order_and_counters(tmp_path: Path) -> None:
    count = 2 * CHUNK_ROWS + 77  # full chunks, then the power-of-two tail
    records = [
        record(i, trace=f"t{i % 7}", root=i in (5, 600), status="error" if i % 11 == 0 else "ok")
        for i in range(count)
    ]
    # A second root of t5 in the batch: the last one wins.
    records.append(record(count, trace="t5", root=True))
    run = RunRecord(id="r1", project="p", name="n", started_ns=T0)
    with TraceStore(tmp_path / "traces.db") as store:
        store.write(ExportBatch(run, records[:300], [], {}, lambda _: None))
        store.write(ExportBatch(run, records[300:], [], {}, lambda _: None))  # traces grow across batches
        conn = sqlite3.connect(tmp_path / "traces.db")
        rows = conn.execute(
            "SELECT span_id, parent_id, status_message, input_tokens, output_tokens, agent_name FROM spans"
            " ORDER BY id"
        ).fetchall()
        # Empty optional columns are NULL (they are sent as '' / -1 and turned into NULL by the statement).
        assert rows == [
            (r.span_id, r.parent_id, r.status_message, r.input_tokens, r.output_tokens, r.agent_name)
            for r in records
        ]
        for t in range(7):
            mine = [r for r in records if r.trace_id == f"t{t}"]
            roots = [r for r in mine if r.is_root]
            got = conn.execute(
                "SELECT run_id, root_span_id, name, status, start_ns, end_ns, span_count, error_count,"
                " input_tokens, output_tokens FROM traces WHERE trace_id = ?",
                (f"t{t}",),
            ).fetchone()
            assert got == (
                "r1",
                roots[-1].span_id if roots else None,
                roots[-1].name if roots else None,
                ("error" if roots[-1].status == "error" else "ok") if roots else "running",
                min(r.start_ns for r in mine),
                max(r.end_ns for r in mine),
                len(mine),
                sum(r.status == "error" for r in mine),
                sum(r.input_tokens or 0 for r in mine),
                sum(r.output_tokens or 0 for r in mine),
            )
        (row,), _ = store.list_runs()
        assert (row["span_count"], row["error_count"], row["trace_count"]) == (
            len(records),
            sum(r.status == "error" for r in records),
            7,
        )
        assert row["agents"] == ["agent0", "agent1", "agent2", "agent3"]
        conn.close()


class _Model:
    model_name = "m"


def _model_span(messages: tuple[Msg, ...]) -> ModelSpan:
    span = ModelSpan("", "model", 1, 2, None, {}, True)
    span.model, span.messages, span.tools = _Model(), messages, []
    span.tool_choice, span.settings, span.streaming = None, None, False
    span.response = ChatResponse(
        content=[TextBlock(text="ok")], usage=ChatUsage(input_tokens=1, output_tokens=1)
    )
    span.end_ns = 1
    return span


def test_conversations_that_grow_shrink_or_fork_encode_as_without_the_cache() -> None:
    system = Msg(role="system", content="be brief")
    a = Msg(role="user", content="a")
    b = Msg(role="assistant", content=[TextBlock(text="b")], metadata={"k": 1})
    c = Msg(role="user", content="c")
    calls: list[tuple[Msg, ...]] = [
        (system, a),
        (system, a, b),
        (system, a, b),  # the same again
        (system, a, b, c),
        (system, c),  # same first message, another history
        (system,),
        (),
        (system, a, b, c),
    ]
    warm = Encoder()  # one encoder for the whole sequence: its conversation cache is used
    for messages in calls:
        got: Any = json.loads(warm.encode(_model_span(messages), "run").attributes)
        want: Any = json.loads(Encoder().encode(_model_span(messages), "run").attributes)
        assert got == want
        assert [m["content"] for m in got["gen_ai.input.messages"]] == [
            m.content if isinstance(m.content, str) else [{"type": "text", "text": "b"}] for m in messages
        ]


def test_each_runs_trace_count_is_the_traces_it_started_over_batches_and_runs(tmp_path: Path) -> None:
    """A run's ``trace_count`` grows by the traces each batch starts (a trace belongs to the run of its first
    span), across batches, with several runs in a batch and a trace that a second run continues."""
    first = RunRecord(id="r1", project="p", name="n", started_ns=T0)
    second = RunRecord(id="r2", project="p", name="m", started_ns=T0)
    batches = [
        (first, [record(0, trace="a", root=True), record(1, trace="b"), record(2, trace="b")]),
        # r2's spans: a new trace c, and spans of r1's trace b (b stays r1's)
        (first, [record(3, trace="c", run_id="r2"), record(4, trace="b", run_id="r2"), record(5, trace="a")]),
        (second, []),  # a batch without spans changes nothing
        (first, [record(6, trace="d"), record(7, trace="e", run_id="r2"), record(8, trace="c", run_id="r2")]),
    ]
    with TraceStore(tmp_path / "traces.db") as store:
        store.write(ExportBatch(second, [], [], {}, lambda _: None))
        for run, spans in batches:
            store.write(ExportBatch(run, spans, [], {}, lambda _: None))
        rows, _ = store.list_runs()
        counts = {row["id"]: row["trace_count"] for row in rows}
        conn = sqlite3.connect(tmp_path / "traces.db")
        owners = dict(conn.execute("SELECT run_id, count(*) FROM traces GROUP BY run_id").fetchall())
        conn.close()
    assert owners == {"r1": 3, "r2": 2}  # a, b, d; c, e
    assert counts == owners
