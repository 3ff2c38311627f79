"""Task sets by name: ``load_tasks("arith:n=64,seed=0")`` and the environment that plays them.

Splits that cannot leak: every task has a :attr:`~agentscope.rl.Task.content_key`, and ``split=train|warm|eval``
in a spec keeps only the tasks whose key falls in that split's share of the key space (:data:`SPLITS`, by a hash
of the key). The three splits of any task set are therefore disjoint by construction, whatever ``n`` and
``seed`` each spec uses, and :func:`overlapping` checks it for sets built any other way.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentscope.message import Msg
from agentscope.rl._types import Task
from agentscope.rl.envs import Environment, ScriptedPolicy
from agentscope.rl.tasks._arith import (
    ArithEnv,
    arith_demonstrations,
    arith_expert,
    arith_random_policy,
    arith_tasks,
)

__all__ = [
    "MAX_TASKS",
    "SPLITS",
    "TaskSet",
    "get_task_set",
    "load_tasks",
    "overlapping",
    "parse_task_spec",
    "register_task_set",
    "split_of",
    "with_task_spec_args",
]

SPLITS: dict[str, tuple[int, int]] = {"train": (0, 60), "warm": (60, 80), "eval": (80, 100)}
"""Each split's share of the content-key space, as a range of percentiles of the key's hash: RL training tasks,
warm-start (supervised) demonstrations, held-out evaluation."""
_MAX_OVERSAMPLE = 64
MAX_TASKS = 1_000_000
"""Most tasks a spec may generate (``n``, and ``n`` times the oversampling of a split): a bigger ``n`` is an error,
not minutes of generation while a config loads."""


@dataclass(frozen=True, slots=True)
class TaskSet:
    """A named family of tasks and the environment that plays them."""

    name: str
    """Name used in specs (``name:key=value,...``)."""
    load: Callable[..., list[Task]]
    """Builds the tasks from the spec's keyword arguments."""
    env: Callable[..., Environment]
    """Builds one environment (keyword arguments from the config's ``env.kwargs``)."""
    description: str = ""
    """One line for people."""
    demonstrations: Callable[[Sequence[Task]], list[list[Msg]]] | None = None
    """Expert transcripts of tasks (user, assistant and tool messages, no system message), for the warm start of
    a fresh policy; None when the task set has none (the transcripts of :attr:`expert` playing are used then)."""
    expert: Callable[[], ScriptedPolicy] | None = None
    """Builds a scripted expert: a policy that reads the conversation (the task as the agent sees it, the tool
    results) and answers with the next tool call or the final answer, solving the task set's tasks through the
    environment's own tools. It proves the tools suffice, and its recorded episodes are demonstrations."""
    random_policy: Callable[[int], ScriptedPolicy] | None = None
    """Builds, from a seed, a policy that acts at random among the actions the conversation offers (the baseline
    every success rate is read against)."""


def _jsonl_tasks(path: str) -> list[Task]:
    """Tasks from a JSON-lines file, one :class:`Task` object per line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Task.model_validate_json(line) for line in lines if line.strip()]


class _Suite:
    """A callable of one of this package's suites (``"_lookup:lookup_tasks"``), imported on first use: loading the
    registry (every config does) does not import SQLite task databases, sandboxes or the browser."""

    def __init__(self, target: str) -> None:
        self.module, _, self.name = target.partition(":")

    def _target(self) -> Any:
        return getattr(importlib.import_module(f"agentscope.rl.tasks.{self.module}"), self.name)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._target())  # load_tasks reads the default ``n``

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)


_REGISTRY: dict[str, TaskSet] = {
    "arith": TaskSet(
        "arith",
        arith_tasks,
        ArithEnv,
        "arithmetic with a calculator tool (the smoke task)",
        arith_demonstrations,
        expert=arith_expert,
        random_policy=arith_random_policy,
    ),
    "lookup": TaskSet(
        "lookup",
        _Suite("_lookup:lookup_tasks"),
        _Suite("_lookup:LookupEnv"),
        "lookups in a per-task SQLite database: 2-3 tool calls whose results feed each other",
        expert=_Suite("_lookup:lookup_expert"),
        random_policy=_Suite("_lookup:lookup_random_policy"),
    ),
    "files": TaskSet(
        "files",
        _Suite("_files:files_tasks"),
        _Suite("_files:FilesEnv"),
        "create or edit files with the built-in file and shell tools; a check run in a sandbox grades them",
        expert=_Suite("_files_policies:files_expert"),
        random_policy=_Suite("_files_policies:files_random_policy"),
    ),
    "miniwob": TaskSet(
        "miniwob",
        _Suite("_miniwob:miniwob_tasks"),
        _Suite("_miniwob:MiniWoBEnv"),
        "MiniWoB++ web tasks in Chromium (any of the package's 130 by name), rewarded by the page itself",
        expert=_Suite("_miniwob:miniwob_expert"),
        random_policy=_Suite("_miniwob:miniwob_random_policy"),
    ),
}


def register_task_set(task_set: TaskSet) -> None:
    """Make ``task_set`` loadable by name (replaces one of the same name)."""
    _REGISTRY[task_set.name] = task_set


def get_task_set(name: str) -> TaskSet:
    """The registered task set called ``name``. Raises ValueError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task set {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_task_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name:key=value,key=value`` into the name and typed keyword arguments (ints, floats, booleans)."""
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise ValueError(f"empty task spec {spec!r}; expected NAME[:key=value,...]")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad task spec item {item!r} in {spec!r}; expected key=value")
        kwargs[key.strip()] = _scalar(value.strip())
    return name, kwargs


def with_task_spec_args(spec: str, **changes: Any) -> str:
    """``spec`` with some of its keyword arguments set (added or replaced): ``with_task_spec_args("lookup:n=256,seed=0",
    n=64)`` is ``"lookup:n=64,seed=0"``."""
    name, kwargs = parse_task_spec(spec)
    kwargs.update(changes)
    return f"{name}:" + ",".join(f"{key}={value}" for key, value in kwargs.items())


def split_of(task: Task) -> str:
    """The split (:data:`SPLITS`) that owns ``task``'s content key."""
    digest = hashlib.sha256(f"split:{task.content_key}".encode()).digest()
    percentile = int.from_bytes(digest[:8], "big") % 100
    return next(name for name, (low, high) in SPLITS.items() if low <= percentile < high)


def overlapping(tasks: Sequence[Task], others: Sequence[Task]) -> list[Task]:
    """The tasks of ``tasks`` whose content key is also the key of one of ``others`` (the same problem)."""
    keys = {t.content_key for t in others}
    return [t for t in tasks if t.content_key in keys]


def load_tasks(spec: str) -> list[Task]:
    """The tasks a spec names: ``arith:n=64,seed=0,max_operand=20``, or ``jsonl:path=tasks.jsonl``.

    ``split=train|warm|eval`` keeps the tasks of that split (:func:`split_of`), without duplicate content keys;
    ``n`` then counts the tasks kept (the generator is asked for more until it has them; a task set whose loader
    takes ``split`` itself picks them, as ``miniwob`` does to deal ``n`` evenly over its tasks).

    Raises:
        ValueError: unknown task set, malformed spec, arguments the task set does not take, an unknown split,
            or a split holding fewer than ``n`` distinct tasks.
    """
    name, kwargs = parse_task_spec(spec)
    split = kwargs.pop("split", None)
    n = kwargs.get("n")
    if isinstance(n, int) and not 1 <= n <= MAX_TASKS:
        raise ValueError(f"task spec {spec!r}: n must be between 1 and {MAX_TASKS:,}, got {n:,}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"task spec {spec!r}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if name == "jsonl":
        if set(kwargs) != {"path"}:
            raise ValueError(f"jsonl task spec takes path=... (and split=...), got {spec!r}")
        tasks = _jsonl_tasks(str(kwargs["path"]))
        return tasks if split is None else _distinct(t for t in tasks if split_of(t) == split)
    task_set = get_task_set(name)
    if split is None:
        return _generate(task_set, kwargs)
    if "split" in inspect.signature(task_set.load).parameters:  # it picks its own n of the split (miniwob)
        return _distinct(t for t in _generate(task_set, {**kwargs, "split": split}) if split_of(t) == split)
    wanted = kwargs.get("n")
    if wanted is None:
        default = inspect.signature(task_set.load).parameters.get("n")
        wanted = default.default if default is not None else None
    if not isinstance(wanted, int):
        return _distinct(t for t in _generate(task_set, kwargs) if split_of(t) == split)
    kept: list[Task] = []
    factor = 1
    while factor <= _MAX_OVERSAMPLE and wanted * factor <= MAX_TASKS:
        kept = _distinct(
            t for t in _generate(task_set, {**kwargs, "n": wanted * factor}) if split_of(t) == split
        )
        if len(kept) >= wanted:
            return kept[:wanted]
        factor *= 2
    raise ValueError(
        f"task spec {spec!r}: the {split} split holds only {len(kept)} distinct tasks of this set, fewer than "
        f"n={wanted} (widen the task space or lower n)"
    )


def _generate(task_set: TaskSet, kwargs: dict[str, Any]) -> list[Task]:
    try:
        return task_set.load(**kwargs)
    except TypeError as exc:
        raise ValueError(f"task set {task_set.name!r}: {exc}") from exc


def _distinct(tasks: Iterable[Task]) -> list[Task]:
    seen: set[str] = set()
    out: list[Task] = []
    for task in tasks:
        if task.content_key not in seen:
            seen.add(task.content_key)
            out.append(task)
    return out
