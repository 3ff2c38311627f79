"""Toolkits served over MCP (``serve_mcp``, ``agentscope mcp serve``), called with the official ``mcp`` client:
in-process, over stdio (the CLI in a subprocess) and over streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types as mtypes
import pytest
from click.testing import Result
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agentscope.exceptions import UsageError
from agentscope.message import ImageBlock
from agentscope.tools import MCPClient, Toolkit, ToolResponse, build_mcp_server, serve_mcp

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APP = HERE / "servers" / "toolkit_app.py"
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture
def toolkit() -> Toolkit:
    sys.path.insert(0, str(APP.parent))
    try:
        import toolkit_app  # pyright: ignore[reportMissingImports]
    finally:
        sys.path.remove(str(APP.parent))
    return toolkit_app.build()


def text_of(result: mtypes.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mtypes.TextContent))


async def check_served_toolkit(client: Client) -> None:
    """What every transport must show: schemas, results of each content type, errors, progress."""
    modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS  # structured content may be any JSON value
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"greet", "add", "point", "picture", "count", "divide"}  # not the inactive group's
    assert tools["add"].description == "Add two integers."
    assert tools["add"].input_schema["properties"]["a"] == {"description": "First number.", "type": "integer"}
    assert tools["add"].input_schema["required"] == ["a", "b"]

    greeting = await client.call_tool("greet", {"name": "Ada"})
    assert text_of(greeting) == "Hello, Ada!"
    assert not greeting.is_error

    added = await client.call_tool("add", {"a": 2, "b": 40})
    assert text_of(added) == "42"
    assert added.structured_content == (42 if modern else {"result": 42})

    pt = await client.call_tool("point", {"x": 1, "y": 2})
    assert pt.structured_content == {"x": 1, "y": 2}

    picture = await client.call_tool("picture", {})
    [image] = picture.content
    assert isinstance(image, mtypes.ImageContent)
    assert (image.mime_type, image.data) == ("image/png", PNG_1X1)

    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    counted = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
    assert text_of(counted) == "1;2;3;"
    assert progress == [(1.0, "1;"), (2.0, "2;"), (3.0, "3;")]

    bad = await client.call_tool("add", {"a": "two"})
    assert bad.is_error
    assert "a" in text_of(bad)
    assert "b" in text_of(bad)
    retry = await client.call_tool("divide", {"a": 1, "b": 0})
    assert retry.is_error
    assert text_of(retry) == "b must not be zero"
    unknown = await client.call_tool("secret", {"name": "x"})
    assert unknown.is_error
    assert "not available" in text_of(unknown)


async def test_in_process_with_the_official_client(toolkit: Toolkit) -> None:
    server = build_mcp_server(toolkit, name="kit", instructions="Use the tools.")
    async with Client(server) as client:  # the modern, direct path
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS
        await check_served_toolkit(client)
    async with Client(
        server, mode="legacy"
    ) as client:  # JSON-RPC over in-memory streams, initialize handshake
        assert client.server_info is not None
        assert client.server_info.name == "kit"
        await check_served_toolkit(client)
    toolkit.set_group_active("hidden", True)  # groups switched on later are served
    async with Client(server) as client:
        assert "secret" in {t.name for t in (await client.list_tools()).tools}


async def _cli_over_stdio() -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentscope.cli", "mcp", "serve", f"{APP}:toolkit", "--name", "kit"],
        cwd=str(ROOT),
    )
    async with Client(params) as client:
        assert client.server_info is not None
        assert client.server_info.name == "kit"
        await check_served_toolkit(client)


async def _cli_over_http() -> None:
    argv = [
        sys.executable,
        "-m",
        "agentscope.cli",
        "mcp",
        "serve",
        f"{APP}:build",
        "--transport",
        "http",
        "--port",
        "0",
    ]
    process = await anyio.open_process(argv, cwd=ROOT)
    try:
        assert process.stderr is not None
        seen = ""
        with anyio.fail_after(30):
            async for chunk in process.stderr:
                seen += chunk.decode()
                if "MCP server listening on " in seen and seen.endswith("\n"):
                    break
        url = seen.split("MCP server listening on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/mcp")
        async with Client(url) as client:
            await check_served_toolkit(client)
    finally:
        process.terminate()
        with anyio.fail_after(10):
            code = await process.wait()
        await process.aclose()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (its documented behaviour).
    assert code in (0, -signal.SIGTERM)


@pytest.mark.slow
async def test_cli_serves_the_official_client_over_stdio_and_http() -> None:
    """``agentscope mcp serve`` in subprocesses (both at once: each spends seconds importing)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cli_over_stdio)
        tg.start_soon(_cli_over_http)


@pytest.fixture
async def http_server(toolkit: Toolkit) -> AsyncIterator[str]:
    """``serve_mcp`` over HTTP in this process, on a free port; stopped by cancellation.

    A plain asyncio task, not a task group: pytest runs a fixture's setup and teardown in different tasks.
    """
    ready: list[str] = []
    task = asyncio.ensure_future(serve_mcp(toolkit, transport="http", port=0, on_ready=ready.append))
    with anyio.fail_after(10):
        while not ready:  # noqa: ASYNC110 (on_ready is a plain callback)
            await anyio.sleep(0.01)
    yield ready[0]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_http_in_process_with_the_official_client_and_ours(http_server: str) -> None:
    async with Client(http_server) as client:
        await check_served_toolkit(client)
    async with MCPClient(http_server, timeout_s=10) as ours:  # our client, our server
        assert ours.name == "agentscope"
        result = await ours.call_tool("picture")
        assert isinstance(result.content[0], ImageBlock)
        pieces = [p async for p in ours.stream_tool("count", {"n": 2})]
        assert [p.metadata.get("mcp_progress", {}).get("message") for p in pieces[:-1]] == ["1;", "2;"]  # type: ignore[union-attr]
        assert pieces[-1].text_content == "1;2;"


def test_cli_rejects_what_is_not_a_toolkit(cli: Callable[..., Result]) -> None:
    result = cli("mcp", "serve", f"{APP}:PNG_1X1")
    assert result.exit_code != 0
    assert "not a Toolkit" in result.output
    result = cli("mcp", "serve", f"{APP}:toolkit", "--transport", "smoke-signals")
    assert result.exit_code != 0
    assert "use stdio or http" in result.output


async def test_unknown_transport_is_a_usage_error(toolkit: Toolkit) -> None:
    with pytest.raises(UsageError, match="unknown MCP transport"):
        await serve_mcp(toolkit, transport="carrier-pigeon")  # type: ignore[arg-type]


def test_tool_response_conversion_keeps_what_mcp_can_carry() -> None:
    from agentscope.tools._mcp_convert import tool_response_to_mcp

    response = ToolResponse(content=[], structured=[1, 2], is_error=True)
    legacy: Any = tool_response_to_mcp(response)
    assert legacy.structured_content == {"result": [1, 2]}
    assert legacy.is_error
    modern: Any = tool_response_to_mcp(response, modern=True)
    assert modern.structured_content == [1, 2]
