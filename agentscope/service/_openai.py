"""The OpenAI Chat Completions protocol: ``POST /v1/chat/completions`` (JSON or server-sent events) and
``GET /v1/models``, over the run layer (:class:`~agentscope.service.AgentService`).

Requests are decoded by :func:`~agentscope.formatters.parse_openai_request`; the last message must be the user's,
and it is what the agent replies to. Without a session the messages before it are the conversation so far (put in
the fresh agent's memory); with one (``X-Session-Id``, else the ``user`` field) the session's memory is the
conversation and they are not used. The request's ``tools``, ``tool_choice`` and sampling settings are not
applied: the agent has its own. Answers carry the agent's intermediate tool calls and results in an extra
``agentscope`` field (docs/serving.md), which standard clients ignore.

Human approval: a reply that pauses answers with ``finish_reason: "stop"``, a message saying what waits, and the
waiting calls in ``agentscope.approval_required``; the client decides in a later request on the same session with
``"agentscope": {"approvals": [{"call_id", "action", "arguments", "reason"}]}`` in the body (then ``messages`` may
be empty, and a last user message, if any, follows the decisions).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from agentscope import tracing
from agentscope._json import as_object
from agentscope.agents import AgentBase
from agentscope.events import ReplyEvent, TextDelta, ThinkingDelta, ToolCallEvent, ToolResultEvent
from agentscope.exceptions import ModelError
from agentscope.formatters import encode_sse, format_openai_response, parse_openai_request
from agentscope.message import ContentBlock, Msg, TextBlock, ThinkingBlock
from agentscope.service._http import ApiError, EventStream, error_body, read_json_body, run_until_disconnect
from agentscope.service._service import (
    MAX_SESSION_ID,
    AgentService,
    Step,
    call_step,
    check_decisions,
    fits_session_id,
    memory_mark,
    result_step,
    split_turn,
    turn_record,
    waiting_calls,
)
from agentscope.types import ApprovalDecision, ChatResponse, ChatUsage

__all__ = ["SESSION_HEADER", "openai_router"]

logger = logging.getLogger("agentscope.service")

SESSION_HEADER = "X-Session-Id"
"""Request header naming the session (it wins over the ``user`` field); echoed in the answer."""


class _Extension(BaseModel):
    """The request body's ``agentscope`` field (all optional; unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    approvals: list[ApprovalDecision] | None = None
    """The human's decisions on the tool calls the session waits on."""


def openai_router(service: AgentService) -> APIRouter:
    """The Chat Completions routes over ``service``."""
    router = APIRouter()
    model_name = service.config.model_name
    created = int(time.time())

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "agentscope"}

    @router.get("/v1/models")
    async def list_models() -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        return {"object": "list", "data": [model_card()]}

    @router.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        if model_id != model_name:
            raise ApiError(
                404, f"no model {model_id!r} here; this server serves {model_name!r}", code="model_not_found"
            )
        return model_card()

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        body = await read_json_body(request, service.config.max_body_bytes)
        approvals = _extension(body).approvals
        try:
            decoded = parse_openai_request(body)
            history: list[Msg] = []
            message: Msg | None = None
            if approvals is None:
                turn = split_turn(decoded.messages)
                history, message = turn.history, turn.message
            elif decoded.messages and decoded.messages[-1].role == "user":
                message = decoded.messages[-1]  # the decisions come first; a new user message is optional
        except (ValueError, TypeError) as exc:
            raise ApiError(400, str(exc)) from None
        session_id = _session_id(request, body)
        if approvals is not None and session_id is None:
            raise ApiError(
                400,
                "agentscope.approvals decide the tool calls a session waits on: name the session with the "
                f"{SESSION_HEADER} header (or the user field)",
                code="session_required",
            )
        span = tracing.current_span()
        if span is not None and session_id is not None:
            span.set_attribute("agentscope.session.id", session_id)
        headers = {SESSION_HEADER: session_id} if session_id is not None else {}
        completion = _Completion(service, history, message, session_id, model_name, approvals)
        if decoded.stream:
            if approvals is not None and session_id is not None:  # refused with a status, before the stream
                try:
                    await service.check_approvals(session_id, approvals)
                except ValueError as exc:
                    raise _invalid_approvals(exc) from None
            include_usage = _include_usage(body.get("stream_options"))
            return EventStream(lambda emit: completion.stream(emit, include_usage=include_usage), headers)
        answer = await run_until_disconnect(request, completion.complete)
        if answer is None:
            return Response(status_code=499)  # nobody reads it: the client is gone
        return JSONResponse(answer, headers=headers)

    return router


def _extension(body: dict[str, Any]) -> _Extension:
    raw = body.get("agentscope")
    if raw is None:
        return _Extension()
    try:
        return _Extension.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(['agentscope', *(str(p) for p in err['loc'])])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ApiError(400, problems, code="invalid_agentscope_extension") from None


def _invalid_approvals(exc: ValueError) -> ApiError:
    return ApiError(400, f"agentscope.approvals: {exc}", code="invalid_approvals")


def _session_id(request: Request, body: dict[str, Any]) -> str | None:
    value: object = request.headers.get(SESSION_HEADER)
    where = SESSION_HEADER
    if value is None:
        value, where = body.get("user"), "user"
        if value is None:
            return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(
            400, f"{where} must be a non-empty string naming the session", code="invalid_session_id"
        )
    if not fits_session_id(value):
        raise ApiError(
            400,
            f"{where} must be at most {MAX_SESSION_ID} printable characters",
            code="invalid_session_id",
        )
    return value


class _Completion:
    """One chat completion: the agent's reply as a JSON answer or as a stream of chunks."""

    def __init__(
        self,
        service: AgentService,
        history: list[Msg],
        message: Msg | None,
        session_id: str | None,
        model: str,
        approvals: list[ApprovalDecision] | None,
    ) -> None:
        self.service = service
        self.history = history
        self.message = message
        self.session_id = session_id
        self.approvals = approvals
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    async def complete(self) -> dict[str, Any]:
        """The answer (``chat.completion``), the steps in ``choices[0].message.agentscope``."""
        try:
            async with self.service.open_agent(self.session_id) as agent:
                arguments = await self._prepare(agent)
                mark = await memory_mark(agent)
                reply = await agent(self.message, **arguments)
                waiting = self._waiting(reply)
                record = await turn_record(agent, mark, reply)
        except Exception as exc:
            raise _agent_failure(exc) from None
        response = ChatResponse(content=_answer_blocks(reply), usage=record.usage, finish_reason="stop")
        answer = format_openai_response(
            response, model=self.model, extra={"id": self.id, "created": self.created}
        )
        extension: dict[str, Any] = {"steps": record.steps}
        if waiting:
            extension["approval_required"] = waiting
        answer["choices"][0]["message"]["agentscope"] = extension
        return answer

    async def _prepare(self, agent: AgentBase) -> dict[str, Any]:
        """Give a fresh agent the request's history; the reply's keyword arguments (the decisions, checked)."""
        if self.session_id is None:
            await agent.memory.add(self.history)
        if self.approvals is None:
            return {}
        try:
            check_decisions(agent, self.approvals)
        except ValueError as exc:
            raise _invalid_approvals(exc) from None
        return {"decisions": self.approvals}

    def _waiting(self, reply: Msg) -> list[dict[str, Any]]:
        """The calls the reply waits on; a stateless request cannot wait (nothing would keep the paused agent)."""
        waiting = waiting_calls(reply)
        if waiting and self.session_id is None:
            names = ", ".join(f"{c['name']} (call {c['call_id']})" for c in waiting)
            raise ApiError(
                400,
                f"the agent paused for a human's approval of {names}, which needs a session to be decided: send "
                f"the request with the {SESSION_HEADER} header (or the user field)",
                code="session_required",
            )
        return waiting

    async def stream(self, emit: Callable[[bytes], Awaitable[None]], *, include_usage: bool) -> None:
        """The answer as ``chat.completion.chunk`` events, ``data: [DONE]`` last; an error mid-way as an
        ``{"error": ...}`` event (no ``[DONE]``)."""
        await emit(self._chunk({"role": "assistant", "content": ""}))
        try:
            async with self.service.open_agent(self.session_id) as agent:
                arguments = await self._prepare(agent)
                mark = await memory_mark(agent)
                reply, tail = await self._relay(agent.stream(self.message, **arguments), agent.name, emit)
                waiting = self._waiting(reply)
                record = await turn_record(agent, mark, reply)
        except Exception as exc:
            failure = _agent_failure(exc)
            await emit(encode_sse(error_body(failure.message, failure.error_type, failure.code)))
            return
        text = reply.text
        if text.startswith(tail):
            text = text[len(tail) :]
        elif tail:
            text = f"\n\n{text}"
        if text:
            await emit(self._chunk({"content": text}))
        if waiting:
            await emit(self._chunk({"agentscope": {"approval_required": waiting}}))
        await emit(self._chunk({}, finish_reason="stop"))
        if include_usage:
            await emit(encode_sse({**self._base(), "choices": [], "usage": _usage_json(record.usage)}))
        await emit(encode_sse("[DONE]"))

    async def _relay(
        self, events: Any, name: str, emit: Callable[[bytes], Awaitable[None]]
    ) -> tuple[Msg, str]:
        """Send the agent's own text, reasoning and tool steps as they happen; return the reply and the text
        streamed since the last step (the reply's text, if the model streamed it)."""
        tail: list[str] = []
        reply: Msg | None = None
        async for event in events:
            if isinstance(event, TextDelta):
                if event.agent in (None, name) and event.text:
                    tail.append(event.text)
                    await emit(self._chunk({"content": event.text}))
            elif isinstance(event, ThinkingDelta):
                if event.agent in (None, name) and event.thinking:
                    await emit(self._chunk({"reasoning_content": event.thinking}))
            elif isinstance(event, ToolCallEvent):
                if event.agent == name:
                    tail.clear()
                    await emit(self._step(call_step(event.call, event.agent)))
            elif isinstance(event, ToolResultEvent):
                if event.agent == name:
                    tail.clear()
                    await emit(self._step(result_step(event.result, event.agent)))
            elif isinstance(event, ReplyEvent):
                reply = event.msg
        assert reply is not None, "AgentBase.stream ends with a ReplyEvent"
        return reply, "".join(tail)

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, delta: dict[str, Any], *, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return encode_sse({**self._base(), "choices": [choice]})

    def _step(self, step: Step) -> bytes:
        return self._chunk({"agentscope": {"steps": [step]}})


def _answer_blocks(reply: Msg) -> list[ContentBlock]:
    """What of the reply goes into the answer's message: its reasoning and its text (never tool calls, which
    a client would take as calls for it to run)."""
    thinking = "".join(block.thinking for block in reply.blocks_of(ThinkingBlock))
    blocks: list[ContentBlock] = [ThinkingBlock(thinking=thinking)] if thinking else []
    blocks.append(TextBlock(text=reply.text))
    return blocks


def _usage_json(usage: ChatUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _agent_failure(exc: Exception) -> ApiError:
    """An agent run that raised, as the error the client gets (the details go to the server log only)."""
    if isinstance(exc, ApiError):
        return exc
    span = tracing.current_span()
    trace = f" (trace {span.trace_id_hex})" if span is not None and span.recording else ""
    if isinstance(exc, ModelError):
        logger.error("the agent's model failed: %s", exc, exc_info=exc)
        return ApiError(
            502,
            f"the agent's model failed ({type(exc).__name__}); see the server log{trace}",
            error_type="server_error",
            code="model_error",
        )
    logger.error("the agent run failed", exc_info=exc)
    return ApiError(
        500,
        f"the agent failed ({type(exc).__name__}); see the server log{trace}",
        error_type="server_error",
        code="agent_error",
    )


def _include_usage(stream_options: object) -> bool:
    """``stream_options.include_usage``; 400 for options that are not an object or a flag that is not a bool."""
    if stream_options is None:
        return False
    if not isinstance(stream_options, dict):
        raise ApiError(
            400,
            'stream_options must be an object such as {"include_usage": true}',
            code="invalid_stream_options",
        )
    include = as_object(stream_options).get("include_usage", False)
    if not isinstance(include, bool):
        raise ApiError(
            400, "stream_options.include_usage must be true or false", code="invalid_stream_options"
        )
    return include
