"""The AG-UI protocol (``ag-ui-protocol``): ``POST /agui`` takes a ``RunAgentInput`` and answers with the AG-UI event
stream (server-sent events written by the SDK's ``EventEncoder``), over the run layer
(:class:`~agentscope.service.AgentService`).

The thread id is the session id: the session's memory is the conversation, and of the input's messages only the
last, which must be the user's, is new (the earlier ones seed a session that has no memory yet, as a client that
keeps its own history sends them). The input's ``tools``, ``context``, ``state`` and ``forwardedProps`` are read
and checked but not applied: the agent has its own tools.

The events, in order: ``RUN_STARTED``; per model turn the reasoning (``REASONING_START``, ``REASONING_MESSAGE_*``,
``REASONING_END``) and the text (``TEXT_MESSAGE_START``, ``TEXT_MESSAGE_CONTENT``..., ``TEXT_MESSAGE_END``) as the
model streams them; per tool call ``TOOL_CALL_START``, ``TOOL_CALL_ARGS``, ``TOOL_CALL_END`` and, when it ran,
``TOOL_CALL_RESULT``; then ``RUN_FINISHED``, or ``RUN_ERROR`` when the agent failed (its details go to the server log).

Human approval is AG-UI's interrupt: a run whose agent paused (a tool asked for a human's approval) finishes with
an ``interrupt`` outcome, one ``Interrupt`` per waiting call (``id`` and ``toolCallId``: the call's id; ``reason``
``tool_approval``; ``message`` the tool's reason; ``metadata`` the tool's name and arguments; ``responseSchema``
the answer it takes). The next run on the thread answers them in ``resume``: ``status: "resolved"`` with
``payload`` ``{"action": "approve" | "edit" | "reject", "arguments": {...}, "reason": "..."}`` (no payload:
approve), ``status: "cancelled"`` rejects. A resuming run's messages are not a new turn (the session holds the
conversation); an interrupt it does not answer is rejected, as a new message to a paused session does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    DeveloperMessage,
    ImageInputContent,
    InputContentDataSource,
    InputContentUrlSource,
    Interrupt,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    SystemMessage,
    TextInputContent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from agentscope.events import ReplyEvent, TextDelta, ThinkingDelta, ToolCallEvent, ToolResultEvent
from agentscope.exceptions import ModelError
from agentscope.formatters import dump_tool_arguments, parse_openai_messages, tool_result_text
from agentscope.message import Msg
from agentscope.service._http import ApiError, EventStream, read_json_body
from agentscope.service._service import (
    MAX_SESSION_ID,
    AgentService,
    TurnInput,
    fits_session_id,
    split_turn,
    waiting_calls,
)
from agentscope.types import ApprovalDecision

__all__ = ["AGUI_PATH", "agui_router"]

logger = logging.getLogger("agentscope.service")

AGUI_PATH = "/agui"
"""Where the AG-UI endpoint listens."""


Emit = Callable[[bytes], Awaitable[None]]

APPROVAL_REASON = "tool_approval"
"""The ``reason`` of an interrupt that waits for a human's approval of a tool call."""

_DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"enum": ["approve", "edit", "reject"]},
        "arguments": {"type": "object", "description": "the arguments to run the call with (edit only)"},
        "reason": {"type": "string", "description": "why; the model sees it"},
    },
    "required": ["action"],
    "additionalProperties": False,
}
_DECISIONS: TypeAdapter[list[ApprovalDecision]] = TypeAdapter(list[ApprovalDecision])


def agui_router(service: AgentService) -> APIRouter:
    """The AG-UI route over ``service``."""
    router = APIRouter()

    @router.post(AGUI_PATH, response_model=None)
    async def run_agent(request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        body = await read_json_body(request, service.config.max_body_bytes)
        try:
            run_input = RunAgentInput.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
            )
            raise ApiError(400, f"not an AG-UI RunAgentInput: {problems}", code="invalid_run_input") from None
        thread = run_input.thread_id
        if not thread or not fits_session_id(thread):
            raise ApiError(
                400,
                f"threadId (the session id) must be 1 to {MAX_SESSION_ID} printable characters",
                code="invalid_session_id",
            )
        decisions = _decisions(run_input)
        turn: TurnInput | None = None
        if decisions is None:
            try:
                turn = split_turn(parse_openai_messages(_openai_messages(run_input)))
            except (ValueError, TypeError) as exc:
                raise ApiError(400, str(exc), code="invalid_messages") from None
        else:
            try:  # refused with a status, before the stream starts; the run checks them again
                await service.check_approvals(thread, decisions)
            except ValueError as exc:
                raise ApiError(400, f"resume: {exc}", code="invalid_resume") from None
        encoder = EventEncoder(accept=request.headers.get("accept", ""))
        run = _Run(service, run_input, turn, decisions, encoder)
        return EventStream(run.stream, {})

    return router


def _decisions(run_input: RunAgentInput) -> list[ApprovalDecision] | None:
    """The input's resume entries as decisions on the waiting calls; None when it does not resume.

    Raises:
        ApiError: an entry whose payload is not a decision (the message names the entry and the field).
    """
    if not run_input.resume:
        return None
    decisions: list[dict[str, Any]] = []
    for entry in run_input.resume:
        if entry.status == "cancelled":
            decisions.append({"call_id": entry.interrupt_id, "action": "reject"})
            continue
        payload = entry.payload if entry.payload is not None else {"action": "approve"}
        if not isinstance(payload, dict):
            raise ApiError(
                400,
                f"resume entry {entry.interrupt_id!r}: the payload must be a decision object "
                f"{{'action': 'approve' | 'edit' | 'reject', 'arguments'?, 'reason'?}}, not {type(payload).__name__}",
                code="invalid_resume",
            )
        decisions.append({**cast("dict[str, Any]", payload), "call_id": entry.interrupt_id})
    try:
        return _DECISIONS.validate_python(decisions)
    except ValidationError as exc:
        problems = "; ".join(
            f"resume.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ApiError(400, problems, code="invalid_resume") from None


def _interrupts(reply: Msg) -> list[Interrupt]:
    """The interrupts of a reply that paused for approvals (empty when it did not)."""
    return [
        Interrupt(
            id=call["call_id"],
            reason=APPROVAL_REASON,
            message=call["reason"] or f"approve the call of {call['name']}?",
            tool_call_id=call["call_id"],
            response_schema=_DECISION_SCHEMA,
            metadata={"tool": call["name"], "arguments": call["arguments"]},
        )
        for call in waiting_calls(reply)
    ]


def _openai_messages(run_input: RunAgentInput) -> list[dict[str, Any]]:
    """The input's messages as Chat Completions messages (the codec's input); activity and reasoning messages
    are left out (they are for the UI).

    Raises:
        ValueError: a message holds content other than text, or, from the user, images by URL or data.
    """
    messages: list[dict[str, Any]] = []
    for message in run_input.messages:
        if isinstance(message, UserMessage):
            content = message.content
            parts = content if isinstance(content, str) else [_user_part(part) for part in content]
            messages.append({"role": "user", "content": parts})
        elif isinstance(message, SystemMessage | DeveloperMessage):
            messages.append({"role": "system", "content": message.content})
        elif isinstance(message, AssistantMessage):
            calls = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in message.tool_calls or []
            ]
            messages.append(
                {"role": "assistant", "content": message.content, **({"tool_calls": calls} if calls else {})}
            )
        elif isinstance(message, ToolMessage):
            content = message.content
            text = content if isinstance(content, str) else "".join(_text_part(part) for part in content)
            messages.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": text})
    return messages


def _user_part(part: object) -> dict[str, Any]:
    if isinstance(part, ImageInputContent):
        source = part.source
        if isinstance(source, InputContentUrlSource):
            return {"type": "image_url", "image_url": {"url": source.value}}
        if isinstance(source, InputContentDataSource):
            return {
                "type": "image_url",
                "image_url": {"url": f"data:{source.mime_type};base64,{source.value}"},
            }
        raise ValueError(f"an image must come by URL or as data, not as {source.type!r}")
    return {"type": "text", "text": _text_part(part)}


def _text_part(part: object) -> str:
    if isinstance(part, TextInputContent):
        return part.text
    kind = getattr(part, "type", type(part).__name__)
    raise ValueError(f"this agent takes text (and, from the user, image) content, not {kind!r} content")


class _Run:
    """One AG-UI run: the agent's reply to the input's last message as AG-UI events."""

    def __init__(
        self,
        service: AgentService,
        run_input: RunAgentInput,
        turn: TurnInput | None,
        decisions: list[ApprovalDecision] | None,
        encoder: EventEncoder,
    ) -> None:
        self.service = service
        self.input = run_input
        self.turn = turn
        """The new turn; None when the run resumes a paused one."""
        self.decisions = decisions
        self.encoder = encoder
        self.emit: Emit | None = None
        self.text_id: str | None = None
        """The text message open now."""
        self.last_text_id: str | None = None
        """The last text message of this model turn (the parent of its tool calls)."""
        self.reasoning_id: str | None = None

    async def send(self, event: BaseEvent) -> None:
        assert self.emit is not None
        await self.emit(self.encoder.encode(event).encode())

    async def stream(self, emit: Emit) -> None:
        self.emit = emit
        thread, run = self.input.thread_id, self.input.run_id
        await self.send(RunStartedEvent(thread_id=thread, run_id=run))
        try:
            async with self.service.open_agent(thread) as agent:
                if self.turn is None:
                    events = agent.stream(None, decisions=self.decisions or [])
                else:
                    if self.turn.history and await agent.memory.size() == 0:
                        await agent.memory.add(self.turn.history)
                    events = agent.stream(self.turn.message)
                reply = await self.relay(agent.name, events)
        except Exception as exc:
            await self.close_open()
            await self.send(_run_error(exc))
            return
        interrupts = _interrupts(reply)
        outcome = RunFinishedInterruptOutcome(interrupts=interrupts) if interrupts else None
        await self.send(RunFinishedEvent(thread_id=thread, run_id=run, outcome=outcome))

    async def relay(self, name: str, events: Any) -> Msg:
        tail: list[str] = []  # the text streamed since the last tool step
        reply: Msg | None = None
        async for event in events:
            if isinstance(event, TextDelta):
                if event.agent in (None, name) and event.text:
                    await self.text(event.text)
                    tail.append(event.text)
            elif isinstance(event, ThinkingDelta):
                if event.agent in (None, name) and event.thinking:
                    await self.reasoning(event.thinking)
            elif isinstance(event, ToolCallEvent):
                if event.agent == name:
                    await self.close_open()
                    call_id = event.call.id
                    await self.send(
                        ToolCallStartEvent(
                            tool_call_id=call_id,
                            tool_call_name=event.call.name,
                            parent_message_id=self.last_text_id,
                        )
                    )
                    arguments = dump_tool_arguments(event.call)
                    if arguments:
                        await self.send(ToolCallArgsEvent(tool_call_id=call_id, delta=arguments))
                    await self.send(ToolCallEndEvent(tool_call_id=call_id))
                    tail.clear()
            elif isinstance(event, ToolResultEvent):
                if event.agent == name:
                    await self.close_open()
                    self.last_text_id = None
                    await self.send(
                        ToolCallResultEvent(
                            message_id=_new_id(),
                            tool_call_id=event.result.id,
                            content=tool_result_text(event.result),
                            role="tool",
                        )
                    )
                    tail.clear()
            elif isinstance(event, ReplyEvent):
                reply = event.msg
        assert reply is not None, "AgentBase.stream ends with a ReplyEvent"
        streamed = "".join(tail)
        rest = reply.text
        if rest.startswith(streamed):
            rest = rest[len(streamed) :]
        elif streamed:
            rest = f"\n\n{rest}"
        if rest:
            await self.text(rest)
        await self.close_open()
        return reply

    async def text(self, delta: str) -> None:
        await self.close_reasoning()
        if self.text_id is None:
            self.text_id = self.last_text_id = _new_id()
            await self.send(TextMessageStartEvent(message_id=self.text_id, role="assistant"))
        await self.send(TextMessageContentEvent(message_id=self.text_id, delta=delta))

    async def reasoning(self, delta: str) -> None:
        await self.close_text()
        if self.reasoning_id is None:
            self.reasoning_id = _new_id()
            await self.send(ReasoningStartEvent(message_id=self.reasoning_id))
            await self.send(ReasoningMessageStartEvent(message_id=self.reasoning_id, role="reasoning"))
        await self.send(ReasoningMessageContentEvent(message_id=self.reasoning_id, delta=delta))

    async def close_text(self) -> None:
        if self.text_id is not None:
            await self.send(TextMessageEndEvent(message_id=self.text_id))
            self.text_id = None

    async def close_reasoning(self) -> None:
        if self.reasoning_id is not None:
            await self.send(ReasoningMessageEndEvent(message_id=self.reasoning_id))
            await self.send(ReasoningEndEvent(message_id=self.reasoning_id))
            self.reasoning_id = None

    async def close_open(self) -> None:
        await self.close_reasoning()
        await self.close_text()


def _new_id() -> str:
    return uuid.uuid4().hex


def _run_error(exc: Exception) -> RunErrorEvent:
    """An agent run that raised, as the client sees it (the details go to the server log only)."""
    if isinstance(exc, ModelError):
        logger.error("the agent's model failed: %s", exc, exc_info=exc)
        return RunErrorEvent(
            message=f"the agent's model failed ({type(exc).__name__}); see the server log", code="model_error"
        )
    logger.error("the agent run failed", exc_info=exc)
    return RunErrorEvent(
        message=f"the agent failed ({type(exc).__name__}); see the server log", code="agent_error"
    )
