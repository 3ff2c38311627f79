"""The FastAPI routes of the rollout service (imported only by :func:`~agentscope.rl.rollout.create_rollout_app`,
so that fastapi loads when an app is built)."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agentscope._http_body import read_limited_body
from agentscope._json import as_object
from agentscope.exceptions import ContextLengthExceeded, ModelError, SessionError
from agentscope.formatters import (
    format_openai_error,
    format_openai_response,
    format_openai_stream,
    parse_openai_request,
)
from agentscope.rl.rollout._service import RolloutService
from agentscope.rl.rollout._weights import load_weights, weights_from_bytes

__all__ = ["build_app"]


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(format_openai_error(message, error_type=kind), status_code=status)


async def _events(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class _BearerToken:
    """Refuses (401) every HTTP request whose ``Authorization`` header is not ``expected``, compared in constant
    time. A plain ASGI middleware: Starlette's ``@app.middleware("http")`` runs each request's app in a task of its
    own and relays the response through a memory stream, which cost the rollout server about a third of its HTTP
    thread's time per chat turn (py-spy, ``ray-all`` benchmark)."""

    def __init__(self, app: ASGIApp, expected: bytes) -> None:
        self.app = app
        self._expected = expected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            if not hmac.compare_digest(given, self._expected):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                refusal = _error(
                    401, "missing or wrong bearer token for the rollout server", "authentication_error"
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _version(value: Any) -> int | None:
    """A version from JSON or a query string: a non-negative integer (booleans are not)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def build_app(
    service: RolloutService, *, token: str | None = None, max_upload_bytes: int = 1 << 34
) -> FastAPI:
    """The app (see :mod:`agentscope.rl.rollout._http` for the routes); with ``token``, every request must carry
    ``Authorization: Bearer <token>``."""
    app = FastAPI(title="AgentScope rollout service")
    if token:
        app.add_middleware(_BearerToken, expected=f"Bearer {token}".encode())

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:  # pyright: ignore[reportUnusedFunction]
        try:
            body = as_object(await request.json())
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        session_id = body.get("session_id")
        if session_id is not None:
            if body.get("session_continues") is True and str(session_id) not in service.sessions:
                # the client recorded turns of it elsewhere: this server (a replacement) never saw its beginning
                return _error(404, f"no rollout session {session_id!r} on this server", "not_found_error")
            service.open_session(str(session_id))
        try:
            decoded = parse_openai_request(body, images_as_text=True)  # the policy reads text only
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc), "invalid_request_error")
        try:
            response = await service.chat(
                None if session_id is None else str(session_id),
                decoded.messages,
                tools=decoded.tools or None,
                settings=decoded.settings,
            )
        except SessionError as exc:
            return _error(404, str(exc), "not_found_error")
        except ContextLengthExceeded as exc:  # the request's fault, with OpenAI's code for it
            return JSONResponse(
                format_openai_error(
                    str(exc), error_type="invalid_request_error", code=ContextLengthExceeded.OPENAI_CODE
                ),
                status_code=400,
            )
        except ModelError as exc:
            return _error(500, str(exc), "server_error")
        extra = {
            "version_head": response.metadata.get("version_head"),
            "session_id": response.metadata.get("session_id"),
        }
        if decoded.stream:
            chunks = format_openai_stream(response, model=service.model_name, include_usage=True, extra=extra)
            return StreamingResponse(_events(chunks), media_type="text/event-stream")
        return JSONResponse(format_openai_response(response, model=service.model_name, extra=extra))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        return {
            "object": "list",
            "data": [{"id": service.model_name, "object": "model", "owned_by": "agentscope"}],
        }

    @app.post("/sessions", response_model=None)
    async def open_session(request: Request) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        raw = await request.body()
        try:
            body = as_object(json.loads(raw)) if raw.strip() else {}
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        requested = body.get("session_id")
        return JSONResponse(
            {"session_id": service.open_session(None if requested is None else str(requested))}
        )

    @app.post("/sessions/drop", response_model=None)
    async def drop_sessions(request: Request) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        try:
            body = as_object(await request.json())
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        given: Any = body.get("session_ids")
        items: list[Any] = given if isinstance(given, list) else []  # pyright: ignore[reportUnknownVariableType]
        ids = [i for i in items if isinstance(i, str)]
        if not isinstance(given, list) or len(ids) != len(items):
            return _error(400, "session_ids: a list of session ids is required", "invalid_request_error")
        held = set(service.sessions)
        dropped = 0
        for session_id in ids:
            if session_id in held:
                service.close_session(session_id)
                dropped += 1
        return JSONResponse({"dropped": dropped})

    @app.delete("/sessions/{session_id}", response_model=None)
    async def close_session(session_id: str) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        try:
            turns = service.close_session(session_id)
        except SessionError as exc:
            return _error(404, str(exc), "not_found_error")
        return JSONResponse({"session_id": session_id, "turns": [t.model_dump(mode="json") for t in turns]})

    weights_lock = asyncio.Lock()  # one update at a time: versions are checked and applied in order

    @app.get("/weights")
    async def weights_version() -> dict[str, int]:  # pyright: ignore[reportUnusedFunction]
        return {"version": service.version}

    @app.post("/weights", response_model=None)
    async def update_weights(request: Request) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        if request.headers.get("content-type", "").startswith("application/octet-stream"):
            raw_version: Any = request.query_params.get("version")
            path = None
        else:
            try:
                body = as_object(await request.json())
            except ValueError:
                return _error(
                    400,
                    "the body is not JSON (or send the file as application/octet-stream)",
                    "invalid_request_error",
                )
            raw_version, path = body.get("version"), body.get("path")
            if not isinstance(path, str) or not path:
                return _error(
                    400, "path: the weights file to load (a string) is required", "invalid_request_error"
                )
        version = _version(raw_version)
        if version is None:
            return _error(
                400,
                f"version: a non-negative integer is required, got {raw_version!r}",
                "invalid_request_error",
            )
        async with weights_lock:
            if version <= service.version:
                return _error(
                    409,
                    f"version {version} is not newer than the version serving ({service.version})",
                    "conflict",
                )
            try:
                if path is not None:
                    state_dict = await anyio.to_thread.run_sync(load_weights, path)
                else:
                    upload = await read_limited_body(request, max_upload_bytes)
                    if upload is None:
                        return _error(
                            413,
                            f"the weights file is larger than {max_upload_bytes} bytes",
                            "invalid_request_error",
                        )
                    state_dict = await anyio.to_thread.run_sync(weights_from_bytes, upload)
                if not state_dict:
                    raise ValueError("the weights file holds no tensors")
                await service.update_weights(state_dict, version)
            except (OSError, ValueError, KeyError) as exc:  # KeyError: a parameter the model does not have
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                return _error(400, f"weights not loaded: {message}", "invalid_request_error")
        return JSONResponse({"version": service.version, "tensors": len(state_dict)})

    @app.get("/stats")
    async def stats() -> dict[str, float]:  # pyright: ignore[reportUnusedFunction]
        return service.stats()

    return app
