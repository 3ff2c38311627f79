"""A calculator agent: a ReActAgent with arithmetic tools.

Run it offline (a rule-based stand-in plays the model):

    agentscope run examples/calculator.py -m "What is 12 * 7?"

or against any OpenAI-compatible server:

    agentscope run examples/calculator.py --model openai:MODEL --base-url http://127.0.0.1:8000/v1

``build_agent`` is an agent factory (the agent spec ``examples/calculator.py`` means it): every command calls it
with the arguments it declares. ``run`` passes ``model=`` when ``--model`` is given; ``rl train`` with
``agent.factory: examples/calculator.py:build_agent`` passes the policy as ``model=`` and the environment's tools as
``toolkit=``, so the same agent is trained unchanged.
"""

from __future__ import annotations

import re

from agentscope.agents import ReActAgent
from agentscope.message import Msg, ToolResultBlock
from agentscope.models import ChatModel
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit


def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a * b


def divide(a: float, b: float) -> float:
    """Divide a by b.

    Args:
        a: The dividend.
        b: The divisor (not zero).
    """
    if b == 0:
        raise ValueError("cannot divide by zero")
    return a / b


_OPERATORS = {"+": "add", "*": "multiply", "x": "multiply", "/": "divide"}


def rule_based_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """An offline stand-in for an LLM: parses ``a op b`` and calls the matching tool, then reports the result."""
    last = messages[-1]
    results = last.blocks_of(ToolResultBlock)
    if results:
        result = results[0]
        return (
            f"Sorry, that failed: {result.output}" if result.is_error else f"The result is {result.output}."
        )
    match = re.search(r"(-?\d+(?:\.\d+)?)\s*([+*x/])\s*(-?\d+(?:\.\d+)?)", last.text)
    if match is None:
        return "Give me an expression such as 12 * 7 and I will compute it."
    a, op, b = match.groups()
    return tool_call(_OPERATORS[op], a=float(a), b=float(b))


def build_agent(model: ChatModel | None = None, toolkit: Toolkit | None = None) -> ReActAgent:
    """The calculator agent: a fresh one each call (the agent spec ``examples/calculator.py`` names this factory).

    Args:
        model: The model (``agentscope run --model``, the policy being trained); by default the offline
            rule-based stand-in.
        toolkit: The tools (an RL environment's, when training); by default this file's add, multiply and divide.
    """
    if toolkit is None:
        toolkit = Toolkit()
        for tool in (add, multiply, divide):
            toolkit.register(tool)
    return ReActAgent(
        name="calculator",
        sys_prompt="You are a careful calculator. Use the tools for every computation, then state the result.",
        model=model or FunctionModel(rule_based_model, model_name="rule-based"),
        toolkit=toolkit,
        max_iters=5,
    )
