"""``agentscope serve AGENT_SPEC``: the agent as an OpenAI-compatible HTTP service.

The command of this package; :mod:`agentscope.cli` mounts :func:`serve_command` as ``agentscope serve``. FastAPI
and uvicorn are imported when the command runs, so ``agentscope --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["default_model_name", "serve_command"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def default_model_name(spec: str) -> str:
    """The model id a spec is served as: the file's stem (``examples/calculator.py`` -> ``calculator``) or the
    module's last part (``pkg.agents:build`` -> ``agents``)."""
    target = spec
    if ":" in spec and not (len(spec) > 1 and spec[1] == ":" and spec[0].isalpha()):  # not a Windows drive
        target = spec.rsplit(":", 1)[0]
    if target.endswith(".py"):
        return Path(target).stem or "agent"
    return target.rsplit(".", 1)[-1] or "agent"


def serve_command(
    agent_spec: Annotated[
        str,
        typer.Argument(
            metavar="AGENT_SPEC",
            help="The agent factory: path/to/file.py[:NAME] (default NAME: build_agent) or module:NAME.",
        ),
    ],
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs --api-key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes.")] = 1,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="Accept this key in 'Authorization: Bearer <key>' (repeatable; also AGENTSCOPE_API_KEYS, "
            "comma-separated). Without keys the server answers loopback requests only.",
            show_default=False,
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model-name", help="The model id clients name. Default: the spec's file or module name."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="PROVIDER:MODEL (e.g. openai:gpt-4o-mini): one model per process, handed to the factory as "
            "model= for every agent (API key from OPENAI_API_KEY / ANTHROPIC_API_KEY). Default: the factory's own.",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Endpoint of --model (OpenAI-compatible servers, proxies)."),
    ] = None,
    sessions_db: Annotated[
        Path, typer.Option("--sessions-db", help="SQLite file keeping each session's agent state.")
    ] = Path(".agentscope/sessions.db"),
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest request body accepted (413 beyond).")
    ] = 1 << 20,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout", min=0, help="Seconds requests in flight may take to finish on shutdown."
        ),
    ] = 30.0,
    trace: Annotated[
        bool, typer.Option("--trace/--no-trace", help="Record every request in the trace store (studio).")
    ] = False,
    trace_store: Annotated[
        Path, typer.Option("--trace-store", help="Trace store file (SQLite) the studio reads.")
    ] = Path(".agentscope/traces.db"),
    trace_sample_rate: Annotated[
        float, typer.Option("--trace-sample-rate", min=0.0, max=1.0, help="Fraction of requests to record.")
    ] = 1.0,
    trace_writer: Annotated[
        str,
        typer.Option(
            "--trace-writer", help="Where spans are encoded and written: 'thread' (default) or 'process'."
        ),
    ] = "thread",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve an agent over HTTP: the OpenAI Chat Completions API (streaming included), sessions, API keys."""
    if base_url is not None and model is None:
        raise typer.BadParameter(
            "--base-url is the endpoint of --model; give --model too", param_hint="--base-url"
        )
    if log_level.lower() not in _LOG_LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(_LOG_LEVELS)}", param_hint="--log-level")
    from pydantic import SecretStr, ValidationError

    from agentscope.exceptions import UsageError
    from agentscope.service._config import ServeConfig, keys_from_environment
    from agentscope.service._server import check_binding, serve

    keys = [*(api_key or []), *keys_from_environment()]
    try:
        config = ServeConfig(
            host=host,
            port=port,
            workers=workers,
            model_name=model_name or default_model_name(agent_spec),
            model=model,
            model_base_url=base_url,
            api_keys=tuple(SecretStr(key) for key in keys),
            sessions_db=sessions_db,
            max_body_bytes=max_body_bytes,
            drain_timeout_s=drain_timeout,
            trace=trace,
            trace_store=trace_store,
            trace_sample_rate=trace_sample_rate,
            trace_writer=trace_writer,  # pyright: ignore[reportArgumentType] - validated by ServeConfig
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        check_binding(config)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--host") from None
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"
    auth = f"{len(keys)} API key(s)" if keys else "no API key (loopback only)"
    typer.echo(
        f"Serving {agent_spec} as model {config.model_name!r} on {base} (OpenAI Chat Completions; {auth}; "
        f"sessions in {sessions_db}); Ctrl-C stops",
        err=True,
    )
    try:
        serve(agent_spec, config, log_level=log_level.lower())
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="AGENT_SPEC") from None
