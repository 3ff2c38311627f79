"""The Anthropic Messages API answer, both ways: message JSON and stream events <-> :class:`ChatResponse`.

The request side is in :mod:`agentscope.formatters._anthropic`.

``finish_reason`` is normalised to the OpenAI names (``end_turn`` and ``stop_sequence`` -> ``stop``,
``max_tokens`` -> ``length``, ``tool_use`` -> ``tool_calls``); the provider's value is kept in
``metadata["stop_reason"]``. ``usage.input_tokens`` counts all prompt tokens (uncached, written to the cache and read
from it); the cache counts are kept in ``metadata``. ``redacted_thinking`` blocks cannot be represented by a
ThinkingBlock; their data is kept in ``metadata["redacted_thinking"]``.

When the request emulated a response format with a forced tool (:class:`AnthropicFormatTool`), the model's call of
that tool comes back as a :class:`~agentscope.message.TextBlock` holding the JSON of its input (streamed as
``TextDelta`` events of the partial JSON, or, for a wrapped schema, the unwrapped value once the block ends), with
``finish_reason="stop"``.

Writing a :class:`ChatResponse` (:func:`format_anthropic_response`, :func:`format_anthropic_stream`) does the
reverse: text, thinking (with its signature) and tool-use blocks, ``stop_reason`` (``metadata["stop_reason"]``
when set, else mapped from ``finish_reason``), usage with the cache counts, and, in a stream, the documented event
sequence: ``message_start``, per block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
``thinking_delta`` then ``signature_delta``, ``input_json_delta`` of the tool call's ``raw_input`` when set) /
``content_block_stop``, a ``ping`` after the first block, ``message_delta`` and ``message_stop``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from agentscope._json import as_list, as_object
from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.exceptions import ModelHTTPError, ModelResponseError
from agentscope.formatters._anthropic import AnthropicFormatTool
from agentscope.formatters._common import (
    default_finish_reason,
    dump_tool_arguments,
    encode_sse,
    parse_tool_arguments,
    text_chunks,
    tool_arguments_from_value,
)
from agentscope.message import ContentBlock, TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.types import ChatResponse, ChatUsage

__all__ = [
    "AnthropicStreamDecoder",
    "format_anthropic_error",
    "format_anthropic_response",
    "format_anthropic_stream",
    "parse_anthropic_response",
]

_PROVIDER: Final = "Anthropic API"

_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_STOP_REASONS: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

_ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
"""The HTTP status of each Anthropic error type."""
_ERROR_TYPES: Final = {status: kind for kind, status in _ERROR_STATUS.items()}

_CACHE_KEYS: Final = ("cache_creation_input_tokens", "cache_read_input_tokens")


# -- JSON -> ChatResponse -------------------------------------------------------------------------------------


def parse_anthropic_response(data: Any, *, format_tool: AnthropicFormatTool | None = None) -> ChatResponse:
    """Build a :class:`ChatResponse` from a (non-streaming) Messages API answer.

    Args:
        data: The decoded JSON answer.
        format_tool: The forced tool of the request, when it emulated a response format.

    Raises ModelResponseError for an error object or an answer without content.
    """
    root = as_object(data)
    if root.get("type") == "error":
        raise ModelResponseError(f"{_PROVIDER} answered with an error: {str(root.get('error'))[:300]}")
    if "content" not in root:
        raise ModelResponseError(f"{_PROVIDER} answered without content: {str(data)[:300]!r}")
    content: list[ContentBlock] = []
    redacted: list[str] = []
    for raw in as_list(root.get("content")):
        block = as_object(raw)
        kind = block.get("type")
        if kind == "text":
            content.append(TextBlock(text=block.get("text") or ""))
        elif kind == "thinking":
            content.append(
                ThinkingBlock(thinking=block.get("thinking") or "", signature=block.get("signature"))
            )
        elif kind == "redacted_thinking":
            redacted.append(str(block.get("data") or ""))
        elif kind == "tool_use":
            if format_tool is not None and block.get("name") == format_tool.name:
                content.append(TextBlock(text=format_tool.text(block.get("input"))))
            else:
                tool_input, raw_input = tool_arguments_from_value(block.get("input"))
                content.append(
                    ToolUseBlock(
                        id=block.get("id") or "",
                        name=block.get("name") or "",
                        input=tool_input,
                        raw_input=raw_input,
                    )
                )
    return _response(
        content,
        stop_reason=root.get("stop_reason"),
        format_tool=format_tool,
        redacted=redacted,
        id=root.get("id"),
        model=root.get("model"),
        usage=as_object(root.get("usage")),
    )


def _response(
    content: list[ContentBlock],
    *,
    stop_reason: Any,
    format_tool: AnthropicFormatTool | None,
    redacted: list[str],
    id: Any,
    model: Any,
    usage: dict[str, Any],
) -> ChatResponse:
    metadata: dict[str, Any] = {}
    if stop_reason is not None:
        metadata["stop_reason"] = stop_reason
    if redacted:
        metadata["redacted_thinking"] = redacted
    for key in _CACHE_KEYS:
        if usage.get(key):
            metadata[key] = usage[key]
    finish = _FINISH_REASONS.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else None
    if (
        format_tool is not None
        and stop_reason == "tool_use"
        and not any(isinstance(b, ToolUseBlock) for b in content)
    ):
        finish = "stop"
    input_tokens = (usage.get("input_tokens") or 0) + sum(usage.get(key) or 0 for key in _CACHE_KEYS)
    return ChatResponse(
        content=content,
        usage=ChatUsage(input_tokens=input_tokens, output_tokens=usage.get("output_tokens") or 0)
        if usage
        else None,
        finish_reason=finish,
        id=id,
        model=model,
        metadata=metadata,
    )


# -- stream -> ChatResponse -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    kind: str
    text: list[str] = field(default_factory=list[str])
    signature: str | None = None
    id: str = ""
    name: str = ""
    data: str = ""
    position: int = -1
    """Position among the tool calls (tool_use blocks only)."""
    is_format: bool = False


class AnthropicStreamDecoder:
    """Messages API stream events -> text, thinking and tool-call deltas, then the complete answer.

    Feed it the ``data`` of each server-sent event in order; stop when :attr:`finished` is true
    (``message_stop``) or the stream ends, then call :meth:`result`.

    Args:
        format_tool: The forced tool of the request, when it emulated a response format.
    """

    def __init__(self, format_tool: AnthropicFormatTool | None = None) -> None:
        self.format_tool = format_tool
        self.finished = False
        """True once ``message_stop`` arrived."""
        self._blocks: dict[int, _Block] = {}
        self._tool_calls = 0
        self._id: str | None = None
        self._model: str | None = None
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None

    def feed(self, data: str) -> list[ModelStreamEvent]:
        """Take one event's data; return the deltas it carries.

        Raises ModelResponseError for data that is not JSON or events out of order, and ModelHTTPError (with
        the status of the error type) for an ``error`` event.
        """
        try:
            event = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ModelResponseError(f"{_PROVIDER} streamed invalid JSON: {data[:200]!r}") from exc
        return self.feed_event(as_object(event))

    def feed_event(self, data: Mapping[str, Any]) -> list[ModelStreamEvent]:
        """Take one parsed event; return the deltas it carries."""
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._delta(_index(data), as_object(data.get("delta")))
        if kind == "content_block_start":
            return self._start(_index(data), as_object(data.get("content_block")))
        if kind == "message_start":
            message = as_object(data.get("message"))
            self._id = message.get("id")
            self._model = message.get("model")
            self._usage.update(as_object(message.get("usage")))
        elif kind == "message_delta":
            delta = as_object(data.get("delta"))
            if delta.get("stop_reason"):
                self._stop_reason = delta["stop_reason"]
            self._usage.update({k: v for k, v in as_object(data.get("usage")).items() if v is not None})
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            error = as_object(data.get("error"))
            error_type = str(error.get("type") or "api_error")
            message = error.get("message") or error_type
            raise ModelHTTPError(
                f"{_PROVIDER} reported {error_type} while streaming: {message}",
                status_code=_ERROR_STATUS.get(error_type, 500),
                body=json.dumps(data)[:2000],
            )
        elif kind == "content_block_stop":
            return self._stop(_index(data))
        # ping: nothing to do
        return []

    def _start(self, index: int, block: dict[str, Any]) -> list[ModelStreamEvent]:
        kind = str(block.get("type") or "")
        state = self._blocks[index] = _Block(kind)
        if kind == "text":
            return self._delta(index, {"type": "text_delta", "text": block.get("text") or ""})
        if kind == "thinking":
            state.signature = block.get("signature") or None
            return self._delta(index, {"type": "thinking_delta", "thinking": block.get("thinking") or ""})
        if kind == "redacted_thinking":
            state.data = str(block.get("data") or "")
        elif kind == "tool_use":
            state.id = str(block.get("id") or "")
            state.name = str(block.get("name") or "")
            if self.format_tool is not None and state.name == self.format_tool.name:
                state.is_format = True
                return []
            state.position = self._tool_calls
            self._tool_calls += 1
            return [ToolCallDelta(index=state.position, id=state.id, name=state.name, arguments="")]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[ModelStreamEvent]:
        state = self._blocks.get(index)
        if state is None:
            raise ModelResponseError(f"{_PROVIDER} streamed a delta for unknown content block {index!r}")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text") or ""
            if text:
                state.text.append(text)
                return [TextDelta(text)]
        elif kind == "input_json_delta":
            partial = delta.get("partial_json") or ""
            if partial:
                state.text.append(partial)
                if state.is_format and self.format_tool is not None and not self.format_tool.wrapped:
                    return [TextDelta(partial)]
                if not state.is_format:
                    return [ToolCallDelta(index=state.position, id=None, name=None, arguments=partial)]
        elif kind == "thinking_delta":
            thinking = delta.get("thinking") or ""
            if thinking:
                state.text.append(thinking)
                return [ThinkingDelta(thinking)]
        elif kind == "signature_delta":
            state.signature = (state.signature or "") + (delta.get("signature") or "")
        return []

    def _stop(self, index: int) -> list[ModelStreamEvent]:
        state = self._blocks.get(index)
        if state is None or not state.is_format or self.format_tool is None or not self.format_tool.wrapped:
            return []
        return [TextDelta(self._format_text(state))]

    def _format_text(self, state: _Block) -> str:
        """The structured answer: the streamed JSON as it is, or unwrapped when the schema was wrapped."""
        joined = "".join(state.text)
        assert self.format_tool is not None
        if not self.format_tool.wrapped:
            return joined
        parsed, raw = parse_tool_arguments(joined)
        return joined if raw is not None else self.format_tool.text(parsed)

    def result(self) -> ChatResponse:
        """The complete answer streamed so far."""
        content: list[ContentBlock] = []
        redacted: list[str] = []
        for _, block in sorted(self._blocks.items()):
            joined = "".join(block.text)
            if block.kind == "text":
                content.append(TextBlock(text=joined))
            elif block.kind == "thinking":
                content.append(ThinkingBlock(thinking=joined, signature=block.signature))
            elif block.kind == "redacted_thinking":
                redacted.append(block.data)
            elif block.kind == "tool_use":
                if block.is_format:
                    content.append(TextBlock(text=self._format_text(block)))
                else:
                    parsed, raw = parse_tool_arguments(joined)
                    content.append(ToolUseBlock(id=block.id, name=block.name, input=parsed, raw_input=raw))
        return _response(
            content,
            stop_reason=self._stop_reason,
            format_tool=self.format_tool,
            redacted=redacted,
            id=self._id,
            model=self._model,
            usage=self._usage,
        )


def _index(data: Mapping[str, Any]) -> int:
    index = data.get("index")
    if not isinstance(index, int):
        raise ModelResponseError(
            f"{_PROVIDER} streamed a content block event without an index: {data!r:.200}"
        )
    return index


# -- ChatResponse -> JSON and stream --------------------------------------------------------------------------


def format_anthropic_response(response: ChatResponse, *, model: str = "unknown") -> dict[str, Any]:
    """A :class:`ChatResponse` as a Messages API answer (``"type": "message"``; see the module docstring).

    Args:
        response: The answer.
        model: The model name when the response has none.
    """
    content: list[dict[str, Any]] = [{"type": "redacted_thinking", "data": d} for d in _redacted(response)]
    for block in response.content:
        if isinstance(block, TextBlock):
            content.append({"type": "text", "text": block.text})
        elif isinstance(block, ThinkingBlock):
            content.append(
                {"type": "thinking", "thinking": block.thinking, "signature": block.signature or ""}
            )
        elif isinstance(block, ToolUseBlock):
            content.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
    return _message(response, model, content)


def format_anthropic_stream(
    response: ChatResponse, *, model: str = "unknown", chunk_size: int | None = None
) -> Iterator[bytes]:
    """A :class:`ChatResponse` as the server-sent events of a Messages API stream (see the module docstring).

    Text, thinking and tool-call arguments are sent in pieces of ``chunk_size`` characters (None: each whole).
    """
    start = _message(response, model, [])
    start["stop_reason"] = None
    start["usage"] = {**start["usage"], "output_tokens": 1}
    yield encode_sse({"type": "message_start", "message": start}, "message_start")
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        ({"type": "redacted_thinking", "data": d}, []) for d in _redacted(response)
    ]
    for block in response.content:
        if isinstance(block, TextBlock):
            deltas = [{"type": "text_delta", "text": p} for p in text_chunks(block.text, chunk_size)]
            blocks.append(({"type": "text", "text": ""}, deltas))
        elif isinstance(block, ThinkingBlock):
            deltas = [
                {"type": "thinking_delta", "thinking": p} for p in text_chunks(block.thinking, chunk_size)
            ]
            if block.signature:
                deltas.append({"type": "signature_delta", "signature": block.signature})
            blocks.append(({"type": "thinking", "thinking": ""}, deltas))
        elif isinstance(block, ToolUseBlock):
            arguments = dump_tool_arguments(block)
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in text_chunks(arguments, chunk_size)
            ]
            blocks.append(({"type": "tool_use", "id": block.id, "name": block.name, "input": {}}, deltas))
    for index, (content_block, deltas) in enumerate(blocks):
        yield encode_sse(
            {"type": "content_block_start", "index": index, "content_block": content_block},
            "content_block_start",
        )
        for delta in deltas:
            yield encode_sse(
                {"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"
            )
        yield encode_sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        if index == 0:
            yield encode_sse({"type": "ping"}, "ping")
    delta = {"stop_reason": _stop_reason(response), "stop_sequence": None}
    usage = {"output_tokens": response.usage.output_tokens if response.usage else 0}
    yield encode_sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
    yield encode_sse({"type": "message_stop"}, "message_stop")


def format_anthropic_error(status: int, message: str | None = None) -> dict[str, Any]:
    """An error body as the Messages API sends it, its ``type`` chosen by ``status`` (else ``api_error``)."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message or f"error {status}"}}


def _message(response: ChatResponse, model: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": response.id or f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": response.model or model,
        "content": content,
        "stop_reason": _stop_reason(response),
        "stop_sequence": None,
        "usage": _usage_json(response),
    }


def _stop_reason(response: ChatResponse) -> str:
    stop_reason = response.metadata.get("stop_reason")
    if isinstance(stop_reason, str):
        return stop_reason
    finish = default_finish_reason(response)
    return _STOP_REASONS.get(finish, finish)


def _usage_json(response: ChatResponse) -> dict[str, int]:
    usage: ChatUsage | None = response.usage
    cached = {k: v for k in _CACHE_KEYS if isinstance(v := response.metadata.get(k), int)}
    input_tokens = usage.input_tokens if usage else 0
    return {
        "input_tokens": max(0, input_tokens - sum(cached.values())),
        "output_tokens": usage.output_tokens if usage else 0,
        **cached,
    }


def _redacted(response: ChatResponse) -> list[str]:
    return [str(d) for d in as_list(response.metadata.get("redacted_thinking"))]
