"""Reading the answers of the HTTP servers the rollout side talks to (our rollout app, vLLM, SGLang): a JSON
object, or an error's message."""

from __future__ import annotations

from typing import Any, cast

import httpx2

from agentscope.exceptions import ModelResponseError

__all__ = ["error_message", "json_object"]


def json_object(response: httpx2.Response) -> dict[str, Any]:
    """The answer's JSON object (ModelResponseError, naming the URL, when it is not one)."""
    try:
        data = response.json()
    except ValueError as exc:
        raise ModelResponseError(
            f"{response.request.url} answered non-JSON: {response.text[:300]!r}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelResponseError(f"{response.request.url} answered {type(data).__name__}, not an object")
    return cast("dict[str, Any]", data)


def error_message(response: httpx2.Response) -> str:
    """The message of an OpenAI-style error answer (``{"error": {"message"}}``) or of a ``{"success": false,
    "message"}`` answer (SGLang's weight routes), else the start of its text."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        error: Any = cast("dict[str, Any]", data).get("error")
        if isinstance(error, dict) and "message" in error:
            return str(cast("dict[str, Any]", error)["message"])
        message: Any = cast("dict[str, Any]", data).get("message")
        if isinstance(message, str):
            return message
    return response.text[:300]
