"""An agent file for the evaluation tests: a ReActAgent whose model is a Python function that solves ``arith``
tasks with the environment's calculator, except that it answers every subtraction one too high (so success is
strictly between 0 and 1, and the same tasks fail every time); ``build_product_bug`` gets the products wrong
instead (a second agent to compare with: it fixes the subtractions and breaks the products).

``EVAL_TEST_DELAY_S`` makes each model call wait that long (the kill-and-resume test needs a slow evaluation);
``EVAL_TEST_PLAYED`` names a file to which each episode appends its process id and question when it starts (which
episodes a process played); ``EVAL_TEST_CRASH_ON`` makes the process playing a question that holds that text
die at once (``os._exit``: a crashed Ray worker).
"""

from __future__ import annotations

import os
import re

import anyio

from agentscope.agents import ReActAgent
from agentscope.message import Msg, ToolResultBlock
from agentscope.models import ChatModel, ChatResponse, ChatUsage
from agentscope.testing import FunctionModel, ModelRequest, to_response, tool_call
from agentscope.tools import Toolkit

_QUESTION = re.compile(r"What is (.+?)\? Use the calculator")


def _record(question: str) -> None:
    played = os.environ.get("EVAL_TEST_PLAYED")
    if played:
        with open(played, "a", encoding="utf-8") as file:
            file.write(f"{os.getpid()} {question}\n")


async def solve(messages: list[Msg], request: ModelRequest, wrong: str = " - ") -> ChatResponse:
    question = next(m.text for m in messages if m.role == "user")
    expression = (found.group(1) if (found := _QUESTION.search(question)) else question).strip()
    results = [b for m in messages for b in m.blocks_of(ToolResultBlock)]
    if not results:
        await anyio.to_thread.run_sync(_record, expression)
        crash_on = os.environ.get("EVAL_TEST_CRASH_ON")
        if crash_on and crash_on in expression:
            os._exit(70)
    delay = float(os.environ.get("EVAL_TEST_DELAY_S", "0"))
    if delay:
        await anyio.sleep(delay)
    if not results:
        step = to_response(tool_call("calculator", expression=expression))
    else:
        value = float(str(results[-1].output))
        if wrong in expression:
            value += 1  # the deliberate mistake
        step = to_response(f"The answer is {value:g}.")
    return step.model_copy(update={"usage": ChatUsage(input_tokens=100, output_tokens=10)})


def build_agent(model: ChatModel | None = None, toolkit: Toolkit | None = None) -> ReActAgent:
    return ReActAgent(
        "arith-solver",
        "Use the calculator, then answer with the number.",
        model or FunctionModel(solve, model_name="arith-solver"),
        toolkit=toolkit or Toolkit(),
        max_iters=4,
    )


def build_product_bug(model: ChatModel | None = None, toolkit: Toolkit | None = None) -> ReActAgent:
    async def solve_sums(messages: list[Msg], request: ModelRequest) -> ChatResponse:
        return await solve(messages, request, wrong=" * ")

    return ReActAgent(
        "arith-solver",
        "Use the calculator, then answer with the number.",
        model or FunctionModel(solve_sums, model_name="arith-solver"),
        toolkit=toolkit or Toolkit(),
        max_iters=4,
    )
