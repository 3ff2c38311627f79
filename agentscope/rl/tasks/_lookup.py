"""Lookup tasks: questions whose answer takes a chain of tool calls over a small SQLite database made per task.

Each task has its own database (24 people, 8 companies, a few dozen orders) generated from the task's seed, loaded
into an in-memory SQLite database when the environment is reset. The question names a person; the answer is a
value the tools return, never one the question holds, so it cannot be had without the calls:

========  =============================================================  ============================================
level     question                                                       what the expert calls
========  =============================================================  ============================================
1         ``What is the city of Ada? Reply with the value only.``        ``find_person`` → ``get_record`` (2 calls)
2         ``What is the industry of the employer of Ada? ...``           ``find_person`` → ``get_record`` (the
                                                                         person) → ``get_record`` (the company)
3         ``What is the total of the orders of Ada? ...``                ``find_person`` → ``get_record`` →
                                                                         ``sum_values`` (3 calls, one computing)
========  =============================================================  ============================================

Level 1 asks for a person's ``city``, ``job`` or ``age``; level 2 for their employer's ``name``, ``city`` or
``industry``. Three tools, answering in short, regular lines: ``find_person`` (``person 37``), ``get_record``
(people and companies share one id space: ``name: Ada; city: Lyon; job: baker; age: 34; employer: 12;
orders: 12, 30, 7`` or ``name: Acme; city: Oslo; industry: shipping``) and ``sum_values`` (``49``). The skill is
copying the right span of the question or of a result into the next call and, at the end, into the answer. Three
tools and one-line descriptions keep the prompt short: a tiny policy reads every tool schema in every prompt (the
schemas are about 300 of an episode's ~450 tokens). The verifier compares the normalised final reply with the
answer (``Lyon``, ``lyon.`` and ``The answer is Lyon.`` all match; a reply listing candidates does not).

Spec: ``lookup:n=200,seed=0,level=1``. ``level`` is 1, 2 or 3; a mixture is ``level=1-3`` (or ``level=0``, the
same), ``level=1-2`` and so on: task ``i`` then has the ``i % k``-th level of the range, and it is the very task
(same id, database and question) that the single-level spec of that level has at index ``i``. Everything is
deterministic given the spec. The content key (``split=``) is the question with its answer: tasks that differ
only in ids or in rows the question does not touch are one problem for the splits (a policy that memorised one
would pass the other).
"""

from __future__ import annotations

import functools
import random
import re
import sqlite3
import threading
from dataclasses import dataclass
from typing import Final

import anyio.to_thread

from agentscope.exceptions import ModelRetry
from agentscope.message import Msg
from agentscope.models import ScriptItem, tool_call
from agentscope.rl._types import Task
from agentscope.rl.envs import Environment, EnvResult, Observation, ScriptedPolicy
from agentscope.rl.tasks._common import (
    answer_matches,
    forced_to_answer,
    parse_levels,
    task_text,
    tool_outputs,
)
from agentscope.tools import Toolkit

__all__ = ["LookupEnv", "lookup_expert", "lookup_random_policy", "lookup_tasks"]

_NAMES: Final = (
    "Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena",
    "Milo", "Nora", "Otto", "Pia", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wes", "Yuki",
    "Alba", "Bruno", "Cora", "Dario", "Elsa", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Karl", "Luca",
    "Mira", "Nils", "Olga", "Paul", "Rita", "Saul", "Theo", "Ugo", "Vito", "Wanda", "Xena", "Zara",
)  # fmt: skip
"""People go by one name (unique in a database), so that every value a task copies is one word."""
_CITIES: Final = (
    "Lyon", "Oslo", "Rome", "Kyoto", "Lima", "Cairo", "Perth", "Quito",
    "Dakar", "Hanoi", "Porto", "Riga", "Bern", "Graz", "Nice", "Turin",
)  # fmt: skip
_JOBS: Final = ("baker", "nurse", "pilot", "judge", "chef", "clerk", "miner", "tutor", "actor", "vet", "poet")
_COMPANIES: Final = (
    "Acme", "Globex", "Initech", "Umbra", "Vortex", "Nimbus", "Zenith", "Apex",
    "Orbit", "Pixel", "Quanta", "Helix", "Sigma", "Tundra", "Willow", "Ember",
)  # fmt: skip
_INDUSTRIES: Final = (
    "shipping", "mining", "retail", "media", "banking", "farming", "energy", "travel", "software", "textiles",
)  # fmt: skip
_PEOPLE: Final = 24
_COMPANY_COUNT: Final = 8
_PERSON_FIELDS: Final = ("city", "job", "age")
_COMPANY_FIELDS: Final = ("name", "city", "industry")
_TOOLS: Final = ("find_person", "get_record", "sum_values")
_SUFFIX: Final = " Reply with the value only."
_QUESTION: Final = re.compile(r"What is the (\w+) of (the employer of |the orders of )?(.+?)\?")


# ---------------------------------------------------------------------- the database


@dataclass(frozen=True, slots=True)
class _Person:
    id: int
    name: str
    city: str
    job: str
    age: int
    employer: int


@dataclass(frozen=True, slots=True)
class _Company:
    id: int
    name: str
    city: str
    industry: str


@dataclass(frozen=True, slots=True)
class _Database:
    people: tuple[_Person, ...]
    companies: tuple[_Company, ...]
    orders: tuple[tuple[int, int, int], ...]
    """(order id, person id, amount)."""

    def company(self, company_id: int) -> _Company:
        return next(c for c in self.companies if c.id == company_id)

    def amounts(self, person_id: int) -> list[int]:
        return [amount for _, pid, amount in self.orders if pid == person_id]


def _database(db_seed: str, *, with_orders: bool = True) -> _Database:
    """The rows of one task's database (deterministic given ``db_seed``).

    ``with_orders=False`` leaves the orders out (they come last from the generator, so people and companies are the
    same): what a question of levels 1 and 2 needs, at about half the cost.
    """
    rng = random.Random(f"lookup-db:{db_seed}")
    names = rng.sample(_NAMES, _PEOPLE)
    ids = rng.sample(range(10, 100), _PEOPLE + _COMPANY_COUNT)  # one id space: get_record reads both
    company_ids = ids[_PEOPLE:]
    companies = tuple(
        _Company(cid, name, rng.choice(_CITIES), rng.choice(_INDUSTRIES))
        for cid, name in zip(company_ids, rng.sample(_COMPANIES, _COMPANY_COUNT), strict=True)
    )
    people = tuple(
        _Person(
            pid, name, rng.choice(_CITIES), rng.choice(_JOBS), rng.randint(20, 69), rng.choice(company_ids)
        )
        for pid, name in zip(ids[:_PEOPLE], names, strict=True)
    )
    if not with_orders:
        return _Database(people, companies, ())
    order_ids = iter(rng.sample(range(100, 1000), _PEOPLE * 4))
    orders = tuple(
        (next(order_ids), person.id, rng.randint(5, 60))
        for person in people
        for _ in range(rng.randint(0, 4))
    )
    return _Database(people, companies, orders)


def _open_database(db: _Database) -> sqlite3.Connection:
    """An in-memory SQLite database holding ``db`` (blocking: run it in a worker thread)."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.executescript(
        """
        CREATE TABLE companies (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL,
                                industry TEXT NOT NULL);
        CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, city TEXT NOT NULL,
                             job TEXT NOT NULL, age INTEGER NOT NULL,
                             employer INTEGER NOT NULL REFERENCES companies(id));
        CREATE TABLE orders (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL REFERENCES people(id),
                             amount INTEGER NOT NULL);
        """
    )
    connection.executemany(
        "INSERT INTO companies VALUES (?, ?, ?, ?)",
        [(c.id, c.name, c.city, c.industry) for c in db.companies],
    )
    connection.executemany(
        "INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)",
        [(p.id, p.name, p.city, p.job, p.age, p.employer) for p in db.people],
    )
    connection.executemany("INSERT INTO orders VALUES (?, ?, ?)", db.orders)
    connection.commit()
    return connection


# ---------------------------------------------------------------------- the tasks


def _question(db: _Database, level: int, rng: random.Random) -> tuple[str, str]:
    if level == 3:
        person = rng.choice([p for p in db.people if len(db.amounts(p.id)) >= 2])
        return f"What is the total of the orders of {person.name}?", str(sum(db.amounts(person.id)))
    person = rng.choice(db.people)
    if level == 2:
        field = rng.choice(_COMPANY_FIELDS)
        value = getattr(db.company(person.employer), field)
        return f"What is the {field} of the employer of {person.name}?", str(value)
    field = rng.choice(_PERSON_FIELDS)
    return f"What is the {field} of {person.name}?", str(getattr(person, field))


@functools.lru_cache(maxsize=1 << 17)
def _task_question(db_seed: str, level: int) -> tuple[str, str]:
    """The question and answer of the task of ``db_seed`` at ``level``. Cached: a split's loader asks for the same
    tasks again with a larger ``n`` until the split holds enough, and a config loads its task sets more than once."""
    db = _database(db_seed, with_orders=level == 3)
    return _question(db, level, random.Random(f"lookup-question:{db_seed}:{level}"))


def lookup_tasks(n: int = 200, seed: int = 0, level: int | str = 1) -> list[Task]:
    """``n`` lookup tasks (deterministic given the arguments; see the module docstring for the levels).

    Args:
        n: How many tasks.
        seed: Seed of the databases and questions.
        level: 1, 2 or 3; a range such as ``"1-3"`` (or 0, the same as ``"1-3"``) mixes the levels, task ``i``
            taking the ``i % k``-th level of the range.

    Raises:
        ValueError: ``n`` below 1 or an unknown level.
    """
    if n < 1:
        raise ValueError(f"lookup needs n >= 1, got {n}")
    levels = parse_levels("lookup", level)
    tasks: list[Task] = []
    for i in range(n):
        task_level = levels[i % len(levels)]
        db_seed = f"{seed}:{i}"
        question, answer = _task_question(db_seed, task_level)
        tasks.append(
            Task(
                id=f"lookup-L{task_level}-{seed}-{i}",
                prompt=question + _SUFFIX,
                answer=answer,
                metadata={
                    "level": task_level,
                    "db_seed": db_seed,
                    "content_key": f"lookup:{question}={answer}",
                },
            )
        )
    return tasks


# ---------------------------------------------------------------------- the environment


def _expert_chain(db: _Database, level: int, prompt: str) -> tuple[str, ...]:
    """The calls the expert makes for the task ``prompt`` asks, as the keys :meth:`LookupEnv._note` records."""
    match = _QUESTION.search(prompt)
    if match is None:
        return ()
    person = next((p for p in db.people if p.name == match[3]), None)
    if person is None:
        return ()
    chain = [f"find_person({person.name.lower()})", f"get_record({person.id})"]
    if level == 2:
        chain.append(f"get_record({person.employer})")
    elif level == 3:
        chain.append(f"sum_values({','.join(sorted(str(a) for a in db.amounts(person.id)))})")
    return tuple(chain)


class LookupEnv(Environment):
    """Plays lookup tasks: the task's database in an in-memory SQLite, three tools over it, and an exact-answer
    verifier (reward 1 for the right value; ``info`` holds ``level``, ``tool_calls``, ``correct`` and
    ``progress``).

    ``progress`` is the fraction of the expert's chain of calls the episode made, each with the argument that
    leads to the answer: the person's name to ``find_person``, their id to ``get_record``, then (level 2) the
    employer's id to ``get_record`` or (level 3) their order amounts to ``sum_values`` (a call counts wherever it
    comes in the episode). A wrong answer earns ``partial_credit`` × ``progress`` (default 0: success only), so
    that episodes of one group which all fail still differ in how far they got; success is the answer alone.

    SQLite runs in worker threads, never on the event loop; the connection is replaced at every reset.

    Args:
        partial_credit: Reward of a wrong answer after the whole chain of calls, in [0, 1).

    Raises:
        ValueError: ``partial_credit`` outside [0, 1).
    """

    def __init__(self, *, partial_credit: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= partial_credit < 1.0:
            raise ValueError(f"LookupEnv: partial_credit must be in [0, 1), got {partial_credit}")
        self.partial_credit = partial_credit
        """Reward of a wrong answer after the whole chain of calls."""
        self._task: Task | None = None
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._calls = 0
        self._chain: tuple[str, ...] = ()
        """The expert's calls of this episode's task, as ``tool(argument)`` keys."""
        self._made: set[str] = set()
        """The keys of the calls this episode made that are in the chain."""

    async def reset(self, task: Task) -> Observation:
        db_seed, level = task.metadata.get("db_seed"), task.metadata.get("level")
        if not isinstance(db_seed, str) or not isinstance(level, int):
            raise ValueError(f"task {task.id!r} is not a lookup task: its metadata lacks db_seed and level")
        old, self._connection = self._connection, None
        db = _database(db_seed)
        self._connection = await anyio.to_thread.run_sync(self._replace, old, db)
        self._task = task
        self._calls = 0
        self._chain, self._made = _expert_chain(db, level, task.prompt), set()
        toolkit = Toolkit()
        for tool in (self.find_person, self.get_record, self.sum_values):
            toolkit.register(tool)
        return Observation(msg=Msg(role="user", name="user", content=task.prompt), toolkit=toolkit)

    def _replace(self, old: sqlite3.Connection | None, db: _Database) -> sqlite3.Connection:
        with self._lock:
            if old is not None:
                old.close()
            return _open_database(db)

    async def _rows(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        def run() -> list[tuple[object, ...]]:
            with self._lock:
                if self._connection is None:
                    raise RuntimeError("the lookup environment is closed or was never reset")
                return self._connection.execute(sql, params).fetchall()

        return await anyio.to_thread.run_sync(run)

    async def find_person(self, name: str) -> str:
        """Find a person's id by name."""
        self._calls += 1
        self._note(f"find_person({name.strip().lower()})")
        rows = await self._rows("SELECT id FROM people WHERE lower(name) = lower(?)", name.strip())
        if not rows:
            raise ModelRetry(f"no person named {name!r}")
        return f"person {rows[0][0]}"

    async def get_record(self, record_id: int) -> str:
        """Read the record of a person or a company by id."""
        self._calls += 1
        self._note(f"get_record({record_id})")
        rows = await self._rows("SELECT name, city, job, age, employer FROM people WHERE id = ?", record_id)
        if rows:
            name, city, job, age, employer = rows[0]
            orders = await self._rows("SELECT amount FROM orders WHERE person_id = ? ORDER BY id", record_id)
            amounts = ", ".join(str(row[0]) for row in orders) or "none"
            return (
                f"name: {name}; city: {city}; job: {job}; age: {age}; employer: {employer}; orders: {amounts}"
            )
        rows = await self._rows("SELECT name, city, industry FROM companies WHERE id = ?", record_id)
        if not rows:
            raise ModelRetry(f"no record with id {record_id}")
        name, city, industry = rows[0]
        return f"name: {name}; city: {city}; industry: {industry}"

    async def sum_values(self, values: str) -> str:
        """Add up comma-separated numbers."""
        self._calls += 1
        numbers = re.findall(r"-?\d+", values)
        if not numbers:
            raise ModelRetry(f"no numbers in {values!r}")
        self._note(f"sum_values({','.join(sorted(numbers))})")
        return str(sum(int(x) for x in numbers))

    def _note(self, call: str) -> None:
        if call in self._chain:
            self._made.add(call)

    async def evaluate(self, reply: Msg) -> EnvResult:
        if self._task is None:
            raise RuntimeError("evaluate() before reset()")
        correct = answer_matches(reply.text, str(self._task.answer))
        level = self._task.metadata.get("level")
        progress = len(self._made) / len(self._chain) if self._chain else 0.0
        return EnvResult(
            reward=1.0 if correct else self.partial_credit * progress,
            success=correct,
            info={
                "level": level if isinstance(level, int) else 0,
                "tool_calls": self._calls,
                "correct": correct,
                "progress": progress,
            },
        )

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await anyio.to_thread.run_sync(connection.close)


# ---------------------------------------------------------------------- scripted policies


def _fields(output: str) -> dict[str, str]:
    """``"name: Ada; city: Lyon"`` -> ``{"name": "Ada", "city": "Lyon"}``."""
    pairs = (part.partition(": ") for part in output.split("; "))
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _number(output: str) -> int | None:
    match = re.search(r"\d+", output)
    return int(match[0]) if match else None


def lookup_expert() -> ScriptedPolicy:
    """The scripted expert of the lookup tasks: reads the question and the tool results of the conversation and
    makes the next call of the chain, then answers with the value (it solves every task)."""
    return _expert_step


def _expert_step(messages: list[Msg]) -> ScriptItem:
    match = _QUESTION.search(task_text(messages))
    outputs = tool_outputs(messages)
    if match is None or any(is_error for _, is_error in outputs) or forced_to_answer(messages):
        return "unknown"
    field, via, name = match[1], match[2] or "", match[3]
    results = [text for text, _ in outputs]
    if not results:
        return tool_call("find_person", name=name)
    step, last = len(results), results[-1]
    if step == 1:
        return tool_call("get_record", record_id=_number(last))
    record = _fields(last)
    if via == "the orders of ":
        return tool_call("sum_values", values=record.get("orders", "")) if step == 2 else last
    if via == "the employer of " and step == 2:
        return tool_call("get_record", record_id=_number(record.get("employer", "")))
    return record.get(field, "unknown")


def _seen(messages: list[Msg]) -> tuple[list[str], list[int], list[str]]:
    """Names, numbers and values the conversation shows (the random policy's material)."""
    question = task_text(messages)
    names = [word for word in re.findall(r"\b[A-Z][a-z]+\b", question) if word not in ("What", "Reply")]
    values: list[str] = list(names)
    for text, _ in tool_outputs(messages):
        fields = _fields(text)
        values.extend(fields.values() if fields else [text.removeprefix("person ")])
    numbers = [int(x) for x in re.findall(r"\d+", " ".join([question, *values]))]
    return names, numbers, values


def lookup_random_policy(seed: int) -> ScriptedPolicy:
    """A policy that acts at random among what the conversation offers: each turn it answers with probability
    1/4 (always after three calls, or when asked to answer), else it calls one of the three tools at random with
    an argument drawn from the names, numbers and values seen so far; its answer is a value seen. The baseline
    of the lookup tasks."""
    rng = random.Random(seed)

    def policy(messages: list[Msg]) -> ScriptItem:
        names, numbers, values = _seen(messages)
        calls = len(tool_outputs(messages))
        if forced_to_answer(messages) or calls >= 3 or rng.random() < 0.25:
            return rng.choice(values) if values else "unknown"
        tool = rng.choice(_TOOLS)
        some_number = rng.choice(numbers) if numbers else rng.randint(10, 99)
        if tool == "find_person":
            return tool_call(tool, name=rng.choice(names or values or ["nobody"]))
        if tool == "sum_values":
            return tool_call(tool, values=rng.choice(values or [str(some_number)]))
        return tool_call(tool, record_id=some_number)

    return policy
