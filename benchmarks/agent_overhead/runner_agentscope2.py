"""AgentScope 2.0.x from PyPI (``agentscope==2.0.11``), in its own venv.

In 2.0.x the ReAct agent is ``agentscope.agent.Agent`` (with ``ReActConfig(max_iters=...)``); tools are
``FunctionTool`` objects in a ``Toolkit``; models subclass ``ChatModelBase`` and implement ``_call_api``. Custom
function tools default to asking the user for permission, so ``add`` is registered with an ALLOW decision.
Defaults are otherwise kept (runtime-state injection on, as a user gets it). Sync tools run inline on the event loop
(``FunctionTool.call`` calls the function directly), not in a thread.

- inproc: a ``ChatModelBase`` subclass whose ``_call_api`` answers like the HTTP server (counts tool results).
- http: ``OpenAIChatModel`` (the ``openai`` SDK) with ``stream=False`` pointed at the local server.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c


def _imports() -> Any:
    from agentscope.agent import Agent, ReActConfig
    from agentscope.credential import OpenAICredential
    from agentscope.formatter import OpenAIChatFormatter
    from agentscope.model import ChatModelBase, ChatResponse, OpenAIChatModel
    from agentscope.permission import PermissionBehavior, PermissionDecision
    from agentscope.tool import FunctionTool, Toolkit

    import agentscope
    from agentscope.message import TextBlock, ToolCallBlock, ToolResultBlock, UserMsg

    return (
        agentscope,
        Agent,
        ReActConfig,
        OpenAICredential,
        OpenAIChatFormatter,
        TextBlock,
        ToolCallBlock,
        ToolResultBlock,
        UserMsg,
        ChatModelBase,
        ChatResponse,
        OpenAIChatModel,
        PermissionBehavior,
        PermissionDecision,
        FunctionTool,
        Toolkit,
    )


(
    (
        agentscope,
        Agent,
        ReActConfig,
        OpenAICredential,
        OpenAIChatFormatter,
        TextBlock,
        ToolCallBlock,
        ToolResultBlock,
        UserMsg,
        ChatModelBase,
        ChatResponse,
        OpenAIChatModel,
        PermissionBehavior,
        PermissionDecision,
        FunctionTool,
        Toolkit,
    ),
    IMPORT_S,
) = c.timed_import(_imports)


class ScriptedModel(ChatModelBase):  # type: ignore[misc, valid-type]
    """Answers like the benchmark server: a call to ``add`` until ``k`` tool results, then the final text."""

    def __init__(self, k: int) -> None:
        super().__init__(
            credential=OpenAICredential(api_key="sk-bench"),
            model="scripted",
            parameters=OpenAIChatModel.Parameters(),
            stream=False,
            max_retries=0,
        )
        self.k = k
        self.calls = 0
        # the agent reads ``model.formatter`` (supported media types); the scripted model never formats
        self.formatter = OpenAIChatFormatter()

    async def _call_api(
        self, model_name: str, messages: list[Any], tools: Any = None, tool_choice: Any = None, **kwargs: Any
    ) -> Any:
        c.count_model_call()
        self.calls += 1
        results = sum(
            1
            for m in messages
            if isinstance(m.content, list)
            for b in m.content
            if isinstance(b, ToolResultBlock)
        )
        if c.decide(results, self.k):
            block = ToolCallBlock(id=f"call_{self.calls}", name="add", input='{"a": 1, "b": 2}')
            return ChatResponse(content=[block], is_last=True)
        return ChatResponse(content=[TextBlock(text=c.FINAL_TEXT)], is_last=True)


def _text(msg: Any) -> str:
    content = msg.content
    if isinstance(content, str):
        return content
    return "".join(b.text for b in content if isinstance(b, TextBlock))


async def setup(
    args: c.Args,
) -> tuple[Callable[[int], Awaitable[c.AgentResult]], Callable[[], Awaitable[None]]]:
    if args.mode == "inproc":
        model: Any = ScriptedModel(args.k)

        async def aclose() -> None:
            return None
    else:
        model = OpenAIChatModel(
            credential=OpenAICredential(api_key="sk-bench", base_url=args.base_url),
            model="bench",
            stream=False,
            max_retries=0,
            client_kwargs={"max_retries": 0, "timeout": 120.0},
        )

        async def aclose() -> None:
            await model.client.close()

    allow = PermissionDecision(behavior=PermissionBehavior.ALLOW, message="benchmark tool")
    tool = FunctionTool(c.add, permission=allow)
    toolkit = Toolkit(tools=[tool])

    async def run_one(i: int) -> c.AgentResult:
        agent = Agent(
            name=f"agent{i}",
            system_prompt=c.SYSTEM_PROMPT,
            model=model,
            toolkit=toolkit,
            react_config=ReActConfig(max_iters=args.k + 2),
        )
        reply = await agent.reply(UserMsg(name="user", content=c.USER_PROMPT))
        return c.AgentResult(final_text=_text(reply))

    return run_one, aclose


if __name__ == "__main__":
    c.main(
        "agentscope-2.0",
        setup,
        version=f"agentscope {agentscope.__version__}",
        import_s=IMPORT_S,
        notes="Agent + ReActConfig; sync tool runs inline on the loop",
    )
