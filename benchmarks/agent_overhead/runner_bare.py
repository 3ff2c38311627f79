"""Baseline: the same K tool rounds written directly with ``httpx2.AsyncClient`` and ``json`` (no framework).

``httpx2`` is the HTTP client our ``OpenAIChatModel`` and the openai SDK use (pydantic's continuation of ``httpx``).

HTTP mode only. It does what any agent loop must do and nothing else: keep the message list, POST it, parse the
answer, run the tool (inline: it is a tiny sync function), append the result, repeat until a text answer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c


def _imports() -> Any:
    import httpx2

    return httpx2


httpx2, IMPORT_S = c.timed_import(_imports)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
]
FUNCTIONS: dict[str, Callable[..., Any]] = {"add": c.add}


async def setup(
    args: c.Args,
) -> tuple[Callable[[int], Awaitable[c.AgentResult]], Callable[[], Awaitable[None]]]:
    if args.mode != "http":
        raise SystemExit("runner_bare: http mode only")
    client = httpx2.AsyncClient(
        base_url=args.base_url,
        headers={"Authorization": "Bearer sk-bench"},
        timeout=httpx2.Timeout(120.0),
        limits=httpx2.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency),
    )

    async def run_one(i: int) -> c.AgentResult:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": c.SYSTEM_PROMPT},
            {"role": "user", "content": c.USER_PROMPT},
        ]
        for _ in range(args.k + 2):
            r = await client.post(
                "/chat/completions", json={"model": "bench", "messages": messages, "tools": TOOLS}
            )
            r.raise_for_status()
            msg = r.json()["choices"][0]["message"]
            calls = msg.get("tool_calls") or []
            messages.append(msg)
            if not calls:
                return c.AgentResult(final_text=msg.get("content") or "")
            for call in calls:
                fn = call["function"]
                out = FUNCTIONS[fn["name"]](**json.loads(fn["arguments"]))
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": str(out)})
        raise RuntimeError("no final answer within k + 2 rounds")

    return run_one, client.aclose


if __name__ == "__main__":
    c.main("bare-httpx2", setup, version=f"httpx2 {httpx2.__version__}", import_s=IMPORT_S)
