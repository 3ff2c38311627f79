"""The studio's web app: a JSON API over a trace store, a live feed (SSE) and the static UI.

Everything the UI shows comes from the JSON API under ``/api``; the API is usable on its own. Store reads block
(SQLite), so every handler runs them in a worker thread. With a token configured every ``/api`` request must carry
it in ``Authorization: Bearer <token>``; only the SSE feed (``/api/events``, which browsers open without headers)
also takes ``?token=``. The static files hold no data and are served without it. Bad query parameters get 422
with a ``detail`` naming each one.
"""

import asyncio
import json
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from agentscope.studio._evaluations import add_evaluation_routes
from agentscope.tracing import Row, RunFilter, TraceStore

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app"]

_T = TypeVar("_T")

_STATIC_DIR = Path(str(resources.files("agentscope.studio") / "static"))
"""The UI: plain HTML, JS and CSS shipped in the package (no build step)."""


def _schema_version(store: TraceStore) -> int:
    return store.schema_version


def _require_fastapi() -> None:
    try:
        import fastapi  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise ImportError("the studio needs FastAPI and uvicorn: pip install -e '.[studio]'") from exc


_INT64 = 2**63 - 1
"""Largest integer SQLite stores: the bound of every numeric query parameter (nanoseconds, ids, offsets)."""

_LOST_RUN_POLLS = 10
"""The live feed checks for runs whose process is gone every this many polls."""


def create_app(
    store: TraceStore | str | Path,
    *,
    token: str | None = None,
    poll_interval_s: float = 0.5,
    allowed_hosts: list[str] | None = None,
) -> "FastAPI":
    """Build the studio app over ``store`` (a :class:`TraceStore` or the path of its file).

    Args:
        store: The trace store to read. A path is opened when the app starts (and closed when it stops).
        token: When set, every API request must present it.
        poll_interval_s: How often the live feed looks for new spans, runs and metric points.
        allowed_hosts: Accept only requests whose ``Host`` header is one of these (DNS-rebinding protection
            for a studio on 127.0.0.1); None accepts any.
    """
    _require_fastapi()
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from fastapi.staticfiles import StaticFiles

    state: dict[str, TraceStore] = {}
    if isinstance(store, TraceStore):
        state["store"] = store  # ready without a lifespan (in-process test clients send none)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncGenerator[None]:
        if isinstance(store, TraceStore):
            yield
            return
        opened = await anyio.to_thread.run_sync(TraceStore, store)
        state["store"] = opened
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(opened.close)

    app = FastAPI(
        title="AgentScope Studio", lifespan=lifespan, docs_url="/api/docs", openapi_url="/api/openapi.json"
    )
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    def supplied_token(request: Request, *, query: bool) -> str:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return (request.query_params.get("token") or "") if query else ""

    def require(supplied: str) -> None:
        if token is not None and not secrets.compare_digest(supplied.encode(), token.encode()):
            raise HTTPException(
                status_code=401, detail="this studio needs its token", headers={"WWW-Authenticate": "Bearer"}
            )

    def check_token(request: Request) -> None:
        """The token from the ``Authorization`` header only: a token in a URL ends up in logs and history."""
        require(supplied_token(request, query=False))

    def check_feed_token(request: Request) -> None:
        """The live feed's token: also from ``?token=``, since a browser's EventSource cannot send headers."""
        require(supplied_token(request, query=True))

    async def read(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a store read in a worker thread (SQLite blocks)."""
        target = state.get("store")
        if target is None:
            raise HTTPException(status_code=503, detail="the trace store is not open yet")
        return await anyio.to_thread.run_sync(partial(func, target, *args, **kwargs))

    def not_found(what: str) -> HTTPException:
        return HTTPException(status_code=404, detail=f"no such {what}")

    api = [Depends(check_token)]

    # -------------------------------------------------------------- pages and static files

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:  # pyright: ignore[reportUnusedFunction]
        html = await anyio.Path(_STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=_STATIC_DIR, check_dir=False), name="static")

    # -------------------------------------------------------------- runs

    @app.get("/api/health", dependencies=api)
    async def health() -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        version = await read(_schema_version)
        return {"ok": True, "schema_version": version, "store": state["store"].path}

    @app.get("/api/auth")
    async def auth() -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        """Whether the API needs a token (no token needed to ask)."""
        return {"token_required": token is not None}

    @app.get("/api/projects", dependencies=api)
    async def projects() -> list[str]:  # pyright: ignore[reportUnusedFunction]
        return await read(TraceStore.projects)

    @app.get("/api/runs", dependencies=api)
    async def runs(  # pyright: ignore[reportUnusedFunction]
        project: str | None = None,
        agent: str | None = None,
        status: str | None = None,
        since_ns: int | None = Query(None, ge=0, le=_INT64),
        until_ns: int | None = Query(None, ge=0, le=_INT64),
        q: str | None = None,
        offset: int = Query(0, ge=0, le=_INT64),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        filters = RunFilter(
            project=project, agent=agent, status=status, since_ns=since_ns, until_ns=until_ns, q=q
        )
        await read(TraceStore.mark_lost_runs)
        rows, total = await read(TraceStore.list_runs, filters, offset=offset, limit=limit)
        return {"runs": rows, "total": total, "offset": offset}

    @app.get("/api/runs/{run_id}", dependencies=api)
    async def run(run_id: str) -> Row:  # pyright: ignore[reportUnusedFunction]
        await read(TraceStore.mark_lost_runs)
        row = await read(TraceStore.get_run, run_id)
        if row is None:
            raise not_found("run")
        return row

    @app.get("/api/runs/{run_id}/traces", dependencies=api)
    async def traces(  # pyright: ignore[reportUnusedFunction]
        run_id: str, offset: int = Query(0, ge=0, le=_INT64), limit: int = Query(100, ge=1, le=1000)
    ) -> dict[str, Any]:
        rows, total = await read(TraceStore.list_traces, run_id, offset=offset, limit=limit)
        return {"traces": rows, "total": total, "offset": offset}

    @app.get("/api/runs/{run_id}/stats", dependencies=api)
    async def stats(run_id: str) -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        run_row = await read(TraceStore.get_run, run_id)
        if run_row is None:
            raise not_found("run")
        return {"run": run_row, "stats": await read(TraceStore.run_stats, run_id)}

    @app.get("/api/runs/{run_id}/metrics", dependencies=api)
    async def metrics(  # pyright: ignore[reportUnusedFunction]
        run_id: str, names: str | None = None, max_points: int = Query(1000, ge=2, le=100_000)
    ) -> dict[str, Any]:
        available = await read(TraceStore.metric_names, run_id)
        wanted = [n for n in names.split(",") if n] if names else [m["name"] for m in available]
        series = {n: await read(TraceStore.metric_series, run_id, n, max_points=max_points) for n in wanted}
        return {"metrics": available, "series": series}

    @app.get("/api/compare", dependencies=api)
    async def compare(a: str, b: str) -> dict[str, Any]:  # pyright: ignore[reportUnusedFunction]
        sides: list[dict[str, Any]] = []
        for run_id in (a, b):
            run_row = await read(TraceStore.get_run, run_id)
            if run_row is None:
                raise not_found(f"run {run_id}")
            metric_rows = await read(TraceStore.metric_names, run_id)
            sides.append(
                {"run": run_row, "stats": await read(TraceStore.run_stats, run_id), "metrics": metric_rows}
            )
        return {"a": sides[0], "b": sides[1]}

    add_evaluation_routes(app, read, api, not_found)  # /api/evaluations: agentscope eval's results

    # -------------------------------------------------------------- traces and spans

    @app.get("/api/traces/{trace_id}", dependencies=api)
    async def trace(trace_id: str) -> Row:  # pyright: ignore[reportUnusedFunction]
        row = await read(TraceStore.get_trace, trace_id)
        if row is None:
            raise not_found("trace")
        return row

    @app.get("/api/traces/{trace_id}/tree", dependencies=api)
    async def tree(  # pyright: ignore[reportUnusedFunction]
        trace_id: str, offset: int = Query(0, ge=0, le=_INT64), limit: int = Query(500, ge=1, le=5000)
    ) -> dict[str, Any]:
        rows, total = await read(TraceStore.trace_tree, trace_id, offset=offset, limit=limit)
        if total == 0:
            raise not_found("trace")
        return {"spans": rows, "total": total, "offset": offset}

    @app.get("/api/traces/{trace_id}/conversation", dependencies=api)
    async def conversation(trace_id: str, agent_span_id: str | None = None) -> Row:  # pyright: ignore[reportUnusedFunction]
        row = await read(TraceStore.conversation, trace_id, agent_span_id)
        if row is None:
            raise not_found("agent invocation in this trace")
        return row

    @app.get("/api/spans", dependencies=api)
    async def spans(  # pyright: ignore[reportUnusedFunction]
        run_id: str | None = None,
        trace_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        name: str | None = None,
        q: str | None = None,
        offset: int = Query(0, ge=0, le=_INT64),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        if not run_id and not trace_id:
            raise HTTPException(status_code=422, detail="give run_id or trace_id")
        rows, total = await read(
            TraceStore.list_spans,
            run_id=run_id,
            trace_id=trace_id,
            kind=kind,
            status=status,
            name=name,
            q=q,
            offset=offset,
            limit=limit,
        )
        return {"spans": rows, "total": total, "offset": offset}

    @app.get("/api/spans/{span_id}", dependencies=api)
    async def span(span_id: str, trace_id: str | None = None) -> Row:  # pyright: ignore[reportUnusedFunction]
        # With its trace id a span is found through the trace's index entries; without, by reading every span.
        row = await read(TraceStore.get_span, span_id, trace_id=trace_id)
        if row is None:
            raise not_found("span")
        return row

    @app.get("/api/blobs/{digest}", dependencies=api)
    async def blob(digest: str) -> Response:  # pyright: ignore[reportUnusedFunction]
        data = await read(TraceStore.get_blob, digest)
        if data is None:
            raise not_found("blob")
        return Response(content=data, media_type="application/json")

    # -------------------------------------------------------------- live feed

    @app.get("/api/events", dependencies=[Depends(check_feed_token)])
    async def events(  # pyright: ignore[reportUnusedFunction]
        request: Request,
        run_id: str | None = None,
        trace_id: str | None = None,
        after_span: int | None = Query(None, ge=0, le=_INT64),
        after_metric: int | None = Query(None, ge=0, le=_INT64),
        after_run_ns: int | None = Query(None, ge=0, le=_INT64),
        max_events: int | None = Query(None, ge=1, le=_INT64),
    ) -> StreamingResponse:
        """Server-sent events: ``run`` (a run row changed), ``span`` (a span was written; light row), ``metric``.

        Starts after the given cursors (default: now). ``max_events`` ends the stream after that many events.
        """
        cursor = await read(TraceStore.cursor)
        positions = {
            "span": cursor["span"] if after_span is None else after_span,
            "metric": cursor["metric"] if after_metric is None else after_metric,
            "run": cursor["run"] if after_run_ns is None else after_run_ns,
        }

        async def stream() -> AsyncIterator[str]:
            sent = 0
            idle = 0
            yield f"event: ready\ndata: {json.dumps(positions)}\n\n"
            polls = 0
            while True:
                if polls % _LOST_RUN_POLLS == 0:  # a killed process's run becomes 'lost', and that is news
                    await read(TraceStore.mark_lost_runs)
                polls += 1
                batch: list[tuple[str, Row]] = []
                for row in await read(TraceStore.runs_updated_since, positions["run"]):
                    positions["run"] = max(positions["run"], row["updated_ns"])
                    if run_id is None or row["id"] == run_id:
                        batch.append(("run", row))
                for row in await read(
                    TraceStore.spans_after, positions["span"], run_id=run_id, trace_id=trace_id
                ):
                    positions["span"] = max(positions["span"], row["id"])
                    batch.append(("span", row))
                for row in await read(TraceStore.metrics_after, positions["metric"], run_id=run_id):
                    positions["metric"] = max(positions["metric"], row["id"])
                    batch.append(("metric", row))
                for event, row in batch:
                    yield f"event: {event}\ndata: {json.dumps(row)}\n\n"
                    sent += 1
                    if max_events is not None and sent >= max_events:
                        return
                idle = 0 if batch else idle + 1
                if idle and idle % 30 == 0:
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(poll_interval_s)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        """422 whose ``detail`` names each bad parameter in one sentence (``errors`` keeps FastAPI's list)."""
        problems: list[str] = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
            got = repr(error.get("input"))
            got = got if len(got) <= 60 else got[:59] + "…"
            problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')} (got {got})")
        return JSONResponse(
            status_code=422, content={"detail": "; ".join(problems), "errors": jsonable_encoder(exc.errors())}
        )

    @app.exception_handler(RuntimeError)
    async def store_error(_: Request, exc: RuntimeError) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    return app
