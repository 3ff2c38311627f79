"""The peer: the same agent served by agentscope-runtime's ``AgentApp`` (its own venv, ``.venvs/agentscope_runtime``).

agentscope-runtime 1.1.6.post2 serves an agent behind ``@app.query(framework="agentscope")``; its agentscope adapter
reads AgentScope 1.0 messages, so the agent is an AgentScope 1.0.21 ``ReActAgent`` (fresh per request, console
output off, as the runtime's examples build it) with a scripted in-process model that asks for ``add(1, 2)`` once
and then answers ``The answer is 3.``, and the same ``add`` tool. ``app.run`` is the runtime's documented server
(uvicorn, its access log on). The benchmark calls the OpenAI Responses API it mounts at
``/compatible-mode/v1/responses`` with ``stream: false`` (the runtime has no Chat Completions endpoint; its native
``/process`` endpoint streams server-sent events only).

    .venvs/agentscope_runtime/bin/python benchmarks/serve/peer_runtime.py --port 8001
"""

# ruff: noqa: I001  (this "agentscope" is AgentScope 1.0.21 from the peer venv, not the first-party package)
from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from agentscope.agent import ReActAgent
from agentscope.formatter import OpenAIChatFormatter
from agentscope.memory import InMemoryMemory
from agentscope.message import TextBlock, ToolUseBlock
from agentscope.model import ChatModelBase, ChatResponse
from agentscope.pipeline import stream_printing_messages
from agentscope.tool import Toolkit, ToolResponse
from agentscope_runtime.engine import AgentApp
from agentscope_runtime.engine.schemas.agent_schemas import AgentRequest

SYSTEM_PROMPT = "You are a calculator. Use the add tool for every sum, then state the result."
FINAL_TEXT = "The answer is 3."


def add(a: int, b: int) -> ToolResponse:
    """Add two integers.

    Args:
        a (int): The first integer.
        b (int): The second integer.
    """
    return ToolResponse(content=[TextBlock(type="text", text=str(a + b))])


class ScriptedModel(ChatModelBase):
    """Calls ``add(1, 2)`` until the formatted conversation holds a tool result, then answers FINAL_TEXT."""

    def __init__(self) -> None:
        super().__init__("scripted", stream=False)
        self._calls = 0

    async def __call__(self, messages: list[dict[str, Any]], *_: Any, **__: Any) -> ChatResponse:
        if messages and messages[-1].get("role") == "tool":
            return ChatResponse(content=[TextBlock(type="text", text=FINAL_TEXT)])
        self._calls += 1
        call = ToolUseBlock(type="tool_use", id=f"call_{self._calls}", name="add", input={"a": 1, "b": 2})
        return ChatResponse(content=[call])


MODEL = ScriptedModel()
TOOLKIT = Toolkit()
TOOLKIT.register_tool_function(add)

app = AgentApp(app_name="bench", app_description="serve benchmark agent")


@app.query(framework="agentscope")
async def query(
    self: Any, msgs: Any, request: AgentRequest | None = None, **kwargs: Any
) -> AsyncIterator[Any]:
    agent = ReActAgent(
        name="bench",
        sys_prompt=SYSTEM_PROMPT,
        model=MODEL,
        formatter=OpenAIChatFormatter(),
        toolkit=TOOLKIT,
        memory=InMemoryMemory(),
        max_iters=3,
    )
    agent.set_console_output_enabled(enabled=False)
    async for msg, last in stream_printing_messages(agents=[agent], coroutine_task=agent(msgs)):
        yield msg, last


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    app.run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
