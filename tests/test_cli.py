"""The `agentscope run` command, driven as a user would: a subprocess with a terminal-less stdin."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import typer

from agentscope.agents import ReActAgent
from agentscope.cli import load_agent, make_model
from agentscope.message import ToolUseBlock
from agentscope.models import ChatResponse
from agentscope.testing import OpenAICompatServer, ScriptedModel

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("allow_model_requests")


@pytest.mark.integration
def test_run_one_shot_messages_with_tool_calls(
    cli_process: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = cli_process("run", "examples/calculator.py", "-m", "What is 12 * 7?", "-m", "and 10 / 0?")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "multiply(a=12.0, b=7.0)" in out
    assert "The result is 84.0." in out
    assert "cannot divide by zero" in out


@pytest.mark.integration
def test_run_interactive_reads_stdin_until_exit(
    cli_process: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = cli_process("run", "examples/calculator.py:build_agent", stdin="3 + 4\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert "The result is 7.0." in result.stdout


@pytest.mark.integration
def test_run_reports_a_bad_spec_clearly(cli_process: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = cli_process("run", "examples/nope.py")
    assert result.returncode != 0
    assert "no such file" in result.stderr
    result = cli_process("run", "examples/calculator.py", "--model", "gpt-4")
    assert result.returncode != 0
    assert "PROVIDER:MODEL" in result.stderr


async def test_load_agent_accepts_instances_and_factories(tmp_path: Path) -> None:
    module = tmp_path / "my_agents.py"
    module.write_text(
        "from agentscope.agents import ReActAgent\n"
        "from agentscope.testing import ScriptedModel\n"
        "agent = ReActAgent(name='inst', model=ScriptedModel(['hi']))\n"
        "async def make(model=None):\n"
        "    return ReActAgent(name='made', model=model or ScriptedModel(['x']))\n"
        "not_an_agent = 3\n"
    )
    assert (await load_agent(str(module))).name == "inst"
    replacement = ScriptedModel(["replaced"])
    made = await load_agent(f"{module}:make", replacement)
    assert isinstance(made, ReActAgent)
    assert made.model is replacement
    with pytest.raises(typer.BadParameter, match="neither an agent"):
        await load_agent(f"{module}:not_an_agent")
    with pytest.raises(typer.BadParameter, match="no attribute"):
        await load_agent(f"{module}:missing")
    with pytest.raises(typer.BadParameter, match="MODULE:ATTRIBUTE"):
        await load_agent("json")


def test_make_model_rejects_unknown_providers() -> None:
    with pytest.raises(typer.BadParameter, match="unknown provider"):
        make_model("cohere:command")


@pytest.mark.integration
async def test_run_against_a_local_openai_compatible_server(
    cli_process: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    def play_calculator(body: dict[str, Any]) -> Any:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return f"The product is {last['content']}."
        assert [t["function"]["name"] for t in body["tools"]] == ["add", "multiply", "divide"]
        return ChatResponse(content=[ToolUseBlock(id="call_1", name="multiply", input={"a": 6, "b": 7})])

    async with OpenAICompatServer(play_calculator) as server:
        result = await anyio.to_thread.run_sync(
            lambda: cli_process(
                "run",
                "examples/calculator.py",
                "--model",
                "openai:local",
                "--base-url",
                server.base_url,
                "-m",
                "What is 6 * 7?",
                env={"OPENAI_API_KEY": "sk-local-test"},
            )
        )
    assert result.returncode == 0, result.stderr
    assert "multiply(a=6, b=7)" in result.stdout
    assert "The product is 42.0." in result.stdout
    assert len(server.requests) == 2
    assert server.requests[0].headers["authorization"] == "Bearer sk-local-test"
    assert "sk-local-test" not in result.stdout + result.stderr
