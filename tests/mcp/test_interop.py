"""Interop with MCP servers nobody here wrote: the npm packages ``@modelcontextprotocol/server-everything``
(stdio and streamable HTTP) and ``@modelcontextprotocol/server-filesystem`` (stdio), from ``.cache/npm``.

They skip only when ``.cache/npm`` (or node) is missing; ``scripts/setup.sh`` installs them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentscope.agents import ReActAgent
from agentscope.events import ToolResultDelta, ToolResultEvent
from agentscope.message import Base64Source, ImageBlock, Msg, TextBlock
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import MCPClient, MCPProgress, MCPRequestError, StdioServer, Toolkit

pytestmark = pytest.mark.integration

NPM = Path(__file__).resolve().parents[2] / ".cache" / "npm" / "node_modules" / "@modelcontextprotocol"
EVERYTHING_JS = NPM / "server-everything" / "dist" / "index.js"
FILESYSTEM_JS = NPM / "server-filesystem" / "dist" / "index.js"
EVERYTHING = "mcp-servers/everything"


@pytest.fixture(autouse=True)
def _npm_servers() -> None:
    import shutil

    if shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/setup.sh installs it)")
    if not (EVERYTHING_JS.is_file() and FILESYSTEM_JS.is_file()):
        pytest.skip("the npm MCP servers are not in .cache/npm (run scripts/setup.sh)")


def everything_stdio() -> StdioServer:
    return StdioServer("node", [str(EVERYTHING_JS), "stdio"])


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 (polling the state of another process)
            await anyio.sleep(0.02)


async def check_everything(client: MCPClient) -> None:
    """List tools, call several with arguments, read a resource and a prompt, get an error result."""
    assert client.name == EVERYTHING
    tools = {t.name: t for t in await client.list_tools()}
    assert {
        "echo",
        "get-sum",
        "get-tiny-image",
        "get-structured-content",
        "trigger-long-running-operation",
    } <= set(tools)
    assert tools["get-sum"].input_schema["required"] == ["a", "b"]

    assert (await client.call_tool("echo", {"message": "interop"})).text_content == "Echo: interop"
    assert (
        await client.call_tool("get-sum", {"a": 2, "b": 3.5})
    ).text_content == "The sum of 2 and 3.5 is 5.5."
    image = await client.call_tool("get-tiny-image", {})
    images = [b for b in image.content if isinstance(b, ImageBlock)]
    assert len(images) == 1
    assert isinstance(images[0].source, Base64Source)
    assert images[0].source.media_type == "image/png"
    weather = await client.call_tool("get-structured-content", {"location": "New York"})
    assert isinstance(weather.structured, dict)
    assert set(weather.structured) == {"temperature", "conditions", "humidity"}

    embedded = await client.call_tool("get-resource-reference", {"resourceType": "Text", "resourceId": 2})
    assert not embedded.is_error
    assert any(
        "Resource 2" in b.text for b in embedded.content if isinstance(b, TextBlock)
    )  # the resource's text

    error = await client.call_tool("echo", {})
    assert error.is_error
    assert "message" in error.text_content

    resources = await client.list_resources()
    architecture = next(r for r in resources if r.uri.endswith("architecture.md"))
    [contents] = await client.read_resource(architecture.uri)
    assert getattr(contents, "text", "").startswith("# Everything Server")
    with pytest.raises(MCPRequestError):
        await client.read_resource("demo://resource/static/document/no-such-document.md")

    [message] = await client.get_prompt("args-prompt", {"city": "Paris"})
    assert message.text == "What's weather in Paris?"


async def test_everything_over_stdio_and_a_kill_mid_session() -> None:
    async with MCPClient(everything_stdio(), timeout_s=15) as client:
        await check_everything(client)

        progress: list[MCPProgress] = []
        done = await client.call_tool(
            "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, on_progress=progress.append
        )
        assert "Long running operation completed" in done.text_content
        assert [(p.progress, p.total) for p in progress] == [(1, 3), (2, 3), (3, 3)]

        # Killed while a call is running: that call fails clearly, the server is restarted.
        pid = client.server_pid
        assert pid is not None
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def long_call() -> None:
                results.append(
                    await client.call_tool("trigger-long-running-operation", {"duration": 20, "steps": 2})
                )

            tg.start_soon(long_call)
            await anyio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
        [result] = results
        assert result.is_error
        assert (
            f"MCP server '{EVERYTHING}' was killed by signal 9 while running tool 'trigger-long-running-operation'"
            in (result.text_content)
        )
        assert "the server was restarted" in result.text_content
        assert (await client.call_tool("echo", {"message": "back"})).text_content == "Echo: back"

        # Killed between calls: the next call reports the restart, the one after works.
        pid = client.server_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: not client.connected)
        result = await client.call_tool("get-sum", {"a": 1, "b": 1})
        assert result.is_error
        assert (
            f"MCP server '{EVERYTHING}' was killed by signal 9 since the last call, so it was restarted"
            in (result.text_content)
        )
        assert (
            await client.call_tool("get-sum", {"a": 1, "b": 1})
        ).text_content == "The sum of 1 and 1 is 2."
        assert client.restarts == 2


async def test_everything_over_streamable_http_and_a_restart(everything_http: Any) -> None:
    async with MCPClient(everything_http.url, timeout_s=15) as client:
        await check_everything(client)

        everything_http.kill()
        everything_http.start()  # the same port, a new process that does not know our session
        result = await client.call_tool("echo", {"message": "hello?"})
        assert result.is_error
        assert f"MCP server '{EVERYTHING}' dropped the connection since the last call (or restarted)" in (
            result.text_content
        )
        assert "Tool 'echo' was not called" in result.text_content
        assert (await client.call_tool("echo", {"message": "hello"})).text_content == "Echo: hello"
        assert client.restarts == 1

        everything_http.kill()  # gone for good: a clear error, not an exception
        result = await client.call_tool("echo", {"message": "anyone?"})
        assert result.is_error
        assert EVERYTHING in result.text_content


async def test_filesystem_over_stdio(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "notes.txt").write_text("alpha\nbeta\n")
    (tmp_path / "secret.txt").write_text("do not read")
    async with MCPClient(
        StdioServer("node", [str(FILESYSTEM_JS), str(root)]), name="fs", timeout_s=15
    ) as client:
        names = {t.name for t in await client.list_tools()}
        assert {"read_text_file", "write_file", "edit_file", "list_directory"} <= names

        read = await client.call_tool("read_text_file", {"path": str(root / "notes.txt")})
        assert read.text_content == "alpha\nbeta\n"
        written = await client.call_tool("write_file", {"path": str(root / "new.txt"), "content": "fresh"})
        assert not written.is_error
        assert (root / "new.txt").read_text() == "fresh"
        edited = await client.call_tool(
            "edit_file", {"path": str(root / "new.txt"), "edits": [{"oldText": "fresh", "newText": "edited"}]}
        )
        assert not edited.is_error
        assert (root / "new.txt").read_text() == "edited"
        listing = await client.call_tool("list_directory", {"path": str(root)})
        assert listing.text_content.splitlines() == ["[FILE] new.txt", "[FILE] notes.txt"]

        denied = await client.call_tool("read_text_file", {"path": str(tmp_path / "secret.txt")})
        assert denied.is_error
        assert "Access denied" in denied.text_content

        pid = client.server_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: not client.connected)
        result = await client.call_tool("list_directory", {"path": str(root)})
        assert result.is_error
        assert (
            "MCP server 'fs' was killed by signal 9 since the last call, so it was restarted"
            in result.text_content
        )
        assert (
            await client.call_tool("read_text_file", {"path": str(root / "new.txt")})
        ).text_content == "edited"


async def test_an_agent_uses_npm_server_tools_with_progress_in_its_stream() -> None:
    def shout(text: str) -> str:
        """Shout.

        Args:
            text: What to shout.
        """
        return text.upper() + "!"

    async with MCPClient(everything_stdio(), timeout_s=15) as client:
        toolkit = Toolkit()
        toolkit.register(shout)
        registered = await toolkit.register_mcp(
            client, prefix="ev_", include=lambda name: name.startswith(("get-sum", "trigger-long"))
        )
        assert registered == ["ev_get-sum", "ev_trigger-long-running-operation"]
        model = ScriptedModel(
            [
                [
                    tool_call("ev_get-sum", a=20, b=22),
                    tool_call("ev_trigger-long-running-operation", duration=0.2, steps=2),
                    tool_call("shout", text="done"),
                ],
                "All done.",
            ]
        )
        agent = ReActAgent(name="interop", model=model, toolkit=toolkit)
        events = [e async for e in agent.stream(Msg(role="user", content="go"))]
        results = {e.result.name: e.result for e in events if isinstance(e, ToolResultEvent)}
        assert results["ev_get-sum"].output == "The sum of 20 and 22 is 42."
        assert "completed" in str(results["ev_trigger-long-running-operation"].output)
        assert results["shout"].output == "DONE!"
        progress = [
            e.chunk.metadata["mcp_progress"]
            for e in events
            if isinstance(e, ToolResultDelta) and "mcp_progress" in e.chunk.metadata
        ]
        assert progress == [  # progress notifications, streamed as they came
            {"progress": 1.0, "total": 2.0, "message": None},
            {"progress": 2.0, "total": 2.0, "message": None},
        ]
        model.assert_complete()
