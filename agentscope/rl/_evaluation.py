"""``agentscope rl eval``: a policy's success rates on a task set, and the evaluations a run reports.

:func:`evaluate` plays every task with a policy through the same rollout service, environments and agent as
training; :func:`evaluate_cached` keeps an initial policy's evaluation beside it (made once, whichever command asks
first); the helpers here turn a report into the metrics and the line ``rl train`` shows before and after RL.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread

from agentscope.exceptions import ConfigError
from agentscope.rl._components import (
    build_agent_factory,
    build_env_cluster,
    build_env_factory,
    build_rollout_service,
    import_heavy,
    load_policy_tokenizer,
)
from agentscope.rl._config import RLConfig
from agentscope.rl._files import write_text_atomically
from agentscope.rl._types import Task, Trajectory
from agentscope.rl.tasks import load_tasks, overlapping, with_task_spec_args

__all__ = ["eval_metrics", "evaluate", "evaluate_cached", "success_line", "training_sample"]


async def evaluate(
    config: RLConfig,
    checkpoint: str | os.PathLike[str] | None,
    tasks_spec: str | None = None,
    *,
    attempts: int | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Play every task of ``tasks_spec`` (default ``config.eval_tasks`` or ``config.tasks``) ``attempts`` times
    with the policy in ``checkpoint`` (a directory ``from_pretrained`` loads: ``DIR/checkpoints/latest``, or a run
    directory); returns success rates as JSON-ready data. ``attempts`` and ``temperature`` default to the config's
    ``evaluation`` section. ``training_overlap`` counts the tasks that share a content key with the config's
    training or warm-start tasks (0 for a held-out set)."""
    spec = tasks_spec or config.eval_tasks or config.tasks
    attempts = attempts or config.evaluation.attempts
    if temperature is None:
        temperature = config.evaluation.temperature
    tasks = await anyio.to_thread.run_sync(load_tasks, spec)
    overlap = await anyio.to_thread.run_sync(_training_overlap, config, tasks)
    await anyio.to_thread.run_sync(import_heavy)
    model_dir = Path(checkpoint) if checkpoint is not None else None
    if model_dir is not None and await anyio.to_thread.run_sync(
        (model_dir / "checkpoints" / "latest").is_dir
    ):
        model_dir = model_dir / "checkpoints" / "latest"
    if model_dir is None:
        if config.policy.path is None:
            raise ConfigError("rl eval needs --checkpoint (or policy.path in the config)")
        model_dir = Path(config.policy.path)
    tokenizer = await load_policy_tokenizer(model_dir, config.threads)  # the engine loads the weights itself
    if temperature is not None:
        config = config.model_copy(
            update={"rollout": config.rollout.model_copy(update={"temperature": temperature})}
        )
    service = build_rollout_service(config, model_dir, tokenizer, 0)
    agent_factory = await anyio.to_thread.run_sync(build_agent_factory, config)  # may run a user's file
    cluster = build_env_cluster(config, service, build_env_factory(config), agent_factory)
    results: list[Trajectory] = []
    started = time.perf_counter()

    async def feed() -> AsyncIterator[tuple[Task, str]]:
        for attempt in range(attempts):
            for task in tasks:
                yield task, f"eval-{task.id}-{attempt}"

    async def sink(trajectory: Trajectory) -> None:
        results.append(trajectory)

    try:
        async with service:
            await cluster.run(feed(), sink)
    finally:
        await cluster.aclose()  # its environments' sandboxes and browser contexts, also on error
    per_task: dict[str, list[bool]] = {}
    statuses: dict[str, int] = {}
    for t in results:
        per_task.setdefault(t.task_id, []).append(t.success)
        statuses[t.status] = statuses.get(t.status, 0) + 1
    report: dict[str, Any] = {
        "tasks": spec,
        "checkpoint": str(model_dir),
        "attempts": attempts,
        "temperature": config.rollout.temperature,
        "episodes": len(results),
        "training_overlap": len(overlap),
        "success_rate": sum(t.success for t in results) / len(results) if results else 0.0,
        "reward_mean": statistics.fmean(t.reward for t in results) if results else 0.0,
        "task_success_rate": statistics.fmean(sum(v) / len(v) for v in per_task.values())
        if per_task
        else 0.0,
        "statuses": statuses,
        "wall_s": round(time.perf_counter() - started, 2),
        "per_task": {task: sum(v) / len(v) for task, v in sorted(per_task.items())},
    }
    key = config.evaluation.breakdown
    if key is not None:
        category = {t.id: str(t.metadata.get(key, "?")) for t in tasks}
        groups: dict[str, list[bool]] = {}
        for t in results:
            groups.setdefault(category.get(t.task_id, "?"), []).append(t.success)
        report[f"success_by_{key}"] = {name: sum(v) / len(v) for name, v in sorted(groups.items())}
    return report


def _training_overlap(config: RLConfig, tasks: list[Task]) -> list[Task]:
    """The ``tasks`` that share a content key with the config's training or warm-start tasks."""
    seen = load_tasks(config.tasks)
    warm = config.warm_start_spec()
    if warm is not None and warm != config.tasks:
        seen += load_tasks(warm)
    return overlapping(tasks, seen)


async def evaluate_cached(config: RLConfig, policy: Path) -> dict[str, Any]:
    """:func:`evaluate` of ``policy`` on ``eval_tasks`` as the config's ``evaluation`` section says, kept in the
    policy directory (an initial policy is evaluated once, whichever command asks first). A policy the user
    gave (``policy.path``) is evaluated every time: nothing is written into a directory we did not make."""
    if config.policy.path is not None and policy == Path(config.policy.path):
        return await evaluate(config, policy)
    settings = {
        "tasks": config.eval_tasks,
        "training": [config.tasks, config.warm_start_spec()],  # what training_overlap counts against
        "evaluation": config.evaluation.model_dump(mode="json"),
        "rollout": config.rollout.model_dump(mode="json"),
        "agent": config.agent.model_dump(mode="json"),
        "env": config.env.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = policy / f"eval-{digest}.json"
    if await anyio.to_thread.run_sync(path.is_file):
        return json.loads(await anyio.to_thread.run_sync(path.read_text))
    report = await evaluate(config, policy)
    await anyio.to_thread.run_sync(write_text_atomically, path, json.dumps(report, indent=1) + "\n")
    return report


def eval_metrics(report: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """An :func:`evaluate` report as metrics: ``eval/success_rate``, ``eval/reward_mean`` and, with a breakdown,
    ``eval/success_by_<key>/<value>`` (``prefix`` in place of ``eval``)."""
    metrics = {
        f"{prefix}/success_rate": report["success_rate"],
        f"{prefix}/reward_mean": report["reward_mean"],
    }
    for name, value in report.items():
        if name.startswith("success_by_") and isinstance(value, dict):
            for group, rate in cast(dict[str, float], value).items():
                metrics[f"{prefix}/{name}/{group}"] = rate
    return metrics


def training_sample(config: RLConfig) -> str:
    """The training spec with ``n=evaluation.training_tasks``: the same generator and seed, fewer tasks."""
    return with_task_spec_args(config.tasks, n=config.evaluation.training_tasks)


def success_line(report: dict[str, Any]) -> str:
    """An :func:`evaluate` report in one line: the success rate, of how many episodes, on what, how decoded."""
    decoding = "greedy" if report["temperature"] == 0 else f"temperature {report['temperature']:g}"
    return (
        f"{report['success_rate']:.1%} of {report['episodes']} episodes ({report['tasks']}, {decoding}; "
        f"{report['training_overlap']} tasks shared with training)"
    )
