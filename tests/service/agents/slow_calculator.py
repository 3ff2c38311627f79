"""examples/calculator.py's agent, slowed down: each model call takes ``SLOW_CALCULATOR_S`` seconds (environment
variable, default 1) so that tests can act while requests are in flight."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path

from agentscope.agents import ReActAgent
from agentscope.message import Msg
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem

SLOW_S = float(os.environ.get("SLOW_CALCULATOR_S", "1.0"))

_spec = importlib.util.spec_from_file_location(
    "calculator_example", Path(__file__).parents[3] / "examples" / "calculator.py"
)
assert _spec is not None
assert _spec.loader is not None
calculator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calculator)


async def slow_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    probe = os.environ.get("SLOW_CALCULATOR_PROBE")
    if probe:  # what the agent's process can see: its pid and any API keys left in its environment
        with open(probe, "a", encoding="utf-8") as out:  # noqa: ASYNC230 - a test probe, a few bytes
            out.write(f"{os.getpid()} {os.environ.get('AGENTSCOPE_API_KEYS')!r}\n")
    await asyncio.sleep(SLOW_S)
    return calculator.rule_based_model(messages, request)


def build_agent() -> ReActAgent:
    agent = calculator.build_agent(model=FunctionModel(slow_model, model_name="slow-rule-based"))
    assert isinstance(agent, ReActAgent)
    return agent
