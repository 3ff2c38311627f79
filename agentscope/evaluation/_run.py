"""``evaluate``: play an agent on every task of a task set, ``repeats`` times, ``concurrency`` at once.

Episodes are played by the RL system's :class:`~agentscope.rl.envs.EnvCluster` (the same environments,
verifiers, timeouts and statuses as training), with the agent built from its factory around the model under
evaluation instead of a policy being trained. Each finished episode is appended to the results log at once, so a
killed evaluation resumes where it stopped; the report is written as JSON at the end, and with a trace store the
evaluation is a run there: episodes as traces, ``eval/...`` metrics as they accumulate, one row per episode.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from agentscope import tracing
from agentscope.agents import AgentFactory, load_agent_factory, takes_argument
from agentscope.evaluation._play import Price, play
from agentscope.evaluation._ray import RemoteSetup, absolute_spec, play_on_ray
from agentscope.evaluation._results import (
    EpisodeResult,
    EvaluationHeader,
    EvaluationReport,
    append_line,
    log_path,
    metrics_of,
    read_log,
    summarise,
    write_json_atomically,
)
from agentscope.exceptions import UsageError
from agentscope.models import ChatModel, model_from_spec
from agentscope.rl import Task
from agentscope.rl.envs import EnvFactory

if TYPE_CHECKING:
    from agentscope.tracing import TraceStore

__all__ = ["EpisodeCallback", "Price", "evaluate"]


EpisodeCallback = Callable[[EpisodeResult, int, int], Awaitable[None] | None]
"""Called after each episode with its result, the episodes done (those kept from before included) and the total."""


async def evaluate(
    agent: AgentFactory | str,
    tasks: str | Sequence[Task],
    *,
    env: EnvFactory | None = None,
    model: ChatModel | str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    workers: int | None = None,
    repeats: int = 1,
    concurrency: int = 4,
    out: str | Path | None = None,
    resume: bool = False,
    trace_store: str | Path | None = None,
    name: str | None = None,
    project: str = "eval",
    price: Price | None = None,
    max_turns: int | None = None,
    episode_timeout_s: float | None = 600.0,
    on_episode: EpisodeCallback | None = None,
    agent_label: str | None = None,
    model_label: str | None = None,
) -> EvaluationReport:
    """Play ``agent`` on every task ``repeats`` times, ``concurrency`` episodes at once, each judged by its
    verifier; return (and write) the report.

    Args:
        agent: The agent factory, or an agent spec naming one (``"my_agent.py"``; see
            :func:`agentscope.agents.load_agent_factory`). It is called per episode with the arguments it
            declares of ``model=`` (when ``model`` is given) and ``toolkit=`` (the task's tools: an agent that
            ignores them cannot use the environment).
        tasks: A task-set spec (``"arith:n=20,seed=1"``, ``"lookup:n=20,level=1-2,split=eval"``; see
            :func:`agentscope.rl.tasks.load_tasks`) or the tasks themselves (then give ``env``). Tasks with the
            same content key are the same problem: it is played once per repeat.
        env: Builds the environment that plays the tasks; default: the task set's (from the spec's name).
        model: The model handed to the factory as ``model=``, or ``PROVIDER:MODEL`` to build one
            (:func:`agentscope.models.model_from_spec`, with ``base_url`` and ``api_key``); None: the factory's own.
        base_url: The endpoint of a model given as ``PROVIDER:MODEL``.
        api_key: Its API key (else the provider's environment variable).
        workers: Play the episodes as Ray tasks, at most this many at once, each playing ``concurrency``
            episodes (Ray, the ``scale`` extra; the connected cluster, or a local one of this many CPUs). The agent, the
            tasks and the model must then be given by name (specs), and the episodes are not traced. None: all
            in this process.
        repeats: Episodes per task.
        concurrency: Episodes at once (per worker with ``workers``).
        out: The JSON report; the results log is written beside it (``.jsonl``) as episodes finish. None: no
            files (and no resume).
        resume: Continue the evaluation whose log is beside ``out``: its episodes are kept, the others played.
            Without it an existing log with episodes is an error (nothing is overwritten).
        trace_store: Record the evaluation as a run in this trace store (episodes as traces, ``eval/...``
            metrics, a row per episode that the studio's evaluation page shows). Tracing must be off when
            called; it is on during the evaluation and off after.
        name: The evaluation's name (its run's name); default from the agent and the tasks.
        project: The run's project in the trace store.
        price: What the tokens cost; each episode's ``cost`` and ``eval/cost`` are omitted without it.
        max_turns: Most model calls per episode (then ``truncated``, the last answer judged). None: no limit
            beyond the agent's own.
        episode_timeout_s: Longest an episode may take before it fails as ``failed_infra`` (None: no limit).
        on_episode: Called after each episode (a progress bar).
        agent_label: How the agent is named in the report (default: the factory's name); the CLI passes the spec.
        model_label: How the model is named in the report (default: its ``model_name``).

    Raises:
        UsageError: bad arguments, an unknown task set, a log of another evaluation, or a log without
            ``resume``; nothing is played or written then.
    """
    if repeats < 1:
        raise UsageError(f"repeats must be at least 1, got {repeats}")
    if concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, got {concurrency}")
    if trace_store is not None and tracing.enabled():
        raise UsageError(
            "tracing is already on: evaluate(trace_store=...) records the evaluation as its own run; call "
            "tracing.shutdown() first, or leave trace_store out to trace into the current run"
        )
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    if workers is not None and not (
        isinstance(agent, str) and isinstance(tasks, str) and not isinstance(model, ChatModel)
    ):
        raise UsageError(
            "evaluate(workers=...) sends the agent, the tasks and the model to other processes by name: give the "
            "agent spec, the task-set spec and PROVIDER:MODEL (or no model) as strings"
        )
    if workers is not None and env is not None:
        raise UsageError("evaluate(workers=...) plays each task set's own environment: leave env= out")
    if isinstance(agent, str):
        factory = await anyio.to_thread.run_sync(load_agent_factory, agent)  # runs the user's file
        agent_label = agent_label or agent
    else:
        factory = agent
        agent_label = agent_label or str(getattr(agent, "__qualname__", type(agent).__name__))
    _check_factory(agent_label, factory, model is not None)
    task_list, env_factory, tasks_label = await _tasks(tasks, env)
    model_spec = model if isinstance(model, str) else None
    if model_spec is not None:  # a bad PROVIDER:MODEL fails here, before any file is written
        await model_from_spec(model_spec, base_url=base_url, api_key=api_key).aclose()
    model_label = model_label or model_spec or (model.model_name if isinstance(model, ChatModel) else None)
    out_path = Path(out) if out is not None else None
    log = log_path(out_path) if out_path is not None else None
    header, kept = await _open_log(log, resume, agent_label, tasks_label, model_label, name)
    keys = [(task.content_key, task.id) for task in task_list]
    todo = [
        (task, r)
        for r in range(repeats)
        for task in task_list
        if (kept_result := kept.get((task.content_key, r))) is None or kept_result.status == "failed_infra"
    ]
    results = dict(kept)
    total = len(task_list) * repeats
    recorder = _Recorder(log, trace_store, header, results, keys, repeats, total, on_episode)
    status: tracing.RunStatus = "failed"
    built: ChatModel | None = None
    try:
        await recorder.start(project)
        if todo and workers is not None:
            setup = RemoteSetup(
                absolute_spec(str(agent)), str(tasks), model_spec, base_url, concurrency, max_turns,
                episode_timeout_s, price,
            )  # fmt: skip
            await play_on_ray(setup, todo, workers, recorder.record, api_key=api_key)
        elif todo:
            if model_spec is not None:
                built = model_from_spec(model_spec, base_url=base_url, api_key=api_key)
            chat_model = built if model_spec is not None else model
            assert not isinstance(chat_model, str)
            await play(
                todo,
                factory,
                env_factory,
                chat_model,
                concurrency,
                max_turns,
                episode_timeout_s,
                price,
                recorder.record,
            )
        status = "finished"
    finally:
        if built is not None:
            with anyio.CancelScope(shield=True):
                await built.aclose()
        report = summarise(header, keys, repeats, results.values())
        with anyio.CancelScope(shield=True):
            await recorder.finish(report, status)
            if out_path is not None:
                await anyio.to_thread.run_sync(
                    write_json_atomically, out_path, report.model_dump_json(indent=1) + "\n"
                )
    return report


def _check_factory(spec: str, factory: AgentFactory, given_model: bool) -> None:
    """Fail before any episode when the factory cannot be called here (it needs what evaluation does not give,
    or takes no model= while --model is given)."""
    if given_model and not takes_argument(factory, "model"):
        raise UsageError(
            f"agent {spec!r} takes no model= argument, so the model given cannot replace its own"
        )
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return
    available = {"toolkit", "model"} if given_model else {"toolkit"}
    required = [
        p.name
        for p in parameters
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in available
    ]
    if required:
        hint = " (--model PROVIDER:MODEL gives model=)" if "model" in required else ""
        raise UsageError(
            f"agent {spec!r}: the factory requires {', '.join(map(repr, required))}, which evaluation does "
            f"not give (it gives toolkit=, and model= with --model){hint}; give them defaults"
        )


async def _tasks(tasks: str | Sequence[Task], env: EnvFactory | None) -> tuple[list[Task], EnvFactory, str]:
    """The tasks (each content key once), the environment factory and how the report names the tasks."""
    if isinstance(tasks, str):
        from agentscope.rl.tasks import get_task_set, load_tasks, parse_task_spec

        try:
            name, _ = parse_task_spec(tasks)
            loaded = await anyio.to_thread.run_sync(load_tasks, tasks)
            factory = env or get_task_set(name).env
        except ValueError as exc:
            raise UsageError(f"tasks {tasks!r}: {exc}") from None
        label = tasks
    else:
        if env is None:
            raise UsageError("evaluate() of a list of tasks needs env= (the environment that plays them)")
        loaded, factory = list(tasks), env
        digest = hashlib.sha256("\n".join(t.content_key for t in loaded).encode()).hexdigest()[:12]
        label = f"{len(loaded)} tasks ({digest})"
    unique: dict[str, Task] = {}
    for task in loaded:
        unique.setdefault(task.content_key, task)
    if not unique:
        raise UsageError(f"tasks {label!r} holds no tasks")
    return list(unique.values()), factory, label


async def _open_log(
    log: Path | None, resume: bool, agent: str, tasks: str, model: str | None, name: str | None
) -> tuple[EvaluationHeader, dict[tuple[str, int], EpisodeResult]]:
    """The evaluation's header and the episodes kept from its log (none for a new one, whose header is
    written)."""
    default_name = f"eval {Path(agent.partition(':')[0]).name or agent} on {tasks}"
    if log is None:
        if resume:
            raise UsageError("resume needs the results file (out=) of the evaluation to continue")
        return EvaluationHeader(
            name=name or default_name, agent=agent, tasks=tasks, model=model, run_id=uuid.uuid4().hex
        ), {}
    header, kept, whole = await anyio.to_thread.run_sync(read_log, log)
    if header is not None and (kept or resume):
        if not resume:
            raise UsageError(
                f"{log} holds {len(kept)} episodes of an earlier evaluation ({header.name}): pass --resume "
                "to continue it, or choose another --out"
            )
        mine = {"agent": agent, "tasks": tasks, "model": model}
        theirs = {"agent": header.agent, "tasks": header.tasks, "model": header.model}
        different = [f"{k} {theirs[k]!r} there, {mine[k]!r} here" for k in mine if mine[k] != theirs[k]]
        if different:
            raise UsageError(
                f"{log} is the log of another evaluation ({'; '.join(different)}): resume it with the same "
                "agent, tasks and model, or choose another --out"
            )
        if name is not None and name != header.name:
            header = header.model_copy(update={"name": name})
        await anyio.to_thread.run_sync(_truncate, log, whole)
        return header, kept
    header = EvaluationHeader(
        name=name or default_name, agent=agent, tasks=tasks, model=model, run_id=uuid.uuid4().hex
    )
    await anyio.to_thread.run_sync(_start_log, log, header)
    return header, {}


def _truncate(path: Path, size: int) -> None:
    """Cut a log back to its whole lines (a line a kill cut short would run into the next one)."""
    if path.stat().st_size > size:
        with path.open("r+b") as file:
            file.truncate(size)


def _start_log(path: Path, header: EvaluationHeader) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    append_line(path, {"header": header.model_dump(mode="json")})


_METRICS_EVERY_S = 1.0
"""Least time between two points of the running ``eval/...`` metrics in the trace store."""


class _Recorder:
    """Where each finished episode goes: the results log, the trace store (row and running metrics), the
    caller's callback."""

    def __init__(
        self,
        log: Path | None,
        trace_store: str | Path | None,
        header: EvaluationHeader,
        results: dict[tuple[str, int], EpisodeResult],
        keys: list[tuple[str, str]],
        repeats: int,
        total: int,
        on_episode: EpisodeCallback | None,
    ) -> None:
        self.log = log
        self.trace_store = trace_store
        self.header = header
        self.results = results
        self.wanted = {key for key, _ in keys}
        self.repeats = repeats
        self.total = total
        self.on_episode = on_episode
        self.store: TraceStore | None = None
        self.done = {
            key
            for key, e in results.items()
            if e.task_key in self.wanted and e.repeat < repeats and e.status != "failed_infra"
        }
        """(task key, repeat) of the episodes counted as done (not infrastructure failures)."""
        self._lock = anyio.Lock()
        self._metrics_at = -math.inf

    def _counted(self) -> list[EpisodeResult]:
        return [e for e in self.results.values() if e.task_key in self.wanted and e.repeat < self.repeats]

    async def start(self, project: str) -> None:
        if self.trace_store is None:
            return
        from agentscope.tracing import TraceStore

        store_path = self.trace_store
        config = {"command": "eval", "evaluation": self.header.model_dump(mode="json")}
        await anyio.to_thread.run_sync(  # opens the store (files): waits until the run row is written
            lambda: tracing.init(
                store_path,
                project=project,
                run_name=self.header.name,
                config=config,
                run_id=self.header.run_id,
            )
        )
        self.store = await anyio.to_thread.run_sync(TraceStore, self.trace_store)
        kept = self._counted()
        if kept:  # a resumed evaluation: what the killed process may not have written
            await anyio.to_thread.run_sync(
                self.store.write_eval_results, self.header.run_id, [_row(e) for e in kept]
            )

    async def record(self, result: EpisodeResult) -> None:
        async with self._lock:
            self.results[result.key] = result
            if self.log is not None:
                await anyio.to_thread.run_sync(append_line, self.log, result.model_dump(mode="json"))
            if result.task_key in self.wanted and result.repeat < self.repeats:
                if result.status == "failed_infra":
                    self.done.discard(result.key)
                else:
                    self.done.add(result.key)
            done = len(self.done)
            if self.store is not None:
                await anyio.to_thread.run_sync(
                    self.store.write_eval_results, self.header.run_id, [_row(result)]
                )
                now = anyio.current_time()
                if now - self._metrics_at >= _METRICS_EVERY_S or done == self.total:
                    # The metrics of every episode so far: a pass over them, so at most once a second.
                    self._metrics_at = now
                    counted = self._counted()
                    tracing.log_metrics(metrics_of(counted), step=len(counted))
        if self.on_episode is not None:
            called = self.on_episode(result, done, self.total)
            if called is not None:
                await called

    async def finish(self, report: EvaluationReport, status: tracing.RunStatus) -> None:
        if self.trace_store is None:
            return
        if self.store is not None:
            tracing.log_metrics(report.metrics, step=len(report.episodes))
            await anyio.to_thread.run_sync(self.store.close)
        await anyio.to_thread.run_sync(tracing.shutdown, status)  # also when start() failed half-way


def _row(result: EpisodeResult) -> dict[str, Any]:
    return result.model_dump(mode="json")
