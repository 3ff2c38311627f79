"""Task sets by name: ``load_tasks("arith:n=64,seed=0")`` and the environment that plays them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentscope.message import Msg
from agentscope.rl._types import Task
from agentscope.rl.envs._arith import ArithEnv, arith_demonstrations, arith_tasks
from agentscope.rl.envs._base import Environment

__all__ = ["TaskSet", "get_task_set", "load_tasks", "parse_task_spec", "register_task_set"]


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
    a fresh policy; None when the task set has none."""


def _jsonl_tasks(path: str) -> list[Task]:
    """Tasks from a JSON-lines file, one :class:`Task` object per line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Task.model_validate_json(line) for line in lines if line.strip()]


_REGISTRY: dict[str, TaskSet] = {
    "arith": TaskSet(
        "arith", arith_tasks, ArithEnv, "arithmetic with a calculator tool", arith_demonstrations
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


def load_tasks(spec: str) -> list[Task]:
    """The tasks a spec names: ``arith:n=64,seed=0,max_operand=20``, or ``jsonl:path=tasks.jsonl``.

    Raises:
        ValueError: unknown task set, malformed spec, or arguments the task set does not take.
    """
    name, kwargs = parse_task_spec(spec)
    if name == "jsonl":
        if set(kwargs) != {"path"}:
            raise ValueError(f"jsonl task spec takes exactly path=..., got {spec!r}")
        return _jsonl_tasks(str(kwargs["path"]))
    task_set = get_task_set(name)
    try:
        return task_set.load(**kwargs)
    except TypeError as exc:
        raise ValueError(f"task set {name!r}: {exc}") from exc
