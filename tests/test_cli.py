"""The `agentscope run` command, driven as a user would: a subprocess with a terminal-less stdin."""

from __future__ import annotations

import subprocess
import sys
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


async def test_load_agent_calls_the_factory_with_the_model_only_when_one_is_given(tmp_path: Path) -> None:
    module = tmp_path / "my_agents.py"
    module.write_text(
        "from agentscope.agents import ReActAgent\n"
        "from agentscope.testing import ScriptedModel\n"
        "agent = ReActAgent(name='inst', model=ScriptedModel(['hi']))\n"
        "async def build_agent(model=None):\n"
        "    return ReActAgent(name='made', model=model or ScriptedModel(['x']))\n"
        "def fixed():\n"
        "    return ReActAgent(name='fixed', model=ScriptedModel(['x']))\n"
        "def needs_model(model):\n"
        "    return ReActAgent(name='needs', model=model)\n"
        "not_an_agent = 3\n"
    )
    default = await load_agent(str(module))  # the file's build_agent, with its own default model
    assert isinstance(default, ReActAgent)
    assert default.name == "made"
    assert isinstance(default.model, ScriptedModel)
    replacement = ScriptedModel(["replaced"])
    made = await load_agent(str(module), replacement)
    assert isinstance(made, ReActAgent)
    assert made.model is replacement
    assert (await load_agent(f"{module}:fixed")).name == "fixed"
    with pytest.raises(typer.BadParameter, match="takes no model= argument") as caught:
        await load_agent(f"{module}:fixed", replacement)  # --model would be silently dropped otherwise
    assert caught.value.param_hint == "--model"
    with pytest.raises(
        typer.BadParameter, match=r"requires 'model'.*\(--model PROVIDER:MODEL gives model=\)"
    ):
        await load_agent(f"{module}:needs_model")
    with pytest.raises(
        typer.BadParameter, match=r"agent instance \(ReActAgent\), not a factory.*def build_agent"
    ):
        await load_agent(f"{module}:agent")
    with pytest.raises(typer.BadParameter, match="not an agent factory") as caught:
        await load_agent(f"{module}:not_an_agent")
    assert caught.value.param_hint == "AGENT_SPEC"
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


# ---------------------------------------------------------------------- the parts' command groups

LIGHT_HELP_PROBE = """
import sys
from typer.testing import CliRunner
from agentscope.cli import app

for args in ([], ["mcp"], ["sandbox"], ["rl"]):
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, (args, result.output)
heavy = ("mcp", "torch", "docker", "playwright", "transformers", "verl", "ray")
print(sorted({m for m in sys.modules if m.split(".")[0] in heavy}))
print(sorted(m for m in sys.modules if m in ("agentscope.tools._mcp_server", "agentscope.sandbox._image")))
"""


def test_help_of_every_group_lists_its_commands(cli: Callable[..., Any]) -> None:
    groups = {
        (): ["run", "studio", "mcp", "sandbox", "rl"],
        ("mcp",): ["serve"],
        ("sandbox",): ["build-image", "register-gvisor"],
        ("rl",): ["train", "sft", "eval", "export"],
    }
    for args, commands in groups.items():
        result = cli(*args, "--help")
        assert result.exit_code == 0, result.output
        missing = [c for c in commands if f" {c} " not in result.output]
        assert missing == [], f"agentscope {' '.join(args)} --help lacks {missing}"


def test_help_loads_no_command_s_heavy_dependencies() -> None:
    # The groups live in the parts' public cli modules; their commands import the MCP SDK, torch, Docker... when
    # they run, so that `agentscope --help` (and every group's) stays light.
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_HELP_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "[]"]


def test_mcp_serve_names_the_toolkit_spec_when_it_cannot_load_it(cli: Callable[..., Any]) -> None:
    result = cli("mcp", "serve", "agentscope_no_such_module:toolkit")
    assert result.exit_code == 2
    assert "Invalid value for MODULE:TOOLKIT: cannot import 'agentscope_no_such_module'" in result.output
    # A file named without its attribute is not read as an agent spec (whose default is `agent`).
    result = cli("mcp", "serve", "tests/mcp/servers/toolkit_app.py:")
    assert result.exit_code == 2
    assert "expected MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE" in result.output
