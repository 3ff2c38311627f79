"""openai-agents (the OpenAI Agents SDK), in its own venv. Tracing is disabled (``set_tracing_disabled``).

One ``Agent`` is shared by all runs (it is stateless configuration; that is how the SDK is meant to be used); each
run is ``Runner.run(agent, prompt, max_turns=k + 2)``. ``@function_tool`` runs a sync function in a worker thread
(``asyncio.to_thread``).

- inproc: a custom ``Model`` whose ``get_response`` answers like the HTTP server (counts ``function_call_output``
  items in the input).
- http: ``OpenAIChatCompletionsModel`` with an ``AsyncOpenAI`` client (``max_retries=0``) pointed at the server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"


def _imports() -> Any:
    import agents
    from agents import (
        Agent,
        Model,
        ModelResponse,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from agents.usage import Usage
    from openai import AsyncOpenAI
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    return (
        agents,
        Agent,
        Model,
        ModelResponse,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
        Usage,
        AsyncOpenAI,
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )


(
    (
        agents,
        Agent,
        Model,
        ModelResponse,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
        Usage,
        AsyncOpenAI,
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    ),
    IMPORT_S,
) = c.timed_import(_imports)

set_tracing_disabled(True)


def _item_type(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


class ScriptedModel(Model):  # type: ignore[misc, valid-type]
    """Answers like the benchmark server: a call to ``add`` until ``k`` tool results, then the final text."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.calls = 0

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
        c.count_model_call()
        self.calls += 1
        items = [] if isinstance(input, str) else input
        results = sum(1 for item in items if _item_type(item) == "function_call_output")
        if c.decide(results, self.k):
            out: Any = ResponseFunctionToolCall(
                type="function_call",
                call_id=f"call_{self.calls}",
                name="add",
                arguments='{"a": 1, "b": 2}',
                id=f"fc_{self.calls}",
                status="completed",
            )
        else:
            out = ResponseOutputMessage(
                id=f"msg_{self.calls}",
                type="message",
                role="assistant",
                status="completed",
                content=[ResponseOutputText(type="output_text", text=c.FINAL_TEXT, annotations=[])],
            )
        return ModelResponse(output=[out], usage=Usage(requests=1), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the benchmark runs without streaming")


async def setup(
    args: c.Args,
) -> tuple[Callable[[int], Awaitable[c.AgentResult]], Callable[[], Awaitable[None]]]:
    client: Any = None
    if args.mode == "inproc":
        model: Any = ScriptedModel(args.k)
    else:
        client = AsyncOpenAI(base_url=args.base_url, api_key="sk-bench", max_retries=0, timeout=120.0)
        model = OpenAIChatCompletionsModel(model="bench", openai_client=client)

    agent = Agent(name="calc", instructions=c.SYSTEM_PROMPT, model=model, tools=[function_tool(c.add)])

    async def run_one(i: int) -> c.AgentResult:
        result = await Runner.run(agent, c.USER_PROMPT, max_turns=args.k + 2)
        return c.AgentResult(final_text=str(result.final_output))

    async def aclose() -> None:
        if client is not None:
            await client.close()

    return run_one, aclose


if __name__ == "__main__":
    c.main(
        "openai-agents",
        setup,
        version=f"openai-agents {agents.__version__}",
        import_s=IMPORT_S,
        notes="tracing disabled; sync tool runs via asyncio.to_thread",
    )
