"""Our AgentScope (this repository, the project's ``.venv``).

One ``ReActAgent`` per conversation (agents hold their memory); one ``Toolkit`` and one model shared by all. The
toolkit runs sync tools in its tool threads (``agentscope.tools.tool_threads``; before 2026-12-06, anyio's); ``--inline-tool`` registers ``add`` with ``inline=True`` (it runs
on the event loop, as AgentScope 2.0.11 runs every sync tool).

- inproc: a ``ChatModel`` subclass whose ``generate`` answers like the HTTP server (counts tool results). A plain
  subclass rather than ``agentscope.testing.FunctionModel``, because the test doubles record every request (by
  design, for assertions), which over 12,000 calls would measure the recording, not the agent. Pass
  ``--function-model`` to use ``FunctionModel`` instead.
- http: ``OpenAIChatModel`` (our httpx2 client, ``max_retries=0``) pointed at the local server.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

USE_FUNCTION_MODEL = "--function-model" in sys.argv
if USE_FUNCTION_MODEL:
    sys.argv.remove("--function-model")
INLINE_TOOL = "--inline-tool" in sys.argv
if INLINE_TOOL:
    sys.argv.remove("--inline-tool")


def _imports() -> Any:
    import agentscope
    from agentscope.agents import ReActAgent
    from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
    from agentscope.models import ChatModel, ChatResponse, OpenAIChatModel
    from agentscope.testing import FunctionModel
    from agentscope.tools import Toolkit

    return (
        agentscope,
        ReActAgent,
        Msg,
        TextBlock,
        ToolResultBlock,
        ToolUseBlock,
        ChatModel,
        ChatResponse,
        OpenAIChatModel,
        FunctionModel,
        Toolkit,
    )


(
    (
        agentscope,
        ReActAgent,
        Msg,
        TextBlock,
        ToolResultBlock,
        ToolUseBlock,
        ChatModel,
        ChatResponse,
        OpenAIChatModel,
        FunctionModel,
        Toolkit,
    ),
    IMPORT_S,
) = c.timed_import(_imports)


def _tool_results(messages: Sequence[Any]) -> int:
    return sum(
        1
        for m in messages
        if not isinstance(m.content, str)
        for b in m.content
        if isinstance(b, ToolResultBlock)
    )


class _Responder:
    """Answers like the benchmark server: a call to ``add`` until ``k`` tool results, then the final text."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.calls = 0

    def __call__(self, messages: Sequence[Any], *_: Any) -> Any:
        c.count_model_call()
        self.calls += 1
        if c.decide(_tool_results(messages), self.k):
            call = ToolUseBlock(id=f"call_{self.calls}", name="add", input={"a": 1, "b": 2})
            return ChatResponse(content=[call], finish_reason="tool_calls")
        return ChatResponse(content=[TextBlock(text=c.FINAL_TEXT)], finish_reason="stop")


class ScriptedModel(ChatModel):  # type: ignore[misc, valid-type]
    """A bare ``ChatModel`` that plays the server in process."""

    model_name = "scripted"

    def __init__(self, k: int) -> None:
        self._respond = _Responder(k)

    async def generate(self, messages: Sequence[Any], **_: Any) -> Any:
        return self._respond(messages)


async def setup(
    args: c.Args,
) -> tuple[Callable[[int], Awaitable[c.AgentResult]], Callable[[], Awaitable[None]]]:
    if args.mode == "inproc":
        if USE_FUNCTION_MODEL:
            model: Any = FunctionModel(_Responder(args.k))
        else:
            model = ScriptedModel(args.k)
    else:
        model = OpenAIChatModel(
            model="bench", base_url=args.base_url, api_key="sk-bench", max_retries=0, timeout_s=120.0
        )

    toolkit = Toolkit()
    toolkit.register(c.add, inline=INLINE_TOOL)

    async def run_one(i: int) -> c.AgentResult:
        agent = ReActAgent(
            name=f"agent{i}", sys_prompt=c.SYSTEM_PROMPT, model=model, toolkit=toolkit, max_iters=args.k + 2
        )
        reply = await agent(Msg(role="user", content=c.USER_PROMPT))
        return c.AgentResult(final_text=reply.text)

    return run_one, model.aclose


if __name__ == "__main__":
    c.main(
        "agentscope (ours)",
        setup,
        version=f"agentscope {agentscope.__version__} (this repo)",
        import_s=IMPORT_S,
        notes=("FunctionModel; " if USE_FUNCTION_MODEL else "")
        + ("sync tool registered inline=True: runs on the event loop; " if INLINE_TOOL else "")
        + ("" if INLINE_TOOL else "sync tool runs in agentscope.tools.tool_threads; ")
        + f"agentscope loaded from {Path(agentscope.__file__).parent}",
    )
