"""MiniWoB++ task lists: ``miniwob:tasks=click-button|click-link,n=200,seed=0``."""

from __future__ import annotations

import random

from agentscope.rl._types import Task
from agentscope.rl.tasks._miniwob._experts import EXPERT_TASKS
from agentscope.rl.tasks._miniwob._server import miniwob_task_names, validate_task_names

__all__ = [
    "FEW_PROBLEM_TASKS",
    "MINIWOB_DEFAULT_TASKS",
    "SEED_INVARIANT_TASKS",
    "content_key",
    "miniwob_tasks",
    "resolve_task_names",
]

MINIWOB_DEFAULT_TASKS: tuple[str, ...] = EXPERT_TASKS
"""The wired tasks (``tasks=default``): each has a scripted expert that solves it through the tools; their
expert and random-policy success rates are in ``docs/miniwob.md``."""

SEED_INVARIANT_TASKS: frozenset[str] = frozenset(
    {"click-button-sequence", "click-test", "click-test-2", "click-test-transfer", "focus-text"}
)
"""Wired tasks whose page shows the same problem whatever the seed: the instruction and the tree are identical
(the seed moves the elements, which only a screenshot shows). Measured: the first observation of seeds 0-7 of
each wired task, refs aside; ``tests/rl/tasks/test_miniwob.py`` checks the set against Chromium."""

FEW_PROBLEM_TASKS: dict[str, int] = {"focus-text-2": 3}
"""Wired tasks with a handful of problems whatever the seed, and how many (focus-text-2 asks for one of its 3
textboxes: 3 distinct first observations in seeds 0-7)."""


def content_key(name: str, seed: int) -> str:
    """The content key of an episode: ``miniwob/<task>/<seed>``, the problem the page generates from the seed;
    ``miniwob/<task>`` for a task of :data:`SEED_INVARIANT_TASKS` or :data:`FEW_PROBLEM_TASKS`, whose seeds share
    their problems, so that all its episodes fall in one split and the held-out ones are not training problems."""
    if name in SEED_INVARIANT_TASKS or name in FEW_PROBLEM_TASKS:
        return f"miniwob/{name}"
    return f"miniwob/{name}/{seed}"


_SEED_SPACE = 2**31


def resolve_task_names(tasks: str) -> list[str]:
    """Task names from a ``|``-separated list, where ``default`` stands for the wired tasks and ``all`` for every
    task of the package. Raises ValueError on an unknown name or an empty list. Blocking (lists a folder)."""
    names: list[str] = []
    for part in (p.strip() for p in tasks.split("|")):
        if not part:
            continue
        if part == "default":
            names.extend(MINIWOB_DEFAULT_TASKS)
        elif part == "all":
            names.extend(miniwob_task_names())
        else:
            names.append(part)
    if not names:
        raise ValueError(f"miniwob: tasks={tasks!r} names no task; e.g. tasks=click-button|click-link")
    validate_task_names(names)
    return list(dict.fromkeys(names))


def miniwob_tasks(tasks: str = "default", n: int = 64, seed: int = 0) -> list[Task]:
    """``n`` MiniWoB++ episodes, dealt round-robin over ``tasks``.

    Each task draws its own episode seeds from ``seed`` (so adding a task to the list leaves the others' seeds
    alone), without repeats; the page generates its problem from that seed (``Math.seedrandom``), so a task and a
    seed are one problem: the content key is ``miniwob/<task>/<seed>``, and ``split=`` keeps train, warm-start
    and evaluation episodes disjoint by it. A task whose seeds share their problems (:func:`content_key`) is one
    key, ``miniwob/<task>``: all its episodes fall in one split, where ``split=`` keeps one of them.

    Args:
        tasks: Task names joined by ``|`` (any of the package's tasks), ``default`` (the wired tasks, see
            :data:`MINIWOB_DEFAULT_TASKS`) or ``all``.
        n: How many episodes.
        seed: Seed of the episode seeds.
    """
    if n < 1:
        raise ValueError(f"miniwob needs n >= 1, got {n}")
    names = resolve_task_names(tasks)
    rngs = {name: random.Random(f"miniwob/{seed}/{name}") for name in names}
    used: dict[str, set[int]] = {name: set() for name in names}
    out: list[Task] = []
    for i in range(n):
        name = names[i % len(names)]
        episode_seed = rngs[name].randrange(_SEED_SPACE)
        while episode_seed in used[name]:
            episode_seed = rngs[name].randrange(_SEED_SPACE)
        used[name].add(episode_seed)
        out.append(
            Task(
                id=f"miniwob-{name}-{episode_seed}",
                prompt=f"MiniWoB++ {name} (seed {episode_seed}): the page states the instruction.",
                metadata={
                    "task": name,
                    "seed": episode_seed,
                    "content_key": content_key(name, episode_seed),
                },
            )
        )
    return out
