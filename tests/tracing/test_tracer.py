"""The tracer: init/shutdown, the writer thread, flushing, back-pressure, exporter failures, OTLP, the CLI."""

from __future__ import annotations

import http.server
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

import agentscope
from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit
from agentscope.tracing import _spans, switch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    yield
    tracing.shutdown()


def test_init_writes_a_run_to_the_store_and_shutdown_finishes_it(tmp_path: Path) -> None:
    store_path = tmp_path / "t" / "traces.db"
    tracer = agentscope.init(store_path, project="p", run_name="first", config={"lr": 0.1})
    assert tracer is not None
    assert tracing.enabled()
    assert tracing.get_tracer() is tracer
    with tracing.TraceStore(store_path) as store:  # the run row is there before any span
        (row,), _ = store.list_runs()
        assert (row["name"], row["project"], row["status"]) == ("first", "p", "running")
        assert row["config"]["lr"] == 0.1
        assert row["config"]["argv"]
    with tracing.span("work", "env"):
        pass
    tracing.record_metric("train/policy_loss", 0.5)
    tracing.shutdown("failed")
    assert not tracing.enabled()
    assert tracing.get_tracer() is None
    with tracing.TraceStore(store_path) as store:
        (row,), _ = store.list_runs()
        assert row["status"] == "failed"
        assert row["ended_ns"] is not None
        assert row["span_count"] == 1
        assert store.metric_series(row["id"], "train/policy_loss") == [(0, 0.5)]


def test_a_run_may_start_before_tracing_does(tmp_path: Path) -> None:
    begun = time.time_ns() - 5_000_000_000  # a command that loaded and warm-started for 5 s first
    tracer = tracing.init(tmp_path / "a.db", run_name="late", started_ns=begun)
    assert tracer is not None
    tracing.shutdown()
    with tracing.TraceStore(tmp_path / "a.db") as store:
        (row,), _ = store.list_runs()
    assert row["started_ns"] == begun
    assert row["ended_ns"] - begun >= 5_000_000_000
    for bad in (time.time_ns() + 60_000_000_000, 0, 1.5e18):
        with pytest.raises(ValueError, match="started_ns must be a time in the past"):
            tracing.init(tmp_path / "b.db", started_ns=bad)  # type: ignore[arg-type]
    assert tracing.get_tracer() is None
    assert not (tmp_path / "b.db").exists()


def test_init_again_ends_the_previous_run(tmp_path: Path) -> None:
    first = tracing.init(tmp_path / "a.db", run_name="one")
    second = tracing.init(tmp_path / "a.db", run_name="two")
    assert first is not None
    assert second is not None
    assert first.run.status == "finished"
    assert tracing.get_tracer() is second
    tracing.shutdown()
    with tracing.TraceStore(tmp_path / "a.db") as store:
        assert sorted(r["name"] for r in store.list_runs()[0]) == ["one", "two"]


def test_init_without_any_destination_leaves_tracing_off() -> None:
    assert tracing.init(None) is None
    assert not tracing.enabled()


def test_an_unopenable_store_fails_loudly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        tracing.init(blocker / "traces.db")
    assert not tracing.enabled()


async def test_init_inside_an_event_loop_does_not_block_it(tmp_path: Path) -> None:
    """BlockBuster (tests/conftest.py) fails this test if init or the instrumented agent touch SQLite on the loop."""
    exporter = tracing.InMemoryExporter()
    agentscope.init(tmp_path / "loop.db", exporters=(exporter,), run_name="in-loop")
    toolkit = Toolkit()

    def add(a: int, b: int) -> int:
        """Add.

        Args:
            a: a
            b: b
        """
        return a + b

    toolkit.register(add)
    agent = ReActAgent("calc", "", ScriptedModel([tool_call("add", a=1, b=2), "3"]), toolkit=toolkit)
    assert (await agent(Msg(role="user", content="1+2"))).text == "3"
    await tracing.aflush()
    assert len(exporter.spans) == 4
    await anyio.to_thread.run_sync(tracing.shutdown)
    assert exporter.shut_down


def test_spans_are_exported_in_batches_off_the_calling_thread() -> None:
    seen: list[tuple[str, int]] = []

    def export(batch: tracing.ExportBatch) -> None:
        seen.append((threading.current_thread().name, len(batch.spans)))

    tracing.init(None, exporters=[tracing.FunctionExporter(export)], flush_interval_s=10)
    for i in range(500):
        with tracing.span(f"s{i}", "env"):
            pass
    tracing.flush()
    exported = [(name, n) for name, n in seen if n]
    assert {name for name, _ in exported} == {"agentscope-tracer"}
    assert sum(n for _, n in exported) == 500
    assert len(exported) <= 2, "one flush exports what is queued in one or few batches"


def test_a_busy_writer_waits_longer_between_batches_and_flush_still_exports_at_once() -> None:
    sizes: list[int] = []
    tracer = tracing.Tracer(
        [tracing.FunctionExporter(lambda batch: sizes.append(len(batch.metrics)))],
        flush_interval_s=0.01,
        busy_batch=10,
        busy_interval_s=60,
    )
    for i in range(10):  # queued before the writer starts: its first drain exports a busy-sized batch
        tracer.record_metric("m", i)
    tracer.install()
    try:
        deadline = time.monotonic() + 10
        while sum(sizes) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sum(sizes) == 10
        tracer.record_metric("m", 10)
        time.sleep(0.2)
        assert sum(sizes) == 10, "after a busy batch the writer waits busy_interval_s"
        assert tracer.flush(5)
        assert sum(sizes) == 11
    finally:
        tracer.shutdown()


async def test_a_finished_span_frees_what_it_holds_long_before_its_batch_is_exported() -> None:
    """Encoding does not wait for the export: a queued span would keep its call's objects (here the agent) alive,
    and in a busy server a second of them makes every garbage collection scan them."""
    import gc
    import weakref

    class Agent:
        name, id, description = "held", "agent-1", ""

    exported: list[int] = []
    tracer = tracing.Tracer(
        [tracing.FunctionExporter(lambda batch: exported.append(len(batch.spans)))],
        flush_interval_s=60,
        encode_interval_s=0.02,
    ).install()
    try:
        agent = Agent()
        freed = threading.Event()
        weakref.finalize(agent, freed.set)

        async def reply(msg: object) -> Msg:
            return Msg(role="assistant", name="held", content="done")

        await tracing.agent_call(agent, reply, None, {})
        del agent
        gc.collect()  # nothing cyclic holds it: only the span did
        assert await anyio.to_thread.run_sync(freed.wait, 10), (
            "the span still holds its agent 10 s after it ended"
        )
        assert sum(exported) == 0, "exported before its flush interval"
        await tracer.aflush(5)
        assert sum(exported) == 1
    finally:
        await anyio.to_thread.run_sync(tracer.shutdown)


def test_encoded_spans_go_out_in_batches_of_at_most_max_batch_each_with_its_own_blobs() -> None:
    """An exporter that resolves blob references (OTLP) finds every blob a batch's spans made in that batch."""
    batches: list[tuple[int, set[str], set[str]]] = []

    def export(batch: tracing.ExportBatch) -> None:
        referenced = {ref for s in batch.spans for ref in re.findall(r'"\$blob":"([0-9a-f]+)"', s.attributes)}
        batches.append((len(batch.spans), set(batch.blobs), referenced))

    tracer = tracing.Tracer(
        [tracing.FunctionExporter(export)], max_batch=10, flush_interval_s=60, encode_interval_s=60
    )
    tracer.install()  # the writer's first pass takes the 35 spans queued below at once
    try:
        for i in range(35):
            with tracing.span(f"s{i}", "env") as span:
                span.set_attribute("big", tracing.Blob(f"payload {i} " * 50))
        assert tracer.flush(5)
    finally:
        tracer.shutdown()
    sized = [(n, made, used) for n, made, used in batches if n]
    assert [n for n, _, _ in sized] == [10, 10, 10, 5]
    for n, made, used in sized:
        assert len(used) == n, "each span references its own blob"
        assert used <= made, "a batch carries the blobs its spans reference"


@pytest.mark.parametrize("name", ["flush_interval_s", "busy_interval_s", "encode_interval_s"])
def test_an_interval_that_would_spin_the_writer_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        tracing.Tracer([tracing.InMemoryExporter()], **{name: 0.0})  # type: ignore[arg-type]


def test_a_writer_that_falls_behind_drops_the_oldest_and_counts_them() -> None:
    exporter = tracing.InMemoryExporter()
    tracer = tracing.Tracer([exporter], max_queue=100, flush_interval_s=60, encode_interval_s=60)
    # Fill the queue before the writer starts, as a stalled writer would see it.
    tracer.install()
    for i in range(300):
        with tracing.span(f"s{i}", "env"):
            pass
    tracer.flush()
    assert tracer.dropped >= 200 - 1
    assert len(exporter.spans) <= 101
    assert exporter.spans[-1].name == "s299", "the newest spans are kept"


def test_a_failing_exporter_does_not_stop_the_others() -> None:
    good = tracing.InMemoryExporter()

    def boom(batch: tracing.ExportBatch) -> None:
        if batch.spans:
            raise OSError("disk full")

    tracer = tracing.init(None, exporters=[tracing.FunctionExporter(boom), good])
    assert tracer is not None
    with tracing.span("kept", "env"):
        pass
    with pytest.raises(OSError, match="disk full"):
        tracing.flush()
    assert [s.name for s in good.spans] == ["kept"]
    assert tracer.dropped >= 1


def test_the_hot_path_flag_follows_the_tracer() -> None:
    assert switch.ON is False
    assert _spans._submit is None
    tracing.init(None, exporters=[tracing.InMemoryExporter()])
    assert switch.ON is True
    assert _spans._submit is not None
    tracing.shutdown()
    assert switch.ON is False
    assert _spans._submit is None


# ---------------------------------------------------------------------- OTLP


class _Collector(http.server.BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP collector: keeps every POSTed body."""

    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    _Collector.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_spans_go_to_an_otlp_collector_with_genai_attributes(
    collector: tuple[str, list[tuple[str, bytes]]], tmp_path: Path
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    url, bodies = collector
    agentscope.init(tmp_path / "both.db", otlp_endpoint=url, project="otlp", run_name="to-collector")
    big = tracing.Json([{"role": "user", "content": "x" * 5000}])
    with (
        tracing.span("episode", "env", {"agentscope.episode": 3, "agentscope.loss": math.nan}) as outer,
        tracing.span("step", "env") as inner,
    ):
        inner.set_attribute("gen_ai.input.messages", big)
        inner.set_status("error", "env crashed")
    tracing.shutdown()
    assert bodies
    assert all(path == "/v1/traces" for path, _ in bodies)
    received = {}
    resources = []
    for _, body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            resources.append({kv.key: kv.value.string_value for kv in rs.resource.attributes})
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received[s.name] = s
    assert set(received) == {"episode", "step"}
    step, episode = received["step"], received["episode"]
    assert step.trace_id.hex() == f"{outer.trace_id:032x}"
    assert step.parent_span_id.hex() == f"{outer.span_id:016x}"
    assert step.status.message == "env crashed"
    attrs = {kv.key: kv.value for kv in step.attributes}
    assert (
        "x" * 5000 in attrs["gen_ai.input.messages"].string_value
    )  # the blob was resolved for the collector
    assert {kv.key: kv.value.int_value for kv in episode.attributes}["agentscope.episode"] == 3
    assert "agentscope.loss" not in {kv.key for kv in episode.attributes}  # NaN: stored null, not exported
    assert resources[0]["service.name"] == "agentscope"
    assert resources[0]["agentscope.project"] == "otlp"
    with tracing.TraceStore(tmp_path / "both.db") as store:
        assert store.list_spans(run_id=store.list_runs()[0][0]["id"])[1] == 2  # the store got them too


def test_otlp_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[otlp\]'"):
        tracing.OTLPExporter("http://127.0.0.1:4318")


# ---------------------------------------------------------------------- the CLI


AGENT_FILE = """
from agentscope.agents import ReActAgent
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit

def add(a: int, b: int) -> int:
    '''Add.

    Args:
        a: a
        b: b
    '''
    return a + b

def build_agent():
    toolkit = Toolkit()
    toolkit.register(add)
    return ReActAgent("calc", "", ScriptedModel([tool_call("add", a=2, b=2), "It is 4."]), toolkit=toolkit)
"""


@pytest.mark.integration
def test_agentscope_run_traces_by_default_and_not_with_no_trace(tmp_path: Path) -> None:
    (tmp_path / "calc.py").write_text(AGENT_FILE)
    command = [sys.executable, "-m", "agentscope.cli", "run", "calc.py", "-m", "what is 2+2?"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "It is 4." in done.stdout
    assert "agentscope studio --store" in done.stdout
    with tracing.TraceStore(tmp_path / ".agentscope" / "traces.db") as store:
        (run,), _ = store.list_runs()
        assert run["status"] == "finished"
        assert run["agents"] == ["calc"]
        assert run["span_count"] == 4  # invoke_agent, chat, execute_tool, chat

    quiet = tmp_path / "quiet"
    quiet.mkdir()
    (quiet / "calc.py").write_text(AGENT_FILE)
    done = subprocess.run(
        [*command, "--no-trace"], cwd=quiet, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert not (quiet / ".agentscope").exists()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
@pytest.mark.filterwarnings(
    "ignore:.*fork.*:DeprecationWarning"
)  # Python 3.12+ warns about forking with threads
def test_a_forked_child_starts_with_tracing_off() -> None:
    import os

    tracing.init(None, exporters=[tracing.InMemoryExporter()])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether tracing is on, then leave at once
        os.write(write, b"on" if tracing.enabled() or tracing.get_tracer() is not None else b"off")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"off"
    assert tracing.enabled()
