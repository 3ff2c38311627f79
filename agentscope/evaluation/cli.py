"""``agentscope eval AGENT_SPEC TASKS``: the command of this package, mounted by :mod:`agentscope.cli`.

Importing this module is light: the command imports the runner (the environment cluster, the task sets) when it
runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentscope._commands import ApiKeyOption, BaseUrlOption, ModelOption

if TYPE_CHECKING:
    from rich.console import Console

    from agentscope.evaluation._results import EpisodeResult, EvaluationReport
    from agentscope.models import ChatModel

__all__ = ["default_out", "eval_command"]

_DEFAULT_STORE = Path(".agentscope/traces.db")
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class _Options:
    """What the command was asked to do, handed on to the runner in one piece."""

    agent_spec: str
    tasks: str
    repeats: int
    concurrency: int
    workers: int | None
    out: Path
    resume: bool
    model: str | None
    base_url: str | None
    api_key: str | None
    checkpoint: tuple[Path, float, int] | None
    """The policy, its temperature and its max tokens per call."""
    price: str | None
    trace_store: Path | None
    name: str | None
    project: str
    max_turns: int | None
    episode_timeout_s: float


def default_out(agent_spec: str, tasks: str, model: str | None, name: str | None) -> Path:
    """Where an evaluation writes when ``--out`` is not given: one file per name, or per (agent, tasks, model),
    under ``.agentscope/evals/`` (so running the same command again with ``--resume`` finds it)."""
    if name is not None:
        stem = _SLUG.sub("-", name).strip("-") or "eval"
    else:
        digest = hashlib.sha256(json.dumps([agent_spec, tasks, model]).encode()).hexdigest()[:8]
        agent = (
            Path(agent_spec.partition(":")[0]).stem if ".py" in agent_spec else agent_spec.partition(":")[2]
        )
        stem = _SLUG.sub("-", f"{agent or 'agent'}-{tasks.partition(':')[0]}-{digest}").strip("-")
    return Path(".agentscope") / "evals" / f"{stem}.json"


def eval_command(
    agent_spec: Annotated[
        str,
        typer.Argument(
            metavar="AGENT_SPEC",
            help="The agent spec: FILE.py[:NAME] (default NAME: build_agent) or MODULE:NAME, a function "
            "returning a fresh agent; it gets toolkit= (the task's tools) and model= when --model is given.",
        ),
    ],
    tasks: Annotated[
        str,
        typer.Argument(
            metavar="TASKS",
            help="Task-set spec, e.g. arith:n=20,seed=1 or lookup:n=20,level=1-2,split=eval (the RL task sets).",
        ),
    ],
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Episodes per task.")] = 1,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Episodes at once (in each worker with --workers).")
    ] = 4,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Play the episodes in this many Ray worker processes at once (the scale extra; the connected "
            "cluster or a local one). Episodes in workers are not traced.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The JSON results; episodes are logged beside it (.jsonl) as they finish. Default: "
            ".agentscope/evals/<name or agent-tasks-hash>.json.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the evaluation logged beside --out: keep its episodes, play the rest."
        ),
    ] = False,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="A trained policy (checkpoint or run directory of rl train) served by the embedded rollout "
            "engine and passed as model= (needs the rl extra).",
        ),
    ] = None,
    temperature: Annotated[
        float,
        typer.Option("--temperature", min=0.0, help="With --checkpoint: sampling temperature (0: greedy)."),
    ] = 0.0,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="With --checkpoint: most tokens per model call.")
    ] = 256,
    price: Annotated[
        str | None,
        typer.Option(
            "--price",
            metavar="INPUT,OUTPUT",
            help="Dollars per million input and output tokens, e.g. 0.15,0.6: adds cost per episode and in all.",
        ),
    ] = None,
    trace: Annotated[
        bool,
        typer.Option(
            "--trace/--no-trace",
            help="Record the evaluation as a run in the trace store (the studio's page).",
        ),
    ] = True,
    trace_store: Annotated[
        Path, typer.Option("--trace-store", help="Trace store file (SQLite) the studio reads.")
    ] = _DEFAULT_STORE,
    name: Annotated[
        str | None, typer.Option("--name", help="The evaluation's name (its run in the studio).")
    ] = None,
    project: Annotated[
        str, typer.Option("--project", help="Project of the run in the trace store.")
    ] = "eval",
    max_turns: Annotated[
        int | None, typer.Option("--max-turns", min=1, help="Most model calls per episode.")
    ] = None,
    episode_timeout: Annotated[
        float, typer.Option("--episode-timeout", min=0.001, help="Seconds an episode may take.")
    ] = 600.0,
) -> None:
    """Evaluate an agent on a task set: every task's verifier scores it; success, reward, steps, tokens,
    latency and cost per episode and in all, written to JSON (and the trace store). Resumable."""
    import anyio
    from rich.console import Console

    from agentscope.exceptions import UsageError

    console = Console(stderr=True)
    if model is not None and checkpoint is not None:
        typer.echo("error: give --model or --checkpoint, not both", err=True)
        raise typer.Exit(2)
    model_label = model if checkpoint is None else f"checkpoint:{checkpoint}"
    out_path = out if out is not None else default_out(agent_spec, tasks, model_label, name)
    options = _Options(
        agent_spec=agent_spec,
        tasks=tasks,
        repeats=repeats,
        concurrency=concurrency,
        workers=workers,
        out=out_path,
        resume=resume,
        model=model,
        base_url=base_url,
        api_key=api_key,
        checkpoint=(checkpoint, temperature, max_tokens) if checkpoint is not None else None,
        price=price,
        trace_store=trace_store if trace else None,
        name=name,
        project=project,
        max_turns=max_turns,
        episode_timeout_s=episode_timeout,
    )
    try:
        report = anyio.run(_evaluate, options, console)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    summary = {
        "name": report.name,
        "out": str(out_path),
        "episodes": len(report.episodes),
        "expected_episodes": report.expected_episodes,
        "complete": report.complete,
        "statuses": report.statuses,
        "metrics": report.metrics,
        "run_id": report.run_id if trace else None,
    }
    typer.echo(json.dumps(summary, indent=1))
    if trace:
        console.print(f"[dim]View it with: agentscope studio --store {trace_store}  (Evaluations)[/]")
    if not report.complete:
        failed = [e for e in report.episodes if e.status == "failed_infra"]
        first = f" (the first: {failed[0].error})" if failed else ""
        typer.echo(
            f"error: {len(failed)} of {report.expected_episodes} episodes failed for infrastructure{first}; "
            "fix the cause and run the same command with --resume to play them again",
            err=True,
        )
        raise typer.Exit(1)


async def _evaluate(options: _Options, console: Console) -> EvaluationReport:
    from agentscope.evaluation._checkpoint import checkpoint_model
    from agentscope.exceptions import UsageError

    async with AsyncExitStack() as stack:
        # PROVIDER:MODEL: evaluate builds it (or each worker does).
        chat_model: ChatModel | str | None = options.model
        label = options.model
        if options.checkpoint is not None:
            if options.workers is not None:
                raise UsageError(
                    "--checkpoint serves the policy in this process: it does not go with --workers"
                )
            path, temperature, max_tokens = options.checkpoint
            label = f"checkpoint:{path}"
            chat_model = await stack.enter_async_context(
                checkpoint_model(
                    path, concurrency=options.concurrency, temperature=temperature, max_tokens=max_tokens
                )
            )
        return await _run_with_progress(options, chat_model, label, console)


async def _run_with_progress(
    options: _Options, chat_model: ChatModel | str | None, model_label: str | None, console: Console
) -> EvaluationReport:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from agentscope.evaluation._play import Price
    from agentscope.evaluation._run import evaluate

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    bar = progress.add_task("episodes", total=None, rate="")
    successes: dict[tuple[str, int], bool] = {}

    def advance(result: EpisodeResult, done: int, total: int) -> None:
        successes[result.key] = result.success
        rate = f"success {sum(successes.values()) / len(successes):.0%} of {len(successes)} this run"
        progress.update(bar, completed=done, total=total, rate=rate)

    with progress:
        return await evaluate(
            options.agent_spec,
            options.tasks,
            model=chat_model,
            base_url=options.base_url,
            api_key=options.api_key,
            workers=options.workers,
            repeats=options.repeats,
            concurrency=options.concurrency,
            out=options.out,
            resume=options.resume,
            trace_store=options.trace_store,
            name=options.name,
            project=options.project,
            price=Price.parse(options.price) if options.price is not None else None,
            max_turns=options.max_turns,
            episode_timeout_s=options.episode_timeout_s,
            on_episode=advance,
            model_label=model_label,
        )
