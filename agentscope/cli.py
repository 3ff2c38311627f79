"""The ``agentscope`` command."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentscope._loading import LoadError, load_object

if TYPE_CHECKING:
    from rich.console import Console

    from agentscope.agents import AgentBase
    from agentscope.models import ChatModel

app = typer.Typer(
    name="agentscope",
    help="Build, run, trace, serve and train LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

__all__ = ["app", "load_agent", "main", "make_model"]


def main() -> None:
    """Entry point of the ``agentscope`` console script."""
    app()


@app.callback()
def _root() -> None:
    """Build, run, trace, serve and train LLM agents."""


# ---------------------------------------------------------------------- loading agents and models


def _load_object(spec: str) -> object:
    """Load ``module:attribute``, ``path/to/file.py:attribute`` or ``path/to/file.py`` (its ``agent`` attribute)."""
    try:
        return load_object(
            spec, file_default=lambda module: "agent" if hasattr(module, "agent") else "build_agent"
        )
    except LoadError as exc:
        raise typer.BadParameter(str(exc), param_hint="AGENT_SPEC") from exc


async def load_agent(spec: str, model: ChatModel | None = None) -> AgentBase:
    """Build the agent named by ``spec``: an agent instance, or a factory called with ``model`` when it takes one."""
    import anyio

    from agentscope.agents import AgentBase

    obj = await anyio.to_thread.run_sync(_load_object, spec)  # importing user code reads files
    if isinstance(obj, AgentBase):
        if model is not None:
            if not hasattr(obj, "model"):
                raise typer.BadParameter(f"{spec} is an agent without a model; --model does not apply")
            obj.model = model  # type: ignore[attr-defined]
        return obj
    if not callable(obj):
        raise typer.BadParameter(
            f"{spec} is neither an agent nor a function returning one", param_hint="AGENT_SPEC"
        )
    parameters = inspect.signature(obj).parameters
    agent = obj(model) if model is not None or "model" in parameters else obj()
    if inspect.isawaitable(agent):
        agent = await agent
    if not isinstance(agent, AgentBase):
        raise typer.BadParameter(
            f"{spec} returned {type(agent).__name__}, not an agent", param_hint="AGENT_SPEC"
        )
    return agent


def make_model(spec: str, *, base_url: str | None = None, api_key: str | None = None) -> ChatModel:
    """Build a model from ``provider:model-name`` (``openai:...``, ``anthropic:...``)."""
    provider, _, name = spec.partition(":")
    if not name:
        raise typer.BadParameter(
            f"expected PROVIDER:MODEL such as openai:gpt-4o-mini, got {spec!r}", param_hint="--model"
        )
    if provider == "openai":
        from agentscope.models import OpenAIChatModel

        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return OpenAIChatModel(name, base_url=url, api_key=api_key)
    if provider == "anthropic":
        from agentscope.models import AnthropicChatModel

        url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        return AnthropicChatModel(name, base_url=url, api_key=api_key)
    raise typer.BadParameter(f"unknown provider {provider!r}; use openai or anthropic", param_hint="--model")


# ---------------------------------------------------------------------- agentscope run


@app.command()
def run(
    agent_spec: Annotated[
        str,
        typer.Argument(
            metavar="AGENT_SPEC",
            help="The agent: MODULE:ATTRIBUTE or FILE.py[:ATTRIBUTE]; an agent, or a function (model) -> agent.",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="PROVIDER:MODEL, e.g. openai:gpt-4o-mini. Default: the agent's own model."
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Provider endpoint (OpenAI-compatible servers, proxies).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="AGENTSCOPE_API_KEY", help="API key (else the provider's env var)."),
    ] = None,
    message: Annotated[
        list[str] | None,
        typer.Option("--message", "-m", help="Send this message and exit instead of chatting (repeatable)."),
    ] = None,
    trace: Annotated[
        bool,
        typer.Option(
            "--trace/--no-trace", help="Record every model and tool call in the trace store (studio)."
        ),
    ] = True,
    trace_store: Annotated[
        Path, typer.Option("--trace-store", help="Trace store file (SQLite) the studio reads.")
    ] = Path(".agentscope/traces.db"),
    project: Annotated[str, typer.Option("--project", help="Project the traced run belongs to.")] = "default",
    trace_sample_rate: Annotated[
        float,
        typer.Option(
            "--trace-sample-rate", min=0.0, max=1.0, help="Fraction of agent turns (traces) to record."
        ),
    ] = 1.0,
    trace_content: Annotated[
        bool,
        typer.Option(
            "--trace-content/--no-trace-content",
            help="Record messages, tool arguments and results (off: only names, timings, tokens, errors).",
        ),
    ] = True,
) -> None:
    """Chat with an agent in the terminal. Ctrl-C interrupts the agent; Ctrl-D or /exit quits."""
    from rich.console import Console

    console = Console()
    chat_model = make_model(model, base_url=base_url, api_key=api_key) if model else None
    if not trace:
        asyncio.run(_chat(agent_spec, chat_model, console, message))
        return
    from agentscope import tracing

    tracing.init(
        trace_store,
        project=project,
        run_name=f"run {agent_spec}",
        config={"command": "run"},
        sample_rate=trace_sample_rate,
        capture_content=trace_content,
    )
    status: tracing.RunStatus = "failed"
    try:
        asyncio.run(_chat(agent_spec, chat_model, console, message))
        status = "finished"
    finally:
        tracing.shutdown(status)
        console.print(
            f"[dim]Traced to {trace_store}; view it with: agentscope studio --store {trace_store}[/]"
        )


async def _chat(
    agent_spec: str, model: ChatModel | None, console: Console, messages: list[str] | None
) -> None:
    from rich.prompt import Prompt

    from agentscope.message import Msg

    agent = await load_agent(agent_spec, model)
    console.print(f"[bold]Chatting with {agent.name}[/] ([dim]Ctrl-C interrupts, Ctrl-D or /exit quits[/])")
    scripted = list(messages) if messages is not None else None
    while True:
        if scripted is not None:
            if not scripted:
                return
            text = scripted.pop(0)
            console.print(f"[bold green]you[/]: {text}")
        else:
            try:
                text = await asyncio.to_thread(Prompt.ask, "[bold green]you[/]", console=console)
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if text.strip() in {"/exit", "/quit"}:
                return
            if not text.strip():
                continue
        try:
            await _render_reply(agent, console, Msg(role="user", name="user", content=text))
        except KeyboardInterrupt:
            agent.interrupt()


async def _render_reply(agent: AgentBase, console: Console, msg: Any) -> None:
    from rich.markup import escape

    from agentscope.events import ReplyEvent, TextDelta, ThinkingDelta, ToolCallEvent, ToolResultEvent

    streamed_text = False
    async for event in agent.stream(msg):
        if isinstance(event, TextDelta):
            if not streamed_text:
                console.print(f"[bold cyan]{escape(event.agent or agent.name)}[/]: ", end="")
                streamed_text = True
            console.print(escape(event.text), end="", highlight=False)
        elif isinstance(event, ThinkingDelta):
            console.print(f"[dim italic]{escape(event.thinking)}[/]", end="")
        elif isinstance(event, ToolCallEvent):
            if streamed_text:
                console.print()
                streamed_text = False
            args = ", ".join(f"{k}={v!r}" for k, v in event.call.input.items())
            console.print(f"  [yellow]→ {escape(event.call.name)}({escape(args)})[/]")
        elif isinstance(event, ToolResultEvent):
            output = event.result.output if isinstance(event.result.output, str) else "[non-text output]"
            style = "red" if event.result.is_error else "dim"
            console.print(f"  [{style}]← {escape(output[:500])}[/]")
        elif isinstance(event, ReplyEvent):
            if streamed_text:
                console.print()
            else:
                console.print(f"[bold cyan]{escape(agent.name)}[/]: {escape(event.msg.text)}")


# ---------------------------------------------------------------------- agentscope mcp

mcp_app = typer.Typer(
    name="mcp",
    help="Model Context Protocol: serve a Toolkit as an MCP server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(mcp_app, name="mcp")


@mcp_app.command("serve")
def mcp_serve(
    toolkit_spec: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:TOOLKIT",
            help="The toolkit: MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE; a Toolkit, or a function returning one.",
        ),
    ],
    transport: Annotated[
        str, typer.Option("--transport", "-t", help="stdio (for Claude Desktop and the like) or http.")
    ] = "stdio",
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to listen on (http); anything but loopback needs --token."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (http); 0 picks a free one.")] = 8000,
    path: Annotated[str, typer.Option("--path", help="URL path of the MCP endpoint (http).")] = "/mcp",
    name: Annotated[str, typer.Option("--name", help="The server name clients see.")] = "agentscope",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="AGENTSCOPE_MCP_TOKEN",
            help="Require 'Authorization: Bearer <token>' on every request (http; 16+ characters).",
        ),
    ] = None,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help=(
                "Another name clients reach the server by (Host header: mcp.internal for any port, "
                "mcp.internal:8000 for one; repeatable). Others get 421."
            ),
        ),
    ] = None,
) -> None:
    """Serve a Toolkit's tools over MCP (stdio or streamable HTTP) until interrupted."""
    if transport not in ("stdio", "http"):
        raise typer.BadParameter(f"use stdio or http, got {transport!r}", param_hint="--transport")
    if ":" not in toolkit_spec:
        raise typer.BadParameter(
            f"expected MODULE:TOOLKIT, got {toolkit_spec!r}", param_hint="MODULE:TOOLKIT"
        )
    from contextlib import suppress

    if transport == "http":
        from agentscope.exceptions import UsageError
        from agentscope.tools._mcp_server import check_mcp_binding, parse_host_entry

        try:
            check_mcp_binding(host, token)
        except UsageError as exc:
            raise typer.BadParameter(str(exc), param_hint="--host") from None
        try:
            for entry in allowed_hosts or ():
                parse_host_entry(entry)
        except UsageError as exc:
            raise typer.BadParameter(str(exc), param_hint="--allowed-host") from None
    with suppress(KeyboardInterrupt):
        asyncio.run(
            _mcp_serve(toolkit_spec, transport, host, port, path, name, token, tuple(allowed_hosts or ()))
        )


async def _mcp_serve(
    spec: str,
    transport: str,
    host: str,
    port: int,
    path: str,
    name: str,
    token: str | None = None,
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    from contextlib import redirect_stdout

    import anyio

    from agentscope.tools import Toolkit, serve_mcp

    # Over stdio, stdout carries the protocol: whatever user code prints while loading goes to stderr.
    with redirect_stdout(sys.stderr if transport == "stdio" else sys.stdout):
        obj = await anyio.to_thread.run_sync(_load_object, spec)  # importing user code reads files
    if not isinstance(obj, Toolkit) and callable(obj):
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
    if not isinstance(obj, Toolkit):
        raise typer.BadParameter(
            f"{spec} is {type(obj).__name__}, not a Toolkit (or a function returning one)",
            param_hint="MODULE:TOOLKIT",
        )
    await serve_mcp(
        obj,
        transport="http" if transport == "http" else "stdio",
        host=host,
        port=port,
        path=path,
        name=name,
        token=token,
        allowed_hosts=allowed_hosts,
    )


# ---------------------------------------------------------------------- agentscope studio


@app.command()
def studio(
    store: Annotated[Path, typer.Option("--store", help="Trace store file (SQLite) to show.")] = Path(
        ".agentscope/traces.db"
    ),
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="AGENTSCOPE_STUDIO_TOKEN", help="Require this token (the UI asks for it)."
        ),
    ] = None,
) -> None:
    """Open the web studio over a trace store: runs, trace trees, conversations, metrics, live."""
    from rich.console import Console

    from agentscope.exceptions import UsageError
    from agentscope.studio import check_binding, serve, studio_url

    try:
        check_binding(host, token)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--host") from None
    console = Console()
    console.print(
        f"[bold]AgentScope Studio[/] on {studio_url(host, port, token)}  (store: {store}; Ctrl-C stops)"
    )
    serve(store, host=host, port=port, token=token)


# ---------------------------------------------------------------------- agentscope sandbox

sandbox_app = typer.Typer(
    name="sandbox",
    help="Sandboxes for model-written code: build the Docker image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build-image")
def sandbox_build_image(
    tag: Annotated[
        str, typer.Option("--tag", help="Tag of the image to build.")
    ] = "agentscope-sandbox:latest",
    force: Annotated[
        bool, typer.Option("--force", help="Build even when an up-to-date image exists.")
    ] = False,
) -> None:
    """Build the Docker sandbox image offline from this host's Python and tools (docker import; no registry)."""
    from agentscope.exceptions import SandboxError
    from agentscope.sandbox._image import build_image

    try:
        built = build_image(tag, force=force)
    except SandboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if built.built:
        typer.echo(
            f"built {built.tag} ({built.image_id[:19]}): {built.files} files, {built.size_bytes >> 20} MiB"
        )
    else:
        typer.echo(f"{built.tag} is up to date ({built.image_id[:19]})")
    if built.notes:
        typer.echo(f"note: not on this host, so not in the image: {', '.join(built.notes)}", err=True)


@sandbox_app.command("register-gvisor")
def sandbox_register_gvisor(
    runsc: Annotated[
        str | None, typer.Option("--runsc", help="Path of runsc (default: found on PATH).")
    ] = None,
    daemon_json: Annotated[Path, typer.Option("--daemon-json", help="dockerd's configuration file.")] = Path(
        "/etc/docker/daemon.json"
    ),
) -> None:
    """Register gVisor's runsc with dockerd as the "runsc" runtime, with --network=none (sandboxes have no
    network; current kernels refuse runsc's network set-up). Updates a registration that lacks the flag; prints
    "changed" (reload dockerd: kill -HUP its pid) or "unchanged"."""
    import shutil

    from agentscope.sandbox._gvisor import register_gvisor_runtime

    path = runsc or shutil.which("runsc")
    if path is None:
        typer.echo("error: runsc not found (apt-get install runsc)", err=True)
        raise typer.Exit(1)
    try:
        changed = register_gvisor_runtime(path, daemon_json=daemon_json)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("changed" if changed else "unchanged")


# ---------------------------------------------------------------------- agentscope rl (train, eval, export)

from agentscope.rl._cli import rl_app  # noqa: E402 - kept beside the other groups

app.add_typer(rl_app, name="rl")


if __name__ == "__main__":
    main()
