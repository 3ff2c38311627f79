"""Recording less: trace sampling (whole traces, decided by trace id) and tracing without content."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit
from agentscope.tracing import _expand, _spans

pytestmark = pytest.mark.anyio

SECRET = "hunter2-SECRET-7f3a"


def _traced(**options: object) -> Iterator[tracing.InMemoryExporter]:
    exporter = tracing.InMemoryExporter()
    tracing.init(None, exporters=[exporter], project="tests", flush_interval_s=0.02, **options)  # type: ignore[arg-type]
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.fixture
def half() -> Iterator[tracing.InMemoryExporter]:
    yield from _traced(sample_rate=0.5)


@pytest.fixture
def none_sampled() -> Iterator[tracing.InMemoryExporter]:
    yield from _traced(sample_rate=0.0)


@pytest.fixture
def no_content() -> Iterator[tracing.InMemoryExporter]:
    yield from _traced(capture_content=False)


def _calculator(name: str, toolkit: Toolkit) -> tuple[ReActAgent, ScriptedModel]:
    model = ScriptedModel(
        [
            ChatResponse(
                content=[tool_call("add", a=1, b=2), tool_call("lookup", city=SECRET)],
                usage=ChatUsage(input_tokens=30, output_tokens=9),
                finish_reason="tool_calls",
                prompt_token_ids=[1, 2, 3],
                completion_token_ids=[4, 5],
            ),
            ChatResponse(
                content=[TextBlock(text=f"3, and {SECRET} is unknown.")],
                usage=ChatUsage(input_tokens=60, output_tokens=7),
                finish_reason="stop",
            ),
        ]
    )
    return ReActAgent(name, f"You add. The password is {SECRET}.", model, toolkit=toolkit), model


async def test_a_sampled_trace_is_recorded_whole_and_the_choice_follows_the_trace_id(
    half: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    for i in range(40):
        agent, _ = _calculator(f"agent{i}", toolkit)
        with tracing.span(f"episode {i}", "env") as episode:
            await agent(Msg(role="user", content=f"add for {SECRET}"))
        if episode.recording:
            assert episode.trace_id & _spans._LOW64 < 1 << 63
    await tracing.aflush()

    roots = [s for s in half.spans if s.parent_id is None]
    # 40 fair coin flips: fewer than 8 or more than 32 heads has probability ~1e-5.
    assert 8 <= len(roots) <= 32, len(roots)
    by_id = {s.span_id: s for s in half.spans}
    for root in roots:
        assert int(root.trace_id, 16) & _spans._LOW64 < 1 << 63, "recorded although the sampler said no"
        trace = [s for s in half.spans if s.trace_id == root.trace_id]
        kinds = sorted(s.kind for s in trace)
        assert kinds == ["agent", "env", "model", "model", "tool", "tool"], "a sampled trace is whole"
    assert all(s.parent_id is None or s.parent_id in by_id for s in half.spans), "no orphaned spans"


def test_new_trace_ids_start_with_their_time_and_end_in_random_bits() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [_spans.new_trace_id() for _ in range(4000)]
    after_ms = time.time_ns() // 1_000_000
    # The high 48 bits are the time in milliseconds: ids made later sort after (a store's index grows at its end).
    assert all(before_ms <= i >> 80 <= after_ms for i in ids)
    time.sleep(0.002)
    assert _spans.new_trace_id() > max(ids)
    # The low 64 bits, which the sampler reads, are uniformly random: each of them is set about half the time, and
    # a sample rate of 0.25 records about a quarter of them.
    low = [i & _spans._LOW64 for i in ids]
    assert len(set(low)) == len(low)
    for bit in (0, 17, 40, 63):
        ones = sum(value >> bit & 1 for value in low)
        assert 1800 < ones < 2200, (bit, ones)  # 4000 fair coins: outside this has probability ~1e-10
    recorded = sum(value < _spans.sample_threshold(0.25) for value in low)
    assert 850 < recorded < 1150, recorded


async def test_nothing_under_an_unsampled_root_is_recorded_but_metrics_are(
    none_sampled: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    agent, model = _calculator("quiet", toolkit)
    reply = await agent(Msg(role="user", content="add"))
    assert reply.text.startswith("3, and")
    model.assert_complete()

    with tracing.span("episode", "env", {"agentscope.rl.task_id": "t1"}) as outer:
        assert not outer.recording
        assert tracing.current_span() is outer
        with tracing.span("inner", "env") as inner:
            inner.set_attribute("ignored", 1)
            assert not inner.recording
        outer.set_status("error", "ignored too")
    with pytest.raises(KeyError), tracing.span("failing", "env"):
        raise KeyError("boom")
    assert not tracing.start_span("detached", "env").recording

    tracing.record_metric("rollout/reward", 0.25)
    await tracing.aflush()
    assert none_sampled.spans == []
    assert [(m.name, m.value) for m in none_sampled.metrics] == [("rollout/reward", 0.25)]
    assert _spans.UNSAMPLED.attributes == {}, "the shared non-recording span is never written to"


async def test_unsampled_streaming_and_failing_tools_run_normally(
    none_sampled: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    async def numbers(n: int) -> AsyncIterator[str]:
        """Count up.

        Args:
            n: How far.
        """
        for i in range(n):
            yield str(i)

    toolkit.register(numbers)
    pieces = [p async for p in toolkit.stream(tool_call("numbers", n=3))]
    assert pieces, "the stream is relayed"
    result = await toolkit.call(tool_call("lookup", city="Atlantis"))
    assert result.is_error
    await tracing.aflush()
    assert none_sampled.spans == []
    assert _spans.UNSAMPLED.attributes == {}


async def test_without_content_spans_keep_names_tokens_and_errors_but_not_what_was_said(
    no_content: tracing.InMemoryExporter, toolkit: Toolkit
) -> None:
    agent, _ = _calculator("private", toolkit)
    await agent(Msg(role="user", content=f"add for {SECRET}"))
    await tracing.aflush()

    (root,) = no_content.by_name("invoke_agent private")
    assert root.attributes["gen_ai.agent.name"] == "private"
    models = no_content.by_name("chat scripted")
    assert [m.attributes["gen_ai.usage.input_tokens"] for m in models] == [30, 60]
    assert models[0].attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    (lookup,) = no_content.by_name("execute_tool lookup")
    assert lookup.status == "error"
    assert lookup.attributes["gen_ai.tool.name"] == "lookup"
    assert lookup.attributes["gen_ai.tool.call.id"]
    (add,) = no_content.by_name("execute_tool add")
    assert add.status != "error"

    for span in no_content.spans:
        assert not _expand.CONTENT_ATTRIBUTES & span.attributes.keys(), span.name
        assert SECRET not in repr(span), span.name
    assert not any(SECRET.encode() in blob for blob in no_content.blobs.values())
    run = next(iter(no_content.runs.values()))
    assert run.config["tracing"] == {"sample_rate": 1.0, "capture_content": False, "writer": "thread"}


def test_a_bad_sample_rate_is_refused_naming_it(cli: Callable[..., Result]) -> None:
    for rate in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="sample_rate"):
            tracing.init(None, exporters=[tracing.InMemoryExporter()], sample_rate=rate)
        assert not tracing.enabled()
    result = cli("run", "examples/calculator.py", "--trace-sample-rate", "2", "-m", "1 + 1")
    assert result.exit_code != 0
    assert "--trace-sample-rate" in result.output


@pytest.mark.integration
@pytest.mark.usefixtures("allow_model_requests")
def test_cli_run_without_content_writes_no_message_text_to_the_store(
    tmp_path: Path, cli_process: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    store = tmp_path / "traces.db"
    result = cli_process(
        "run",
        "examples/calculator.py",
        "-m",
        f"What is 12 * 7? My card is {SECRET}.",  # in the process's argv too, which the run records
        "--trace-store",
        str(store),
        "--no-trace-content",
    )
    assert result.returncode == 0, result.stderr
    assert "The result is 84.0." in result.stdout
    with tracing.TraceStore(store) as st:
        runs, _ = st.list_runs()
        (run,) = runs
        assert run["span_count"] >= 3
    files = [p for p in tmp_path.iterdir() if p.name.startswith("traces.db")]
    assert files
    assert all(SECRET.encode() not in p.read_bytes() for p in files), "message text reached the trace store"


def test_the_recorded_command_line_never_holds_secret_option_values() -> None:
    from agentscope.tracing._tracer import recorded_argv

    argv = [
        "agentscope",
        "run",
        "bot.py",
        "--api-key",
        "sk-live-1",
        "--hf-token=abc",
        "-m",
        "hi",
        "--project=p",
    ]
    assert recorded_argv(argv) == [
        "agentscope",
        "run",
        "bot.py",
        "--api-key",
        "<redacted>",
        "--hf-token=<redacted>",
        "-m",
        "hi",
        "--project=p",
    ]
    # Without content, arguments (which may be messages) go too; option names stay.
    assert recorded_argv(argv, capture_content=False) == [
        "agentscope",
        "<redacted>",
        "<redacted>",
        "--api-key",
        "<redacted>",
        "--hf-token=<redacted>",
        "-m",
        "<redacted>",
        "--project",
    ]
