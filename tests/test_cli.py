"""The `agentscope run` command, driven as a user would: a subprocess with a terminal-less stdin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from agentscope.agents import ReActAgent
from agentscope.cli import load_agent, make_model
from agentscope.testing import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentscope.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )


@pytest.mark.integration
def test_run_one_shot_messages_with_tool_calls() -> None:
    result = run_cli("run", "examples/calculator.py", "-m", "What is 12 * 7?", "-m", "and 10 / 0?")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "multiply(a=12.0, b=7.0)" in out
    assert "The result is 84.0." in out
    assert "cannot divide by zero" in out


@pytest.mark.integration
def test_run_interactive_reads_stdin_until_exit() -> None:
    result = run_cli("run", "examples/calculator.py:build_agent", stdin="3 + 4\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert "The result is 7.0." in result.stdout


@pytest.mark.integration
def test_run_reports_a_bad_spec_clearly() -> None:
    result = run_cli("run", "examples/nope.py")
    assert result.returncode != 0
    assert "no such file" in result.stderr
    result = run_cli("run", "examples/calculator.py", "--model", "gpt-4")
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
