"""What the providers check of a conversation's tool calls, so that the test servers refuse what they refuse.

Every provider rejects a request whose tool calls and results do not pair up: OpenAI answers 400 "An assistant
message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'", Anthropic 400
"`tool_use` ids were found without `tool_result` blocks immediately after". vLLM parses each call's
``arguments`` as JSON and answers 400 when they are not. Each function returns the problem, or None.
"""

from __future__ import annotations

import json
from typing import Any, cast

__all__ = ["anthropic_history_problem", "openai_history_problem"]


def _items(value: Any) -> list[Any]:
    return cast("list[Any]", value) if isinstance(value, list) else []


def _object(value: Any) -> dict[str, Any]:
    return cast("dict[str, Any]", value) if isinstance(value, dict) else {}


def openai_history_problem(body: dict[str, Any]) -> str | None:
    """Why a Chat Completions request's tool calls and results do not pair up, or None."""
    waiting: list[str] = []
    answered: set[str] = set()
    for index, raw in enumerate(_items(body.get("messages"))):
        message = _object(raw)
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                again = " (answered twice)" if call_id in answered else ""
                return (
                    f"messages[{index}]: messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls'; tool_call_id {call_id!r} is not waiting for one{again}"
                )
            waiting.remove(call_id)
            answered.add(call_id)
            continue
        if waiting and not (role == "user" and index > 0 and _follows_tool(body, index)):
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(waiting)}"
            )
        if role == "assistant":
            for position, call in enumerate(_items(message.get("tool_calls"))):
                function = _object(_object(call).get("function"))
                arguments = function.get("arguments")
                try:
                    parsed = json.loads(arguments) if isinstance(arguments, str) else None
                except ValueError:
                    parsed = None
                if not isinstance(parsed, dict):
                    return (
                        f"messages[{index}].tool_calls[{position}].function.arguments: "
                        f"not a JSON object: {str(arguments)[:100]!r}"
                    )
                waiting.append(str(_object(call).get("id")))
    if waiting:
        return f"tool_call_ids without response messages: {', '.join(waiting)}"
    return None


def _follows_tool(body: dict[str, Any], index: int) -> bool:
    """A user message of images right after tool messages (how images of tool results travel): allowed."""
    previous = _object(_items(body.get("messages"))[index - 1])
    return previous.get("role") == "tool"


def anthropic_history_problem(body: dict[str, Any]) -> str | None:
    """Why a Messages API request's ``tool_use`` and ``tool_result`` blocks do not pair up, or None."""
    waiting: list[str] = []
    for index, raw in enumerate(_items(body.get("messages"))):
        message = _object(raw)
        content = message.get("content")
        blocks = [_object(b) for b in _items(content)]
        results = [str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result"]
        if waiting:
            missing = [i for i in waiting if i not in results]
            if message.get("role") != "user" or missing:
                return (
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(missing or waiting)}. Each `tool_use` block must have a corresponding "
                    "`tool_result` block in the next message."
                )
        unexpected = [i for i in results if i not in waiting]
        duplicated = len(results) != len(set(results))
        if unexpected or duplicated:
            return (
                f"messages.{index}: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(unexpected or results)}. Each `tool_result` block must have a corresponding "
                "`tool_use` block in the previous message."
            )
        waiting = []
        if message.get("role") == "assistant":
            for position, block in enumerate(blocks):
                if block.get("type") == "tool_use":
                    if not isinstance(block.get("input"), dict):
                        return f"messages.{index}.content.{position}.input: Input should be an object"
                    waiting.append(str(block.get("id")))
    if waiting:
        return (
            f"`tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(waiting)}"
        )
    return None
