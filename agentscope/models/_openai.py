"""OpenAI Chat Completions client over httpx (no SDK): OpenAI, vLLM, SGLang and AgentScope's rollout service.

Besides the standard fields, the answer's RL fields are passed through untouched when the server sends them:

- ``prompt_token_ids``: top level of the response (vLLM with ``return_token_ids``; in a stream, the first
  chunk), or in the choice;
- ``completion_token_ids``: the choice's ``token_ids`` (vLLM; streamed per chunk and concatenated), else the
  ``logprobs.content[*].token`` strings when they all have the form ``token_id:<int>`` (vLLM's
  ``return_tokens_as_token_ids``);
- ``logprobs``: ``logprobs.content[*].logprob``;
- ``policy_version``: top level of the response (AgentScope's rollout service).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from agentscope.events import ModelStreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from agentscope.exceptions import ModelResponseError
from agentscope.formatters._common import as_list, as_object, parse_tool_arguments
from agentscope.formatters._openai import (
    format_openai_messages,
    format_openai_response_format,
    format_openai_tool_choice,
    format_openai_tools,
)
from agentscope.message import ContentBlock, Msg, TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.models._base import (
    ChatModel,
    ChatResponse,
    ChatUsage,
    ModelSettings,
    ResponseFormat,
    ToolChoice,
    ToolSchema,
    check_model_requests_allowed,
)
from agentscope.models._http import HTTPChannel, RetryPolicy

__all__ = ["OpenAIChatModel"]

_SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "stop", "seed")
_TOKEN_ID_PREFIX = "token_id:"


class OpenAIChatModel(ChatModel):
    """A model served behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: Model name sent in every request.
        base_url: API root; requests go to ``{base_url}/chat/completions``.
        api_key: Bearer token; defaults to the ``OPENAI_API_KEY`` environment variable (local servers may
            need none).
        timeout_s: Deadline of one attempt, in seconds, from sending the request to the last byte of the answer
            (of a stream: to its last event); a retry gets a new one. ``settings["timeout_s"]`` overrides it
            per call.
        max_retries: Retries on 408/429/5xx answers, timeouts and connection errors.
        backoff: ``(base, max)`` seconds of the exponential backoff between retries.
        default_settings: Settings for every call; per-call ``settings`` override them key by key.
        http_client: Use this client (its owner closes it) instead of creating one.
        transport: Transport for the client we create (tests, custom networking).
        headers: Extra headers for every request.

    One pooled ``httpx.AsyncClient`` is created on first use and closed by :meth:`aclose` (or ``async with``);
    like any asyncio connection pool it belongs to the event loop that first used it, so use one model per loop.
    Stop iterating :meth:`stream` early only inside ``contextlib.aclosing`` so the connection is released at once.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff: tuple[float, float] = (0.5, 8.0),
        default_settings: ModelSettings | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.default_settings: ModelSettings = ModelSettings(**(default_settings or {}))
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        all_headers = {"content-type": "application/json", "accept": "application/json"}
        if key:
            all_headers["authorization"] = f"Bearer {key}"
        all_headers.update(headers or {})
        self._http = HTTPChannel(
            provider="OpenAI-compatible API",
            url=f"{self.base_url}/chat/completions",
            headers=all_headers,
            secret=key,
            key_hint="pass api_key= or set OPENAI_API_KEY",
            timeout_s=timeout_s,
            retry=RetryPolicy(max_retries=max_retries, backoff_base_s=backoff[0], backoff_max_s=backoff[1]),
            http_client=http_client,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client this model created. Safe to call more than once."""
        await self._http.aclose()

    def build_request_body(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
        stream: bool = False,
    ) -> tuple[dict[str, Any], float | None]:
        """The JSON body of a request and the per-call timeout (None: the model's default)."""
        merged: dict[str, Any] = (
            {**self.default_settings, **settings} if settings else dict(self.default_settings)
        )
        body: dict[str, Any] = {"model": self.model_name, "messages": format_openai_messages(messages)}
        if tools:
            body["tools"] = format_openai_tools(tools)
            if "parallel_tool_calls" in merged:
                body["parallel_tool_calls"] = merged["parallel_tool_calls"]
        if tool_choice is not None:
            body["tool_choice"] = format_openai_tool_choice(tool_choice)
        if response_format is not None:
            body["response_format"] = format_openai_response_format(response_format)
        for key in _SAMPLING_KEYS:
            if key in merged:
                body[key] = merged[key]
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        extra = merged.get("extra_body")
        if extra:
            body.update(extra)
        return body, merged.get("timeout_s")

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Send one Chat Completions request and return the complete answer."""
        check_model_requests_allowed()
        body, timeout_s = self.build_request_body(
            messages, tools=tools, tool_choice=tool_choice, response_format=response_format, settings=settings
        )
        return parse_openai_response(await self._http.post_json(body, timeout_s=timeout_s))

    async def stream(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[ModelStreamEvent]:
        """Stream text, thinking and tool-call deltas, then the complete :class:`ChatResponse`."""
        check_model_requests_allowed()
        body, timeout_s = self.build_request_body(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            settings=settings,
            stream=True,
        )
        state = _StreamState()
        async with self._http.stream(body, timeout_s=timeout_s) as events:
            async for event in events:
                if event.data == "[DONE]":
                    break
                for delta in state.feed(_loads_chunk(event.data)):
                    yield delta
        yield state.result()


def _loads_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ModelResponseError(f"OpenAI-compatible API streamed invalid JSON: {data[:200]!r}") from exc
    error = as_object(chunk).get("error")
    if error:
        message = as_object(error).get("message") or error
        raise ModelResponseError(f"OpenAI-compatible API reported an error mid-stream: {message}")
    return as_object(chunk)


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


def _tool_use(call_id: Any, name: Any, arguments: str) -> ToolUseBlock:
    parsed, raw = parse_tool_arguments(arguments)
    return ToolUseBlock(id=str(call_id or ""), name=str(name or ""), input=parsed, raw_input=raw)


def parse_openai_response(data: Any) -> ChatResponse:
    """Build a :class:`ChatResponse` from a (non-streaming) Chat Completions answer."""
    root = as_object(data)
    choices = as_list(root.get("choices"))
    if not choices:
        raise ModelResponseError(f"OpenAI-compatible API answered without choices: {str(data)[:300]!r}")
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
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send an already-parsed object
            arguments = "" if arguments is None else json.dumps(arguments)
        content.append(_tool_use(call.get("id"), function.get("name"), arguments))

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


class _ToolCallState:
    __slots__ = ("arguments", "id", "name", "position")

    def __init__(self, position: int) -> None:
        self.position = position
        self.id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []


class _StreamState:
    """Accumulates streamed chunks into the final :class:`ChatResponse`."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.calls: dict[int, _ToolCallState] = {}
        self.finish_reason: str | None = None
        self.usage: ChatUsage | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.prompt_token_ids: list[int] | None = None
        self.token_ids: list[int] | None = None
        self.logprobs: list[float] | None = None
        self.logprob_token_ids: list[int] | None = None
        self.logprob_ids_valid = True
        self.policy_version: int | None = None

    def feed(self, chunk: dict[str, Any]) -> list[ModelStreamEvent]:
        events: list[ModelStreamEvent] = []
        if self.id is None:
            self.id = chunk.get("id")
            self.model = chunk.get("model")
        prompt_ids = chunk.get("prompt_token_ids")
        if prompt_ids is not None:
            self.prompt_token_ids = prompt_ids
        version = chunk.get("policy_version")
        if version is not None:
            self.policy_version = version
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        choices = as_list(chunk.get("choices"))
        if not choices:
            return events
        choice = as_object(choices[0])
        delta = as_object(choice.get("delta"))

        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            self.thinking.append(reasoning)
            events.append(ThinkingDelta(reasoning))
        text = delta.get("content")
        if text:
            text = _text(text)
            self.text.append(text)
            events.append(TextDelta(text))
        for call in as_list(delta.get("tool_calls")):
            events.append(self._feed_call(as_object(call)))

        if choice.get("prompt_token_ids") is not None and self.prompt_token_ids is None:
            self.prompt_token_ids = choice["prompt_token_ids"]
        token_ids = choice.get("token_ids")
        if token_ids:
            if self.token_ids is None:
                self.token_ids = []
            self.token_ids.extend(token_ids)
        logprobs, ids = _logprob_fields(choice.get("logprobs"))
        if logprobs is not None:
            if self.logprobs is None:
                self.logprobs = []
                self.logprob_token_ids = []
            self.logprobs.extend(logprobs)
            if ids is None:
                self.logprob_ids_valid = False
            elif self.logprob_token_ids is not None:
                self.logprob_token_ids.extend(ids)
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish
        return events

    def _feed_call(self, call: dict[str, Any]) -> ToolCallDelta:
        function = as_object(call.get("function"))
        call_id = call.get("id")
        key = call.get("index")
        if not isinstance(key, int):
            # Servers that omit the index send each call whole, or continue the last call without an id.
            key = next((k for k, s in self.calls.items() if call_id is not None and s.id == call_id), None)
            if key is None:
                key = max(self.calls) + (1 if call_id is not None else 0) if self.calls else 0
        state = self.calls.get(key)
        if state is None:
            state = self.calls[key] = _ToolCallState(len(self.calls))
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
        content: list[ContentBlock] = []
        if self.thinking:
            content.append(ThinkingBlock(thinking="".join(self.thinking)))
        if self.text:
            content.append(TextBlock(text="".join(self.text)))
        for state in self.calls.values():  # insertion order is position order
            content.append(_tool_use(state.id, state.name, "".join(state.arguments)))
        completion_ids = self.token_ids
        if completion_ids is None and self.logprob_ids_valid and self.logprob_token_ids:
            completion_ids = self.logprob_token_ids
        return ChatResponse(
            content=content,
            usage=self.usage,
            finish_reason=self.finish_reason,
            id=self.id,
            model=self.model,
            prompt_token_ids=self.prompt_token_ids,
            completion_token_ids=completion_ids,
            logprobs=self.logprobs,
            policy_version=self.policy_version,
        )
