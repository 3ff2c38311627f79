"""Command groups of the ``agentscope`` command line: one typer app per group, with the settings they all share."""

from __future__ import annotations

import typer

__all__ = ["command_group"]


def command_group(name: str, help: str) -> typer.Typer:
    """A typer app for one command group (``agentscope``, ``agentscope rl``...): its help when called without a
    command, no shell-completion commands, plain tracebacks."""
    return typer.Typer(
        name=name, help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )
