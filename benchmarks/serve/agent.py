"""The agent the serve benchmark serves: ``agentscope serve benchmarks/serve/agent.py``.

A ``ReActAgent`` whose in-process scripted model asks for one call to ``add(a=1, b=2)``, then answers
``The answer is 3.``: one tool round per request, no model latency, so the server's own cost is what is measured.

The model is a plain ``ChatModel`` subclass rather than ``agentscope.testing.FunctionModel`` (which records every
request for assertions) and is shared by all agents (it keeps no state); the factory returns a fresh agent per
request, as ``agentscope serve`` expects.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatModel, ChatResponse
from agentscope.tools import Toolkit

SYSTEM_PROMPT = "You are a calculator. Use the add tool for every sum, then state the result."
FINAL_TEXT = "The answer is 3."


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    return a + b


class ScriptedModel(ChatModel):
    """Calls ``add(1, 2)`` until the conversation holds a tool result, then answers :data:`FINAL_TEXT`."""

    model_name = "scripted"

    def __init__(self) -> None:
        self._calls = 0

    async def generate(self, messages: Sequence[Msg], **_: object) -> ChatResponse:  # type: ignore[override]
        if messages[-1].blocks_of(ToolResultBlock):
            return ChatResponse(content=[TextBlock(text=FINAL_TEXT)], finish_reason="stop")
        self._calls += 1
        call = ToolUseBlock(id=f"call_{self._calls}", name="add", input={"a": 1, "b": 2})
        return ChatResponse(content=[call], finish_reason="tool_calls")


_MODEL = ScriptedModel()
_TOOLKIT = Toolkit()
_TOOLKIT.register(add)


def build_agent() -> ReActAgent:
    """A fresh agent per request (its memory is its own); the model and the toolkit are shared."""
    return ReActAgent(name="bench", sys_prompt=SYSTEM_PROMPT, model=_MODEL, toolkit=_TOOLKIT, max_iters=3)
