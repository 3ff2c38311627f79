"""The studio's JSON API, in process (httpx2.AsyncClient over ASGITransport), over a store made by real agent runs."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

import agentscope
from agentscope import tracing
from agentscope.studio import check_binding, create_app, studio_url
from agentscope.tracing import TraceStore
from agentscope.tracing._records import ExportBatch, RunRecord, SpanRecord

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1"


@pytest.fixture
async def store(populated: Any) -> AsyncIterator[TraceStore]:
    opened = await anyio.to_thread.run_sync(TraceStore, populated.path)
    yield opened
    await anyio.to_thread.run_sync(opened.close)


@pytest.fixture
async def client(store: TraceStore) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_app(store, poll_interval_s=0.05)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
        yield c


async def get(client: httpx2.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_health_and_the_ui_shell(client: httpx2.AsyncClient) -> None:
    health = await get(client, "/api/health")
    assert health["ok"] is True
    assert health["schema_version"] == tracing.SCHEMA_VERSION
    page = await client.get("/")
    assert page.status_code == 200
    assert "AgentScope Studio" in page.text
    for asset in ("app.js", "chart.js", "style.css"):
        response = await client.get(f"/static/{asset}")
        assert response.status_code == 200
        assert len(response.content) > 500
    assert (await get(client, "/api/auth")) == {"token_required": False}


async def test_runs_list_with_filters_and_search(client: httpx2.AsyncClient, populated: Any) -> None:
    everything = await get(client, "/api/runs")
    assert everything["total"] == 2
    assert [r["name"] for r in everything["runs"]] == ["grpo-tiny", "calculator"]  # newest first
    calc = everything["runs"][1]
    assert calc["id"] == populated.calc_run
    assert calc["status"] == "finished"
    assert calc["agents"] == ["calculator"]
    assert (calc["trace_count"], calc["span_count"], calc["error_count"]) == (1, 7, 1)
    assert (calc["input_tokens"], calc["output_tokens"]) == (360, 54)

    async def names(**params: Any) -> list[str]:
        return [r["name"] for r in (await get(client, "/api/runs", **params))["runs"]]

    assert await names(project="rl") == ["grpo-tiny"]
    assert await names(agent="calculator") == ["calculator"]
    assert await names(status="error") == ["calculator"]
    assert await names(status="finished") == ["grpo-tiny", "calculator"]
    assert await names(q="GRPO") == ["grpo-tiny"]
    assert await names(since_ns=time.time_ns()) == []
    assert await get(client, "/api/projects") == ["demo", "rl"]


async def test_run_traces_and_the_trace_tree(client: httpx2.AsyncClient, populated: Any) -> None:
    run = await get(client, f"/api/runs/{populated.calc_run}")
    assert run["kinds"] == {
        "agent": {"count": 1, "errors": 0},
        "model": {"count": 3, "errors": 0},
        "tool": {"count": 3, "errors": 1},
    }
    traces = await get(client, f"/api/runs/{populated.calc_run}/traces")
    (trace,) = traces["traces"]
    assert trace["name"] == "invoke_agent calculator"
    assert trace["error_count"] == 1
    tree = await get(client, f"/api/traces/{trace['trace_id']}/tree")
    assert tree["total"] == 7
    rows = [(s["name"], s["depth"]) for s in tree["spans"]]
    assert rows[0] == ("invoke_agent calculator", 0)
    assert [name for name, depth in rows[1:]].count("execute_tool add") == 2
    assert all(depth == 1 for _, depth in rows[1:])
    assert tree["spans"][0]["child_count"] == 6
    page = await get(client, f"/api/traces/{trace['trace_id']}/tree", offset=5, limit=10)
    assert len(page["spans"]) == 2
    assert page["total"] == 7


async def test_span_detail_shows_inputs_outputs_usage_and_errors(
    client: httpx2.AsyncClient, populated: Any
) -> None:
    errors = await get(client, "/api/spans", run_id=populated.calc_run, status="error")
    (failed,) = errors["spans"]
    assert failed["name"] == "execute_tool lookup_rate"
    detail = await get(client, f"/api/spans/{failed['span_id']}")
    assert detail["status"] == "error"
    # The studio's pages pass the span's trace (the lookup then uses the trace's index entries): the same span.
    assert await get(client, f"/api/spans/{failed['span_id']}", trace_id=failed["trace_id"]) == detail
    other_trace = await client.get(f"/api/spans/{failed['span_id']}", params={"trace_id": "0" * 32})
    assert other_trace.status_code == 404
    assert "no tax rate on file for Paris" in detail["status_message"]
    assert detail["attributes"]["gen_ai.tool.call.arguments"] == {"city": "Paris"}
    assert detail["duration_ms"] >= 0

    models = await get(client, "/api/spans", run_id=populated.calc_run, kind="model")
    first = await get(client, f"/api/spans/{models['spans'][0]['span_id']}")
    a = first["attributes"]
    assert a["gen_ai.usage.input_tokens"] == 120
    assert a["gen_ai.request.model"] == "scripted"
    assert a["gen_ai.input.messages"][-1]["content"].startswith("What is 2 + 3")
    assert {t["name"] for t in a["gen_ai.tool.definitions"]} == {"add", "lookup_rate"}
    assert [b["type"] for b in a["gen_ai.output.messages"]] == ["text", "tool_use", "tool_use"]

    found = await get(client, "/api/spans", run_id=populated.calc_run, q="Paris")
    assert found["total"] >= 2  # the tool call and the model calls that carried it
    missing = await client.get("/api/spans/0000000000000000")
    assert missing.status_code == 404
    assert (await client.get("/api/spans")).status_code == 422


async def test_the_conversation_replays_the_exchange(client: httpx2.AsyncClient, populated: Any) -> None:
    (trace,) = (await get(client, f"/api/runs/{populated.calc_run}/traces"))["traces"]
    convo = await get(client, f"/api/traces/{trace['trace_id']}/conversation")
    assert convo["agent"] == "calculator"
    roles = [m["role"] for m in convo["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    calls = [
        b
        for m in convo["messages"]
        if m["role"] == "assistant"
        for b in m["content"]
        if b["type"] == "tool_use"
    ]
    assert [c["name"] for c in calls] == ["add", "lookup_rate", "add"]
    assert set(convo["tools"]) == {c["id"] for c in calls}
    assert convo["tools"][calls[1]["id"]]["status"] == "error"
    assert convo["messages"][-1]["content"][0]["text"].startswith("2 + 3 = 5")


async def test_metrics_series_and_downsampling(client: httpx2.AsyncClient, populated: Any) -> None:
    data = await get(client, f"/api/runs/{populated.rl_run}/metrics")
    assert [m["name"] for m in data["metrics"]] == ["rollout/tokens_per_s", "train/policy_loss"]
    assert data["series"]["train/policy_loss"][:2] == [[0, 1.0], [1, 0.5]]
    assert len(data["series"]["rollout/tokens_per_s"]) == 40
    few = await get(client, f"/api/runs/{populated.rl_run}/metrics", names="train/policy_loss", max_points=10)
    assert list(few["series"]) == ["train/policy_loss"]
    assert len(few["series"]["train/policy_loss"]) == 10


async def test_compare_two_runs(client: httpx2.AsyncClient, populated: Any) -> None:
    data = await get(client, "/api/compare", a=populated.calc_run, b=populated.rl_run)
    assert data["a"]["run"]["name"] == "calculator"
    assert data["b"]["run"]["name"] == "grpo-tiny"
    calc_stats = {(s["kind"], s["name"]): s for s in data["a"]["stats"]}
    assert calc_stats[("tool", "execute_tool add")]["count"] == 2
    assert calc_stats[("tool", "execute_tool lookup_rate")]["errors"] == 1
    assert {m["name"] for m in data["b"]["metrics"]} == {"train/policy_loss", "rollout/tokens_per_s"}
    assert (
        await client.get("/api/compare", params={"a": populated.calc_run, "b": "nope"})
    ).status_code == 404


async def test_blobs_are_served_by_hash(client: httpx2.AsyncClient, store: TraceStore) -> None:
    digest = await anyio.to_thread.run_sync(
        lambda: store._conn().execute("SELECT hash FROM blobs LIMIT 1").fetchone()[0]
    )
    response = await client.get(f"/api/blobs/{digest}")
    assert response.status_code == 200
    json.loads(response.content)
    assert (await client.get("/api/blobs/nope")).status_code == 404


async def test_the_live_feed_sends_new_runs_and_spans(
    client: httpx2.AsyncClient, populated: Any, helpers: Any
) -> None:
    backlog = await client.get("/api/events", params={"after_span": 0, "after_run_ns": 0, "max_events": 4})
    assert backlog.headers["content-type"].startswith("text/event-stream")
    events = _parse_sse(backlog.text)
    assert [e for e, _ in events] == ["ready", "run", "run", "span", "span"]
    assert {r["name"] for e, r in events if e == "run"} == {"calculator", "grpo-tiny"}
    assert events[3][1]["id"] == 1  # spans come in the order they were written

    received: list[tuple[str, Any]] = []

    async def listen() -> None:
        response = await client.get("/api/events", params={"max_events": 6, "trace_id": None})
        received.extend(_parse_sse(response.text))

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        await anyio.sleep(0.2)  # the feed has taken its cursor
        await anyio.to_thread.run_sync(_one_more_run, populated.path, helpers.run_calculator)
    kinds = [e for e, _ in received]
    assert kinds[0] == "ready"
    assert "run" in kinds
    spans = [data for e, data in received if e == "span"]
    assert spans
    assert all("attributes" not in s for s in spans)
    assert {s["run_id"] for s in spans} <= {r["id"] for e, r in received if e == "run"}


def _one_more_run(path: Path, run_calculator: Any) -> None:
    agentscope.init(path, project="demo", run_name="live-one")
    import asyncio

    asyncio.run(run_calculator("Done live."))
    tracing.shutdown()


def _parse_sse(text: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


# ---------------------------------------------------------------------- tokens, hosts, errors


async def test_a_token_protects_the_api_but_not_the_static_ui(store: TraceStore) -> None:
    app = create_app(store, token="s3cret-token-0123456789")
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
        assert (await c.get("/api/runs")).status_code == 401
        assert (await c.get("/api/runs", headers={"Authorization": "Bearer wrong"})).status_code == 401
        ok = await c.get("/api/runs", headers={"Authorization": "Bearer s3cret-token-0123456789"})
        assert ok.status_code == 200
        # In the query string only for the live feed (see test_api_validation.py).
        assert (await c.get("/api/runs", params={"token": "s3cret-token-0123456789"})).status_code == 401
        assert (await c.get("/api/auth")).json() == {"token_required": True}
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/static/app.js")).status_code == 200


async def test_foreign_host_headers_are_refused_when_hosts_are_pinned(store: TraceStore) -> None:
    app = create_app(store, allowed_hosts=["127.0.0.1", "localhost"])
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
        assert (await c.get("/api/runs")).status_code == 200
        assert (await c.get("/api/runs", headers={"Host": "attacker.example"})).status_code == 400


def test_binding_rules() -> None:
    for loopback in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        check_binding(loopback, None)  # no token needed
    for exposed in ("0.0.0.0", "example.org", "10.0.0.1", "::"):
        with pytest.raises(agentscope.exceptions.UsageError, match="--token"):
            check_binding(exposed, None)
    check_binding("0.0.0.0", "a-long-enough-token-123")
    with pytest.raises(agentscope.exceptions.UsageError, match="--token"):
        check_binding("0.0.0.0", None)
    with pytest.raises(agentscope.exceptions.UsageError, match="16 characters"):
        check_binding("0.0.0.0", "short")
    assert studio_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/"
    assert studio_url("0.0.0.0", 80, "tok") == "http://0.0.0.0:80/#token=tok"


async def test_a_path_store_is_opened_by_the_lifespan(tmp_path: Path, helpers: Any) -> None:
    path = tmp_path / "lifespan.db"
    await anyio.to_thread.run_sync(helpers.populate, path)
    app = create_app(path)
    transport = httpx2.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx2.AsyncClient(transport=transport, base_url=BASE) as c:
        assert (await c.get("/api/runs")).json()["total"] == 2


# ---------------------------------------------------------------------- a 10,000-span trace


def _big_trace(path: Path, n: int) -> str:
    run = RunRecord(id="big", project="load", name="ten-thousand", started_ns=1)
    spans = [
        SpanRecord(
            "big",
            "bigtrace",
            "root",
            None,
            "agent",
            "invoke_agent big",
            0,
            n * 10 + 10,
            "unset",
            None,
            "{}",
            True,
        )
    ]
    for i in range(1, n):
        parent = "root" if i % 10 == 1 else f"s{i - (i - 1) % 10}"
        spans.append(
            SpanRecord(
                "big",
                "bigtrace",
                f"s{i}",
                parent,
                "tool",
                f"execute_tool t{i % 7}",
                i * 10,
                i * 10 + 5,
                "error" if i % 997 == 0 else "unset",
                None,
                json.dumps({"gen_ai.tool.name": f"t{i % 7}"}),
                False,
            )
        )
    with TraceStore(path) as st:
        st.write(ExportBatch(run=run, spans=spans, metrics=[], blobs={}, resolve=lambda _: None))
    return "bigtrace"


async def test_a_10000_span_trace_is_served_in_pages_quickly(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    trace_id = await anyio.to_thread.run_sync(_big_trace, path, 10_000)
    store = await anyio.to_thread.run_sync(TraceStore, path)
    try:
        app = create_app(store)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
            started = time.perf_counter()
            first = (await c.get(f"/api/traces/{trace_id}/tree", params={"limit": 500})).json()
            cold = time.perf_counter() - started
            assert first["total"] == 10_000
            assert len(first["spans"]) == 500
            assert first["spans"][0]["child_count"] == 1000
            started = time.perf_counter()
            last = (
                await c.get(f"/api/traces/{trace_id}/tree", params={"offset": 9_800, "limit": 500})
            ).json()
            warm = time.perf_counter() - started
            assert len(last["spans"]) == 200
            assert cold < 5.0
            assert warm < 1.0
            errors = (await c.get("/api/spans", params={"trace_id": trace_id, "status": "error"})).json()
            assert errors["total"] == 10
    finally:
        await anyio.to_thread.run_sync(store.close)


async def test_runs_of_processes_that_are_gone_are_shown_lost(tmp_path: Path) -> None:
    import socket
    import sys

    finished = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    gone_pid = int(finished.stdout)  # its process has exited and been reaped
    opened = await anyio.to_thread.run_sync(TraceStore, tmp_path / "traces.db")
    try:
        run = RunRecord(
            "r-gone", "p", "crashed", time.time_ns(), config={"host": socket.gethostname(), "pid": gone_pid}
        )
        await anyio.to_thread.run_sync(opened.upsert_run, run)
        app = create_app(opened, poll_interval_s=0.05)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
            assert (await get(c, "/api/runs/r-gone"))["status"] == "lost"
            assert [r["name"] for r in (await get(c, "/api/runs", status="lost"))["runs"]] == ["crashed"]
    finally:
        await anyio.to_thread.run_sync(opened.close)


# ---------------------------------------------------------------------- how long a run lasted


def _late_traced_run(path: Path, prepare_s: float, steps: int, step_s: float) -> tuple[str, int, int]:
    """An RL-like run: the command prepares (loads, warm-starts) for ``prepare_s`` before it turns tracing on, as
    ``agentscope rl train`` does, then records a metric point every ``step_s``. Returns its id, start and end."""
    begun = time.time_ns()
    time.sleep(prepare_s)
    tracer = tracing.init(path, project="rl", run_name="late-tracing", started_ns=begun)
    assert tracer is not None
    for step in range(1, steps + 1):
        time.sleep(step_s)
        tracing.log_metrics(
            {"train/reward_mean": step / steps, "time/wall_s": (time.time_ns() - begun) / 1e9}, step=step
        )
    tracing.shutdown()
    return tracer.run.id, begun, time.time_ns()


async def test_a_run_lasts_from_its_real_start_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    run_id, begun, done = await anyio.to_thread.run_sync(_late_traced_run, path, 0.8, 3, 0.15)
    opened = await anyio.to_thread.run_sync(TraceStore, path)
    try:
        app = create_app(opened)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
            row = await get(c, f"/api/runs/{run_id}")
            (listed,) = (await get(c, "/api/runs"))["runs"]
            series = (await get(c, f"/api/runs/{run_id}/metrics", names="time/wall_s"))["series"][
                "time/wall_s"
            ]
    finally:
        await anyio.to_thread.run_sync(opened.close)
    assert row["status"] == "finished"
    assert row["started_ns"] == begun, "the run started when its command did, not when tracing was turned on"
    assert row["duration_ns"] == row["ended_ns"] - begun
    assert 1.25e9 <= row["duration_ns"] <= done - begun
    assert row["duration_ns"] >= series[-1][1] * 1e9, (
        "the run lasted at least as long as its last step's wall time"
    )
    assert listed["duration_ns"] == row["duration_ns"]


async def test_a_run_in_progress_has_lasted_until_now(tmp_path: Path) -> None:
    """A running run that writes nothing for a while (an agent waiting for its user) still gets older."""
    path = tmp_path / "traces.db"
    tracer = await anyio.to_thread.run_sync(lambda: tracing.init(path, project="demo", run_name="chatting"))
    assert tracer is not None
    try:
        tracing.record_metric("turns", 1)
        await tracer.aflush()
        opened = await anyio.to_thread.run_sync(TraceStore, path)
        try:
            app = create_app(opened)
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as c:
                await anyio.sleep(1.0)  # nothing is written meanwhile
                row = await get(c, f"/api/runs/{tracer.run.id}")
                (listed,) = (await get(c, "/api/runs"))["runs"]
        finally:
            await anyio.to_thread.run_sync(opened.close)
    finally:
        await anyio.to_thread.run_sync(tracing.shutdown)
    assert row["status"] == "running"
    assert row["ended_ns"] is None
    assert row["updated_ns"] - row["started_ns"] < 0.9e9, "the last write came early"
    assert row["duration_ns"] >= 1.0e9
    assert listed["duration_ns"] >= 1.0e9
