"""MiniWoB++ task lists: ``miniwob:tasks=click-button|click-link,n=200,seed=0``."""

from __future__ import annotations

import random
from collections.abc import Iterator

from agentscope.rl._types import Task
from agentscope.rl.tasks._miniwob._experts import EXPERT_TASKS
from agentscope.rl.tasks._miniwob._server import miniwob_task_names, validate_task_names
from agentscope.rl.tasks._registry import SPLITS, split_of

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
    return f"miniwob/{name}" if _keyed_by_task(name) else f"miniwob/{name}/{seed}"


def _keyed_by_task(name: str) -> bool:
    return name in SEED_INVARIANT_TASKS or name in FEW_PROBLEM_TASKS


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


def miniwob_tasks(tasks: str = "default", n: int = 64, seed: int = 0, split: str | None = None) -> list[Task]:
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
        split: Only the episodes of this split (``train``, ``warm`` or ``eval``; see
            :func:`~agentscope.rl.tasks.split_of`), still dealt round-robin over the tasks: each task's first
            episodes in the split, in the order it draws them, ``n // len(tasks)`` or one more per task (a task
            keyed by task alone has one episode in its split and none in the others).

    Raises:
        ValueError: ``n`` below 1, an unknown task or split, or a split holding fewer than ``n`` episodes of the
            tasks (only possible when every task is keyed by task alone).
    """
    if n < 1:
        raise ValueError(f"miniwob needs n >= 1, got {n}")
    names = resolve_task_names(tasks)
    streams = {name: _episodes(name, seed) for name in names}
    if split is None:
        return [next(streams[names[i % len(names)]]) for i in range(n)]
    if split not in SPLITS:
        raise ValueError(f"miniwob: split must be one of {', '.join(SPLITS)}, got {split!r}")
    kept: dict[str, Iterator[Task]] = {}
    for name, stream in streams.items():
        if _keyed_by_task(name):  # one key: the whole task is in one split
            first = next(stream)
            kept[name] = iter([first] if split_of(first) == split else [])
        else:
            kept[name] = (task for task in stream if split_of(task) == split)
    out: list[Task] = []
    while kept and len(out) < n:
        for name in list(kept):
            task = next(kept[name], None)
            if task is None:
                del kept[name]
            elif len(out) < n:
                out.append(task)
    if len(out) < n:
        raise ValueError(
            f"miniwob: the {split} split holds only {len(out)} distinct episodes of tasks={tasks!r}, fewer than "
            f"n={n} (these tasks are keyed by task alone: {', '.join(names)})"
        )
    return out


def _episodes(name: str, seed: int) -> Iterator[Task]:
    """The episodes of task ``name`` that ``seed`` draws, in order: endless, no seed twice."""
    rng = random.Random(f"miniwob/{seed}/{name}")
    used: set[int] = set()
    while True:
        episode_seed = rng.randrange(_SEED_SPACE)
        if episode_seed in used:
            continue
        used.add(episode_seed)
        yield Task(
            id=f"miniwob-{name}-{episode_seed}",
            prompt=f"MiniWoB++ {name} (seed {episode_seed}): the page states the instruction.",
            metadata={"task": name, "seed": episode_seed, "content_key": content_key(name, episode_seed)},
        )
