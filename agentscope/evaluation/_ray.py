"""Many workers: an evaluation's episodes played by Ray tasks (``evaluate(workers=N)``, ``agentscope eval
--workers N``; Ray comes with the ``scale`` extra).

The driver keeps the bookkeeping (the results log, the trace store's rows, the report); the episodes are cut into
chunks of ``concurrency`` and each chunk is a Ray task that plays them in its own process, on any node of the
cluster, exactly as one process does (the environment cluster, the agent built from its spec). At most
``workers`` chunks run at once, and a chunk's results are recorded the moment it returns, so a killed evaluation
resumes from the last chunk recorded. A worker gets what it needs by name, not by object: the agent spec, the
task-set spec and the model spec (``PROVIDER:MODEL``). Episodes played by workers are not traced (their rows have
no trace id).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from agentscope._lazy import install_hint
from agentscope.evaluation._play import Price, play
from agentscope.evaluation._results import EpisodeResult
from agentscope.rl import Task

__all__ = ["RemoteSetup", "absolute_spec", "play_chunk", "play_on_ray"]


@dataclass(frozen=True, slots=True)
class RemoteSetup:
    """What a worker needs to play episodes, by name."""

    agent: str
    """The agent spec (a file path in it made absolute)."""
    tasks: str
    """The task-set spec (its name gives the environment)."""
    model: str | None
    """``PROVIDER:MODEL`` handed to the factory, or None for its own."""
    base_url: str | None
    """The model's endpoint."""
    api_key: str | None
    """The model's API key."""
    concurrency: int
    """Episodes at once in one worker."""
    max_turns: int | None
    """Most model calls per episode."""
    episode_timeout_s: float | None
    """Longest an episode may take."""
    price: Price | None
    """What the tokens cost."""


def absolute_spec(spec: str) -> str:
    """``spec`` with its file made absolute (workers may start in another directory); module specs unchanged."""
    target, colon, attribute = spec.partition(":")
    if target.endswith(".py") or "/" in target:
        return f"{Path(target).resolve()}{colon}{attribute}"
    return spec


def play_chunk(setup: RemoteSetup, chunk: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """In a worker: play the ``(task JSON, repeat)`` pairs of ``chunk``; their results as JSON."""
    return anyio.run(_play_chunk, setup, chunk)


async def _play_chunk(setup: RemoteSetup, chunk: list[tuple[str, int]]) -> list[dict[str, Any]]:
    from agentscope.agents import load_agent_factory
    from agentscope.models import model_from_spec
    from agentscope.rl.tasks import get_task_set, parse_task_spec

    factory = await anyio.to_thread.run_sync(load_agent_factory, setup.agent)
    env = get_task_set(parse_task_spec(setup.tasks)[0]).env
    model = (
        model_from_spec(setup.model, base_url=setup.base_url, api_key=setup.api_key) if setup.model else None
    )
    results: list[dict[str, Any]] = []

    async def record(result: EpisodeResult) -> None:
        results.append(result.model_dump(mode="json"))

    todo = [(Task.model_validate_json(task), repeat) for task, repeat in chunk]
    try:
        await play(
            todo,
            factory,
            env,
            model,
            setup.concurrency,
            setup.max_turns,
            setup.episode_timeout_s,
            setup.price,
            record,
        )
    finally:
        if model is not None:
            await model.aclose()
    return results


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ImportError(f"evaluating with workers needs Ray: {install_hint('scale')}") from exc


async def play_on_ray(
    setup: RemoteSetup,
    todo: list[tuple[Task, int]],
    workers: int,
    record: Callable[[EpisodeResult], Awaitable[None]],
) -> None:
    """Play ``todo`` as Ray tasks, at most ``workers`` at once, recording each chunk's results as it returns.

    Uses the Ray cluster this process is connected to, or starts a local one of ``workers`` CPUs (shut down at
    the end)."""
    ray = await anyio.to_thread.run_sync(_import_ray)
    started = False
    if not ray.is_initialized():
        # RAY_ADDRESS names a cluster to join (it has its CPUs); else a local one of `workers` CPUs.
        local = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": workers, "include_dashboard": False}
        await anyio.to_thread.run_sync(functools.partial(ray.init, log_to_driver=False, **local))
        started = True
    pending: list[Any] = []
    try:
        remote = ray.remote(num_cpus=1)(play_chunk)
        size = setup.concurrency
        chunks = iter(
            [
                [(task.model_dump_json(), repeat) for task, repeat in todo[i : i + size]]
                for i in range(0, len(todo), size)
            ]
        )

        def submit() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                pending.append(remote.remote(setup, chunk))

        for _ in range(workers):
            submit()
        while pending:
            wait = functools.partial(ray.wait, list(pending), num_returns=1)
            ready, _ = await anyio.to_thread.run_sync(wait)
            for ref in ready:
                pending.remove(ref)
                rows: list[dict[str, Any]] = await anyio.to_thread.run_sync(ray.get, ref)
                submit()
                for row in rows:
                    await record(EpisodeResult.model_validate(row))
    finally:
        for ref in pending:  # interrupted: stop what is still running
            ray.cancel(ref, force=True)
        if started:
            await anyio.to_thread.run_sync(ray.shutdown)
