"""The ``agentscope`` command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentscope._commands import ApiKeyOption, BaseUrlOption, ModelOption, command_group
from agentscope.evaluation.cli import eval_command
from agentscope.rl.cli import rl_app
from agentscope.sandbox.cli import sandbox_app
from agentscope.service.cli import serve_command
from agentscope.tools.cli import mcp_app

if TYPE_CHECKING:
    from rich.console import Console

    from agentscope.agents import AgentBase, AgentFactory
    from agentscope.models import ChatModel

app = command_group("agentscope", "Build, run, trace, serve and train LLM agents.")

__all__ = ["app", "load_agent", "main", "make_model"]


def main() -> None:
    """Entry point of the ``agentscope`` console script."""
    app()


@app.callback()
def _root() -> None:
    """Build, run, trace, serve and train LLM agents."""


# ---------------------------------------------------------------------- loading agents and models


def _load_factory(spec: str) -> AgentFactory:
    """The agent factory ``spec`` names (see :mod:`agentscope.agents`), or the error a user reads."""
    from agentscope.agents import load_agent_factory
    from agentscope.exceptions import UsageError

    try:
        return load_agent_factory(spec)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="AGENT_SPEC") from None


async def load_agent(spec: str, model: ChatModel | None = None) -> AgentBase:
    """Build the agent named by the agent spec ``spec`` (``FILE.py[:NAME]`` or ``MODULE:NAME``): its factory is
    called with ``model=`` when a model is given (``--model``), else with its own defaults."""
    import anyio

    from agentscope.agents import build_agent, takes_argument
    from agentscope.exceptions import UsageError

    factory = await anyio.to_thread.run_sync(_load_factory, spec)  # importing user code reads files
    if model is not None and not takes_argument(factory, "model"):
        raise typer.BadParameter(
            f"{spec} takes no model= argument, so --model cannot replace its model", param_hint="--model"
        )
    try:
        return await build_agent(factory, **({} if model is None else {"model": model}))
    except UsageError as exc:
        hint = " (--model PROVIDER:MODEL gives model=)" if model is None and "'model'" in str(exc) else ""
        raise typer.BadParameter(f"{exc}{hint}", param_hint="AGENT_SPEC") from None


def make_model(spec: str, *, base_url: str | None = None, api_key: str | None = None) -> ChatModel:
    """Build a model from ``provider:model-name`` (``openai:...``, ``anthropic:...``; see
    :func:`agentscope.models.model_from_spec`), or the error a user reads."""
    from agentscope.exceptions import UsageError
    from agentscope.models import model_from_spec

    try:
        return model_from_spec(spec, base_url=base_url, api_key=api_key)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None


# ---------------------------------------------------------------------- agentscope run


@app.command()
def run(
    agent_spec: Annotated[
        str,
        typer.Argument(
            metavar="AGENT_SPEC",
            help="The agent spec: FILE.py[:NAME] (default NAME: build_agent) or MODULE:NAME, a function "
            "returning a fresh agent; it gets model= when --model is given.",
        ),
    ],
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
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


# ---------------------------------------------------------------------- the parts' command groups

app.add_typer(mcp_app, name="mcp")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(rl_app, name="rl")
app.command("serve")(serve_command)
app.command("eval")(eval_command)


if __name__ == "__main__":
    main()
