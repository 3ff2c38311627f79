"""The wire between the app and a writer process (``_wire``): spans are encoded as they end (so they hold nothing
after), the writer rebuilds exactly the conversations it was sent, a span encoded for a writer that died is lost
alone, and the two sides empty their caches at the same point of the stream."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any, cast

import pytest

from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit
from agentscope.tracing import _wire
from agentscope.tracing._exporters import StoreExporter
from agentscope.tracing._genai import ModelSpan
from agentscope.tracing._tracer import Tracer
from agentscope.tracing._wire import WireDecoder, WireEncoder


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def _model_span(messages: list[Msg], span_id: int) -> ModelSpan:
    span = ModelSpan("", "model", 7, span_id, None, {}, True)
    span.model = ScriptedModel(["unused"])
    span.messages = tuple(messages)
    span.tools = ()
    span.tool_choice = None
    span.settings = None
    span.streaming = False
    span.response = ChatResponse(content=[TextBlock(text=f"answer {span_id}")], finish_reason="stop")
    span.end_ns = time.time_ns()
    return span


def _conversation(key: str, n: int) -> list[Msg]:
    return [Msg(role="user", content=f"{key} message {i}", id=f"{key}-{i}") for i in range(n)]


def _texts(span: ModelSpan) -> list[str]:
    return [m.content if isinstance(m.content, str) else "?" for m in span.messages]


def test_an_agent_is_freed_when_its_call_ends_not_when_the_writer_next_sends(tmp_path: Path) -> None:
    """With a writer process a span is encoded when it ends: the agent, its messages and the model's responses are
    not kept alive by the tracer's queue (they were, until the next export: up to a second under load, long enough
    for every garbage collection to scan and promote them)."""
    # nothing is sent while we look
    tracer = Tracer(
        [StoreExporter(tmp_path / "t.db")], writer="process", flush_interval_s=30.0, encode_interval_s=30.0
    ).install()
    tracer.wait_ready()
    try:
        toolkit = Toolkit()
        toolkit.register(add)
        agent = ReActAgent("calc", "", ScriptedModel([tool_call("add", a=1, b=2), "3"]), toolkit=toolkit)
        reply = asyncio.run(agent(Msg(role="user", content="1 + 2?")))
        assert reply.text == "3"
        agent_ref, reply_ref = weakref.ref(agent), weakref.ref(reply)
        del agent, reply
        gc.collect()
        assert agent_ref() is None
        assert reply_ref() is None
        process = tracer._process  # pyright: ignore[reportPrivateUsage]
        assert process is not None
        assert process.pending == 4  # agent, two model calls, one tool call: bytes, waiting to be sent
    finally:
        tracing.shutdown()
    assert tracer.dropped == 0


def test_the_writer_rebuilds_each_conversation_from_the_new_messages_alone() -> None:
    encoder, decoder = WireEncoder(), WireDecoder()
    messages = _conversation("k", 5)
    for n in (2, 3, 5):
        encoder.add(_model_span(messages[:n], n))
    count, frame = encoder.frame(1, 100, [])
    assert count == 3
    _, reset, spans, _, _, skipped = decoder.decode(frame)
    assert reset  # the first frame starts both sides afresh
    assert skipped == 0
    assert [_texts(s) for s in spans] == [[f"k message {i}" for i in range(n)] for n in (2, 3, 5)]  # type: ignore[arg-type]
    assert frame.count(b"k message 0") == 1  # sent once, not once per call


def test_a_span_encoded_for_a_writer_that_died_is_lost_alone() -> None:
    """A writer process dies with a frame it never committed. The spans encoded meanwhile still go to the new
    writer: the one that continues a conversation the dead writer held is skipped and counted, the others
    (a new conversation; the same conversation after the restart, sent whole) are written."""
    encoder = WireEncoder()
    messages = _conversation("k", 4)
    encoder.add(_model_span(messages[:2], 1))
    encoder.frame(1, 100, [])  # went to the writer that died
    encoder.add(_model_span(messages[:3], 2))  # refers to the two messages it held
    encoder.add(_model_span(_conversation("other", 1), 3))
    encoder.reset()  # the new writer process
    encoder.add(_model_span(messages[:4], 4))
    _, frame = encoder.frame(2, 100, [])
    _, reset, spans, _, _, skipped = WireDecoder().decode(frame)
    assert reset
    assert skipped == 1
    assert [s.span_id for s in spans] == [3, 4]
    assert _texts(spans[1]) == [f"k message {i}" for i in range(4)]  # type: ignore[arg-type]


def test_both_sides_empty_their_conversation_caches_at_the_same_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender tells the writer when it forgets its conversations, so a writer that holds more than the sender
    (a stale conversation from before a restart) never forgets one the sender still counts on. With a rule of
    their own (empty at more than N), the writer here would empty its cache at "c" and then lose "a"."""
    monkeypatch.setattr(_wire, "_CONVERSATIONS", 2)
    encoder, decoder = WireEncoder(), WireDecoder()
    decoder.decode(encoder.frame(1, 100, [])[1])  # the first frame starts both sides afresh
    decoder._conversations["stale-0"] = []  # pyright: ignore[reportPrivateUsage]
    conversations = {key: _conversation(key, 3) for key in "abcd"}
    order = [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("a", 2),
        ("d", 1),
        ("d", 2),
        ("a", 3),
    ]  # the sender empties at "d"
    for i, (key, n) in enumerate(order):
        encoder.add(_model_span(conversations[key][:n], i))
    _, frame = encoder.frame(2, 100, [])
    _, reset, spans, _, _, skipped = decoder.decode(frame)
    assert not reset
    assert skipped == 0
    assert [_texts(s) for s in spans] == [  # type: ignore[arg-type]
        [f"{key} message {i}" for i in range(n)] for key, n in order
    ]
    assert sorted(decoder._conversations) == ["a-0", "d-0"]  # pyright: ignore[reportPrivateUsage]


def test_spans_beyond_the_pending_bound_are_dropped_newest_first_and_counted(tmp_path: Path) -> None:
    encoder = WireEncoder(max_pending=2)
    for i in range(5):
        encoder.add(_model_span(_conversation(f"c{i}", 1), i))
    assert encoder.pending == 2
    assert encoder.dropped == 3
    _, frame = encoder.frame(1, 100, [])
    _, _, spans, _, _, skipped = WireDecoder().decode(frame)
    assert ([s.span_id for s in spans], skipped) == (
        [0, 1],
        0,
    )  # later spans may refer to what earlier carried

    tracer = Tracer(
        [StoreExporter(tmp_path / "t.db")],
        writer="process",
        max_queue=3,
        flush_interval_s=30.0,
        encode_interval_s=30.0,
    ).install()
    tracer.wait_ready()
    try:
        for i in range(5):
            with tracing.span(f"s{i}", "env"):
                pass
        assert tracer.dropped == 2  # the tracer's bound, counted in the tracer's total
    finally:
        tracing.shutdown()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert sorted(name for (name,) in conn.execute("SELECT name FROM spans")) == ["s0", "s1", "s2"]


class _Interrupt(BaseException):
    """Stands in for KeyboardInterrupt (which pytest would take as the user's)."""


class _InterruptedResponse:
    """A response whose fields cannot be read: the span is interrupted after its messages were recorded as sent."""

    @property
    def __dict__(self) -> dict[str, object]:  # type: ignore[override]
        raise _Interrupt


def test_a_span_interrupted_while_encoded_leaves_both_sides_agreeing() -> None:
    """The conversation cache had already recorded the span's messages as sent when its serialisation was
    interrupted: without undoing that, the next call of the conversation would refer to messages the writer never
    got (with another conversation under the same key, to the wrong ones)."""
    encoder, decoder = WireEncoder(), WireDecoder()
    messages = _conversation("k", 3)
    broken = _model_span(messages[:2], 1)
    broken.response = cast(Any, _InterruptedResponse())
    with pytest.raises(_Interrupt):
        encoder.add(broken)
    encoder.add(_model_span(messages[:3], 2))
    _, _, spans, _, _, skipped = decoder.decode(encoder.frame(1, 100, [])[1])
    assert skipped == 0
    assert [_texts(s) for s in spans] == [[f"k message {i}" for i in range(3)]]  # type: ignore[arg-type]
    assert encoder.dropped == 0  # interrupted, not dropped: the interrupt goes on to the caller


def test_a_span_that_ends_while_another_is_encoded_in_the_same_thread_does_not_hang() -> None:
    """A garbage collection inside the encoder can finalise a suspended traced coroutine, whose span then ends in
    the same thread while the encoder's lock is held (here: serialising one value ends another span). It is
    encoded after the first, instead of waiting for the lock forever."""
    encoder = WireEncoder()
    inner = _model_span(_conversation("inner", 1), 2)

    class EndsAnother:
        def __repr__(self) -> str:
            encoder.add(inner)
            return "ends another span"

    outer = _model_span(_conversation("outer", 1), 1)
    outer.settings = {"value": EndsAnother()}
    worker = threading.Thread(target=encoder.add, args=(outer,), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the encoder waited for its own lock"
    _, _, spans, _, _, skipped = WireDecoder().decode(encoder.frame(1, 100, [])[1])
    assert ([s.span_id for s in spans], skipped) == ([1, 2], 0)


def test_a_forked_child_leaves_the_parents_writer_process_alone(tmp_path: Path) -> None:
    """The child inherits the tracer and the socket to the parent's writer process; ending the tracer there must
    not send the parent's writer a final frame (it would end the parent's run and exit)."""
    store = tmp_path / "t.db"
    tracer = tracing.init(store, writer="process")
    assert tracer is not None
    try:
        process = tracer._process  # pyright: ignore[reportPrivateUsage]
        assert process is not None
        assert process.process is not None
        writer_pid = process.process.pid
        with tracing.span("before", "env"):
            pass
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                tracer.shutdown()
                with tracing.span("child", "env"):
                    pass
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the child hung"
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(done[1]) == 0
        with tracing.span("after", "env"):
            pass
        tracing.flush()
        assert process.process.pid == writer_pid
        assert process.process.poll() is None
        with sqlite3.connect(store) as conn:
            assert conn.execute("SELECT status FROM runs").fetchall() == [("running",)]
            assert sorted(name for (name,) in conn.execute("SELECT name FROM spans")) == ["after", "before"]
    finally:
        tracing.shutdown()
