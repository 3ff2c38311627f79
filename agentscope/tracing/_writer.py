"""The writer process (``Tracer(writer="process")``): encoding and exporting out of the app's process.

With the default writer thread, encoding spans and binding SQLite rows hold the app's GIL, which a CPU-bound app
(a server) pays for in throughput. In process mode each span becomes wire bytes as it ends (``_wire``: one
``_fastjson.dumps`` call) and the tracer's drain thread writes them to a socket in frames; this process, started with
``python -m agentscope.tracing._writer <fd>``, rebuilds the spans, encodes them with the same
:class:`~agentscope.tracing._records.Encoder` and runs the exporters (the SQLite store, OTLP).

Protocol, over one Unix socket pair with length-prefixed frames (:class:`multiprocessing.connection.Connection`):
the app first sends a JSON setup (exporters, run row, ``capture_content``), then wire batches (``_wire``); the writer
answers each setup or run of batches it committed with ``[seq, dropped, error, reset]``: the sequence number of the
last batch committed, how many spans of them it could not decode, encode or export, the first exporter error, and
whether the app must start its wire caches afresh. A batch carrying a run row with ``final`` is the last: the
writer exports it, shuts its exporters down, answers and exits. End of file (the app died) does the same with what
arrived.

:class:`ProcessWriter` is the app's side: it starts the process, sends, reads the answers, waits for a flush, and
restarts a writer that died (the batches it had not committed are counted as dropped and logged).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from pydantic_core import from_json, to_json

from agentscope.tracing._records import Encoder, ExportBatch, MetricRecord, RunRecord, SpanRecord
from agentscope.tracing._wire import WireDecoder, WireEncoder

__all__ = ["ProcessWriter", "WriterError", "exporter_spec", "main"]

logger = logging.getLogger("agentscope.tracing")

_GC_THRESHOLD = 20_000
"""The writer process's generation-0 collection threshold (allocations less deallocations; Python's default: 700)."""

_COALESCE = 4096
"""The writer commits what has arrived together, up to this many spans and points in one transaction."""


class WriterError(RuntimeError):
    """An exporter in the writer process failed (its message is the exporter's error)."""


def exporter_spec(exporter: object) -> list[Any]:
    """How the writer process rebuilds ``exporter``: a store path or an OTLP endpoint; others cannot cross."""
    from agentscope.tracing._exporters import StoreExporter

    if type(exporter) is StoreExporter and exporter.path is not None:
        return ["store", str(Path(exporter.path).resolve())]  # a restarted writer must not follow a chdir
    spec = getattr(exporter, "process_spec", None)
    if spec is not None:
        return ["otlp", spec]
    raise ValueError(
        f"writer='process' exports to a trace store file and to OTLP only; {exporter!r} cannot be handed to "
        "another process (use writer='thread' for your own exporters)"
    )


def _exporters(specs: list[list[Any]]) -> list[Any]:
    from agentscope.tracing._exporters import StoreExporter

    built: list[Any] = []
    for kind, arg in specs:
        if kind == "store":
            built.append(StoreExporter(arg))
        else:
            from agentscope.tracing._otlp import OTLPExporter

            built.append(OTLPExporter(arg["endpoint"], **{k: v for k, v in arg.items() if k != "endpoint"}))
    return built


# ---------------------------------------------------------------------- the writer process


class _Writer:
    def __init__(self, conn: Connection, setup: dict[str, Any]) -> None:
        self.conn = conn
        self.run = RunRecord(**setup["run"])
        self.encoder = Encoder(capture_content=setup["capture_content"])
        self.decoder = WireDecoder()
        self.exporters = _exporters(setup["exporters"])
        self.error: str | None = None

    def export(self, spans: list[SpanRecord], metrics: list[MetricRecord]) -> int:
        batch = ExportBatch(
            run=self.run,
            spans=spans,
            metrics=metrics,
            blobs=self.encoder.take_blobs(),
            resolve=self.encoder.resolve,
        )
        from agentscope.tracing._exporters import export_batch

        errors = export_batch(self.exporters, batch)
        if not errors:
            return 0
        if self.error is None:
            self.error = f"{type(errors[0]).__name__}: {errors[0]}"
        return len(spans) + len(metrics)

    def serve(self) -> None:
        conn = self.conn
        self.answer(0, self.export([], []), False)
        final = False
        while not final:
            try:
                frames = [conn.recv_bytes()]
                while conn.poll(0) and len(frames) < _COALESCE:
                    frames.append(conn.recv_bytes())
            except (EOFError, OSError):
                break  # the app is gone: what arrived is written below
            spans: list[SpanRecord] = []
            metrics: list[MetricRecord] = []
            dropped = 0
            reset = False
            seq = 0
            for frame in frames:
                try:
                    seq, _, batch, points, run, skipped = self.decoder.decode(frame)
                except Exception:
                    lost, seq, run = _salvage(frame, seq)
                    logger.exception("could not decode a batch of %d spans/points; dropped", lost)
                    dropped += lost
                    reset = True  # what this batch carried (new messages, tool lists) is missing here
                    if run is not None:  # the app's last batch: still end the run and this process in order
                        final = bool(run.pop("final", False))
                        self.run = RunRecord(**run)
                    continue
                if skipped:
                    logger.warning(
                        "%d spans could not be rebuilt (they refer to messages this writer never got, or are "
                        "malformed); dropped",
                        skipped,
                    )
                    dropped += skipped
                if run is not None:
                    final = bool(run.pop("final", False))
                    self.run = RunRecord(**run)
                run_id = self.run.id
                encode = self.encoder.encode
                for span in batch:
                    try:
                        spans.append(encode(span, run_id))
                    except Exception:
                        dropped += 1
                        logger.exception("could not encode span %r; dropped", span)
                metrics.extend(MetricRecord(run_id, *point) for point in points)
            dropped += self.export(spans, metrics) if spans or metrics or final else 0
            if final:
                self.shutdown()
            self.answer(seq, dropped, reset)
        if not final:
            self.export([], [])
            self.shutdown()

    def answer(self, seq: int, dropped: int, reset: bool) -> None:
        with contextlib.suppress(OSError):  # the app is gone
            self.conn.send_bytes(to_json([seq, dropped, self.error, reset]))

    def shutdown(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception:
                logger.exception("trace exporter %r failed to shut down", exporter)


def _salvage(frame: bytes, seq: int) -> tuple[int, int, dict[str, Any] | None]:
    """What is known of a batch that could not be decoded: how many spans and points it held, its sequence number
    (answered, so that the app's flush does not wait for it; ``seq``, the previous one, when even that is
    unreadable) and its run row."""
    try:
        wire = from_json(frame)
        run = wire[4]
        return (
            len(wire[2]) + len(wire[3]),
            int(wire[0]),
            cast("dict[str, Any]", run) if isinstance(run, dict) else None,
        )
    except Exception:
        return 0, seq, None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the writer process: ``python -m agentscope.tracing._writer <socket fd>``."""
    args = sys.argv[1:] if argv is None else list(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the app, which then shuts us down in order
    logging.basicConfig(level=logging.WARNING, format="agentscope tracing writer: %(levelname)s %(message)s")
    conn = Connection(int(args[0]))
    try:
        setup = from_json(conn.recv_bytes())
    except (EOFError, OSError):
        return
    writer = _Writer(conn, setup)
    # Each frame becomes thousands of short-lived, acyclic containers (the decoded JSON, the spans, their rows). At
    # the default threshold of 700 the cycle collector ran every few spans and, each time, promoted the long-lived
    # caches (conversations, encoded messages) once more: a third of this process's CPU in the agent-steps
    # benchmark (135 against 93-100 us per step). The modules are frozen out of it; cycles are still collected.
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 10, 10)
    writer.serve()
    conn.close()


# ---------------------------------------------------------------------- the app's side


class ProcessWriter:
    """Starts the writer process and hands it frames. Its methods run in the tracer's drain thread; only
    ``wire.add`` runs in the threads that end spans."""

    def __init__(self, specs: list[list[Any]], run: RunRecord, capture_content: bool) -> None:
        self.specs = specs
        self.run = run
        self.capture_content = capture_content
        self.dropped = 0
        """Spans and points lost: not encodable, refused by an exporter, or in flight when the writer died."""
        self.error: BaseException | None = None
        """The first exporter error the writer reported."""
        self.restarts = 0
        """How many times a writer process that died was replaced."""
        self.wire = WireEncoder()
        """Encodes each span as it ends (:meth:`WireEncoder.add` is the tracer's hot path in process mode)."""
        self.max_batch = 4096
        """Most spans in one frame."""
        self.process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._seq = 0
        self._in_flight: dict[int, int] = {}
        self._setup_error: str | None = None
        self._dead = False
        """The writer died (what it had not committed is counted); the next :meth:`send` starts a new one."""

    def start(self, timeout_s: float = 300.0) -> None:
        """Start a writer process and wait until it has written the run row (raises what its exporters raised)."""
        ours, theirs = socket.socketpair()
        # Not the app's secrets (the writer needs none), and agentscope found as the app found it.
        env = {name: value for name, value in os.environ.items() if name != "AGENTSCOPE_API_KEYS"}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self.process = subprocess.Popen(
                # -P: the app's working directory is not put first on the writer's sys.path.
                [sys.executable, "-P", "-m", "agentscope.tracing._writer", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                # Its own session: a signal for the app's process group (systemd's stop, SIGHUP, Ctrl-C) must not
                # kill it while the app drains; the app ends it in order (final batch, or end of file).
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._in_flight = {0: 0}
        self._setup_error = None
        setup = {
            "run": self._run_row(),
            "exporters": self.specs,
            "capture_content": self.capture_content,
        }
        self._conn.send_bytes(to_json(setup))
        deadline = time.monotonic() + timeout_s
        while self._in_flight:
            if self._conn.poll(0.05):
                self._answers()
            elif self.process.poll() is not None:
                raise WriterError(f"the tracing writer process exited with status {self.process.returncode}")
            elif time.monotonic() > deadline:
                raise WriterError(f"the tracing writer process did not start within {timeout_s:.0f} s")
        if self._setup_error is not None:  # this start's own answer: an earlier, passing error does not count
            raise WriterError(self._setup_error)

    def _run_row(self, final: bool = False) -> dict[str, Any]:
        run = self.run
        row: dict[str, Any] = {
            "id": run.id,
            "project": run.project,
            "name": run.name,
            "started_ns": run.started_ns,
            "status": run.status,
            "ended_ns": run.ended_ns,
            "config": run.config,
        }
        if final:
            row["final"] = True
        return row

    @property
    def pending(self) -> int:
        """Spans encoded and not yet sent."""
        return self.wire.pending

    def send(self, metrics: Sequence[tuple[str, int, float, int]], final: bool = False) -> int:
        """Send a frame of up to ``max_batch`` pending spans and ``metrics`` (restarting a writer that died
        first); return how many spans it carried. Blocks only while the socket is full."""
        self._answers()
        process = self.process
        if process is None:
            self.start()
        elif self._dead or process.poll() is not None:
            if not self._dead:
                self._lost(f"the tracing writer process exited with status {process.returncode}")
            self._restart()
        # (Raising above takes nothing: the pending spans and ``metrics`` are taken only below. Those encoded for
        # a writer that died go to the new one, which skips what refers to messages it never got.)
        self._seq += 1
        seq = self._seq
        count, data = self.wire.frame(seq, self.max_batch, metrics, self._run_row(final) if final else None)
        assert self._conn is not None
        self._in_flight[seq] = count + len(metrics)
        try:
            self._conn.send_bytes(data)
        except OSError:
            self._lost("the tracing writer process stopped reading")
            if final:
                self.send([], final=True)
        return count

    def discard(self) -> int:
        """Drop the pending spans unsent (the writer cannot be started now); return how many."""
        return self.wire.discard()

    def wait(self, timeout_s: float | None) -> bool:
        """Wait until the writer has committed every frame sent; False on timeout. A writer that dies meanwhile
        ends the wait (what it had not committed is counted in :attr:`dropped`); the next :meth:`send` starts a
        new one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._in_flight:
            conn, process = self._conn, self.process
            assert conn is not None
            assert process is not None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            step = 0.05 if remaining is None else min(0.05, remaining)
            try:
                ready = conn.poll(step)
            except OSError:
                ready = False
            if ready:
                alive = self._answers()
                if alive or not self._in_flight:
                    continue
                # end of file with batches in flight: the writer is gone (or going)
                try:
                    process.wait(5.0)
                except subprocess.TimeoutExpired:
                    process.kill()
            if process.poll() is not None:
                self._lost(f"the tracing writer process exited with status {process.returncode}")
                return True
        return True

    def close(self, timeout_s: float | None) -> None:
        """Send the final run row, wait for the writer to commit it and exit."""
        try:
            self.send([], final=True)
        finally:
            self.wire.close()
        self.wait(timeout_s)
        process = self.process
        if process is not None:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("the tracing writer process did not exit; killing it")
                process.kill()
                process.wait()
        if self._conn is not None:
            self._conn.close()

    def _answers(self) -> bool:
        """Read the writer's answers; False when its end of the socket is closed."""
        conn = self._conn
        if conn is None:
            return False
        try:
            while conn.poll(0):
                seq, dropped, error, reset = from_json(conn.recv_bytes())
                if seq == 0:
                    self._setup_error = error
                for done in [s for s in self._in_flight if s <= seq]:
                    del self._in_flight[done]
                self.dropped += dropped
                if error is not None and self.error is None:
                    self.error = WriterError(error)
                if reset:
                    self.wire.reset()
        except (EOFError, OSError):
            return False  # the writer is gone: send/wait notice and restart it
        return True

    def _lost(self, why: str) -> None:
        """The writer is gone (or not reading): count what it had not committed and end it for good."""
        lost = sum(self._in_flight.values())
        self.dropped += lost
        self._in_flight.clear()
        logger.error(
            "%s; %d spans/points it had not written are lost; a new one starts with the next frame", why, lost
        )
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
        if self._conn is not None:
            self._conn.close()
        self.wire.reset()
        self._dead = True

    def _restart(self) -> None:
        self.restarts += 1
        self.start()
        self._dead = False


if __name__ == "__main__":
    main()
