"""``agentscope.evaluation.evaluate`` in-process: a real agent file, the real task sets and verifiers, real files
and a real SQLite trace store."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agentscope import tracing
from agentscope.agents import AgentFactory, ReActAgent, load_agent_factory
from agentscope.evaluation import EpisodeResult, EvaluationReport, Price, evaluate
from agentscope.exceptions import UsageError
from agentscope.message import Msg
from agentscope.models import ChatModel
from agentscope.rl.tasks import arith_tasks, lookup_expert, lookup_tasks
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem
from agentscope.tools import Toolkit
from agentscope.tracing import TraceStore

pytestmark = pytest.mark.anyio

AGENT = Path(__file__).with_name("arith_agent.py")
SPEC = "arith:n=12,seed=3"


def expected_success(spec_n: int = 12, seed: int = 3) -> dict[str, bool]:
    """The test agent gets every task right except subtractions (by content key)."""
    return {t.content_key: " - " not in str(t.metadata["expression"]) for t in arith_tasks(spec_n, seed)}


@pytest.fixture(scope="module")
def factory() -> AgentFactory:
    return load_agent_factory(str(AGENT))


async def test_an_agent_is_scored_by_the_verifier_with_its_metrics(
    factory: AgentFactory, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    seen: list[tuple[int, int]] = []
    report = await evaluate(
        factory,
        SPEC,
        repeats=2,
        concurrency=3,
        out=out,
        price=Price(1.0, 10.0),
        on_episode=lambda _result, done, total: seen.append((done, total)),
    )
    expected = expected_success()
    assert 0 < sum(expected.values()) < len(expected), "the task set must mix successes and failures"
    assert report.complete
    assert report.expected_episodes == 24
    assert len(report.episodes) == 24
    assert {(e.task_key, e.repeat) for e in report.episodes} == {(k, r) for k in expected for r in range(2)}
    for episode in report.episodes:
        assert episode.success is expected[episode.task_key], episode
        assert episode.reward == (1.0 if episode.success else 0.0)
        assert (episode.model_calls, episode.tool_calls) == (2, 1)
        assert (episode.input_tokens, episode.output_tokens) == (200, 20)
        assert episode.cost == pytest.approx((200 * 1.0 + 20 * 10.0) / 1e6)
        assert episode.status == "ok"
        assert episode.latency_s > 0
    rate = sum(expected.values()) / len(expected)
    assert report.metrics["eval/success_rate"] == pytest.approx(rate)
    assert report.metrics["eval/task_success_rate"] == pytest.approx(rate)
    assert report.metrics["eval/input_tokens"] == 24 * 200
    assert report.metrics["eval/cost"] == pytest.approx(24 * 400 / 1e6)
    assert [t.success_rate for t in report.per_task] == [float(expected[t.task_key]) for t in report.per_task]
    assert sorted(seen) == [(i, 24) for i in range(1, 25)]
    assert EvaluationReport.model_validate_json(out.read_text()) == report
    lines = out.with_suffix(".jsonl").read_text().splitlines()
    assert json.loads(lines[0])["header"]["tasks"] == SPEC
    assert len(lines) == 25


async def test_without_a_price_there_is_no_cost(factory: AgentFactory) -> None:
    report = await evaluate(factory, "arith:n=3,seed=0")
    assert all(e.cost is None for e in report.episodes)
    assert "eval/cost" not in report.metrics


async def test_the_rl_suites_plug_in_as_task_sets() -> None:
    expert = lookup_expert()

    def play(messages: list[Msg], _request: ModelRequest) -> ScriptItem:
        step = expert(messages)
        assert not isinstance(step, Awaitable)
        return step

    def build(model: ChatModel | None = None, toolkit: Toolkit | None = None) -> ReActAgent:
        return ReActAgent("expert", "Answer.", model or FunctionModel(play), toolkit=toolkit, max_iters=6)

    report = await evaluate(build, "lookup:n=6,seed=2,level=1-3,split=eval", concurrency=2)
    assert report.metrics["eval/success_rate"] == 1.0
    assert {e.tool_calls for e in report.episodes} >= {2, 3}, "level 1 takes two calls, levels 2-3 three"
    keys = {t.content_key for t in lookup_tasks(64, 2, "1-3")}
    assert {e.task_key for e in report.episodes} <= keys


async def test_a_resumed_evaluation_plays_only_what_is_missing(factory: AgentFactory, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    first = await evaluate(factory, SPEC, out=out)
    log = out.with_suffix(".jsonl")
    lines = log.read_bytes().splitlines(keepends=True)
    # A killed run: the header, 5 episodes, and a sixth cut short mid-line.
    log.write_bytes(b"".join(lines[:6]) + lines[6][:40])
    kept = {EpisodeResult.model_validate_json(line).key for line in lines[1:6]}
    played: list[tuple[str, int]] = []
    second = await evaluate(
        factory, SPEC, out=out, resume=True, on_episode=lambda r, _d, _t: played.append(r.key)
    )
    assert len(played) == 12 - 5
    assert not kept & set(played)
    assert second.run_id == first.run_id
    assert [e.model_dump(exclude={"latency_s", "trace_id"}) for e in second.episodes] == [
        e.model_dump(exclude={"latency_s", "trace_id"}) for e in first.episodes
    ]
    again = log.read_text().splitlines()
    assert len(again) == 1 + 12, "the cut line is gone and each episode is logged once"
    assert all(json.loads(line) for line in again)


async def test_a_log_is_never_overwritten_or_mixed_up(factory: AgentFactory, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    await evaluate(factory, "arith:n=3,seed=0", out=out)
    log = out.with_suffix(".jsonl")
    before = log.read_bytes()
    with pytest.raises(UsageError, match=r"holds 3 episodes .* pass --resume"):
        await evaluate(factory, "arith:n=3,seed=0", out=out)
    with pytest.raises(UsageError, match=r"another evaluation \(tasks 'arith:n=3,seed=0' there, 'arith:n=4"):
        await evaluate(factory, "arith:n=4,seed=0", out=out, resume=True)
    assert log.read_bytes() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": "nosuch:n=3"}, r"tasks 'nosuch:n=3': unknown task set 'nosuch'; known: .*arith"),
        ({"tasks": "arith:n=3", "repeats": 0}, "repeats must be at least 1"),
        ({"tasks": "arith:n=3", "concurrency": 0}, "concurrency must be at least 1"),
        ({"tasks": "arith:n=3", "resume": True}, r"resume needs the results file"),
        ({"tasks": arith_tasks(2)}, r"needs env="),
        ({"tasks": "arith:n=3", "workers": 0}, "workers must be at least 1"),
        (
            {"tasks": "arith:n=3", "workers": 2},
            "sends the agent, the tasks and the model to other processes by name",
        ),
    ],
)
async def test_bad_arguments_fail_before_any_episode(
    factory: AgentFactory, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        await evaluate(factory, **kwargs)


async def test_a_factory_that_cannot_be_called_here_fails_first(tmp_path: Path) -> None:
    def needs_a_key(api_key: str, toolkit: Toolkit | None = None) -> ReActAgent:
        raise AssertionError("never called")

    def own_model_only(toolkit: Toolkit | None = None) -> ReActAgent:
        raise AssertionError("never called")

    with pytest.raises(UsageError, match=r"requires 'api_key', which evaluation does not give"):
        await evaluate(needs_a_key, "arith:n=2")
    with pytest.raises(UsageError, match=r"takes no model= argument"):
        await evaluate(own_model_only, "arith:n=2", model=FunctionModel(lambda m, r: "1"))


async def test_the_evaluation_is_a_run_in_the_trace_store(factory: AgentFactory, tmp_path: Path) -> None:
    store_path = tmp_path / "traces.db"
    out = tmp_path / "results.json"
    report = await evaluate(factory, SPEC, out=out, trace_store=store_path, name="baseline")
    assert not tracing.enabled(), "tracing is off again after the evaluation"
    await anyio.to_thread.run_sync(check_store, store_path, report)

    # Resumed (here: nothing left to play), it is the same run, and its rows are not doubled.
    again = await evaluate(factory, SPEC, out=out, resume=True, trace_store=store_path)
    assert again.run_id == report.run_id
    await anyio.to_thread.run_sync(check_store, store_path, report)


def check_store(store_path: Path, report: EvaluationReport) -> None:
    """What the store holds of ``report``'s evaluation (SQLite blocks: called in a worker thread)."""
    with TraceStore(store_path) as store:
        run = store.get_run(report.run_id)
        assert run is not None
        assert run["name"] == "baseline"
        assert run["status"] == "finished"
        assert run["config"]["evaluation"]["tasks"] == SPEC
        rows = store.eval_results(report.run_id)
        assert len(rows) == 12
        by_key = {r["task_key"]: r for r in rows}
        for episode in report.episodes:
            row = by_key[episode.task_key]
            assert (row["success"], row["input_tokens"], row["trace_id"]) == (
                episode.success,
                episode.input_tokens,
                episode.trace_id,
            )
            assert store.get_trace(str(episode.trace_id)) is not None, "each episode is a trace"
        series = dict(store.metric_series(report.run_id, "eval/success_rate"))
        assert series[12] == pytest.approx(report.metrics["eval/success_rate"])
        (listed,), total = store.list_evaluations()
        assert total == 1
        assert listed["id"] == report.run_id
        assert listed["episodes"] == 12
        assert listed["success_rate"] == pytest.approx(report.metrics["eval/success_rate"])


async def test_tracing_already_on_is_refused(factory: AgentFactory, tmp_path: Path) -> None:
    await anyio.to_thread.run_sync(tracing.init, tmp_path / "mine.db")
    try:
        with pytest.raises(UsageError, match="tracing is already on"):
            await evaluate(factory, "arith:n=2", trace_store=tmp_path / "other.db")
    finally:
        await anyio.to_thread.run_sync(tracing.shutdown)


async def test_a_cancelled_evaluation_writes_what_it_has(
    factory: AgentFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVAL_TEST_DELAY_S", "0.05")
    out = tmp_path / "results.json"
    done: list[int] = []
    with anyio.move_on_after(30) as scope:

        async def stop_after_three(_result: EpisodeResult, finished: int, _total: int) -> None:
            done.append(finished)
            if finished == 3:
                scope.cancel()

        await evaluate(factory, SPEC, out=out, concurrency=1, on_episode=stop_after_three)
    assert scope.cancel_called
    partial = EvaluationReport.model_validate_json(out.read_text())
    assert len(partial.episodes) == 3
    assert not partial.complete
    rest = await evaluate(factory, SPEC, out=out, resume=True)
    assert rest.complete
    assert len(rest.episodes) == 12


def test_a_run_id_must_look_like_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run_id must be 1 to 64 letters"):
        tracing.Tracer([tracing.InMemoryExporter()], run_id="../etc")
    assert tracing.Tracer([tracing.InMemoryExporter()], run_id="eval-1").run.id == "eval-1"


async def test_episodes_run_concurrently_up_to_the_limit() -> None:
    in_flight = 0
    most = 0
    three_in_flight = anyio.Event()

    async def slow(messages: list[Msg], _request: ModelRequest) -> ScriptItem:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 3:
            three_in_flight.set()
        await three_in_flight.wait()  # a barrier: the first calls wait until three run at once
        in_flight -= 1
        return "0"

    def build(model: ChatModel | None = None, toolkit: Toolkit | None = None) -> ReActAgent:
        return ReActAgent("slow", "Answer.", model or FunctionModel(slow), toolkit=toolkit)

    with anyio.fail_after(20):  # fewer than three at once would wait here for ever
        report = await evaluate(build, "arith:n=8,seed=0", concurrency=3)
    assert len(report.episodes) == 8
    assert most == 3


async def test_more_repeats_on_resume_play_only_the_new_ones(factory: AgentFactory, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    await evaluate(factory, SPEC, out=out)
    played: list[tuple[str, int]] = []
    report = await evaluate(
        factory, SPEC, out=out, resume=True, repeats=2, on_episode=lambda r, _d, _t: played.append(r.key)
    )
    assert sorted(r for _, r in played) == [1] * 12
    assert len(report.episodes) == 24
    assert report.complete
