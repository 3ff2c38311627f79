"""Command groups of the ``agentscope`` command line: one typer app per group, with the settings they all share."""

from __future__ import annotations

from typing import Annotated, TypeAlias

import typer

__all__ = ["ApiKeyOption", "BaseUrlOption", "ModelOption", "command_group"]

ModelOption: TypeAlias = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="PROVIDER:MODEL, e.g. openai:gpt-4o-mini, passed as model=. Default: the factory's own model.",
    ),
]
"""``--model``, for commands that hand an agent factory a model (``run``, ``eval``)."""

BaseUrlOption: TypeAlias = Annotated[
    str | None, typer.Option("--base-url", help="Provider endpoint (OpenAI-compatible servers, proxies).")
]
"""``--base-url`` of ``--model``."""

ApiKeyOption: TypeAlias = Annotated[
    str | None,
    typer.Option("--api-key", envvar="AGENTSCOPE_API_KEY", help="API key (else the provider's env var)."),
]
"""``--api-key`` of ``--model``."""


def command_group(name: str, help: str) -> typer.Typer:
    """A typer app for one command group (``agentscope``, ``agentscope rl``...): its help when called without a
    command, no shell-completion commands, plain tracebacks."""
    return typer.Typer(
        name=name, help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )
