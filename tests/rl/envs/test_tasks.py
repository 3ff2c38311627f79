"""Task specs, the arithmetic task set and its environment's verifier."""

from __future__ import annotations

import pytest

from agentscope.message import Msg, ToolUseBlock
from agentscope.rl import Task
from agentscope.rl.tasks import (
    ArithEnv,
    TaskSet,
    get_task_set,
    load_tasks,
    overlapping,
    parse_task_spec,
    register_task_set,
    split_of,
)
from agentscope.testing import LatencyModel


def test_parse_task_spec_types_values() -> None:
    assert parse_task_spec("arith:n=64,seed=0,max_operand=2.5,ops=+-,flag=true") == (
        "arith",
        {"n": 64, "seed": 0, "max_operand": 2.5, "ops": "+-", "flag": True},
    )
    assert parse_task_spec("arith") == ("arith", {})
    with pytest.raises(ValueError, match="expected key=value"):
        parse_task_spec("arith:n")
    with pytest.raises(ValueError, match="empty task spec"):
        parse_task_spec(":n=1")


def test_arith_tasks_are_deterministic_and_correct() -> None:
    tasks = load_tasks("arith:n=64,seed=0")
    assert len(tasks) == 64
    assert tasks == load_tasks("arith:n=64,seed=0")
    assert tasks != load_tasks("arith:n=64,seed=1")
    assert len({t.id for t in tasks}) == 64
    for task in tasks:
        expression = task.metadata["expression"]
        assert isinstance(expression, str)
        assert task.answer == eval(expression)  # the test may use eval; the environment never does
        assert expression in task.prompt
    operands = [
        int(x)
        for t in load_tasks("arith:n=50,max_operand=5,terms=3,ops=+")
        for x in str(t.metadata["expression"]).split(" + ")
    ]
    assert max(operands) <= 5
    assert len(operands) == 150


def test_unknown_task_set_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown task set 'nope'; known: arith"):
        load_tasks("nope:n=1")
    with pytest.raises(ValueError, match=r"task set 'arith'.*unexpected keyword"):
        load_tasks("arith:bogus=1")
    with pytest.raises(ValueError, match="ops"):
        load_tasks("arith:ops=/")


def test_jsonl_tasks_and_registered_sets(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = tmp_path / "tasks.jsonl"
    path.write_text(Task(id="a", prompt="p", answer=3).model_dump_json() + "\n\n")
    assert load_tasks(f"jsonl:path={path}") == [Task(id="a", prompt="p", answer=3)]

    register_task_set(
        TaskSet("fixed", lambda k=1: [Task(id=f"f{i}", prompt="x") for i in range(k)], ArithEnv)
    )
    assert [t.id for t in load_tasks("fixed:k=2")] == ["f0", "f1"]
    assert get_task_set("fixed").env is ArithEnv


async def test_calculator_and_verifier() -> None:
    env = ArithEnv()
    task = Task(id="t", prompt="What is 6 * 7?", answer=42)
    observation = await env.reset(task)
    assert observation.msg.text == "What is 6 * 7?"
    assert observation.toolkit.names == ["calculator"]

    # right number without using the tool: no reward (this is a tool task)
    assert (await env.evaluate(Msg(role="assistant", content="42"))).reward == 0.0

    result = await observation.toolkit.call(
        ToolUseBlock(id="c1", name="calculator", input={"expression": "6*7"})
    )
    assert result.output == "42"
    bad = await observation.toolkit.call(
        ToolUseBlock(id="c2", name="calculator", input={"expression": "__import__('os')"})
    )
    assert bad.is_error
    assert "unknown function" in str(bad.output)
    judged = await env.evaluate(Msg(role="assistant", content="It is 42."))
    assert (judged.reward, judged.success, judged.info) == (1.0, True, {"tool_calls": 2, "correct": True})
    assert (await env.evaluate(Msg(role="assistant", content="It is 41."))).reward == 0.0

    lenient = ArithEnv(require_tool=False)
    await lenient.reset(task)
    assert (await lenient.evaluate(Msg(role="assistant", content="42"))).success


def test_latency_model() -> None:
    import random

    model = LatencyModel(median_s=2.0, sigma=0.5, tail_prob=0.2, tail_factor=10.0)
    rng = random.Random(0)
    draws = sorted(model.sample(rng) for _ in range(20000))
    tail = sum(d > 8 for d in draws) / len(draws)  # expected 0.2 x P(body > 0.8 s) + P(body > 8 s) = 0.195
    assert 0.18 < tail < 0.21
    mean = sum(draws) / len(draws)
    assert mean == pytest.approx(model.mean_s, rel=0.05)
    assert LatencyModel(median_s=0).sample(rng) == 0.0
    with pytest.raises(ValueError):
        LatencyModel(tail_prob=2)


def test_content_keys_identify_the_problem_not_the_id() -> None:
    a = Task(id="a", prompt="What is 2 + 3?", answer=5, metadata={"expression": "2 + 3"})
    b = Task(id="b", prompt="What is 2 + 3?", answer=5, metadata={"expression": "2 + 3"})
    c = Task(id="a", prompt="What is 2 + 4?", answer=6, metadata={"expression": "2 + 4"})
    named = Task(id="x", prompt="anything", metadata={"content_key": "click-button:7"})
    assert a.content_key == b.content_key != c.content_key
    assert named.content_key == "click-button:7"


def test_splits_are_disjoint_whatever_the_seeds_and_sizes() -> None:
    train = load_tasks("arith:n=300,seed=0,max_operand=20,split=train")
    warm = load_tasks("arith:n=100,seed=1,max_operand=20,split=warm")
    held_out = load_tasks("arith:n=100,seed=2,max_operand=20,split=eval")
    assert (len(train), len(warm), len(held_out)) == (300, 100, 100)
    for tasks, split in ((train, "train"), (warm, "warm"), (held_out, "eval")):
        assert {split_of(t) for t in tasks} == {split}
        assert len({t.content_key for t in tasks}) == len(tasks)  # no duplicates within a split
    assert not overlapping(held_out, train + warm)
    assert not overlapping(warm, train)
    # Without a split the old sets overlap: 2,000 draws from 243 questions hold nearly all of them.
    assert len(
        overlapping(load_tasks("arith:n=64,seed=7,max_operand=9"), load_tasks("arith:n=2000,max_operand=9"))
    )


def test_a_split_too_small_for_n_is_an_error_and_bad_splits_are_named() -> None:
    with pytest.raises(
        ValueError, match="the eval split holds only 44 distinct tasks of this set, fewer than n=100"
    ):
        load_tasks("arith:n=100,max_operand=9,split=eval")
    with pytest.raises(ValueError, match="split must be one of train, warm, eval, got 'test'"):
        load_tasks("arith:n=10,split=test")


def test_a_huge_n_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="n must be between 1 and 1,000,000, got 999,999,999"):
        load_tasks("arith:n=999999999")
