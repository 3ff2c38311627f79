"""The rollout service over HTTP: an OpenAI-compatible Chat Completions app (FastAPI).

Any OpenAI-compatible client works; :class:`~agentscope.models.OpenAIChatModel` reads the RL fields back::

    model = OpenAIChatModel("policy", base_url=server.base_url, api_key="-",
                            default_settings={"extra_body": {"session_id": sid}})

Routes:

- ``POST /v1/chat/completions``: the standard body (``messages``, ``tools``, ``temperature``, ``top_p``,
  ``max_tokens``/``max_completion_tokens``, ``stop``, ``seed``, ``stream``) plus ``session_id`` (the turn is
  recorded in that session, opened on first use; without it nothing is recorded). The answer adds
  ``prompt_token_ids`` and ``policy_version`` at the top level (``version_head`` and ``session_id`` too) and, in
  the choice, ``token_ids`` and ``logprobs.content[*]`` (``token`` is ``token_id:<id>``): the field names vLLM
  uses. ``stream: true`` answers the same in server-sent events (the whole completion in one delta).
- ``GET /v1/models``; ``POST /sessions`` (optional body ``{"session_id": ...}``) → ``{"session_id"}``;
  ``DELETE /sessions/{id}`` → ``{"session_id", "turns": [...]}``; ``GET /stats``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Self

import anyio

from agentscope.formatters._common import as_list, as_object, dump_tool_arguments, parse_tool_arguments
from agentscope.message import ContentBlock, Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatResponse, ModelSettings, ToolSchema
from agentscope.rl.rollout._service import RolloutService

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["RolloutHTTPServer", "create_rollout_app", "messages_from_openai"]


def create_rollout_app(service: RolloutService) -> FastAPI:
    """An OpenAI-compatible FastAPI app over ``service`` (routes in the module docstring).

    The app does not start or stop the engine: start it first (``async with service``)."""
    try:
        from agentscope.rl.rollout._app import build_app
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if (exc.name or "").split(".")[0] not in ("fastapi", "starlette"):
            raise
        raise ImportError("the rollout HTTP app needs fastapi: pip install 'agentscope[serve]'") from exc
    return build_app(service)


def response_to_openai(response: ChatResponse) -> dict[str, Any]:
    """A :class:`ChatResponse` from the service as a Chat Completions answer with the RL fields."""
    text = "".join(b.text for b in response.content if isinstance(b, TextBlock))
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": dump_tool_arguments(c)}}
        for c in response.tool_calls
    ]
    if calls:
        message["tool_calls"] = calls
    ids = response.completion_token_ids or []
    logprobs = response.logprobs or []
    usage = response.usage
    return {
        "id": response.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": response.finish_reason,
                "token_ids": ids,
                "logprobs": {
                    "content": [
                        {"token": f"token_id:{i}", "logprob": lp, "bytes": None, "top_logprobs": []}
                        for i, lp in zip(ids, logprobs, strict=True)
                    ]
                },
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens if usage else 0,
            "completion_tokens": usage.output_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
        },
        "prompt_token_ids": response.prompt_token_ids,
        "policy_version": response.policy_version,
        "version_head": response.metadata.get("version_head"),
        "session_id": response.metadata.get("session_id"),
    }


async def stream_chunks(payload: dict[str, Any]) -> AsyncIterator[str]:
    """A Chat Completions answer as server-sent events: one delta with everything, the finish, the usage."""
    choice = payload["choices"][0]
    message = choice["message"]
    delta: dict[str, Any] = {"role": "assistant", "content": message["content"]}
    if "tool_calls" in message:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    head = {
        k: payload[k]
        for k in ("id", "created", "model", "prompt_token_ids", "policy_version", "version_head")
    }
    base = {"object": "chat.completion.chunk", **head}
    first: dict[str, Any] = {
        **base,
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "token_ids": choice["token_ids"],
                "logprobs": choice["logprobs"],
                "finish_reason": None,
            }
        ],
    }
    last: dict[str, Any] = {
        **base,
        "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
    }
    usage: dict[str, Any] = {**base, "choices": [], "usage": payload["usage"]}
    chunks: list[dict[str, Any]] = [first, last, usage]
    for chunk in chunks:
        yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
    yield "data: [DONE]\n\n"


def messages_from_openai(items: list[Any]) -> list[Msg]:
    """Chat Completions ``messages`` back into :class:`Msg` objects, the inverse of AgentScope's OpenAI formatter.

    Consecutive ``tool`` messages become one ``tool`` message (as a ReActAgent stores one step's results), tool
    results get the tool name from the assistant call they answer, and arguments are parsed as the OpenAI client
    parses them (malformed ones kept in ``raw_input``). Image parts become ``[image]`` text.
    """
    out: list[Msg] = []
    names: dict[str, str] = {}
    previous_tool = False
    for item in items:
        message = as_object(item)
        role = message.get("role")
        text = _content_text(message.get("content"))
        if role == "assistant":
            blocks: list[ContentBlock] = [TextBlock(text=text)] if text else []
            for raw_call in as_list(message.get("tool_calls")):
                call = as_object(raw_call)
                function = as_object(call.get("function"))
                arguments = function.get("arguments")
                if not isinstance(arguments, str):
                    arguments = "" if arguments is None else json.dumps(arguments)
                parsed, raw = parse_tool_arguments(arguments)
                name = str(function.get("name") or "")
                call_id = str(call.get("id") or "")
                names[call_id] = name
                blocks.append(ToolUseBlock(id=call_id, name=name, input=parsed, raw_input=raw))
            out.append(Msg(role="assistant", content=blocks))
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            result = ToolResultBlock(id=call_id, name=names.get(call_id, ""), output=text)
            last = out[-1] if out else None
            if previous_tool and last is not None and isinstance(last.content, list):
                last.content.append(result)
            else:
                out.append(Msg(role="tool", content=[result]))
            previous_tool = True
            continue
        elif role in ("system", "developer"):
            out.append(Msg(role="system", content=text))
        elif role == "user":
            out.append(Msg(role="user", content=text))
        else:
            raise ValueError(f"unknown message role {role!r}")
        previous_tool = False
    return out


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for raw_part in as_list(content):
        part = as_object(raw_part)
        if part.get("type") == "text":
            parts.append(str(part.get("text") or ""))
        elif part.get("type") in ("image_url", "input_image", "image"):
            parts.append("[image]")
    return "\n".join(parts)


def tools_from_openai(items: list[Any]) -> list[ToolSchema] | None:
    """The ``tools`` of a request as :class:`ToolSchema` objects (None when there are none)."""
    tools: list[ToolSchema] = []
    for item in items:
        function = as_object(as_object(item).get("function"))
        if not function.get("name"):
            raise ValueError("each tool needs function.name")
        tools.append(
            ToolSchema(
                name=str(function["name"]),
                description=str(function.get("description") or ""),
                parameters=as_object(function.get("parameters")) or {"type": "object", "properties": {}},
            )
        )
    return tools or None


def settings_from_openai(body: dict[str, Any]) -> ModelSettings:
    """The sampling settings of a request."""
    settings = ModelSettings()
    if body.get("temperature") is not None:
        settings["temperature"] = float(body["temperature"])
    if body.get("top_p") is not None:
        settings["top_p"] = float(body["top_p"])
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        settings["max_tokens"] = int(max_tokens)
    stop = body.get("stop")
    if stop is not None:
        settings["stop"] = [stop] if isinstance(stop, str) else [str(s) for s in as_list(stop)]
    if body.get("seed") is not None:
        settings["seed"] = int(body["seed"])
    return settings


class RolloutHTTPServer:
    """Serve :func:`create_rollout_app` with uvicorn on the current event loop (127.0.0.1 by default).

    ::

        async with service, RolloutHTTPServer(service) as server:
            model = OpenAIChatModel("policy", base_url=server.base_url, api_key="-")

    Args:
        service: The rollout service (start its engine first).
        host: Interface to bind.
        port: Port; 0 picks a free one (read :attr:`port` after entering).
    """

    def __init__(self, service: RolloutService, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``: the ``base_url`` for OpenAI-compatible clients."""
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> Self:
        try:
            import uvicorn
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the rollout HTTP server needs uvicorn: pip install 'agentscope[serve]'"
            ) from exc
        sock = await anyio.to_thread.run_sync(self._bind)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_rollout_app(self.service),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            loop="asyncio",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server, self._socket = server, sock
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the rollout HTTP server did not start")
            await asyncio.sleep(0.005)
        return self

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        return sock

    async def __aexit__(self, *exc_info: object) -> None:
        server, task, sock = self._server, self._task, self._socket
        self._server = self._task = self._socket = None
        if server is not None:
            server.should_exit = True
        if task is not None:
            await task
        if sock is not None:
            sock.close()
