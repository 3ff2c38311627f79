"""The OpenAI Chat Completions answer, both ways: response JSON and stream chunks <-> :class:`ChatResponse`.

The request side is in :mod:`agentscope.formatters._openai`. Besides the standard fields, the RL fields that vLLM
and AgentScope's rollout service send are read and written:

- ``prompt_token_ids``: top level of the response (vLLM with ``return_token_ids``; in a stream, the first
  chunk), or in the choice;
- ``completion_token_ids``: the choice's ``token_ids`` (vLLM; streamed per chunk and concatenated), else the
  ``logprobs.content[*].token`` strings when they all have the form ``token_id:<int>`` (vLLM's
  ``return_tokens_as_token_ids``);
- ``logprobs``: ``logprobs.content[*].logprob``;
- ``policy_version``: top level of the response (in a stream, the finishing chunk).

Thinking is read from ``reasoning_content`` (or ``reasoning``) and written as ``reasoning_content``; a refusal is
kept in ``metadata["refusal"]``. Tool-call arguments that are not a JSON object become a tool call with
``raw_input`` set, which the toolkit reports to the model as a tool error.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Final

from agentscope._json import as_list, as_object
from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.exceptions import ModelResponseError
from agentscope.formatters._common import (
    default_finish_reason,
    dump_tool_arguments,
    encode_sse,
    text_chunks,
)
from agentscope.formatters._openai import openai_tool_use
from agentscope.message import ContentBlock, TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.types import ChatResponse, ChatUsage

__all__ = [
    "OpenAIStreamDecoder",
    "format_openai_error",
    "format_openai_response",
    "format_openai_stream",
    "parse_openai_response",
]

_TOKEN_ID_PREFIX: Final = "token_id:"
_DONE: Final = "[DONE]"
_PROVIDER: Final = "OpenAI-compatible API"


# -- JSON -> ChatResponse -------------------------------------------------------------------------------------


def parse_openai_response(data: Any) -> ChatResponse:
    """Build a :class:`ChatResponse` from a (non-streaming) Chat Completions answer.

    Raises ModelResponseError when the answer has no choices.
    """
    root = as_object(data)
    choices = as_list(root.get("choices"))
    if not choices:
        raise ModelResponseError(f"{_PROVIDER} answered without choices: {str(data)[:300]!r}")
    choice = as_object(choices[0])
    message = as_object(choice.get("message"))

    content: list[ContentBlock] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning and isinstance(reasoning, str):
        content.append(ThinkingBlock(thinking=reasoning))
    text = _text(message.get("content"))
    if text:
        content.append(TextBlock(text=text))
    for call in as_list(message.get("tool_calls")):
        call = as_object(call)
        function = as_object(call.get("function"))
        content.append(openai_tool_use(call.get("id"), function.get("name"), function.get("arguments")))

    logprobs, token_ids_from_logprobs = _logprob_fields(choice.get("logprobs"))
    completion_ids = choice.get("token_ids")
    if completion_ids is None:
        completion_ids = token_ids_from_logprobs
    metadata: dict[str, Any] = {}
    refusal = message.get("refusal")
    if refusal:
        metadata["refusal"] = refusal
    return ChatResponse(
        content=content,
        usage=_usage(root.get("usage")),
        finish_reason=choice.get("finish_reason"),
        id=root.get("id"),
        model=root.get("model"),
        prompt_token_ids=root.get("prompt_token_ids") or choice.get("prompt_token_ids"),
        completion_token_ids=completion_ids,
        logprobs=logprobs,
        policy_version=root.get("policy_version"),
        metadata=metadata,
    )


def _usage(value: Any) -> ChatUsage | None:
    usage = as_object(value)
    if not usage:
        return None
    return ChatUsage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
    )


def _logprob_fields(logprobs: Any) -> tuple[list[float] | None, list[int] | None]:
    """A choice's log-probs, and its token ids when the tokens are ``token_id:<int>`` strings."""
    entries = as_list(as_object(logprobs).get("content"))
    if not entries:
        return None, None
    values: list[float] = []
    ids: list[int] | None = []
    for entry in entries:
        item = as_object(entry)
        values.append(item.get("logprob", 0.0))
        token = item.get("token")
        if ids is not None:
            if isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX):
                try:
                    ids.append(int(token[len(_TOKEN_ID_PREFIX) :]))
                except ValueError:
                    ids = None
            else:
                ids = None
    return values, ids


def _text(value: Any) -> str:
    """Message content as text: a string, or the text of a list of content parts."""
    if isinstance(value, str):
        return value
    return "".join(str(as_object(part).get("text") or "") for part in as_list(value))


# -- stream -> ChatResponse -----------------------------------------------------------------------------------


class _ToolCallState:
    __slots__ = ("arguments", "id", "name", "position")

    def __init__(self, position: int) -> None:
        self.position = position
        self.id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []


class OpenAIStreamDecoder:
    """Chat Completions stream chunks -> text, thinking and tool-call deltas, then the complete answer.

    Feed it the ``data`` of each server-sent event in order; stop when :attr:`finished` is true (``[DONE]``) or
    the stream ends, then call :meth:`result`.
    """

    def __init__(self) -> None:
        self.finished = False
        """True once ``[DONE]`` arrived."""
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._calls: dict[int, _ToolCallState] = {}
        self._finish_reason: str | None = None
        self._usage: ChatUsage | None = None
        self._id: str | None = None
        self._model: str | None = None
        self._prompt_token_ids: list[int] | None = None
        self._token_ids: list[int] | None = None
        self._logprobs: list[float] | None = None
        self._logprob_token_ids: list[int] | None = None
        self._logprob_ids_valid = True
        self._policy_version: int | None = None

    def feed(self, data: str) -> list[ModelStreamEvent]:
        """Take one event's data (a JSON chunk, or ``[DONE]``); return the deltas it carries.

        Raises ModelResponseError for data that is not JSON and for an error reported mid-stream.
        """
        if data == _DONE:
            self.finished = True
            return []
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ModelResponseError(f"{_PROVIDER} streamed invalid JSON: {data[:200]!r}") from exc
        chunk = as_object(chunk)
        error = chunk.get("error")
        if error:
            message = as_object(error).get("message") or error
            raise ModelResponseError(f"{_PROVIDER} reported an error mid-stream: {message}")
        return self.feed_chunk(chunk)

    def feed_chunk(self, chunk: Mapping[str, Any]) -> list[ModelStreamEvent]:
        """Take one parsed chunk; return the deltas it carries."""
        events: list[ModelStreamEvent] = []
        if self._id is None:
            self._id = chunk.get("id")
            self._model = chunk.get("model")
        prompt_ids = chunk.get("prompt_token_ids")
        if prompt_ids is not None:
            self._prompt_token_ids = prompt_ids
        version = chunk.get("policy_version")
        if version is not None:
            self._policy_version = version
        usage = chunk.get("usage")
        if usage:
            self._usage = _usage(usage)
        choices = as_list(chunk.get("choices"))
        if not choices:
            return events
        choice = as_object(choices[0])
        delta = as_object(choice.get("delta"))

        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            self._thinking.append(reasoning)
            events.append(ThinkingDelta(reasoning))
        text = delta.get("content")
        if text:
            text = _text(text)
            self._text.append(text)
            events.append(TextDelta(text))
        for call in as_list(delta.get("tool_calls")):
            events.append(self._feed_call(as_object(call)))

        if choice.get("prompt_token_ids") is not None and self._prompt_token_ids is None:
            self._prompt_token_ids = choice["prompt_token_ids"]
        token_ids = choice.get("token_ids")
        if token_ids:
            if self._token_ids is None:
                self._token_ids = []
            self._token_ids.extend(token_ids)
        logprobs, ids = _logprob_fields(choice.get("logprobs"))
        if logprobs is not None:
            if self._logprobs is None:
                self._logprobs = []
                self._logprob_token_ids = []
            self._logprobs.extend(logprobs)
            if ids is None:
                self._logprob_ids_valid = False
            elif self._logprob_token_ids is not None:
                self._logprob_token_ids.extend(ids)
        finish = choice.get("finish_reason")
        if finish:
            self._finish_reason = finish
        return events

    def _feed_call(self, call: dict[str, Any]) -> ToolCallDelta:
        function = as_object(call.get("function"))
        call_id = call.get("id")
        key = call.get("index")
        if not isinstance(key, int):
            # Servers that omit the index send each call whole, or continue the last call without an id.
            key = next((k for k, s in self._calls.items() if call_id is not None and s.id == call_id), None)
            if key is None:
                key = max(self._calls) + (1 if call_id is not None else 0) if self._calls else 0
        state = self._calls.get(key)
        if state is None:
            state = self._calls[key] = _ToolCallState(len(self._calls))
        if call_id and state.id is None:
            state.id = call_id
        name = function.get("name")
        if name and state.name is None:
            state.name = name
        arguments = function.get("arguments") or ""
        if arguments:
            state.arguments.append(arguments)
        return ToolCallDelta(index=state.position, id=call_id, name=name, arguments=arguments)

    def result(self) -> ChatResponse:
        """The complete answer streamed so far."""
        content: list[ContentBlock] = []
        if self._thinking:
            content.append(ThinkingBlock(thinking="".join(self._thinking)))
        if self._text:
            content.append(TextBlock(text="".join(self._text)))
        for state in self._calls.values():  # insertion order is position order
            content.append(openai_tool_use(state.id, state.name, "".join(state.arguments)))
        completion_ids = self._token_ids
        if completion_ids is None and self._logprob_ids_valid and self._logprob_token_ids:
            completion_ids = self._logprob_token_ids
        return ChatResponse(
            content=content,
            usage=self._usage,
            finish_reason=self._finish_reason,
            id=self._id,
            model=self._model,
            prompt_token_ids=self._prompt_token_ids,
            completion_token_ids=completion_ids,
            logprobs=self._logprobs,
            policy_version=self._policy_version,
        )


# -- ChatResponse -> JSON and stream --------------------------------------------------------------------------


def format_openai_response(
    response: ChatResponse, *, model: str = "unknown", extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A :class:`ChatResponse` as a Chat Completions answer (``chat.completion``).

    Thinking becomes ``reasoning_content``, tool calls keep their ``raw_input`` when set (so malformed arguments
    go out as the model wrote them), and the RL fields are written when the response has them (see the module
    docstring).

    Args:
        response: The answer.
        model: The model name when the response has none.
        extra: Top-level fields to add (e.g. the rollout service's ``version_head`` and ``session_id``).
    """
    message: dict[str, Any] = {"role": "assistant", "content": response.text or None}
    thinking = _thinking(response)
    if thinking:
        message["reasoning_content"] = thinking
    if response.tool_calls:
        message["tool_calls"] = [_wire_call(call) for call in response.tool_calls]
    refusal = response.metadata.get("refusal")
    if refusal:
        message["refusal"] = refusal
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": default_finish_reason(response),
    }
    choice.update(_token_fields(response))
    data: dict[str, Any] = {
        "id": response.id or _new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model or model,
        "choices": [choice],
        "usage": _usage_json(response.usage),
    }
    if response.prompt_token_ids is not None:
        data["prompt_token_ids"] = response.prompt_token_ids
    if response.policy_version is not None:
        data["policy_version"] = response.policy_version
    if extra:
        data.update(extra)
    return data


def format_openai_stream(
    response: ChatResponse,
    *,
    model: str = "unknown",
    chunk_size: int | None = None,
    include_usage: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[bytes]:
    """A :class:`ChatResponse` as the server-sent events of a Chat Completions stream, ``data: [DONE]`` last.

    With ``chunk_size`` the role comes first, then reasoning, text and, per tool call, its head and its
    arguments, each in pieces of ``chunk_size`` characters; without, the whole message is one delta. Then the
    finishing chunk (``finish_reason``, and the token ids, log-probs and policy version when set), and the usage
    chunk when ``include_usage`` is set (``stream_options.include_usage``). ``prompt_token_ids`` ride on the first
    chunk; ``extra`` top-level fields on every chunk.
    """
    base: dict[str, Any] = {
        "id": response.id or _new_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": response.model or model,
        **(extra or {}),
    }

    def chunk(delta: dict[str, Any], **fields: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return encode_sse({**base, "choices": [choice], **fields})

    first: dict[str, Any] = {}
    if response.prompt_token_ids is not None:
        first["prompt_token_ids"] = response.prompt_token_ids
    if chunk_size is None:
        yield chunk(_whole_delta(response), **first)
    else:
        yield chunk({"role": "assistant", "content": ""}, **first)
        for block in response.content:
            if isinstance(block, ThinkingBlock):
                for piece in text_chunks(block.thinking, chunk_size):
                    yield chunk({"reasoning_content": piece})
            elif isinstance(block, TextBlock):
                for piece in text_chunks(block.text, chunk_size):
                    yield chunk({"content": piece})
        for index, call in enumerate(response.tool_calls):
            head = {"index": index, "id": call.id, "type": "function"}
            yield chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
            for piece in text_chunks(dump_tool_arguments(call), chunk_size):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    final_choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": default_finish_reason(response)}
    final_choice.update(_token_fields(response))
    final: dict[str, Any] = {**base, "choices": [final_choice]}
    if response.policy_version is not None:
        final["policy_version"] = response.policy_version
    yield encode_sse(final)
    if include_usage:
        yield encode_sse({**base, "choices": [], "usage": _usage_json(response.usage)})
    yield encode_sse(_DONE)


def format_openai_error(
    message: str, *, error_type: str = "server_error", code: int | str | None = None
) -> dict[str, Any]:
    """An error body as OpenAI-compatible servers send it: ``{"error": {"message", "type"[, "code"]}}``."""
    error: dict[str, Any] = {"message": message, "type": error_type}
    if code is not None:
        error["code"] = code
    return {"error": error}


def _whole_delta(response: ChatResponse) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant", "content": response.text or None}
    thinking = _thinking(response)
    if thinking:
        delta["reasoning_content"] = thinking
    if response.tool_calls:
        delta["tool_calls"] = [{"index": i, **_wire_call(call)} for i, call in enumerate(response.tool_calls)]
    return delta


def _wire_call(call: ToolUseBlock) -> dict[str, Any]:
    arguments = dump_tool_arguments(call)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _thinking(response: ChatResponse) -> str:
    return "".join(b.thinking for b in response.content if isinstance(b, ThinkingBlock))


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:12]}"


def _usage_json(usage: ChatUsage | None) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _token_fields(response: ChatResponse) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    ids = response.completion_token_ids
    if ids is not None:
        fields["token_ids"] = ids
    if response.logprobs is not None:
        tokens = [f"{_TOKEN_ID_PREFIX}{i}" for i in ids] if ids is not None else [""] * len(response.logprobs)
        fields["logprobs"] = {
            "content": [
                {"token": token, "logprob": lp, "bytes": None, "top_logprobs": []}
                for token, lp in zip(tokens, response.logprobs, strict=False)
            ]
        }
    return fields
