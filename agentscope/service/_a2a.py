"""The A2A protocol (Agent2Agent, with the ``a2a-sdk`` server components) over the run layer
(:class:`~agentscope.service.AgentService`).

- ``GET /.well-known/agent-card.json``: the agent card (public, as A2A discovery expects; it names the bearer
  scheme when API keys are configured), its JSON-RPC interface at this server's ``/a2a``;
- ``POST /a2a``: A2A 1.0 JSON-RPC (``SendMessage``, ``SendStreamingMessage``, ``GetTask``, ``ListTasks``,
  ``CancelTask``, ``SubscribeToTask``), behind the API key like every other route.

Each message is a task: submitted, working (one status update per tool call and per tool result, a data part
holding the step as docs/serving.md shows it), then completed with the reply in the artifact ``reply`` (its text
streams as chunks of that artifact while the model writes it, and the last update replaces them with the reply).
The A2A context id is the session id, so a second message in the same context continues the conversation.
Tasks are stored in the session file (table ``tasks``, by the SDK's ``DatabaseTaskStore``), so ``GetTask``
and ``ListTasks`` answer after a restart and a paused task can be continued by another process.

Human approval is A2A's ``input-required`` state: a run whose agent paused (a tool asked for a human's approval)
leaves its task ``input-required``, with a message holding the reply's text and a data part
``{"approval_required": [{"call_id", "name", "arguments", "reason"}, ...]}``. The client answers with a message in
the same task (or any task of the context: approvals belong to the session) holding a data part ``{"approvals":
[{"call_id", "action", "arguments"?, "reason"?}, ...]}`` (the Chat Completions decisions) and, optionally, text for
the agent after them. Decisions that do not apply leave the task ``input-required`` with a message naming the
problem; nothing has changed then.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread
from a2a.helpers import get_data_parts, get_text_parts, new_data_part, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.tasks import DatabaseTaskStore, TaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_1_0, TransportProtocol
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message as AsgiMessage

from agentscope.events import ReplyEvent, TextDelta, ToolCallEvent, ToolResultEvent
from agentscope.message import Msg
from agentscope.service._http import ApiError
from agentscope.service._service import (
    MAX_SESSION_ID,
    AgentService,
    Step,
    call_step,
    fits_session_id,
    result_step,
    waiting_calls,
)
from agentscope.service._store import BUSY_TIMEOUT_S
from agentscope.types import ApprovalDecision

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["A2A_PATH", "AGENT_CARD_PATH", "a2a_routes", "a2a_task_store"]

logger = logging.getLogger("agentscope.service")

A2A_PATH = "/a2a"
"""Where the JSON-RPC interface listens."""
AGENT_CARD_PATH = AGENT_CARD_WELL_KNOWN_PATH
"""Where the agent card is (``/.well-known/agent-card.json``): served without an API key."""

_REPLY_ARTIFACT = "reply"
_STEP_MEDIA_TYPE = "application/json"
_APPROVALS_KEY = "approvals"
_PAUSED_TASK_IDLE_S = 120.0
_DECISIONS: TypeAdapter[list[ApprovalDecision]] = TypeAdapter(list[ApprovalDecision])


def a2a_task_store(sessions_db: Path) -> tuple[TaskStore, Callable[[], Awaitable[None]]]:
    """The A2A task store in the session file (table ``tasks``), and the coroutine function that closes it."""
    store = _SessionFileTaskStore(sessions_db)
    return store, store.aclose


def a2a_routes(
    service: AgentService, *, task_store: TaskStore, description: str | None = None
) -> list[BaseRoute]:
    """The agent card and JSON-RPC routes serving ``service`` over A2A (mount them on the app), keeping tasks in
    ``task_store`` (:func:`a2a_task_store`)."""
    name = service.config.model_name
    card = _agent_card(name, description or f"The AgentScope agent {name!r}", bool(service.config.api_keys))
    handler = DefaultRequestHandler(
        agent_executor=_AgentExecutor(service),
        task_store=task_store,
        agent_card=card,
        # A task paused for input keeps an SDK worker in memory until then; a later message reloads it from the store.
        interrupted_task_timeout=_PAUSED_TASK_IDLE_S,
    )
    service.call_on_close(handler.aclose)  # paused (input-required) tasks keep the SDK's workers until then
    dispatcher = JsonRpcDispatcher(request_handler=handler)
    limit = service.config.max_body_bytes

    async def agent_card(request: Request) -> Response:
        served = AgentCard()
        served.CopyFrom(card)
        served.supported_interfaces[0].url = f"{str(request.base_url).rstrip('/')}{A2A_PATH}"
        return JSONResponse(agent_card_to_dict(served))

    async def json_rpc(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(
                413,
                f"the request body is larger than this server accepts ({limit} bytes)",
                code="request_too_large",
            )
        received = 0

        async def bounded() -> AsgiMessage:  # a chunked body: the SDK answers its 413 as a JSON-RPC error
            nonlocal received
            message = await request.receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413)
            return message

        return await dispatcher.handle_requests(Request(request.scope, bounded))

    return [
        Route(AGENT_CARD_PATH, agent_card, methods=["GET"]),
        Route(A2A_PATH, json_rpc, methods=["POST"]),
    ]


def _agent_card(name: str, description: str, keys: bool) -> AgentCard:
    card = AgentCard(
        name=name,
        description=description,
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=A2A_PATH,
                protocol_binding=TransportProtocol.JSONRPC.value,
                protocol_version=PROTOCOL_VERSION_1_0,
            )
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[AgentSkill(id=name, name=name, description=description, tags=["agentscope"])],
    )
    if keys:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer", description="one of the server's API keys"
                )
            )
        )
        card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return card


def _user_turn(message: Message) -> tuple[Msg | None, list[ApprovalDecision] | None]:
    """The A2A message as the agent's turn: a user message of its text parts and its data parts as JSON text, and
    the decisions of a data part ``{"approvals": [...]}`` (None without one; the message is then required).

    Raises:
        ValueError: it holds a file (raw or URL) part, malformed decisions (the field named), or nothing.
    """
    kinds = {part.WhichOneof("content") for part in message.parts}
    if kinds - {"text", "data"}:
        unsupported = ", ".join(sorted(str(kind) for kind in kinds - {"text", "data"}))
        raise ValueError(f"this agent takes text and data parts only, not {unsupported} parts")
    texts = [*get_text_parts(list(message.parts))]
    decisions: list[ApprovalDecision] | None = None
    for data in get_data_parts(list(message.parts)):
        if isinstance(data, dict) and _APPROVALS_KEY in data:
            decisions = [*(decisions or []), *_parse_decisions(cast("dict[str, Any]", data)[_APPROVALS_KEY])]
        else:
            texts.append(json.dumps(data, ensure_ascii=False))
    if not texts and decisions is None:
        raise ValueError("the message has no text or data part to reply to")
    return (Msg(role="user", content="\n".join(texts)) if texts else None), decisions


def _parse_decisions(value: object) -> list[ApprovalDecision]:
    try:
        return _DECISIONS.validate_python(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_APPROVALS_KEY}.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(problems) from None


def _session_problem(context_id: str) -> str | None:
    if not fits_session_id(context_id):
        return f"the context id (the session id) must be at most {MAX_SESSION_ID} printable characters"
    return None


class _AgentExecutor(AgentExecutor):
    """Runs the served agent for one A2A task, in the session named by the task's context id."""

    def __init__(self, service: AgentService) -> None:
        self.service = service

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id, message = context.task_id, context.context_id, context.message
        assert task_id, "the request context builder sets it"
        assert context_id, "the request context builder sets it"
        assert message is not None, "a SendMessage request has one"
        if context.current_task is None:
            await event_queue.enqueue_event(
                Task(
                    id=task_id,
                    context_id=context_id,
                    status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                    history=[message],
                )
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        try:
            problem = _session_problem(context_id)
            if problem is not None:
                raise ValueError(problem)
            user, decisions = _user_turn(message)
            if decisions is not None:
                await self.service.check_approvals(context_id, decisions)
        except ValueError as exc:
            answer = updater.new_agent_message([new_text_part(str(exc))])
            if context.current_task is not None:  # a paused task stays paused: the client may decide again
                await updater.requires_input(answer)
            else:
                await updater.reject(answer)
            return
        await updater.start_work()
        artifact = _ReplyArtifact(updater)
        try:
            async with self.service.open_agent(context_id) as agent:
                reply: Msg | None = None
                events = agent.stream(user) if decisions is None else agent.stream(user, decisions=decisions)
                async for event in events:
                    if isinstance(event, TextDelta):
                        if event.agent in (None, agent.name) and event.text:
                            await artifact.chunk(event.text)
                    elif isinstance(event, ToolCallEvent | ToolResultEvent):
                        if event.agent == agent.name:
                            step = (
                                call_step(event.call, event.agent)
                                if isinstance(event, ToolCallEvent)
                                else result_step(event.result, event.agent)
                            )
                            await self._step(updater, step)
                    elif isinstance(event, ReplyEvent):
                        reply = event.msg
                assert reply is not None, "AgentBase.stream ends with a ReplyEvent"
        except Exception as exc:
            logger.error("the agent run failed (A2A task %s)", task_id, exc_info=exc)
            text = f"the agent failed ({type(exc).__name__}); see the server log"
            await updater.failed(updater.new_agent_message([new_text_part(text)]))
            return
        waiting = waiting_calls(reply)
        if waiting:
            parts = [new_text_part(reply.text), new_data_part({"approval_required": waiting})]
            await updater.requires_input(updater.new_agent_message(parts))
            return
        await artifact.final(reply.text)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # The SDK has cancelled the task running execute() already: its session was left as it was.
        await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()

    @staticmethod
    async def _step(updater: TaskUpdater, step: Step) -> None:
        part = new_data_part(step, media_type=_STEP_MEDIA_TYPE)
        await updater.update_status(TaskState.TASK_STATE_WORKING, updater.new_agent_message([part]))


class _ReplyArtifact:
    """The ``reply`` artifact: text chunks while the model writes, then the reply itself, replacing them."""

    def __init__(self, updater: TaskUpdater) -> None:
        self.updater = updater
        self.id = uuid.uuid4().hex
        self.started = False

    async def chunk(self, text: str) -> None:
        await self.updater.add_artifact(
            [new_text_part(text)],
            artifact_id=self.id,
            name=_REPLY_ARTIFACT,
            append=self.started,
            last_chunk=False,
        )
        self.started = True

    async def final(self, text: str) -> None:
        await self.updater.add_artifact(
            [new_text_part(text)], artifact_id=self.id, name=_REPLY_ARTIFACT, append=False, last_chunk=True
        )


class _SessionFileTaskStore(TaskStore):
    """The SDK's database task store over the session file, opened on first use (the engine reads the file
    system as it is made, which must not happen on the event loop; the session store may make the file's folder
    only after the first task is saved)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine: AsyncEngine | None = None
        self.store: TaskStore | None = None
        self.opening = anyio.Lock()

    async def _open(self) -> TaskStore:
        if self.store is not None:
            return self.store
        async with self.opening:  # two first requests at once must not make two engines
            if self.store is not None:
                return self.store
            self.engine = await anyio.to_thread.run_sync(functools.partial(_engine, self.path))
            # The SDK's own table name: another name makes a new mapped class per store, which SQLAlchemy warns
            # about from the second app of a process on.
            self.store = DatabaseTaskStore(self.engine)
        return self.store

    async def aclose(self) -> None:
        if self.engine is not None:
            engine, self.engine, self.store = self.engine, None, None
            await engine.dispose()

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await (await self._open()).save(task, context)

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        return await (await self._open()).get(task_id, context)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        return await (await self._open()).list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await (await self._open()).delete(task_id, context)


def _engine(path: Path) -> AsyncEngine:
    from sqlalchemy.ext.asyncio import create_async_engine

    path.parent.mkdir(parents=True, exist_ok=True)
    return create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S})
