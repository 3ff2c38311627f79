"""The lookup suite: generation, levels, splits, the SQLite-backed tools, the verifier, and the expert and random
policies played through the real environment cluster and ReActAgent."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

from agentscope.message import Msg, ToolUseBlock
from agentscope.rl import Task
from agentscope.rl.tasks import (
    LookupEnv,
    get_task_set,
    load_tasks,
    lookup_expert,
    lookup_random_policy,
    lookup_tasks,
    overlapping,
    split_of,
)

if TYPE_CHECKING:
    from conftest import Play  # type: ignore[import-not-found]

FORMS = {
    1: re.compile(r"What is the (city|job|age) of ([A-Z][a-z]+)\? Reply with the value only\."),
    2: re.compile(
        r"What is the (name|city|industry) of the employer of ([A-Z][a-z]+)\? Reply with the value only\."
    ),
    3: re.compile(r"What is the (total) of the orders of ([A-Z][a-z]+)\? Reply with the value only\."),
}
TRUTH = {  # the answer, straight from the database by SQL (the tools are not used)
    1: "SELECT {field} FROM people WHERE name = ?",
    2: "SELECT c.{field} FROM people p JOIN companies c ON c.id = p.employer WHERE p.name = ?",
    3: "SELECT SUM(o.amount) FROM people p JOIN orders o ON o.person_id = p.id WHERE p.name = ?",
}
EXPERT_CALLS = {1: 2, 2: 3, 3: 3}


async def database_answer(env: LookupEnv, task: Task) -> str:
    level = task.metadata["level"]
    assert isinstance(level, int)
    match = FORMS[level].fullmatch(task.prompt)
    assert match is not None, task.prompt
    field, name = match[1], match[2]
    connection = env._connection
    assert connection is not None
    sql = TRUTH[level].format(field=field)
    rows = await anyio.to_thread.run_sync(lambda: connection.execute(sql, (name,)).fetchall())
    assert len(rows) == 1
    return str(rows[0][0])


def test_generation_is_deterministic() -> None:
    tasks = load_tasks("lookup:n=30,seed=0,level=1-3")
    assert tasks == load_tasks("lookup:n=30,seed=0,level=1-3")
    assert tasks != load_tasks("lookup:n=30,seed=1,level=1-3")
    assert len({t.id for t in tasks}) == 30
    assert load_tasks("lookup:n=30,seed=0,level=0") == tasks  # level=0 is the same mixture
    # task i of a mixture is task i of the single-level spec of its level (same id, database, question)
    singles = {level: lookup_tasks(n=30, seed=0, level=level) for level in (1, 2, 3)}
    for i, task in enumerate(tasks):
        assert task.metadata["level"] == i % 3 + 1
        assert task == singles[i % 3 + 1][i]
    assert {t.metadata["level"] for t in lookup_tasks(n=10, level="1-2")} == {1, 2}
    for bad in (4, -1, "3-1", "x"):
        with pytest.raises(ValueError, match="lookup level must be 1, 2 or 3"):
            lookup_tasks(n=1, level=bad)
    with pytest.raises(ValueError, match="n >= 1"):
        lookup_tasks(n=0)


async def test_levels_ask_what_they_say_and_the_answer_is_in_the_database_only() -> None:
    env = LookupEnv()
    try:
        for level in (1, 2, 3):
            tasks = load_tasks(f"lookup:n=20,seed=3,level={level}")
            fields = set()
            for task in tasks:
                match = FORMS[level].fullmatch(task.prompt)
                assert match is not None, task.prompt
                fields.add(match[1])
                await env.reset(task)
                assert await database_answer(env, task) == task.answer
                # the question does not hold the answer: it takes the tools
                assert str(task.answer).lower() not in task.prompt.lower().split()
            assert fields == {1: {"city", "job", "age"}, 2: {"name", "city", "industry"}, 3: {"total"}}[level]
    finally:
        await env.close()


def test_the_generated_tasks_are_those_the_benchmarks_were_measured_on() -> None:
    """The generator's output is part of the benchmarks' contract (their held-out sets, their warm starts): a
    change that alters a task, even one meant only to be faster, changes what every recorded number means."""
    tasks = lookup_tasks(n=300, seed=5, level="1-3")
    text = "\n".join(f"{t.id}|{t.prompt}|{t.answer}" for t in tasks)
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "14c715c867d032d8586275ea308db797b973e8a175a4bb9954e2004af03e836b"
    )


def test_splits_are_disjoint_by_content() -> None:
    splits = {
        s: load_tasks(f"lookup:n=80,seed={i},level=1-3,split={s}")
        for i, s in enumerate(("train", "warm", "eval"))
    }
    for name, tasks in splits.items():
        assert len(tasks) == 80
        assert {split_of(t) for t in tasks} == {name}
        assert len({t.content_key for t in tasks}) == 80
    assert not overlapping(splits["eval"], splits["train"] + splits["warm"])
    assert not overlapping(splits["warm"], splits["train"])
    # The key is the question with its answer: the same question and answer in two databases is one problem
    # (a policy that memorised one would pass the other), so both land in one split.
    groups: dict[tuple[str, object], list[Task]] = {}
    for task in lookup_tasks(n=1000, seed=4, level=1):
        groups.setdefault((task.prompt, task.answer), []).append(task)
    twins = [group for group in groups.values() if len(group) > 1]
    assert twins
    for group in twins:
        assert len({t.metadata["db_seed"] for t in group}) == len(group)
        assert len({t.content_key for t in group}) == 1


async def test_tools_answer_in_short_regular_lines_and_say_what_is_wrong() -> None:
    env = LookupEnv()
    task = lookup_tasks(n=1, seed=5, level=2)[0]
    observation = await env.reset(task)
    assert observation.toolkit.names == ["find_person", "get_record", "sum_values"]
    name = FORMS[2].fullmatch(task.prompt)[2]  # type: ignore[index]

    async def call(tool: str, **arguments: object) -> tuple[str, bool]:
        result = await observation.toolkit.call(ToolUseBlock(id="c", name=tool, input=arguments))  # type: ignore[arg-type]
        assert isinstance(result.output, str)
        return result.output, result.is_error

    found, _ = await call("find_person", name=name.lower())  # names match whatever the case
    assert re.fullmatch(r"person \d+", found)
    person, _ = await call("get_record", record_id=int(found.split()[1]))
    record = re.fullmatch(
        r"name: (.+); city: \w+; job: \w+; age: \d+; employer: (\d+); orders: (none|\d+(?:, \d+)*)", person
    )
    assert record is not None
    assert record[1] == name
    company, _ = await call("get_record", record_id=int(record[2]))
    assert re.fullmatch(r"name: \w+; city: \w+; industry: \w+", company)
    # the orders come in the order they were placed, as SQLite holds them
    connection = env._connection
    assert connection is not None
    rows = await anyio.to_thread.run_sync(
        lambda: connection.execute(
            "SELECT amount FROM orders WHERE person_id = ? ORDER BY id", (int(found.split()[1]),)
        ).fetchall()
    )
    assert record[3] == (", ".join(str(r[0]) for r in rows) or "none")
    assert await call("sum_values", values="12, 30, 7") == ("49", False)
    assert await call("find_person", name="Nobody Here") == ("no person named 'Nobody Here'", True)
    assert await call("get_record", record_id=1) == ("no record with id 1", True)
    assert await call("sum_values", values="none") == ("no numbers in 'none'", True)
    judged = await env.evaluate(Msg(role="assistant", content="x"))
    assert judged.info == {"level": 2, "tool_calls": 7, "correct": False, "progress": 1.0}
    assert judged.reward == 0.0  # no partial credit unless asked for
    await env.close()


async def test_the_verifier_wants_the_answer_and_nothing_else() -> None:
    env = LookupEnv()
    task = lookup_tasks(n=1, seed=2, level=1)[0]
    await env.reset(task)
    answer = str(task.answer)
    for right in (answer, f" {answer.lower()}.", f"The answer is {answer}.", f'"{answer}"'):
        judged = await env.evaluate(Msg(role="assistant", content=right))
        assert (judged.reward, judged.success) == (1.0, True), right
    for wrong in ("", "unknown", f"{answer} or Oslo", f"It is {answer}", answer + "0", "Ada Lee"):
        judged = await env.evaluate(Msg(role="assistant", content=wrong))
        assert (judged.reward, judged.success) == (0.0, False), wrong
    await env.close()


async def _progress_of(env: LookupEnv, task: Task, calls: list[tuple[str, dict[str, object]]]) -> float:
    observation = await env.reset(task)
    for tool, arguments in calls:
        await observation.toolkit.call(ToolUseBlock(id="c", name=tool, input=arguments))  # type: ignore[arg-type]
    judged = await env.evaluate(Msg(role="assistant", content="not the answer"))
    progress = judged.info["progress"]
    assert isinstance(progress, float)
    assert judged.success is False
    assert judged.reward == pytest.approx(env.partial_credit * progress)
    return progress


@pytest.mark.parametrize("level", [1, 2, 3])
async def test_partial_credit_pays_for_each_call_of_the_chain_made_with_the_right_argument(
    level: int,
) -> None:
    env = LookupEnv(partial_credit=0.5)
    task = lookup_tasks(n=1, seed=7, level=level)[0]
    name = FORMS[level].fullmatch(task.prompt)[2]  # type: ignore[index]
    observation = await env.reset(task)  # the ids come from the tools, as the policy gets them
    found = await observation.toolkit.call(ToolUseBlock(id="c", name="find_person", input={"name": name}))
    person_id = int(str(found.output).split()[1])
    record = await observation.toolkit.call(
        ToolUseBlock(id="c", name="get_record", input={"record_id": person_id})
    )
    fields = dict(part.split(": ", 1) for part in str(record.output).split("; "))
    chain: list[tuple[str, dict[str, object]]] = [
        ("find_person", {"name": name}),
        ("get_record", {"record_id": person_id}),
    ]
    if level == 2:
        chain.append(("get_record", {"record_id": int(fields["employer"])}))
    elif level == 3:
        chain.append(("sum_values", {"values": fields["orders"]}))
    steps = len(chain)
    assert await _progress_of(env, task, []) == 0.0
    assert await _progress_of(env, task, chain[:1]) == pytest.approx(1 / steps)
    assert await _progress_of(env, task, chain) == pytest.approx(1.0)
    assert await _progress_of(env, task, chain + chain) == pytest.approx(1.0)  # a call counts once
    # the wrong person's chain earns nothing, however long
    other = "Nobody" if name != "Nobody" else "Somebody"
    assert (
        await _progress_of(env, task, [("find_person", {"name": other}), ("get_record", {"record_id": 1})])
        == 0.0
    )
    # the answer is worth 1 whatever the calls
    await env.reset(task)
    judged = await env.evaluate(Msg(role="assistant", content=str(task.answer)))
    assert (judged.reward, judged.success, judged.info["progress"]) == (1.0, True, 0.0)
    await env.close()


def test_partial_credit_must_stay_below_a_success() -> None:
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="partial_credit must be in"):
            LookupEnv(partial_credit=bad)


async def test_the_expert_solves_every_level_through_the_real_agent(play_episodes: Play) -> None:
    tasks = load_tasks("lookup:n=45,seed=11,level=1-3,split=eval")
    trajectories = await play_episodes(LookupEnv, lookup_expert(), tasks)
    for task, trajectory in zip(tasks, trajectories, strict=True):
        level = task.metadata["level"]
        assert isinstance(level, int)
        assert (trajectory.status, trajectory.success, trajectory.reward) == ("ok", True, 1.0), (
            trajectory.error
        )
        assert trajectory.metrics["env/tool_calls"] == EXPERT_CALLS[level]
        assert len(trajectory.turns) == EXPERT_CALLS[level] + 1


async def test_the_random_policy_is_a_low_baseline(play_episodes: Play) -> None:
    tasks = load_tasks("lookup:n=90,seed=12,level=1-3")
    trajectories = await play_episodes(LookupEnv, lookup_random_policy(0), tasks, slots=1)
    assert {t.status for t in trajectories} == {"ok"}
    calls = sum(t.metrics["env/steps"] for t in trajectories) / len(trajectories)
    success = sum(t.success for t in trajectories) / len(trajectories)
    assert calls > 1.0  # it does act: about 2 calls per episode, drawn from what it saw
    assert success <= 0.1  # measured: 0.005 over 600 episodes (benchmarks/RESULTS.md, rl_tasks)


def test_the_registry_loads_the_suite_only_when_used() -> None:
    probe = (
        "import json, sys; import agentscope.rl.tasks as t; t.load_tasks('arith:n=2'); "
        "heavy = ('agentscope.rl.tasks._lookup', 'agentscope.sandbox', 'sqlite3'); "
        "before = [m for m in heavy if m in sys.modules]; t.load_tasks('lookup:n=2'); "
        "print(json.dumps([before, 'agentscope.rl.tasks._lookup' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[], True]
    task_set = get_task_set("lookup")
    assert task_set.env().__class__ is LookupEnv
    assert task_set.expert is not None
    assert task_set.random_policy is not None
