"""Talking to the HTTP servers the rollout side uses (our rollout app, vLLM, SGLang): posting to one with its
failures as ModelErrors, and reading an answer's JSON object or error message."""

from __future__ import annotations

from typing import Any, cast

import httpx2

from agentscope.exceptions import (
    ContextLengthExceeded,
    ModelConnectionError,
    ModelHTTPError,
    ModelResponseError,
    ModelTimeoutError,
)

__all__ = ["error_message", "fit_to_context", "json_object", "post", "raise_for_error"]


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


async def post(
    client: httpx2.AsyncClient, url: str, *, server: str, base_url: str, timeout_s: float, **kwargs: Any
) -> httpx2.Response:
    """POST ``url`` with ``client`` (bound to ``base_url``); a timeout is a ModelTimeoutError, any other
    transport failure a ModelConnectionError, each naming the ``server`` kind ("vLLM", "SGLang"). The answer is
    returned whatever its status (see :func:`raise_for_error`)."""
    try:
        return await client.post(url, **kwargs)
    except httpx2.TimeoutException as exc:
        raise ModelTimeoutError(
            f"the {server} server at {base_url} did not answer POST {url} within {timeout_s:g} s"
        ) from exc
    except httpx2.HTTPError as exc:
        raise ModelConnectionError(f"{server} server {base_url} unreachable (POST {url}): {exc!r}") from exc


def raise_for_error(response: httpx2.Response, url: str, *, server: str, base_url: str) -> httpx2.Response:
    """``response``, or a ModelHTTPError with its status and message when it is 400 or above."""
    if response.status_code >= 400:
        raise ModelHTTPError(
            f"the {server} server at {base_url} answered {response.status_code} to POST {url}: "
            f"{error_message(response)}",
            status_code=response.status_code,
            body=response.text[:1000],
        )
    return response


def fit_to_context(
    prompt_len: int,
    max_tokens: int,
    context: int | None,
    *,
    server: str,
    input_reserve: int = 0,
    output_reserve: int = 0,
) -> int:
    """``max_tokens`` clamped to the room a server's ``context`` leaves after a prompt of ``prompt_len`` tokens (and
    ``output_reserve`` tokens it keeps unused); ``max_tokens`` as it is when the context is unknown (None).

    Raises:
        ContextLengthExceeded: the prompt is ``context - input_reserve`` tokens or longer (the server would refuse
            it).
    """
    if context is None:
        return max_tokens
    limit = context - input_reserve
    if prompt_len >= limit:
        takes = f", and it takes prompts of fewer than {limit} tokens" if input_reserve else ""
        raise ContextLengthExceeded(
            f"prompt of {prompt_len} tokens leaves no room to generate "
            f"(the {server} server's context length is {context}{takes})"
        )
    return min(max_tokens, context - output_reserve - prompt_len)
