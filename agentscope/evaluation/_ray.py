"""Many workers: an evaluation's episodes played by Ray tasks (``evaluate(workers=N)``, ``agentscope eval
--workers N``; Ray comes with the ``scale`` extra).

The driver keeps the bookkeeping (the results log, the trace store's rows, the report); the episodes are cut into
chunks of ``concurrency`` and each chunk is a Ray task that plays them in its own process, on any node of the
cluster, exactly as one process does (the environment cluster, the agent built from its spec). At most
``workers`` chunks run at once, and a chunk's results are recorded the moment it returns, so a killed evaluation
resumes from the last chunk recorded. A worker gets what it needs by name, not by object: the agent spec, the
task-set spec and the model spec (``PROVIDER:MODEL``); the API key travels in the task's environment
(``runtime_env``), never in its arguments. A chunk whose worker fails (it crashed, or raised) has its episodes
recorded ``failed_infra``, so ``--resume`` plays them again; the others go on. Episodes played by workers are not
traced (their rows have no trace id).
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

__all__ = ["API_KEY_ENV", "RemoteSetup", "absolute_spec", "play_chunk", "play_on_ray"]

API_KEY_ENV = "AGENTSCOPE_EVAL_API_KEY"
"""The environment variable that carries the model's API key to a worker."""
_WAIT_S = 1.0
"""Longest a wait for a chunk blocks its (uncancellable) thread: how soon an interrupt is honoured."""


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
    """The model's endpoint (the API key is not here: it goes in the task's environment, :data:`API_KEY_ENV`)."""
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
        model_from_spec(setup.model, base_url=setup.base_url, api_key=os.environ.get(API_KEY_ENV))
        if setup.model
        else None
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


def _failed(chunk: list[tuple[Task, int]], error: BaseException) -> list[EpisodeResult]:
    reason = f"the Ray worker playing this episode failed: {type(error).__name__}: {error}"
    return [
        EpisodeResult(
            task_key=task.content_key,
            repeat=repeat,
            task_id=task.id,
            status="failed_infra",
            success=False,
            reward=0.0,
            error=reason[:2000],
        )
        for task, repeat in chunk
    ]


async def play_on_ray(
    setup: RemoteSetup,
    todo: list[tuple[Task, int]],
    workers: int,
    record: Callable[[EpisodeResult], Awaitable[None]],
    *,
    api_key: str | None = None,
) -> None:
    """Play ``todo`` as Ray tasks, at most ``workers`` at once, recording each chunk's results as it returns
    (``failed_infra`` for each episode of a chunk whose worker failed). ``api_key`` reaches the workers in their
    environment.

    Uses the Ray cluster this process is connected to, or starts a local one of ``workers`` CPUs (shut down at
    the end)."""
    ray = await anyio.to_thread.run_sync(_import_ray)
    started = False
    if not ray.is_initialized():
        # RAY_ADDRESS names a cluster to join (it has its CPUs); else a local one of `workers` CPUs.
        local = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": workers, "include_dashboard": False}
        # On this thread, never a worker thread: a local Ray's GCS and raylet die with the thread that started
        # them (PR_SET_PDEATHSIG), and anyio retires idle worker threads after a few seconds.
        ray.init(log_to_driver=False, **local)
        started = True
    pending: dict[Any, list[tuple[Task, int]]] = {}
    """Each running Ray task's chunk."""
    try:
        # No retries: a chunk whose worker dies is recorded failed_infra and played again on --resume.
        remote = ray.remote(num_cpus=1, max_retries=0)(play_chunk)
        if api_key is not None:
            remote = remote.options(runtime_env={"env_vars": {API_KEY_ENV: api_key}})
        size = setup.concurrency
        chunks = iter([todo[i : i + size] for i in range(0, len(todo), size)])

        def submit() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                pending[remote.remote(setup, [(t.model_dump_json(), r) for t, r in chunk])] = chunk

        for _ in range(workers):
            submit()
        while pending:
            # A worker thread cannot be cancelled: wait a second at a time, so an interrupt is not held up.
            wait = functools.partial(ray.wait, list(pending), num_returns=1, timeout=_WAIT_S)
            ready, _ = await anyio.to_thread.run_sync(wait)
            for ref in ready:
                chunk = pending.pop(ref)
                try:
                    rows: list[dict[str, Any]] = await anyio.to_thread.run_sync(ray.get, ref)
                    results = [EpisodeResult.model_validate(row) for row in rows]
                except ray.exceptions.RayError as error:
                    results = _failed(chunk, error)
                submit()
                for result in results:
                    await record(result)
    finally:
        for ref in pending:  # interrupted: stop what is still running
            ray.cancel(ref, force=True)
        if started:
            with anyio.CancelScope(shield=True):  # a cancelled evaluation still shuts its Ray down
                await anyio.to_thread.run_sync(ray.shutdown)
