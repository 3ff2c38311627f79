"""The tracer: a queue the hot path appends to, and a writer thread that encodes and exports batches.

Finished spans and metric points are appended to a :class:`collections.deque` (atomic, lock-free for the caller). A
background thread encodes what has arrived every ``encode_interval_s`` and hands the encoded records to every
exporter in one batch every ``flush_interval_s`` (or at once when flushed), so the event loop never waits for JSON
encoding, SQLite or the network. While spans arrive by the thousand (an export of at least ``busy_batch`` items),
it exports every ``busy_interval_s`` instead: a store pays per transaction for every index page a batch touches,
so fewer, larger batches cost less CPU (and GIL) per span; the studio then sees new spans up to that much later.
Encoding does not wait for the next export (only for one that is running: the same thread does both): a queued
span keeps the objects of its call (messages, responses, the agent) alive, and in a busy process a second of them
is enough to make every garbage collection scan them, more than once (they are promoted to the older generations).
What is encoded is also exported whenever it reaches ``max_batch`` items. ``flush()`` exports at once either way.
With a writer process (``writer="process"``) each span is serialised for it as it ends, in the thread that ends it
(under a lock: ``_wire``), and the bytes are sent every ``encode_interval_s``; the process encodes and exports them
(``flush_interval_s`` and the busy settings are the writer thread's).
If the writer falls more than ``max_queue`` items behind, the oldest are dropped and counted (``Tracer.dropped``),
as OpenTelemetry's ``BatchSpanProcessor`` does (with a writer process, the newest: later spans of a conversation
refer to what earlier ones carried).

One file because the writer thread's loop, the queue it drains and the process-wide tracer that ``init``, ``flush``
and ``shutdown`` install and end share one lifecycle (the hot path's switch, the fork hook, the exit hook): split,
each half would reach into the other's private state. (The encoding is in ``_records``, the writer process in
``_writer``.)
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from agentscope.tracing import _spans
from agentscope.tracing._argv import recorded_argv
from agentscope.tracing._exporters import SpanExporter, StoreExporter, export_batch
from agentscope.tracing._records import Encoder, ExportBatch, MetricRecord, RunRecord, SpanRecord
from agentscope.tracing._spans import Span

if TYPE_CHECKING:
    from agentscope.tracing._writer import ProcessWriter

__all__ = [
    "DEFAULT_TRACE_STORE",
    "RunStatus",
    "Tracer",
    "WriterMode",
    "aflush",
    "flush",
    "get_tracer",
    "init",
    "log_metrics",
    "record_metric",
    "shutdown",
]

logger = logging.getLogger("agentscope.tracing")

_RETRY_S = 5.0
"""After a writer process failed to (re)start, batches are dropped (and counted) this long before the next try."""

DEFAULT_TRACE_STORE = ".agentscope/traces.db"
"""Where ``agentscope.init()`` and the CLI commands write traces by default."""

RunStatus: TypeAlias = Literal["finished", "failed"]
"""How a run ended."""

WriterMode: TypeAlias = Literal["thread", "process"]
"""Where spans are encoded and written: a thread of the app, or a writer process of their own."""


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Metric:
    __slots__ = ("name", "step", "time_ns", "value")

    def __init__(self, name: str, value: float, step: int) -> None:
        self.name = name
        self.value = value
        self.step = step
        self.time_ns = time.time_ns()


class Tracer:
    """Collects finished spans and metrics of one run and exports them from a background thread.

    Usually made by :func:`agentscope.init`; construct one directly to trace into your own exporters, then
    :meth:`install` it.
    """

    def __init__(
        self,
        exporters: Sequence[SpanExporter],
        *,
        project: str = "default",
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        flush_interval_s: float = 0.25,
        max_queue: int = 200_000,
        max_batch: int = 4096,
        busy_batch: int = 1024,
        busy_interval_s: float = 1.0,
        encode_interval_s: float = 0.1,
        sample_rate: float = 1.0,
        capture_content: bool = True,
        started_ns: int | None = None,
        run_id: str | None = None,
        writer: WriterMode = "thread",
    ) -> None:
        if not exporters:
            raise ValueError("a tracer needs at least one exporter (a trace store, OTLP, or your own)")
        for name, interval in (
            ("flush_interval_s", flush_interval_s),
            ("busy_interval_s", busy_interval_s),
            ("encode_interval_s", encode_interval_s),
        ):
            if not interval > 0:  # 0 would spin the writer thread
                raise ValueError(f"{name} must be above 0, got {interval!r}")
        sample_below = _spans.sample_threshold(sample_rate)
        started = _run_start(started_ns)
        self.run = RunRecord(
            id=_run_id(run_id),
            project=project,
            name=run_name or time.strftime("run-%Y%m%d-%H%M%S", time.localtime(started / 1e9)),
            started_ns=started,
            config={
                "argv": recorded_argv(sys.argv, capture_content=capture_content),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "python": platform.python_version(),
                "tracing": {"sample_rate": sample_rate, "capture_content": capture_content, "writer": writer},
                **dict(config or {}),
            },
        )
        """This tracer's run (id, project, name, status)."""
        self.exporters = list(exporters)
        """Where batches go."""
        self.flush_interval_s = flush_interval_s
        """How long the writer waits between exports."""
        self.max_queue = max_queue
        """Items queued beyond this are dropped (oldest first; with a writer process, the newest spans)."""
        self.max_batch = max_batch
        """Most items in one exported batch."""
        self.busy_batch = busy_batch
        """After an export of at least this many items the writer waits ``busy_interval_s`` instead."""
        self.busy_interval_s = max(busy_interval_s, flush_interval_s)
        """The wait between exports while spans arrive faster than ``busy_batch`` per ``flush_interval_s``."""
        self.encode_interval_s = min(encode_interval_s, flush_interval_s)
        """How long a finished span waits to be encoded (and the objects it holds freed); at most
        ``flush_interval_s``. (With a writer process: how often what ended is sent to it.)"""
        self.sample_rate = sample_rate
        """The fraction of traces recorded, decided by trace id when a trace starts (1.0: all)."""
        self.capture_content = capture_content
        """Whether spans keep what was said: messages, tool arguments and results, token ids."""
        self._sample_below = sample_below
        self._dropped = 0
        self._error: BaseException | None = None
        self.writer: WriterMode = writer
        """Where spans are encoded and exported: ``thread`` (a thread of this process) or ``process``."""
        self._process: ProcessWriter | None = None
        self._retry_at = 0.0
        if writer == "process":
            from agentscope.tracing._writer import ProcessWriter, exporter_spec  # process mode only

            try:
                specs = [exporter_spec(exporter) for exporter in self.exporters]
            finally:
                # The writer process builds its own OTLP exporter from the spec: this one's thread and HTTP
                # session would otherwise run on unused. (Other exporters are left as they are: a store opens
                # nothing until used; one of yours is refused above and stays yours.)
                for exporter in self.exporters:
                    if getattr(exporter, "process_spec", None) is not None:
                        exporter.shutdown()
            self._process = ProcessWriter(specs, self.run, capture_content)
            self._process.wire.max_pending = max_queue
            self._process.max_batch = max_batch
        elif writer != "thread":
            raise ValueError(f"writer must be 'thread' or 'process', not {writer!r}")
        self._queue: deque[object] = deque()
        self._submit_span: Callable[[Span], None] = (
            self._queue.append if self._process is None else self._process.wire.add
        )
        """Where a finished span goes: this queue, or (with a writer process) encoded for it at once."""
        self._encoder = Encoder(capture_content=capture_content)
        self._encoded_spans: list[SpanRecord] = []
        self._encoded_metrics: list[MetricRecord] = []
        self._steps: dict[str, int] = {}
        self._kick = threading.Event()
        self._stopping = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._work, name="agentscope-tracer", daemon=True)
        self._installed = False
        self._closed = False

    @property
    def dropped(self) -> int:
        """Spans and points dropped because the writer fell behind, an exporter failed, or a writer process died
        with them."""
        process = self._process
        return self._dropped + (0 if process is None else process.dropped + process.wire.dropped)

    @property
    def error(self) -> BaseException | None:
        """The first exception an exporter raised (or the writer process's start failed with), if any."""
        if self._error is None and self._process is not None:
            return self._process.error
        return self._error

    # -------------------------------------------------------------- lifecycle

    def install(self) -> Tracer:
        """Start the writer thread and make this the tracer that instrumented code reports to."""
        global _tracer
        previous = _tracer
        if previous is not None and previous is not self:
            previous.shutdown()
        self._thread.start()
        _tracer = self
        self._installed = True
        _spans.switch_on(self._submit_span, self._sample_below)
        return self

    def wait_ready(self, timeout_s: float | None = 30.0) -> None:
        """Block until the exporters have taken the run's first batch; raise what they raised."""
        self._ready.wait(timeout_s)
        if self.error is not None:
            raise self.error

    def submit(self, item: Span) -> None:
        """Queue a finished span (what :meth:`Span.end` does for the installed tracer). With a writer process the
        span is encoded for it at once, in the calling thread."""
        self._submit_span(item)

    def record_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Queue one metric point; ``step`` defaults to one past this metric's previous step (0 first)."""
        if step is None:
            step = self._steps.get(name, -1) + 1
        self._steps[name] = step
        self._queue.append(_Metric(name, float(value), step))

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Block until everything queued so far is exported; False on timeout. Not from an event loop."""
        if not self._thread.is_alive():
            return not self._queue and not (self._process is not None and self._process.pending)
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() called from the tracer's own writer thread")
        marker = _Flush()
        self._queue.append(marker)
        self._kick.set()
        return marker.done.wait(timeout_s)

    async def aflush(self, timeout_s: float | None = 30.0) -> bool:
        """:meth:`flush` from async code, waiting in a worker thread."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.flush, timeout_s)

    def shutdown(self, status: RunStatus = "finished", timeout_s: float | None = 30.0) -> None:
        """Export what is queued, mark the run ``status``, shut the exporters down. Safe to call more than once."""
        global _tracer
        if self._closed:
            return
        self._closed = True
        if _tracer is self:
            _spans.switch_off()
            _tracer = None
        self.run.status = status
        self.run.ended_ns = time.time_ns()
        if self._thread.is_alive():
            self._stopping = True
            self._kick.set()
            self._thread.join(timeout_s)
        else:
            self._export_final()

    def abandon(self) -> None:
        """Make this tracer inert without exporting anything: in a forked child, where its writer thread (or
        writer process) is the parent's. Done for the installed tracer when the process forks."""
        self._closed = True
        if self._process is not None:
            self._process.wire.after_fork()

    # -------------------------------------------------------------- the writer thread

    def _work(self) -> None:
        try:
            self._export([], [])  # the run row first: the studio shows the run at once
        finally:
            self._ready.set()
        if self._process is not None:
            # The spans were encoded for the writer process as they ended. They go every encode_interval_s:
            # the writer commits what has arrived together, so it works alongside the app instead of in
            # bursts (and a flush waits only for what it has not caught up with).
            while True:
                self._kick.wait(self.encode_interval_s)
                self._kick.clear()
                self._drain()
                if self._stopping and not self._queue and not self._process.pending:
                    break
            self._export_final()
            return
        interval = self.flush_interval_s
        export_at = time.monotonic() + interval
        exported = 0  # since the last timed export
        while True:
            self._kick.wait(max(0.0, min(self.encode_interval_s, export_at - time.monotonic())))
            self._kick.clear()
            done, flushed = self._encode_queued()
            exported += done
            now = time.monotonic()
            if flushed or self._stopping or now >= export_at:
                exported += self._export_encoded()
                interval = self.busy_interval_s if exported >= self.busy_batch else self.flush_interval_s
                export_at, exported = now + interval, 0
            if self._stopping and not self._queue:
                break
        self._export_final()

    def _export_final(self) -> None:
        self._drain()
        if self._process is not None:
            if self._process.process is not None:
                try:
                    self._process.close(30.0)
                except Exception:  # a writer that died and cannot be restarted: what it lost is counted
                    logger.exception("the tracing writer process could not be closed in order")
            return
        self._export([], [])
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception:
                logger.exception("trace exporter %r failed to shut down", exporter)

    def _drain(self) -> int:
        """Export everything queued and everything encoded, in batches of at most ``max_batch``; return how many
        items were exported."""
        if self._process is not None:
            self._drop_backlog()
            return self._drain_to_process()
        exported, _ = self._encode_queued()
        return exported + self._export_encoded()

    def _drop_backlog(self) -> tuple[int, bool]:
        """Drop the oldest queued items beyond ``max_queue``. A flush marker among them is released after what was
        encoded before it is exported; return how many items that took, and whether a marker was released."""
        queue = self._queue
        backlog = len(queue) - self.max_queue
        if backlog <= 0:
            return 0, False
        markers: list[_Flush] = []
        for _ in range(backlog):
            item = queue.popleft()
            if type(item) is _Flush:
                markers.append(item)
        self._dropped += backlog - len(markers)
        logger.warning("tracing fell behind: dropped %d spans/points (%d so far)", backlog, self.dropped)
        exported = self._export_encoded() if markers else 0
        for marker in markers:
            marker.done.set()
        return exported, bool(markers)

    def _encode_queued(self) -> tuple[int, bool]:
        """Encode what is queued now, which frees what the spans held. What is encoded is exported whenever it
        reaches ``max_batch`` items (a batch carries the blobs its own spans made) and at a flush marker, before
        the marker is released; return how many items such exports took, and whether a marker was released."""
        exported, flushed = self._drop_backlog()
        queue = self._queue
        run_id = self.run.id
        encode = self._encoder.encode
        max_batch = self.max_batch
        for _ in range(len(queue)):  # what arrives meanwhile waits for the next pass
            item = queue.popleft()
            if type(item) is _Metric:
                self._encoded_metrics.append(
                    MetricRecord(run_id, item.name, item.step, item.value, item.time_ns)
                )
            elif type(item) is _Flush:
                exported += self._export_encoded()
                item.done.set()
                flushed = True
                continue
            else:  # a Span, or one of the agent core's (AgentSpan, ModelSpan, ToolSpan)
                try:
                    self._encoded_spans.append(encode(cast(Span, item), run_id))
                except Exception:
                    self._dropped += 1
                    logger.exception("could not encode span %r; dropped", item)
            if len(self._encoded_spans) + len(self._encoded_metrics) >= max_batch:
                exported += self._export_encoded()
        return exported, flushed

    def _export_encoded(self) -> int:
        """Hand what is encoded (at most ``max_batch`` items) to the exporters as one batch; return how many."""
        spans, metrics = self._encoded_spans, self._encoded_metrics
        if not spans and not metrics:
            return 0
        self._encoded_spans, self._encoded_metrics = [], []
        self._export(spans, metrics)
        return len(spans) + len(metrics)

    def _drain_to_process(self) -> int:
        """:meth:`_drain` for a writer process: the spans, encoded as they ended, go in frames of at most
        ``max_batch``, with the metric points queued; each flush marker is released once the writer has committed
        everything before it."""
        process = self._process
        assert process is not None
        exported = 0
        queue = self._queue
        rounds = 1 + process.pending // process.max_batch  # what arrives meanwhile waits for the next pass
        while rounds > 0 or queue:
            rounds -= 1
            metrics: list[tuple[str, int, float, int]] = []
            markers: list[_Flush] = []
            while queue and len(metrics) < self.max_batch:
                item = queue.popleft()
                if type(item) is _Metric:
                    metrics.append((item.name, item.step, item.value, item.time_ns))
                elif type(item) is _Flush:
                    markers.append(item)
                    break
            spans = 0
            sent_metrics = False
            if time.monotonic() >= self._retry_at:
                try:
                    if process.pending or metrics:
                        spans = process.send(metrics)
                        sent_metrics = True  # (counted by the writer from now on, lost or not)
                    if markers:
                        before = process.pending  # a flush exports every span that ended before it
                        while before > 0:
                            before -= process.max_batch
                            spans += process.send([])
                        process.wait(300.0)  # a flush's caller stops waiting after its own timeout
                except Exception as exc:  # a writer process that cannot be (re)started: try again in a while
                    if self._error is None:
                        self._error = exc
                    self._retry_at = time.monotonic() + _RETRY_S
                    unsent = 0 if sent_metrics else len(metrics)
                    lost = process.discard() + unsent
                    self._dropped += unsent
                    logger.exception(
                        "the tracing writer process failed; %d spans and points dropped, retrying in %.0f s",
                        lost,
                        _RETRY_S,
                    )
            else:
                spans = process.discard()
                self._dropped += len(metrics)
            exported += spans + len(metrics)
            for marker in markers:
                marker.done.set()
            if not markers and not metrics and not spans:
                break
        return exported

    def _export(self, spans: list[SpanRecord], metrics: list[MetricRecord]) -> None:
        if self._process is not None:  # the run row, first: start the writer process
            try:
                self._process.start()
            except Exception as exc:
                self._error = exc
                self._retry_at = time.monotonic() + _RETRY_S
                logger.exception("the tracing writer process could not start")
            return
        batch = ExportBatch(
            run=self.run,
            spans=spans,
            metrics=metrics,
            blobs=self._encoder.take_blobs(),
            resolve=self._encoder.resolve,
        )
        errors = export_batch(self.exporters, batch)
        if errors:
            if self._error is None:
                self._error = errors[0]
            self._dropped += (len(spans) + len(metrics)) * len(errors)  # counted per exporter that lost them


_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _run_id(run_id: str | None) -> str:
    """A new random id, or ``run_id`` (to continue a run in a new process) when it is a plausible id."""
    if run_id is None:
        return uuid.uuid4().hex
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id must be 1 to 64 letters, digits, '-' or '_'; got {run_id!r}")
    return run_id


def _run_start(started_ns: int | None) -> int:
    now = time.time_ns()
    if started_ns is None:
        return now
    if type(started_ns) is not int or not 0 < started_ns <= now:
        raise ValueError(
            "started_ns must be a time in the past, in nanoseconds since the epoch (time.time_ns()); "
            f"got {started_ns!r}"
        )
    return started_ns


# ---------------------------------------------------------------------- the process-wide tracer

_tracer: Tracer | None = None
_atexit_registered = False


def init(
    trace_store: str | Path | None = DEFAULT_TRACE_STORE,
    *,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    project: str = "default",
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    exporters: Sequence[SpanExporter] = (),
    flush_interval_s: float = 0.25,
    sample_rate: float = 1.0,
    capture_content: bool = True,
    started_ns: int | None = None,
    run_id: str | None = None,
    writer: WriterMode = "thread",
) -> Tracer | None:
    """Turn tracing on for this process: every agent invocation, model call and tool call becomes a span.

    Args:
        trace_store: SQLite trace store file (the studio reads it); None for none.
        otlp_endpoint: Also send spans to this OpenTelemetry collector (OTLP over HTTP, e.g.
            ``http://127.0.0.1:4318``); needs ``pip install -e '.[otlp]'``.
        otlp_headers: HTTP headers for the collector (API keys).
        project: Groups runs in the studio.
        run_name: Name of this run; default ``run-<date>-<time>``.
        config: JSON data stored with the run (hyper-parameters, tags).
        exporters: More exporters (your own :class:`SpanExporter`, or an ``InMemoryExporter`` in tests).
        flush_interval_s: How often the writer thread exports. (A writer process is sent what has ended every
            0.1 s and commits what has arrived together.)
        sample_rate: Fraction of traces recorded (0 to 1). The decision is made once per trace, from its id, when
            its root span starts: a trace is recorded whole or not at all. Metrics are always recorded.
        capture_content: False keeps what was said out of the spans (messages, tool arguments and results, token
            ids): names, timings, token counts, statuses and errors stay, and the command line keeps only
            option names. For private data (it saves little time: most of the cost is per span, not per byte).
        started_ns: When the run began (``time.time_ns()``), for a command that works before it turns tracing
            on (``agentscope rl train`` builds and warm-starts its policy first): the run's start and duration
            count from it. Default: now.
        run_id: Continue the run of this id (a resumed ``agentscope eval``): its row in the store keeps its
            start and counters, and takes this process's status, name and config. Default: a new random id.
        writer: ``thread`` (default) encodes and writes spans in a thread of this process; ``process`` in a
            writer process of their own, so that a CPU-bound app (a server) does not pay for it under its GIL:
            this process only serialises each span once, as it ends, and sends the bytes. ``process`` exports to the
            trace store and OTLP only (not your own ``exporters``); a writer process that dies is restarted,
            what it had not written counted in ``Tracer.dropped``.

    Returns:
        The installed :class:`Tracer`, or None when nothing is to be recorded (no store, no endpoint, no
        exporter: tracing is then off).

    Calling it again ends the previous run and starts a new one. Called outside an event loop, it waits until the
    store is open and raises if it cannot be opened; inside a running loop it returns at once (no blocking file
    I/O on the loop) and a failure to open the store is logged and raised by :func:`flush`/:func:`aflush`.
    """
    all_exporters: list[SpanExporter] = []
    if trace_store is not None:
        all_exporters.append(StoreExporter(trace_store))
    if otlp_endpoint is not None:
        from agentscope.tracing._otlp import OTLPExporter

        all_exporters.append(
            OTLPExporter(otlp_endpoint, headers=otlp_headers, resource={"agentscope.project": project})
        )
    all_exporters.extend(exporters)
    if not all_exporters:
        shutdown()
        return None
    tracer = Tracer(
        all_exporters,
        project=project,
        run_name=run_name,
        config=config,
        flush_interval_s=flush_interval_s,
        sample_rate=sample_rate,
        capture_content=capture_content,
        started_ns=started_ns,
        run_id=run_id,
        writer=writer,
    ).install()
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    if not _in_event_loop():
        try:
            tracer.wait_ready()
        except BaseException:
            tracer.shutdown("failed")
            raise
    return tracer


def _forget_in_child() -> None:
    """After ``fork()`` the child has the parent's queue but not its writer thread: tracing is off in the child
    until it calls :func:`init` itself (its spans would otherwise pile up unwritten)."""
    global _tracer
    tracer, _tracer = _tracer, None
    _spans.switch_off()
    if tracer is not None:
        tracer.abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _in_event_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def get_tracer() -> Tracer | None:
    """The installed tracer, or None while tracing is off."""
    return _tracer


def shutdown(status: RunStatus = "finished") -> None:
    """Turn tracing off: export what is queued, mark the run ``status`` (``finished``/``failed``), close stores."""
    tracer = _tracer
    if tracer is not None:
        tracer.shutdown(status)


def flush(timeout_s: float | None = 30.0) -> None:
    """Block until every span and metric recorded so far is exported (not from an event loop: use aflush)."""
    tracer = _tracer
    if tracer is not None:
        tracer.flush(timeout_s)
        if tracer.error is not None:
            raise tracer.error


async def aflush(timeout_s: float | None = 30.0) -> None:
    """Wait (in a worker thread) until every span and metric recorded so far is exported."""
    tracer = _tracer
    if tracer is not None:
        await tracer.aflush(timeout_s)
        if tracer.error is not None:
            raise tracer.error


def record_metric(name: str, value: float, *, step: int | None = None) -> None:
    """Record one point of a metric series of the current run (``rollout/tokens_per_s``, ``train/policy_loss``).

    Use the stable names of the project (``<area>/<quantity>``). ``step`` defaults to one past the metric's previous
    step. Does nothing while tracing is off.
    """
    tracer = _tracer
    if tracer is not None:
        tracer.record_metric(name, value, step)


def log_metrics(values: Mapping[str, float], *, step: int | None = None) -> None:
    """Record several metrics at one step: ``log_metrics({"train/policy_loss": 0.3, "train/approx_kl": 0.01}, step=5)``."""
    tracer = _tracer
    if tracer is not None:
        for name, value in values.items():
            tracer.record_metric(name, value, step)
