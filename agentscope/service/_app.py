"""The service app: one FastAPI app, a router per protocol over one :class:`AgentService`.

Routes (all under the API key when keys are configured, except ``/healthz``):

- ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``: OpenAI Chat Completions
  (:mod:`agentscope.service._openai`);
- ``GET /v1/sessions`` (``?limit=&after=``), ``DELETE /v1/sessions/{id}``: the stored sessions;
- ``POST /agui``: AG-UI (:mod:`agentscope.service._agui`);
- ``POST /a2a`` and the agent card at ``GET /.well-known/agent-card.json`` (public): A2A
  (:mod:`agentscope.service._a2a`; its tasks in the session file);
- ``GET /healthz``: ``{"status": "ok", "in_flight": n}``.

Every error, the framework's own (404, 405) included, has OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from agentscope.agents import AgentFactory
from agentscope.service._a2a import a2a_routes, a2a_task_store
from agentscope.service._agui import agui_router
from agentscope.service._config import ServeConfig
from agentscope.service._http import ApiError, ServiceMiddleware, error_response
from agentscope.service._openai import openai_router
from agentscope.service._service import AgentService

__all__ = ["create_app"]

_MAX_LIST = 1000


def create_app(agent: AgentService | AgentFactory, config: ServeConfig | None = None) -> FastAPI:
    """The HTTP app serving ``agent``: an :class:`AgentService`, or an agent factory (served with ``config``).

    Serve it with any ASGI server (``agentscope serve`` runs uvicorn). The app opens the session store on first
    use; its lifespan closes it on shutdown (or call ``await service.aclose()``).
    """
    if isinstance(agent, AgentService):
        if config is not None and config != agent.config:
            raise ValueError("pass the config to the AgentService, not to create_app as well")
        service = agent
    else:
        service = AgentService(agent, config)

    task_store, close_task_store = a2a_task_store(service.config.sessions_db)
    a2a = a2a_routes(service, task_store=task_store)  # closes its running tasks with the service...
    service.call_on_close(close_task_store)  # ...before the store they are saved in

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            await service.aclose()

    app = FastAPI(title="AgentScope agent service", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(ServiceMiddleware, config=service.config)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind, None, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return error_response(400, problems or "invalid request", "invalid_request_error", "invalid_request")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        return error_response(
            500, f"internal error ({type(exc).__name__}); see the server log", "server_error"
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        return {"status": "ok", "in_flight": service.in_flight}

    @app.get("/v1/sessions")
    async def list_sessions(limit: int = 100, after: str | None = None) -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        if not 1 <= limit <= _MAX_LIST:
            raise ApiError(400, f"limit must be between 1 and {_MAX_LIST}, got {limit}", code="invalid_limit")
        sessions, more = await service.list_sessions(after=after, limit=limit)
        return {
            "object": "list",
            "data": [s.to_json() for s in sessions],
            "has_more": more,
            "last_id": sessions[-1].id if sessions else None,
        }

    @app.delete("/v1/sessions/{session_id:path}")
    async def delete_session(session_id: str) -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        if not await service.delete_session(session_id):
            raise ApiError(
                404, f"no session {session_id!r}", error_type="not_found_error", code="session_not_found"
            )
        return {"id": session_id, "object": "session.deleted", "deleted": True}

    app.include_router(openai_router(service))
    app.include_router(agui_router(service))
    app.router.routes.extend(a2a)
    return app
