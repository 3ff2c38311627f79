"""The writer process (``writer="process"``): the same rows as the writer thread, flush and shutdown semantics,
a writer that dies is replaced with its loss counted, and what it cannot do is refused up front; and
``agentscope serve --trace`` (either writer) records a request and finishes its run on Ctrl-C and on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatModel, ChatResponse, ChatUsage
from agentscope.tools import Toolkit
from agentscope.tracing import Blob, Json, Messages

ROOT = Path(__file__).resolve().parents[2]


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def fail(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise RuntimeError(reason)


class CountingModel(ChatModel):
    """Calls ``add`` twice (and ``fail`` once), then answers: deterministic ids, a growing conversation."""

    model_name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, messages: Sequence[Msg], **_: Any) -> ChatResponse:
        self.calls += 1
        results = sum(
            1
            for m in messages
            if not isinstance(m.content, str)
            for b in m.content
            if isinstance(b, ToolResultBlock)
        )
        usage = ChatUsage(input_tokens=10 + results, output_tokens=3)
        if results < 2:
            # an integer beyond 64 bits (JSON allows it; orjson would read it back as a float)
            call = ToolUseBlock(id=f"call_{self.calls}", name="add", input={"a": results + 2**70, "b": 2})
            # 1,500 characters, 3,000 bytes of JSON: a blob (the limit is in bytes), whichever writer stores it
            thought = TextBlock(text="é" * 1500)
            return ChatResponse(
                content=[thought, call], finish_reason="tool_calls", usage=usage, id=f"r{self.calls}"
            )
        if results == 2:
            call = ToolUseBlock(id=f"call_{self.calls}", name="fail", input={"reason": "no " * 400})
            return ChatResponse(content=[call], finish_reason="tool_calls", usage=usage)
        return ChatResponse(
            content=[TextBlock(text="Done. " * 500)],  # long: stored as a blob
            finish_reason="stop",
            usage=usage,
            prompt_token_ids=list(range(50)),
            logprobs=[-0.5] * 6 + [-math.inf],  # not JSON: stored as null
        )


async def _workload() -> None:
    model = CountingModel()
    toolkit = Toolkit()
    toolkit.register(add)
    toolkit.register(fail)
    for i in range(3):  # one after another: the same call ids in both runs
        agent = ReActAgent(f"agent{i}", "You add numbers. " * 30, model, toolkit=toolkit, max_iters=6)
        agent.id = f"agent-{i}"
        await agent(Msg(role="user", content=f"Add {i} and 2, twice."))
    with tracing.span(
        "score",
        kind="env",
        attributes={"task": "t1", "reward": 0.5, "loss": math.nan, "long": "x" * 5000, "big": -(2**70)},
    ) as span:
        span.set_attribute("agentscope.input", Messages([Msg(role="user", content="hi " * 100, id="m1")]))
        span.set_attribute("agentscope.blocks", Json([TextBlock(text="a block")]))
        span.set_attribute("agentscope.ids", Blob([1, 2, 3]))
        span.set_attribute("agentscope.odd", Json({"when": object.__name__}))
    for step in range(3):
        tracing.record_metric("rollout/reward", step / 2)


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The rows as the studio reads them, without what differs between two runs (ids, times)."""
    with sqlite3.connect(path) as conn:
        return {
            "spans": sorted(
                conn.execute(
                    "SELECT kind, name, status, status_message, attributes, input_tokens, output_tokens, agent_name, "
                    "parent_id IS NULL FROM spans"
                ).fetchall()
            ),
            "blobs": sorted(conn.execute("SELECT hash, size, data FROM blobs").fetchall()),
            "metrics": sorted(conn.execute("SELECT name, step, value FROM metrics").fetchall()),
            "runs": conn.execute(
                "SELECT status, span_count, error_count, trace_count, input_tokens, output_tokens FROM runs"
            ).fetchall(),
        }


def _record(path: Path, writer: tracing.WriterMode) -> None:
    tracing.init(path, project="p", run_name="r", writer=writer)
    asyncio.run(_workload())
    tracing.shutdown()


def _refuse(constant: str) -> NoReturn:
    raise ValueError(f"not JSON: {constant}")


def _unpack(data: bytes) -> bytes:
    return zlib.decompress(data[1:]) if data[:1] == b"z" else data  # (the store's mark of a compressed blob)


def test_the_writer_process_stores_exactly_what_the_writer_thread_stores(tmp_path: Path) -> None:
    _record(tmp_path / "thread.db", "thread")
    _record(tmp_path / "process.db", "process")
    thread, process = _tables(tmp_path / "thread.db"), _tables(tmp_path / "process.db")
    assert (
        len(thread["spans"]) == 3 * (1 + 4 + 3) + 1
    )  # per agent: itself, 4 model calls, 3 tool calls; the env span
    assert thread["blobs"]
    assert thread["metrics"]
    assert any(row[2] == "error" for row in thread["spans"])
    assert process == thread
    with sqlite3.connect(tmp_path / "thread.db") as conn:  # NaN and infinities are null: the store stays JSON
        assert conn.execute("SELECT count(*) FROM spans WHERE NOT json_valid(attributes)").fetchone() == (0,)
        blobs = [_unpack(data) for (data,) in conn.execute("SELECT data FROM blobs")]
        assert all(json.loads(blob, parse_constant=_refuse) is not None for blob in blobs)
        assert any(b"-0.5,null]" in blob for blob in blobs)  # the log-probs
        loss = conn.execute(
            "SELECT json_type(attributes, '$.loss') FROM spans WHERE name = 'score'"
        ).fetchone()
        assert loss == ("null",)
        assert (
            conn.execute("SELECT attributes FROM spans WHERE name = 'score'")
            .fetchone()[0]
            .find(f'"big":{-(2**70)}')
            > 0
        )
        # the replies with 1,500 non-ASCII characters (3,000 bytes; those with a response id) are blobs
        replies = conn.execute(
            "SELECT json_type(attributes, '$.\"gen_ai.output.messages\"') FROM spans"
            " WHERE kind = 'model' AND json_extract(attributes, '$.\"gen_ai.response.id\"') IS NOT NULL"
        ).fetchall()
        assert replies
        assert all(kind == ("object",) for kind in replies)


def _writer_pid(tracer: tracing.Tracer) -> int:
    process = tracer._process  # pyright: ignore[reportPrivateUsage]
    assert process is not None
    assert process.process is not None
    return process.process.pid


def _span_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


def _make_spans(n: int, name: str = "step") -> None:
    for i in range(n):
        with tracing.span(name, kind="env", attributes={"i": i}):
            pass


def test_flush_returns_once_the_writer_process_has_committed_everything_before_it(tmp_path: Path) -> None:
    store = tmp_path / "t.db"
    # flush, not the timer, must write: nothing is sent on its own for 30 s
    tracer = tracing.Tracer(
        [tracing.StoreExporter(store)], writer="process", flush_interval_s=30.0, encode_interval_s=30.0
    ).install()
    tracer.wait_ready()
    try:
        with sqlite3.connect(store) as conn:  # the run row is there at once
            assert conn.execute("SELECT status FROM runs").fetchall() == [("running",)]
        _make_spans(500)
        started = time.monotonic()
        tracing.flush()
        assert _span_count(store) == 500
        tracing.record_metric("train/loss", 0.25)
        _make_spans(3)
        tracing.flush()
        assert _span_count(store) == 503
        assert time.monotonic() - started < 5.0, "a flush exports at once, not at the next timed export"
        with sqlite3.connect(store) as conn:
            assert conn.execute("SELECT name, value FROM metrics").fetchall() == [("train/loss", 0.25)]
    finally:
        tracing.shutdown()
    assert tracer.dropped == 0


def test_a_writer_process_that_dies_is_replaced_and_what_it_lost_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "t.db"
    tracer = tracing.init(store, writer="process", flush_interval_s=0.01)
    assert tracer is not None
    try:
        _make_spans(10, "before")
        tracing.flush()
        first = _writer_pid(tracer)
        process = tracer._process  # pyright: ignore[reportPrivateUsage]
        assert process is not None
        assert process.process is not None
        os.kill(first, signal.SIGSTOP)  # it takes no more batches...
        _make_spans(7, "lost")
        deadline = time.monotonic() + 30
        while sum(process._in_flight.values()) < 7:  # pyright: ignore[reportPrivateUsage]
            assert time.monotonic() < deadline, "the app did not hand the batch over"
            time.sleep(0.01)  # ...while the app hands it this one
        os.kill(first, signal.SIGKILL)
        process.process.wait(10)  # gone for good before the next spans
        _make_spans(5, "after")
        tracing.flush()
        assert _writer_pid(tracer) != first
        assert tracer.dropped == 7
        assert tracer.error is None
        with sqlite3.connect(store) as conn:
            names = dict(conn.execute("SELECT name, count(*) FROM spans GROUP BY name").fetchall())
        assert names == {"before": 10, "after": 5}
        assert "7 spans/points it had not written are lost" in caplog.text
    finally:
        tracing.shutdown()
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT status FROM runs").fetchall() == [("finished",)]


def test_a_writer_restarted_after_an_exporter_error_keeps_exporting(tmp_path: Path) -> None:
    """An exporter error the writer reported earlier (a passing "database is locked") must not make every later
    restart fail: the old code re-raised it from each new writer's start and dropped all spans from then on."""
    from agentscope.tracing._writer import WriterError

    store = tmp_path / "t.db"
    tracer = tracing.init(store, writer="process", flush_interval_s=0.01)
    assert tracer is not None
    try:
        process = tracer._process  # pyright: ignore[reportPrivateUsage]
        assert process is not None
        assert process.process is not None
        process.error = WriterError("OperationalError: database is locked")  # reported by an earlier batch
        first = process.process.pid
        os.kill(first, signal.SIGKILL)
        process.process.wait(10)
        _make_spans(4, "after")
        assert tracer.flush(30)  # (tracing.flush() would raise the earlier error, as with the writer thread)
        assert _writer_pid(tracer) != first
        with sqlite3.connect(store) as conn:
            assert conn.execute("SELECT count(*) FROM spans WHERE name = 'after'").fetchone() == (4,)
        assert tracer.dropped == 0
    finally:
        tracing.shutdown()


@pytest.mark.parametrize(
    ("frame", "lost"),
    [
        (b'[7,false,[[99,"not a span"],[99]],[],null]', 2),  # spans it cannot rebuild: skipped one by one
        (b"[7,false,[[99]],[[1]],null]", 2),  # a frame that fails as a whole (a malformed metric point)
    ],
    ids=["spans", "frame"],
)
def test_a_batch_the_writer_cannot_decode_is_counted_and_does_not_hold_a_flush(
    tmp_path: Path, frame: bytes, lost: int
) -> None:
    """The writer answers an undecodable batch with its sequence number (the old code answered with the one before,
    so a flush waited for it until its 300 s timeout), counts its spans as dropped, and still ends the run when
    that batch was the last."""
    from agentscope.tracing._records import RunRecord
    from agentscope.tracing._writer import ProcessWriter

    store = tmp_path / "t.db"
    run = RunRecord(id="r1", project="p", name="n", started_ns=time.time_ns())
    writer = ProcessWriter([["store", str(store)]], run, capture_content=True)
    writer.start()
    conn = writer._conn  # pyright: ignore[reportPrivateUsage]
    assert conn is not None
    writer._in_flight[7] = 2  # pyright: ignore[reportPrivateUsage]
    conn.send_bytes(frame)
    assert writer.wait(10.0)
    assert writer.dropped == lost
    final = {**writer._run_row(), "status": "finished", "final": True}  # pyright: ignore[reportPrivateUsage]
    writer._in_flight[8] = 1  # pyright: ignore[reportPrivateUsage]
    conn.send_bytes(b"[8,false,[[99]],[]," + json.dumps(final).encode() + b"]")
    assert writer.wait(10.0)
    assert writer.process is not None
    assert writer.process.wait(10) == 0
    conn.close()
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("finished",)]


def test_shutdown_drains_marks_the_run_and_stops_the_writer_process(tmp_path: Path) -> None:
    store = tmp_path / "t.db"
    tracer = tracing.init(store, writer="process", flush_interval_s=10.0)
    assert tracer is not None
    process = tracer._process  # pyright: ignore[reportPrivateUsage]
    assert process is not None
    assert process.process is not None
    _make_spans(50)
    tracing.shutdown("failed")
    assert process.process.returncode == 0
    assert _span_count(store) == 50
    with sqlite3.connect(store) as conn:
        status, ended = conn.execute("SELECT status, ended_ns FROM runs").fetchone()
    assert status == "failed"
    assert ended is not None


def test_the_writer_process_refuses_exporters_it_cannot_rebuild(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writer='process' exports to a trace store file and to OTLP only"):
        tracing.init(tmp_path / "t.db", exporters=[tracing.InMemoryExporter()], writer="process")
    assert not tracing.enabled()
    with pytest.raises(ValueError, match="writer must be 'thread' or 'process'"):
        tracing.init(tmp_path / "t.db", writer="fork")  # type: ignore[arg-type]


def test_a_store_the_writer_process_cannot_open_fails_init(tmp_path: Path) -> None:
    with pytest.raises(tracing.WriterError, match="unable to open database file"):
        tracing.init(tmp_path, writer="process")  # a directory, not a database file
    assert not tracing.enabled()


@pytest.mark.parametrize(
    ("stop", "writer"),
    [(signal.SIGINT, "thread"), (signal.SIGTERM, "thread"), (signal.SIGTERM, "process")],
    ids=["ctrl-c", "sigterm", "sigterm-writer-process"],
)
def test_agentscope_serve_trace_records_each_request_and_finishes_the_run_when_stopped(
    tmp_path: Path, stop: signal.Signals, writer: str
) -> None:
    """SIGTERM too: uvicorn raises it again after its graceful stop, which ended the process before the old
    ``finally`` that shut tracing down (the run stayed "running", the spans still queued were lost)."""
    import httpx2

    store = tmp_path / "traces.db"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "agentscope.cli", "serve", "tests/service/agents/slow_calculator.py",
            "--port", str(port), "--trace", "--trace-writer", writer, "--trace-store", str(store), "--sessions-db", str(tmp_path / "s.db"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SLOW_CALCULATOR_S": "0"},
    )  # fmt: skip
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the server did not start"
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.05)
            body = {"model": "slow_calculator", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            trace_id = response.headers["x-trace-id"]
        proc.send_signal(stop)  # the server drains its requests, then its lifespan shuts tracing down
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stderr, stderr
    with sqlite3.connect(store) as conn:
        kinds = {row[0] for row in conn.execute("SELECT kind FROM spans WHERE trace_id = ?", (trace_id,))}
        roots = conn.execute("SELECT name FROM spans WHERE trace_id = ? AND parent_id IS NULL", (trace_id,))
        assert [name for (name,) in roots] == ["POST /v1/chat/completions"]
        assert conn.execute("SELECT status FROM runs").fetchall() == [("finished",)]
        (config,) = conn.execute("SELECT config FROM runs").fetchone()
        assert json.loads(config)["tracing"]["writer"] == writer
    assert kinds >= {"agent", "model", "tool"}


def test_what_a_writer_that_cannot_be_restarted_loses_is_counted_once(tmp_path: Path) -> None:
    """The writer stops reading and no new one can start: the frame in flight (3 points and a span) is lost and
    counted once (the restart's failure used to count the points a second time)."""
    store = tmp_path / "t.db"
    tracer = tracing.Tracer(
        [tracing.StoreExporter(store)], writer="process", flush_interval_s=30.0, encode_interval_s=30.0
    ).install()
    tracer.wait_ready()
    process = tracer._process  # pyright: ignore[reportPrivateUsage]
    assert process is not None
    conn = process._conn  # pyright: ignore[reportPrivateUsage]
    assert conn is not None

    def stopped_reading(data: bytes) -> None:
        raise OSError("stopped reading")

    def cannot_start(timeout_s: float = 300.0) -> None:
        raise RuntimeError("cannot start")

    real_start = process.start
    conn.send_bytes = stopped_reading  # type: ignore[method-assign]
    process.start = cannot_start  # type: ignore[method-assign]
    try:
        for i in range(3):
            tracing.record_metric("m", float(i))
        with tracing.span("s", "env"):
            pass
        tracer.flush(10)
        assert tracer.dropped == 4
    finally:
        process.start = real_start  # type: ignore[method-assign]
        tracing.shutdown()
    with sqlite3.connect(store) as db:  # a new writer ended the run in order
        assert db.execute("SELECT status FROM runs").fetchall() == [("finished",)]
