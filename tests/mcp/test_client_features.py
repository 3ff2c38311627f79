"""MCPClient against a server written with the official SDK (tests/mcp/servers/demo_server.py): content types,
resources and prompts, progress and logs, timeouts and cancellation, sharing, and registration into a Toolkit
used by ReActAgents. One server process serves the whole module (starting the SDK takes seconds)."""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio

from agentscope.message import Base64Source, ImageBlock
from agentscope.tools import MCPClient, MCPLogMessage, MCPProgress, MCPRequestError, StdioServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HERE = Path(__file__).resolve().parent
DEMO = HERE / "servers" / "demo_server.py"
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

PROGRESS: list[MCPProgress] = []
LOGS: list[MCPLogMessage] = []


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 (polling the state of another process)
            await anyio.sleep(0.02)


async def _on_log(message: MCPLogMessage) -> None:  # async callbacks work as well as sync ones
    LOGS.append(message)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client() -> AsyncIterator[MCPClient]:
    server = StdioServer(sys.executable, [str(DEMO), "stdio"])
    async with MCPClient(server, timeout_s=10, on_progress=PROGRESS.append, on_log=_on_log) as shared:
        yield shared
    assert shared.restarts == 0


async def test_tool_results_keep_their_content_types(client: MCPClient) -> None:
    assert client.name == "demo"  # the name the server reports
    assert client.connected
    assert {"echo", "add", "image", "weather", "fail", "progress"} <= {
        t.name for t in await client.list_tools()
    }

    echo = await client.call_tool("echo", {"message": "hi"})
    assert echo.text_content == "echo: hi"
    assert not echo.is_error
    assert echo.metadata == {"mcp_server": "demo", "mcp_tool": "echo"}

    added = await client.call_tool("add", {"a": 2, "b": 3})
    assert added.text_content == "5"
    assert added.structured == {"result": 5}

    image = await client.call_tool("image")
    [block] = image.content
    assert isinstance(block, ImageBlock)
    assert isinstance(block.source, Base64Source)
    assert block.source.media_type == "image/png"
    assert base64.b64decode(block.source.data) == base64.b64decode(PNG_1X1)

    weather = await client.call_tool("weather", {"city": "Paris"})
    assert weather.structured == {"city": "Paris", "temperature_c": 21.5}
    assert '"city": "Paris"' in weather.text_content

    failed = await client.call_tool("fail", {"reason": "testing"})
    assert failed.is_error
    assert "failed because testing" in failed.text_content
    invalid = await client.call_tool("add", {"a": "two", "b": 3})
    assert invalid.is_error
    assert "a" in invalid.text_content
    unknown = await client.call_tool("no_such_tool", {})
    assert unknown.is_error
    assert "no_such_tool" in unknown.text_content


async def test_resources_and_prompts_are_listed_and_read(client: MCPClient) -> None:
    [resource] = await client.list_resources()
    assert resource.uri == "demo://readme"
    [contents] = await client.read_resource("demo://readme")
    assert getattr(contents, "text", None) == "Read me, please."
    [template] = await client.list_resource_templates()
    assert template.uri_template == "demo://greeting/{name}"
    [greeting] = await client.read_resource("demo://greeting/Ada")
    assert getattr(greeting, "text", None) == "Hello, Ada!"
    with pytest.raises(MCPRequestError, match="demo://nothing"):
        await client.read_resource("demo://nothing")

    [prompt] = await client.list_prompts()
    assert prompt.name == "review"
    [message] = await client.get_prompt("review", {"code": "x = 1"})
    assert message.role == "user"
    assert message.text == "Please review this code:\nx = 1"
    with pytest.raises(MCPRequestError):
        await client.get_prompt("no_such_prompt")


async def test_progress_and_server_logs_are_surfaced(
    client: MCPClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentscope.mcp")
    PROGRESS.clear()
    LOGS.clear()
    this_call: list[MCPProgress] = []
    result = await client.call_tool("progress", {"steps": 3}, on_progress=this_call.append)
    assert result.text_content == "done 3 steps"
    assert [(p.progress, p.total, p.message) for p in this_call] == [
        (1, 3, "step 1"),
        (2, 3, "step 2"),
        (3, 3, "step 3"),
    ]
    assert this_call == PROGRESS  # the client's own callback got them too
    assert {(p.server, p.tool) for p in PROGRESS} == {("demo", "progress")}

    assert (await client.call_tool("chatty")).text_content == "logged"
    assert [(m.server, m.level, m.data) for m in LOGS] == [
        ("demo", "info", "hello from the server"),
        ("demo", "warning", "careful now"),
    ]
    server_logs = [r for r in caplog.records if r.name == "agentscope.mcp.demo"]
    assert any(r.levelno == logging.WARNING and r.getMessage() == "careful now" for r in server_logs)


async def test_stream_tool_yields_progress_then_the_result(client: MCPClient) -> None:
    pieces = [piece async for piece in client.stream_tool("progress", {"steps": 2})]
    assert [p.metadata["mcp_progress"] for p in pieces[:-1]] == [
        {"progress": 1.0, "total": 2.0, "message": "step 1"},
        {"progress": 2.0, "total": 2.0, "message": "step 2"},
    ]
    assert pieces[-1].text_content == "done 2 steps"


async def test_a_hung_call_times_out_and_is_cancelled_on_the_server(
    client: MCPClient, tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled"
    result = await client.call_tool("sleep", {"seconds": 30, "marker": str(marker)}, timeout_s=0.3)
    assert result.is_error
    assert (
        result.text_content
        == "MCP server 'demo' did not finish tool 'sleep' within 0.3s; the call was cancelled"
    )
    await wait_for(marker.exists)  # the server got notifications/cancelled
    assert (await client.call_tool("echo", {"message": "still here"})).text_content == "echo: still here"
    assert client.restarts == 0


async def test_cancelling_the_caller_cancels_the_call_on_the_server(
    client: MCPClient, tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled"
    with anyio.move_on_after(0.3) as scope:
        await client.call_tool("sleep", {"seconds": 30, "marker": str(marker)})
    assert scope.cancelled_caught
    await wait_for(marker.exists)
    assert (await client.call_tool("add", {"a": 1, "b": 1})).text_content == "2"


async def test_many_concurrent_callers_share_one_connection(client: MCPClient) -> None:
    pid = client.server_pid
    results: dict[int, str] = {}

    async def call(i: int) -> None:
        results[i] = (await client.call_tool("add", {"a": i, "b": 1000})).text_content

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(call, i)
    assert results == {i: str(i + 1000) for i in range(50)}
    assert client.server_pid == pid
    assert client.restarts == 0
