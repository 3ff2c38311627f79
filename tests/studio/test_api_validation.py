"""The studio API validates its query parameters (422 naming the parameter, never a 500) and takes the token from
the query string only on the live feed.

Before: ``since_ns=10**20`` (or any offset beyond SQLite's 64-bit integers) raised OverflowError inside the store:
500; and every ``/api`` route accepted ``?token=``, which ends up in server logs, proxies and browser history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from agentscope.studio import create_app
from agentscope.tracing import TraceStore

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1"
TOKEN = "s3cret-token-0123456789"
HUGE = str(10**20)


@pytest.fixture
async def store(populated: Any) -> AsyncIterator[TraceStore]:
    opened = await anyio.to_thread.run_sync(TraceStore, populated.path)
    yield opened
    await anyio.to_thread.run_sync(opened.close)


async def test_since_ns_beyond_64_bits_is_a_422_naming_it(store: TraceStore) -> None:
    app = create_app(store)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
        response = await c.get("/api/runs", params={"since_ns": HUGE})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == (
        f"since_ns: Input should be less than or equal to 9223372036854775807 (got '{HUGE}')"
    )
    assert body["errors"][0]["loc"] == ["query", "since_ns"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/runs", {"since_ns": HUGE}),
        ("/api/runs", {"until_ns": HUGE}),
        ("/api/runs", {"until_ns": "-1"}),
        ("/api/runs", {"offset": HUGE}),
        ("/api/runs", {"since_ns": "1e20"}),
        ("/api/runs", {"limit": "0"}),
        ("/api/runs/RUN/traces", {"offset": HUGE}),
        ("/api/traces/TRACE/tree", {"offset": HUGE}),
        ("/api/spans", {"run_id": "RUN", "offset": HUGE}),
        ("/api/runs/RUN/metrics", {"max_points": "1"}),
        ("/api/events", {"after_span": HUGE}),
        ("/api/events", {"after_metric": HUGE}),
        ("/api/events", {"after_run_ns": HUGE}),
        ("/api/events", {"max_events": "0"}),
    ],
)
async def test_bad_numbers_are_refused_before_reaching_the_store(
    store: TraceStore, path: str, params: dict[str, str]
) -> None:
    app = create_app(store)
    runs, _ = await anyio.to_thread.run_sync(store.list_runs)
    trace_ids = await anyio.to_thread.run_sync(lambda: store.list_traces(runs[0]["id"]))
    real = path.replace("RUN", runs[0]["id"]).replace("TRACE", trace_ids[0][0]["trace_id"])
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url=BASE) as c:
        response = await c.get(real, params=params)
    assert response.status_code == 422, response.text
    bad = list(params)[-1]
    assert response.json()["detail"].startswith(f"{bad}: ")


async def test_the_token_is_taken_from_the_query_string_only_for_the_live_feed(store: TraceStore) -> None:
    app = create_app(store, token=TOKEN)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
        for path in ("/api/runs", "/api/health", "/api/projects"):
            assert (await c.get(path, params={"token": TOKEN})).status_code == 401
            assert (await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        feed = {"max_events": "1", "after_span": "0"}
        by_query = await c.get("/api/events", params={**feed, "token": TOKEN})
        assert by_query.status_code == 200
        assert by_query.text.startswith("event: ready")
        by_header = await c.get("/api/events", params=feed, headers={"Authorization": f"Bearer {TOKEN}"})
        assert by_header.status_code == 200
        assert (
            await c.get("/api/events", params={**feed, "token": "wrong-token-0123456789"})
        ).status_code == 401
        assert (await c.get("/api/events", params=feed)).status_code == 401
