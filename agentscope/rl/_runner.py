"""The training run behind ``agentscope rl train``, and the initial policy of ``rl sft``.

Everything a run writes lives under its run directory::

    DIR/config.yaml            the resolved config
    DIR/trajectories.db        every episode (TrajectoryStore), whatever became of it (data.store: postgres:
                               in a PostgreSQL namespace instead)
    DIR/metrics.jsonl          one line per trainer step: every metric under its stable name
    DIR/batches.jsonl          one line per trainer step: the trajectory ids trained on
    DIR/traces.db              spans of every episode, model and tool call, and the metric curves (the studio)
    DIR/policy_init/           the tiny policy built (and warm-started) for this run, unless cached elsewhere
    DIR/checkpoints/latest/    the last complete checkpoint (``from_pretrained`` loads it)
    DIR/resumes.jsonl          one line per --resume: the checkpoint, what was refused and undone, config changes

``--resume`` continues from ``checkpoints/latest``, or, when that checkpoint is damaged, from the newest one that
loads (saying which were refused and why; the refused ones are renamed ``refused-...``); with no loadable
checkpoint it fails with a :class:`~agentscope.rl.trainer.CheckpointError` naming each. The config must equal the
checkpoint's but for a few fields (``agentscope.rl._resume.RESUMABLE_FIELDS``, e.g. ``schedule.steps``) unless
``allow_config_change`` (``--allow-config-change``) is given; the changes are listed either way. The trainer,
optimizer, RNGs, data-manager cursor and task order are restored; the data manager undoes everything decided
after the checkpoint (training, drops, replay copies) and re-queues every stored, trainable, never-trained
trajectory, so nothing stored is lost and nothing is trained twice; policy versions go on above every version
stored (the trajectories of versions lost with the steps after the checkpoint are dropped); ``metrics.jsonl``
and ``batches.jsonl`` are cut back to the checkpoint's step, so each step appears once.

Where each service runs is the config's choice: the rollout servers (``rollout.backend``: in this process, as
processes, or Ray actors), the environment workers (``env.backend``: here or Ray actors) and the trainer
(``trainer.placement``: here, or a Ray actor that holds the model and writes the checkpoints; the runner sees either
through one :class:`~agentscope.rl._trainer_handle.TrainerHandle`) and the data manager (``data.placement``: here,
or a Ray actor that owns the store; see ``agentscope.rl._data_ray``). The scheduler runs here.

The run's parts are built in ``agentscope.rl._components``, policies are evaluated in ``agentscope.rl._evaluation``
(``rl eval``) and stored trajectories exported in ``agentscope.rl._export`` (``rl export``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread
import yaml
from pydantic import JsonValue

from agentscope import tracing
from agentscope._errors import unwrap_group
from agentscope.exceptions import ConfigError, UsageError
from agentscope.rl._components import (
    build_agent_factory,
    build_env_cluster,
    build_env_factory,
    build_rollout,
    import_heavy,
)
from agentscope.rl._config import RLConfig
from agentscope.rl._data_ray import DataManagerLost, DataService, RayDataManager, open_data_manager
from agentscope.rl._evaluation import eval_metrics, evaluate, evaluate_cached, success_line, training_sample
from agentscope.rl._files import (
    BATCHES_FILE,
    CONFIG_FILE,
    EVAL_FILE,
    LOGS,
    METRICS_FILE,
    PINNED_POLICY_DIR,
    RESUMES_FILE,
    TRACE_FILE,
    WEIGHTS_DIR,
    pin_directory,
    run_marks,
)
from agentscope.rl._progress import StepProgress
from agentscope.rl._resume import load_for_resume, truncate_log
from agentscope.rl._schedule import Scheduler, StepReport, TaskSampler
from agentscope.rl._sft import prepare_policy
from agentscope.rl._trainer_handle import TrainerHandle, open_trainer
from agentscope.rl._types import Task
from agentscope.rl.data import ResumeReport, TrajectoryStore, open_store
from agentscope.rl.envs import AgentFactory, EnvCluster, EnvFactory
from agentscope.rl.tasks import load_tasks

if TYPE_CHECKING:
    from rich.console import Console

    from agentscope.rl._env_ray import RayEnvCluster

__all__ = ["TrainResult", "sft", "train"]

logger = logging.getLogger("agentscope.rl")


@dataclass(slots=True)
class TrainResult:
    """What a training run did."""

    run_dir: Path
    """The run directory."""
    steps: int
    """Trainer steps done in total (resumed ones included)."""
    resumed_from: int | None
    """The checkpoint step the run continued from, or None for a fresh run."""
    wall_s: float
    """Seconds this invocation took."""
    metrics: dict[str, float] = field(default_factory=dict[str, float])
    """The last step's metrics."""
    initial_policy: Path | None = None
    """The policy the run started from (``policy.path``, or the tiny one built and warm-started), loadable with
    ``from_pretrained`` and ``agentscope rl eval --checkpoint``; None for a run resumed from a checkpoint."""
    evaluation: dict[str, Any] = field(default_factory=dict[str, Any])
    """With ``evaluation.before_after``: the :func:`evaluate` reports ``before`` and ``after`` (``DIR/eval.json``)."""


async def _append_line(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str) + "\n"

    def write() -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(line)

    await anyio.to_thread.run_sync(write)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


# ---------------------------------------------------------------------- train


async def train(
    config: RLConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    allow_config_change: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Train ``config`` into ``run_dir`` (see the module docstring); ``resume`` continues a killed run from its
    checkpoint (``allow_config_change``: even if the config changed beyond ``schedule.steps`` and the like).

    Raises:
        UsageError: ``resume`` is False and ``run_dir`` already holds a run (its ``trajectories.db``,
            ``checkpoints``, ``metrics.jsonl`` or ``batches.jsonl``, whatever ``data.store``), or ``data.store:
            postgres`` names a namespace that holds one.
        ConfigError: the config names something that cannot be loaded; or, resuming, it differs from the
            checkpoint's (listing the fields) and ``allow_config_change`` is False.
        CheckpointError: ``resume`` is True and the run has no checkpoint that loads (naming each and why).
    """
    from agentscope.rl.trainer import CheckpointError

    started = time.perf_counter()
    started_ns = time.time_ns()  # the run's start in the studio: tracing is turned on after the warm start
    root = Path(run_dir)
    found = await anyio.to_thread.run_sync(run_marks, root)
    if found and not resume:  # whatever data.store: a new run would mix its checkpoints and logs with these
        raise UsageError(
            f"{root} already holds a run (found {', '.join(found)}); continue it with --resume or choose another "
            "--run-dir"
        )
    store = open_store(config.data, root)
    exists = await store.exists()
    if exists and not resume:  # data.store: postgres, one run per namespace (trajectories.db is in `found`)
        raise UsageError(
            f"{store!r} already holds a run; continue it with --resume or choose another data.namespace"
        )
    if resume and not exists:
        missing = (
            f"{store.path} does not exist" if isinstance(store, TrajectoryStore) else f"{store!r} holds none"
        )
        raise CheckpointError(f"--resume: {root} holds no run to resume ({missing})")
    await anyio.to_thread.run_sync(functools.partial(root.mkdir, parents=True, exist_ok=True))

    tasks = await anyio.to_thread.run_sync(load_tasks, config.tasks)
    if config.evaluation.before_after and config.evaluation.training_tasks > len(tasks):
        raise ConfigError(
            f"evaluation.training_tasks: {config.evaluation.training_tasks} is more than the {len(tasks)} training "
            f"tasks of {config.tasks!r}"
        )
    env_factory = build_env_factory(config)
    agent_factory = await anyio.to_thread.run_sync(build_agent_factory, config)  # may run a user's file

    await anyio.to_thread.run_sync(import_heavy)  # torch, transformers, verl: seconds of file reads
    from agentscope.rl.trainer import AsyncCheckpointer

    checkpoint = None
    resume_record: dict[str, JsonValue] = {}
    if resume:
        checkpoint, changes = await load_for_resume(
            config, root, root / CONFIG_FILE, allow_config_change=allow_config_change
        )
        refused = await anyio.to_thread.run_sync(AsyncCheckpointer(root).set_aside, checkpoint)
        cut = {
            name: await anyio.to_thread.run_sync(truncate_log, root / name, checkpoint.step) for name in LOGS
        }
        resume_record = {
            "checkpoint": str(checkpoint.path),
            "step": checkpoint.step,
            "refused": {str(path): why for path, why in checkpoint.skipped},
            "set_aside": [str(path) for path in refused],
            "config_changes": {name: [old, new] for name, (old, new) in changes.items()},
            "log_lines_dropped": cast(dict[str, JsonValue], cut),
        }
        if console is not None:
            console.print(f"resuming from the {checkpoint.describe()}")
            for name, (old, new) in changes.items():
                console.print(f"config changed on resume: {name}: {old!r} -> {new!r}")
    await anyio.to_thread.run_sync(
        (root / CONFIG_FILE).write_text, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    if checkpoint is not None:
        model_dir = checkpoint.path
    else:
        model_dir, _ = await prepare_policy(config, root, env_factory, agent_factory, console=console)
    start_step = checkpoint.step if checkpoint is not None else 0
    evaluation: dict[str, Any] = {}
    if config.evaluation.before_after and config.eval_tasks is not None and checkpoint is None:
        evaluation["before"] = await evaluate_cached(config, model_dir)
        if config.evaluation.training_tasks:
            evaluation["train_before"] = await evaluate(config, model_dir, training_sample(config))
        if console is not None:
            console.print(f"held-out success before RL: {success_line(evaluation['before'])}")

    tracer_on = config.trace and not tracing.enabled()
    if tracer_on:
        tracing.init(
            root / TRACE_FILE,
            project="rl",
            run_name=root.name,
            config=config.model_dump(mode="json"),
            sample_rate=config.trace_sample_rate,
            started_ns=started_ns,
        )
    if "before" in evaluation:
        tracing.log_metrics(eval_metrics(evaluation["before"]), step=start_step)
    if "train_before" in evaluation:
        tracing.log_metrics(eval_metrics(evaluation["train_before"], "eval_train"), step=start_step)
    try:
        result = await _train(
            config,
            root,
            tasks,
            env_factory,
            agent_factory,
            model_dir,
            checkpoint,
            start_step,
            console,
            started,
            resume_record,
        )
        if evaluation:
            # Before the tracer shuts down: the studio charts held-out success at the first and last step. A failing
            # evaluation must not fail the finished run: it is logged, and eval.json keeps what was measured.
            try:
                evaluation["after"] = await evaluate(config, root)
                tracing.log_metrics(eval_metrics(evaluation["after"]), step=result.steps)
                if "train_before" in evaluation:
                    evaluation["train_after"] = await evaluate(config, root, training_sample(config))
                    tracing.log_metrics(
                        eval_metrics(evaluation["train_after"], "eval_train"), step=result.steps
                    )
            except Exception as exc:
                logger.warning("the evaluation after RL failed: %s: %s", type(exc).__name__, exc)
                evaluation["after_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if tracer_on:
            await tracing.aflush()
            await anyio.to_thread.run_sync(tracing.shutdown)
    if evaluation:  # written first: nothing after it (the plot) may lose it
        text = json.dumps(evaluation, indent=1) + "\n"
        await anyio.to_thread.run_sync((root / EVAL_FILE).write_text, text)
    from agentscope.rl._plots import plot_run

    try:
        curve = await anyio.to_thread.run_sync(plot_run, root)
    except Exception as exc:  # the curve is a convenience; the run and its reports are done
        logger.warning("could not draw the reward curve of %s: %s", root, exc)
        curve = None
    if console is not None:
        if curve is not None:
            console.print(f"reward curve: {curve}")
        if config.trace:
            console.print(f"open the run in the studio: agentscope studio --store {root / TRACE_FILE}")
    if evaluation:
        if console is not None and "after" not in evaluation:
            console.print(f"the evaluation after RL failed: {evaluation.get('after_error')}")
        elif console is not None:
            console.print(
                f"held-out success before RL: {success_line(evaluation['before'])}\n"
                f"held-out success after RL:  {success_line(evaluation['after'])}"
            )
            if "train_after" in evaluation:
                console.print(
                    f"training-task success before RL: {success_line(evaluation['train_before'])}\n"
                    f"training-task success after RL:  {success_line(evaluation['train_after'])}"
                )
        result.evaluation = evaluation
    return result


async def _train(
    config: RLConfig,
    root: Path,
    tasks: list[Task],
    env_factory: EnvFactory,
    agent_factory: AgentFactory,
    model_dir: Path,
    checkpoint: Any,
    start_step: int,
    console: Console | None,
    started: float,
    resume_record: dict[str, JsonValue],
) -> TrainResult:
    # What it opens is closed, the last opened first, each whatever the one before raised, however this ends.
    async with contextlib.AsyncExitStack() as opened:
        data = await open_data_manager(config, root)  # data.placement: here, or a Ray actor
        opened.push_async_callback(
            _shielded, data.aclose
        )  # closed last: a lost data manager is the run's error
        trainer, tokenizer = await open_trainer(config, root, model_dir, checkpoint)
        opened.push_async_callback(_shielded, trainer.aclose)  # the checkpoint being written is finished
        sampler = TaskSampler(tasks, seed=config.seed)
        resumed: ResumeReport | None = None
        if checkpoint is not None:
            extra = checkpoint.extra
            if isinstance(extra.get("sampler"), dict):
                sampler.load_state_dict(extra["sampler"])
            cursor, version = extra.get("data"), extra.get("version")
            resumed = await data.resume(
                cast(dict[str, JsonValue], cursor) if isinstance(cursor, dict) else None,
                step=start_step,
                version=version if isinstance(version, int) else start_step,
            )
        start_version = resumed.version if resumed is not None else start_step
        if config.rollout.backend != "inprocess" or config.rollout.engine != "torch":
            from agentscope.rl.rollout import WeightPublisher

            # Weight files of an earlier attempt hold versions that a resumed run lost: none may be served again.
            await anyio.to_thread.run_sync(WeightPublisher(root / WEIGHTS_DIR).clear)
        served_dir = model_dir
        if checkpoint is not None and (config.rollout.backend != "inprocess" or config.env.backend == "ray"):
            # Servers and workers out of process (re)start from this directory, and pruning may delete the checkpoint.
            served_dir = await anyio.to_thread.run_sync(pin_directory, model_dir, root / PINNED_POLICY_DIR)
        service, servers = build_rollout(config, served_dir, tokenizer, start_version, root)
        cluster: EnvCluster | RayEnvCluster
        if config.env.backend == "ray":
            from agentscope.rl._env_ray import RayEnvCluster
            from agentscope.rl.rollout import RemoteRolloutServer

            cluster = RayEnvCluster(
                config, served_dir, [s for s in servers if isinstance(s, RemoteRolloutServer)]
            )
        else:
            cluster = build_env_cluster(config, service, env_factory, agent_factory)
        opened.push_async_callback(_shielded, cluster.aclose)
        progress = StepProgress(console, "step", config.schedule.steps, start=start_step)
        if resumed is not None:
            progress.note(f"resumed from step {start_step}: {resumed.describe()}")
            record = {"time": time.time(), **resume_record, "data": cast(JsonValue, asdict(resumed))}
            await _append_line(root / RESUMES_FILE, record)
        last: dict[str, float] = {}
        saved_step = start_step

        async def save(step: int, version: int) -> None:
            nonlocal saved_step
            extra: dict[str, JsonValue] = {
                "data": await data.checkpoint_state(),
                "sampler": sampler.state_dict(),
                "version": version,
                "config": config.model_dump(mode="json"),
            }
            await trainer.save(step=step, extra=extra)
            saved_step = step

        async def on_step(report: StepReport) -> None:
            nonlocal last
            metrics = _finite(report.metrics)
            metrics.update(_finite(await trainer.stats()))
            metrics["time/wall_s"] = time.perf_counter() - started
            last = metrics
            await _append_line(
                root / METRICS_FILE, {"step": report.step, "version": report.version, **metrics}
            )
            await _append_line(
                root / BATCHES_FILE,
                {"step": report.step, "trajectory_ids": [t.trajectory_id for t in report.batch]},
            )
            tracing.log_metrics(metrics, step=report.step)
            every = config.schedule.checkpoint_every
            if (every and report.step % every == 0) or report.step >= config.schedule.steps:
                await save(report.step, report.version)
            progress.update(report.step, _describe_step(report, metrics))

        scheduler = Scheduler(
            config.schedule,
            cluster=cluster,
            data=data,
            trainer=trainer,
            servers=servers,
            sampler=sampler,
            start_step=start_step,
            start_version=start_version,
            on_step=on_step,
            stats=service.stats,
        )
        async with service, cluster:  # the cluster's actors (env.backend: ray) need the servers' addresses
            with progress:
                if start_step < config.schedule.steps:
                    await _run_watched(scheduler, trainer, data)
        if saved_step < scheduler.step:
            await save(scheduler.step, scheduler.version)
        await trainer.wait()
    return TrainResult(
        run_dir=root,
        steps=scheduler.step,
        resumed_from=checkpoint.step if checkpoint is not None else None,
        wall_s=time.perf_counter() - started,
        metrics=last,
        initial_policy=None if checkpoint is not None else model_dir,
    )


async def _shielded(close: Callable[[], Awaitable[None]]) -> None:
    with anyio.CancelScope(shield=True):
        await close()


async def _run_watched(scheduler: Scheduler, trainer: TrainerHandle, data: DataService) -> None:
    """Run the scheduler until it is done, or until the trainer or the data manager is lost (its own process died,
    noticed at once even while nothing calls it): then raise that :class:`~agentscope.rl.trainer.TrainerLostError`
    or :class:`~agentscope.rl._data_ray.DataManagerLost` itself. Any other failure of the scheduler propagates as
    before."""
    from agentscope.rl.trainer import TrainerLostError

    losses = (TrainerLostError, DataManagerLost)
    watches = [trainer.watch, *([data.watch] if isinstance(data, RayDataManager) else [])]
    lost: list[BaseException] = []

    async def watch(until_lost: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
        try:
            await until_lost()
        except losses as exc:
            lost.append(exc)
            scope.cancel()

    with anyio.CancelScope() as scope:
        loop = asyncio.get_running_loop()
        watchers = [loop.create_task(watch(until_lost, scope)) for until_lost in watches]
        try:
            await scheduler.run()
        except BaseException as exc:  # a failed call (in the scheduler's task group), or cancelled
            found = exc.split(losses)[0] if isinstance(exc, BaseExceptionGroup) else None
            if found is None and not lost:
                raise
            raise unwrap_group(found) if found is not None else lost[0]  # noqa: B904 - the group is the context
        finally:
            for watcher in watchers:
                watcher.cancel()
            with anyio.CancelScope(shield=True):
                for watcher in watchers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
    if lost:
        raise lost[0]


def _describe_step(report: StepReport, metrics: dict[str, float]) -> str:
    """The progress line of one training step: episodes, success, reward, staleness, tokens/s, env use, loss."""
    rewards = [t.reward for t in report.batch]
    successes = [t.success for t in report.batch]
    return (
        f"episodes {metrics.get('env/episodes', 0):.0f} | success {statistics.fmean(successes):.2f} | "
        f"reward {statistics.fmean(rewards):.2f} | staleness {metrics.get('data/staleness', 0):.2f} | "
        f"tok/s {metrics.get('rollout/tokens_per_s', 0):.0f} | env util {metrics.get('env/utilisation', 0):.0%}"
        f" | loss {metrics.get('train/policy_loss', 0):+.4f}"
    )


# ---------------------------------------------------------------------- sft


async def sft(
    config: RLConfig, run_dir: str | os.PathLike[str], *, console: Console | None = None
) -> dict[str, Any]:
    """Make the initial policy of ``config`` in ``run_dir`` (built and warm-started on expert demonstrations:
    ``agentscope rl sft``) and, with ``eval_tasks``, evaluate it; ``rl train`` in the same directory starts from
    it. Returns a JSON-ready summary. With a ``console``, says what it does and shows the warm start's steps.

    Raises:
        ConfigError: ``sft.steps`` is 0, or the warm-start tasks cannot give demonstrations.
        UsageError: the run directory holds an initial policy made from another config.
    """
    if not config.sft.steps:
        raise ConfigError("sft.steps: 0 means no warm start; set it (e.g. --set sft.steps=300)")
    root = Path(run_dir)
    await anyio.to_thread.run_sync(functools.partial(root.mkdir, parents=True, exist_ok=True))
    await anyio.to_thread.run_sync(import_heavy)
    agent_factory = await anyio.to_thread.run_sync(build_agent_factory, config)  # may run a user's file
    model_dir, report = await prepare_policy(
        config, root, build_env_factory(config), agent_factory, console=console
    )
    summary: dict[str, Any] = {"policy": str(model_dir), "sft": asdict(report) if report else None}
    if config.eval_tasks is not None:
        summary["eval"] = await evaluate_cached(config, model_dir)
    return summary
