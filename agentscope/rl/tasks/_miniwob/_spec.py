"""MiniWoB++ task lists: ``miniwob:tasks=click-button|click-link,n=200,seed=0``."""

from __future__ import annotations

import random

from agentscope.rl._types import Task
from agentscope.rl.tasks._miniwob._experts import EXPERT_TASKS
from agentscope.rl.tasks._miniwob._server import miniwob_task_names, validate_task_names

__all__ = ["MINIWOB_DEFAULT_TASKS", "miniwob_tasks", "resolve_task_names"]

MINIWOB_DEFAULT_TASKS: tuple[str, ...] = EXPERT_TASKS
"""The wired tasks (``tasks=default``): each has a scripted expert that solves it through the tools; their
expert and random-policy success rates are in ``docs/miniwob.md``."""

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
    and evaluation episodes disjoint by it.

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
                    "content_key": f"miniwob/{name}/{episode_seed}",
                },
            )
        )
    return out
