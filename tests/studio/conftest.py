"""A trace store filled by real agent runs, for the studio's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import agentscope
from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def lookup_rate(city: str) -> float:
    """Look up the sales tax rate of a city.

    Args:
        city: The city.
    """
    raise KeyError(f"no tax rate on file for {city}")


def calculator_toolkit() -> Toolkit:
    toolkit = Toolkit()
    toolkit.register(add)
    toolkit.register(lookup_rate)
    return toolkit


def calculator_model(
    final: str = "2 + 3 = 5, and 5 + 10 = 15. I could not find the Paris rate.",
) -> ScriptedModel:
    usage = ChatUsage(input_tokens=120, output_tokens=18)
    return ScriptedModel(
        [
            ChatResponse(
                content=[
                    TextBlock(text="I will add the numbers and look the rate up."),
                    tool_call("add", a=2, b=3),
                    tool_call("lookup_rate", city="Paris"),
                ],
                usage=usage,
                finish_reason="tool_calls",
            ),
            ChatResponse(content=[tool_call("add", a=5, b=10)], usage=usage, finish_reason="tool_calls"),
            ChatResponse(content=[TextBlock(text=final)], usage=usage, finish_reason="stop"),
        ]
    )


QUESTION = "What is 2 + 3, plus 10? And what is the sales tax rate in Paris?"


async def run_calculator(final: str = "2 + 3 = 5, and 5 + 10 = 15. I could not find the Paris rate.") -> Msg:
    """One ReActAgent conversation with parallel tool calls, a failing tool and a final answer."""
    agent = ReActAgent(
        "calculator",
        "You are a careful calculator. Use the tools for every step.",
        calculator_model(final),
        toolkit=calculator_toolkit(),
    )
    return await agent(Msg(role="user", name="user", content=QUESTION))


@dataclass
class Populated:
    path: Path
    calc_run: str
    rl_run: str


def populate(path: Path) -> Populated:
    """Two runs: an agent run (project demo) and an RL-like run with metrics (project rl)."""
    tracer = agentscope.init(path, project="demo", run_name="calculator")
    assert tracer is not None
    asyncio.run(run_calculator())
    tracing.shutdown()
    rl = agentscope.init(path, project="rl", run_name="grpo-tiny", config={"algorithm": "grpo"})
    assert rl is not None
    for step in range(40):
        tracing.log_metrics(
            {"train/policy_loss": 1.0 / (step + 1), "rollout/tokens_per_s": 900.0 + 10 * step}, step=step
        )
        with tracing.span(f"episode {step}", "env", {"agentscope.reward": step % 2}):
            pass
    tracing.shutdown()
    return Populated(path, tracer.run.id, rl.run.id)


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    return populate(tmp_path_factory.mktemp("studio") / "traces.db")


@dataclass
class Helpers:
    """The helpers above, for test modules (importlib mode: tests cannot import conftest)."""

    populate: Any
    run_calculator: Any
    question: str


@pytest.fixture(scope="session")
def helpers() -> Helpers:
    return Helpers(populate=populate, run_calculator=run_calculator, question=QUESTION)
