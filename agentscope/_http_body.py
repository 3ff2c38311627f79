"""Reading a request body with a size limit, for the ASGI apps we serve (``agentscope serve``, the rollout app)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["read_limited_body"]


async def read_limited_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it exceeds ``limit`` bytes: refused before reading when
    ``Content-Length`` says so, else as soon as the stream passes the limit (nothing more is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
