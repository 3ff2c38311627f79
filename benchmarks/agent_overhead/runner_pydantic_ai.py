"""pydantic-ai (``pydantic-ai-slim[openai]``), in its own venv.

One ``Agent`` is shared by all runs (it is stateless configuration; that is how pydantic-ai is meant to be used);
each run is ``agent.run(prompt)``. pydantic-ai runs a sync tool function in a worker thread
(``run_in_executor``).

- inproc: ``FunctionModel`` with a function that answers like the HTTP server (counts ``ToolReturnPart``s).
- http: ``OpenAIChatModel`` with an ``OpenAIProvider`` around an ``AsyncOpenAI`` client (``max_retries=0``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

os.environ.setdefault("OPENAI_API_KEY", "sk-bench")


def _imports() -> Any:
    import pydantic_ai
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import FunctionModel
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return (
        pydantic_ai,
        AsyncOpenAI,
        Agent,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        FunctionModel,
        OpenAIChatModel,
        OpenAIProvider,
    )


(
    (
        pydantic_ai,
        AsyncOpenAI,
        Agent,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        FunctionModel,
        OpenAIChatModel,
        OpenAIProvider,
    ),
    IMPORT_S,
) = c.timed_import(_imports)


def make_function(k: int) -> Callable[[list[Any], Any], Any]:
    calls = 0

    def respond(messages: list[Any], info: Any) -> Any:
        nonlocal calls
        c.count_model_call()
        calls += 1
        results = sum(
            1
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, ToolReturnPart)
        )
        if c.decide(results, k):
            return ModelResponse(parts=[ToolCallPart("add", {"a": 1, "b": 2}, tool_call_id=f"call_{calls}")])
        return ModelResponse(parts=[TextPart(c.FINAL_TEXT)])

    return respond


async def setup(
    args: c.Args,
) -> tuple[Callable[[int], Awaitable[c.AgentResult]], Callable[[], Awaitable[None]]]:
    client: Any = None
    if args.mode == "inproc":
        model: Any = FunctionModel(make_function(args.k))
    else:
        client = AsyncOpenAI(base_url=args.base_url, api_key="sk-bench", max_retries=0, timeout=120.0)
        model = OpenAIChatModel("bench", provider=OpenAIProvider(openai_client=client))

    agent = Agent(model, instructions=c.SYSTEM_PROMPT, tools=[c.add])

    async def run_one(i: int) -> c.AgentResult:
        result = await agent.run(c.USER_PROMPT)
        return c.AgentResult(final_text=str(result.output))

    async def aclose() -> None:
        if client is not None:
            await client.close()

    return run_one, aclose


if __name__ == "__main__":
    c.main(
        "pydantic-ai",
        setup,
        version=f"pydantic-ai-slim {pydantic_ai.__version__}",
        import_s=IMPORT_S,
        notes="sync tool runs in a worker thread",
    )
