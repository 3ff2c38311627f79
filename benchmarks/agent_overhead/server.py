"""A minimal, fast OpenAI-compatible Chat Completions server for the benchmark (non-streaming only).

It answers deterministically from the request: while the conversation holds fewer than ``k`` tool results
(messages with role ``tool``), it returns one call to ``add`` with ``{"a": 1, "b": 2}``; then the final text
``The answer is 3.``. ``GET /stats`` returns request counts, ``POST /stats/reset`` zeroes them.

Run: ``python server.py --port 8123 --k 5`` (binds 127.0.0.1 only). A bare ASGI app under uvicorn; uses uvloop,
httptools and orjson when they are installed (the orchestrator gives the server its own venv with them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - fallback when orjson is missing

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

FINAL_TEXT = "The answer is 3."

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def make_app(k: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    stats = {"requests": 0, "chat_requests": 0, "bad_requests": 0}
    ids = itertools.count()

    async def respond(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        stats["requests"] += 1
        path: str = scope["path"]
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if path == "/stats":
            await respond(send, 200, dumps(stats))
            return
        if path == "/stats/reset":
            for key in stats:
                stats[key] = 0
            await respond(send, 200, dumps(stats))
            return
        if not path.endswith("/chat/completions") or scope["method"] != "POST":
            stats["bad_requests"] += 1
            await respond(send, 404, dumps({"error": {"message": f"no route {path}", "type": "not_found"}}))
            return
        try:
            req = loads(b"".join(chunks))
            messages = req["messages"]
        except Exception as exc:
            stats["bad_requests"] += 1
            await respond(send, 400, dumps({"error": {"message": str(exc), "type": "invalid_request_error"}}))
            return
        if req.get("stream"):
            stats["bad_requests"] += 1
            await respond(
                send, 400, dumps({"error": {"message": "streaming unsupported", "type": "invalid"}})
            )
            return
        stats["chat_requests"] += 1
        n = next(ids)
        tool_results = sum(1 for m in messages if m.get("role") == "tool")
        if tool_results < k:
            message_out: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{n}",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                    }
                ],
            }
            finish = "tool_calls"
        else:
            message_out = {"role": "assistant", "content": FINAL_TEXT}
            finish = "stop"
        body = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", "bench"),
            "choices": [{"index": 0, "message": message_out, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": 10 * len(messages),
                "completion_tokens": 10,
                "total_tokens": 10 * len(messages) + 10,
            },
        }
        await respond(send, 200, dumps(body))

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    a = p.parse_args()
    uvicorn.run(
        make_app(a.k),
        host="127.0.0.1",
        port=a.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=120,
    )


if __name__ == "__main__":
    main()
