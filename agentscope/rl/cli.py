"""``agentscope rl``: train, evaluate and export.

The command group of this package; :mod:`agentscope.cli` mounts :data:`rl_app` as ``agentscope rl``. Importing
this module is light: each command imports the training stack (torch, the trainer) when it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentscope._commands import command_group

if TYPE_CHECKING:
    from agentscope.rl._config import RLConfig

__all__ = ["rl_app"]

rl_app = command_group("rl", "Train agents with reinforcement learning: sft, train, eval, export.")


def _config_epilog() -> str:
    from agentscope.rl._config import config_help

    lines = config_help().splitlines()
    # Typer's help reflows single newlines: a blank line between fields keeps one field per paragraph.
    return "Config fields (YAML sections, or --set KEY=VALUE):\n\n" + "\n\n".join(lines)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _load(config: Path | None, overrides: list[str] | None) -> RLConfig:
    from agentscope.exceptions import ConfigError
    from agentscope.rl._config import load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@rl_app.command(epilog=_config_epilog())
def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="The run's config (YAML).")],
    run_dir: Annotated[
        Path, typer.Option("--run-dir", help="Where the run writes everything (store, checkpoints, metrics).")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Override a config field, e.g. trainer.lr=1e-5 (repeatable)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue RUN_DIR from its latest checkpoint that loads (a damaged one is refused, saying why).",
        ),
    ] = False,
    allow_config_change: Annotated[
        bool,
        typer.Option(
            "--allow-config-change",
            help="With --resume: go on even if the config differs from the checkpoint's in fields other than "
            "schedule.steps, checkpoint_every, keep_checkpoints, time_limit_s, evaluation, threads and tracing (the changes are "
            "listed).",
        ),
    ] = False,
) -> None:
    """Train the agent of CONFIG.yaml with reinforcement learning (sync or async schedule)."""
    import anyio
    from rich.console import Console

    from agentscope.exceptions import ConfigError, UsageError
    from agentscope.rl._data_ray import DataManagerLost
    from agentscope.rl._runner import train as run_train
    from agentscope.rl.trainer import CheckpointError, TrainerLostError

    if allow_config_change and not resume:
        raise _fail("--allow-config-change only applies with --resume")
    rl_config = _load(config, set_)
    console = Console(stderr=True)
    try:
        result = anyio.run(
            lambda: run_train(
                rl_config, run_dir, resume=resume, allow_config_change=allow_config_change, console=console
            )
        )
    except (ConfigError, UsageError, CheckpointError, TrainerLostError, DataManagerLost) as exc:
        raise _fail(str(exc)) from None  # a lost trainer or data manager: the message says to --resume
    summary: dict[str, object] = {
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "wall_s": round(result.wall_s, 2),
        "metrics": {
            k: result.metrics[k]
            for k in sorted(result.metrics)
            if k.split("/")[0] in {"train", "data", "env", "rollout", "sched"}
        },
    }
    if result.evaluation:
        summary["eval"] = {
            when: {"success_rate": report["success_rate"], "episodes": report["episodes"]}
            for when, report in result.evaluation.items()
        }
    typer.echo(json.dumps(summary, indent=1))


@rl_app.command(epilog=_config_epilog())
def sft(
    config: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="The run's config (YAML).")],
    run_dir: Annotated[
        Path,
        typer.Option(
            "--run-dir", help="Where the initial policy goes (DIR/policy_init, or policy.cache_dir)."
        ),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Override a config field, e.g. sft.steps=300 (repeatable)."
        ),
    ] = None,
) -> None:
    """Warm-start the policy of CONFIG.yaml on scripted-expert demonstrations of training-side tasks (the sft
    section: its budget, steps and tasks), then evaluate it on eval_tasks. `rl train` with the same config and
    --run-dir starts from it."""
    import anyio
    from rich.console import Console

    from agentscope.exceptions import ConfigError, UsageError
    from agentscope.rl._runner import sft as run_sft

    rl_config = _load(config, set_)
    try:
        summary = anyio.run(lambda: run_sft(rl_config, run_dir, console=Console(stderr=True)))
    except (ConfigError, UsageError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(summary, indent=1))


@rl_app.command("rollout-server")
def rollout_server(
    config: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="The run's config (YAML).")],
    model: Annotated[
        Path, typer.Option("--model", help="The policy to serve (a Hugging Face model directory).")
    ],
    index: Annotated[
        int, typer.Option("--index", min=0, help="Which rollout server of the run (its seed).")
    ] = 0,
    version: Annotated[int, typer.Option("--version", min=0, help="The policy version it serves.")] = 0,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="A weights file (safetensors) to load over the model.")
    ] = None,
    weights_dir: Annotated[
        Path | None,
        typer.Option(
            "--weights-dir",
            help="The run's weights directory (DIR/weights): where a vLLM or SGLang engine's server reloads "
            "each version from.",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Interface to bind (beyond loopback only with AGENTSCOPE_ROLLOUT_TOKEN set)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, help="Port (0: a free one).")] = 0,
    exit_with_stdin: Annotated[
        bool, typer.Option("--exit-with-stdin", help="Also stop when stdin closes (the parent died).")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a config field (repeatable)."),
    ] = None,
) -> None:
    """Serve one rollout server of CONFIG.yaml over HTTP (the rollout section: engine, sampling) until SIGTERM.

    Prints one line `agentscope-rollout-server {"url": ..., "pid": ..., "version": ...}` once it serves. `rl train`
    starts these itself with `rollout.backend: process`; the routes are the rollout app's (chat completions with
    token ids, sessions, `POST /weights`). With AGENTSCOPE_ROLLOUT_TOKEN set, every request must carry it as a
    bearer token; without it the server binds loopback only."""
    import os

    import anyio

    from agentscope.exceptions import ConfigError, UsageError
    from agentscope.rl._rollout_process import (
        TOKEN_ENV,
        serve_rollout_server,
        until_stdin_closes_or_signalled,
    )

    rl_config = _load(config, set_)
    try:
        anyio.run(
            lambda: serve_rollout_server(
                rl_config,
                model,
                index=index,
                version=version,
                weights=weights,
                weights_dir=weights_dir,
                host=host,
                port=port,
                token=os.environ.get(TOKEN_ENV) or None,
                until=until_stdin_closes_or_signalled if exit_with_stdin else None,
            )
        )
    except (ConfigError, UsageError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None


@rl_app.command("eval")
def eval_(
    config: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="The run's config (YAML).")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="A checkpoint directory (DIR/checkpoints/latest) or a run directory."
        ),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option("--tasks", help="Task set spec, e.g. arith:n=32,seed=7 (default: the config's)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override a config field.")
    ] = None,
    attempts: Annotated[
        int | None,
        typer.Option("--attempts", min=1, help="Episodes per task (default: evaluation.attempts)."),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature", min=0.0, help="Sampling temperature (0: greedy; default: the config's)."
        ),
    ] = None,
) -> None:
    """Play every task with a checkpoint's policy and print success rates as JSON."""
    import anyio

    from agentscope.exceptions import ConfigError
    from agentscope.rl._evaluation import evaluate

    rl_config = _load(config, set_)
    try:
        result = anyio.run(
            lambda: evaluate(rl_config, checkpoint, tasks, attempts=attempts, temperature=temperature)
        )
    except (ConfigError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(result, indent=1))


@rl_app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="DIR", help="A run directory.")],
    out: Annotated[Path, typer.Option("--out", help="The JSON-lines file to write.")],
) -> None:
    """Write every stored trajectory of a run as JSON lines in verl's layout (uid, prompt_ids, response_ids,
    response_mask, response_logprobs, reward, policy_versions, trained_at_step, status, ...)."""
    import anyio

    from agentscope.exceptions import UsageError
    from agentscope.rl._export import export_trajectories

    try:
        count = anyio.run(export_trajectories, run_dir, out)
    except UsageError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"exported {count} trajectories to {out}", err=True)
    sys.stdout.flush()
