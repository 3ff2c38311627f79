"""MCPClient lifecycle against a tiny dependency-free stdio server (tests/mcp/servers/tiny_server.py): crashes
during and between calls, restarts, close and cancellation without leaked processes, start-up failures, and a
streamable-HTTP server going away."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentscope.exceptions import UsageError
from agentscope.tools import MCPClient, MCPConnectionError, StdioServer

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
TINY = HERE / "servers" / "tiny_server.py"


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tiny_processes() -> list[int]:
    """Pids of tiny servers still running (a leak, between tests)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(TINY).encode() in cmdline and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 (polling the state of another process)
            await anyio.sleep(0.02)


@pytest.fixture
def tiny() -> StdioServer:
    return StdioServer(sys.executable, [str(TINY)])


@pytest.fixture(autouse=True)
def no_leaked_servers() -> Any:
    yield
    assert tiny_processes() == [], "an MCP server process outlived its test"


# ---------------------------------------------------------------------- crashes and restarts


async def test_a_crash_during_a_call_is_reported_and_the_server_restarted(tiny: StdioServer) -> None:
    async with MCPClient(tiny, timeout_s=10) as client:
        first_pid = client.server_pid
        assert first_pid is not None
        assert pid_alive(first_pid)
        result = await client.call_tool("crash", {"code": 3})
        assert result.is_error
        assert result.text_content == (
            "MCP server 'tiny' exited (exit code 3) while running tool 'crash', so the call failed; the server "
            "was restarted. The call may or may not have taken effect: check, or call the tool again."
        )
        assert client.restarts == 1
        assert not pid_alive(first_pid)
        assert (await client.call_tool("echo", {"message": "again"})).text_content == "echo: again"
        assert client.server_pid not in (None, first_pid)


async def test_a_server_killed_between_calls_is_restarted_and_the_model_told(tiny: StdioServer) -> None:
    async with MCPClient(tiny, timeout_s=10) as client:
        pid = client.server_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: not client.connected)  # the exit is noticed at once, not on the next call
        result = await client.call_tool("echo", {"message": "hello"})
        assert result.is_error
        assert result.text_content == (
            "MCP server 'tiny' was killed by signal 9 since the last call, so it was restarted; any state it held "
            "is lost. Tool 'echo' was not called: call it again if it is still needed."
        )
        assert (await client.call_tool("echo", {"message": "hello"})).text_content == "echo: hello"
        assert client.restarts == 1


async def test_retry_on_reconnect_sends_the_call_to_the_restarted_server(tiny: StdioServer) -> None:
    async with MCPClient(tiny, timeout_s=10, retry_on_reconnect=True) as client:
        pid = client.server_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: not client.connected)
        assert (await client.call_tool("echo", {"message": "hello"})).text_content == "echo: hello"
        assert client.restarts == 1
        os.kill(client.server_pid or 0, signal.SIGKILL)
        await wait_for(lambda: not client.connected)
        assert [t.name for t in await client.list_tools()][:2] == ["echo", "add"]  # listing is always retried
        assert client.restarts == 2


async def test_concurrent_calls_during_a_crash_all_fail_clearly_and_restart_once(tiny: StdioServer) -> None:
    async with MCPClient(tiny, timeout_s=10) as client:
        results: list[Any] = [None] * 20

        async def sleeper(i: int) -> None:
            results[i] = await client.call_tool("sleep", {"seconds": 10})

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(sleeper, i)
            await anyio.sleep(0.2)
            crash = await client.call_tool("crash", {"code": 5})
        assert crash.is_error
        for result in results:
            assert result.is_error
            assert "MCP server 'tiny' exited (exit code 5) while running tool 'sleep'" in result.text_content
        assert client.restarts == 1
        assert (await client.call_tool("add", {"a": 2, "b": 2})).text_content == "4"


async def test_a_toolkit_timeout_cancels_the_call_on_the_server(tiny: StdioServer, tmp_path: Path) -> None:
    from agentscope.message import ToolUseBlock
    from agentscope.tools import Toolkit

    marker = tmp_path / "cancelled"
    async with MCPClient(tiny, timeout_s=10) as client:
        toolkit = Toolkit()
        await toolkit.register_mcp(client, include=["sleep"], timeout_s=0.3)
        result = await toolkit.call(
            ToolUseBlock(id="1", name="sleep", input={"seconds": 30, "marker": str(marker)})
        )
        assert result.is_error
        assert result.output == "Tool 'sleep' timed out after 0.3s"
        await wait_for(
            marker.exists
        )  # the toolkit's cancellation reached the server as notifications/cancelled


# ---------------------------------------------------------------------- lifecycle


async def test_close_stops_the_server_and_is_idempotent(tiny: StdioServer) -> None:
    client = MCPClient(tiny, timeout_s=10)
    with pytest.raises(UsageError, match="not connected"):
        await client.call_tool("echo", {"message": "x"})
    await client.connect()
    await client.connect()  # already connected: nothing happens
    pid = client.server_pid
    assert pid is not None
    assert pid_alive(pid)
    await client.aclose()
    assert not pid_alive(pid)
    assert client.closed
    assert not client.connected
    await client.aclose()
    with pytest.raises(UsageError, match="closed"):
        await client.call_tool("echo", {"message": "x"})
    with pytest.raises(UsageError, match="closed"):
        await client.connect()


async def test_a_client_opened_in_one_task_can_be_used_and_closed_in_others(tiny: StdioServer) -> None:
    client = MCPClient(tiny, timeout_s=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.connect)
    pid = client.server_pid
    assert pid is not None
    assert (await client.call_tool("echo", {"message": "x"})).text_content == "echo: x"
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.aclose)
    assert not pid_alive(pid)


async def test_cancelling_the_owning_task_leaves_no_process(tiny: StdioServer) -> None:
    pids: list[int] = []
    connected = anyio.Event()

    async def user() -> None:
        async with MCPClient(tiny, timeout_s=10) as client:
            assert client.server_pid is not None
            pids.append(client.server_pid)
            connected.set()
            await client.call_tool("sleep", {"seconds": 30})

    async with anyio.create_task_group() as tg:
        tg.start_soon(user)
        await connected.wait()
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert not pid_alive(pids[0])

    # Cancelled while the server is still starting (before the handshake): nothing is left either.
    hanging = StdioServer(sys.executable, [str(TINY), "--hang"])
    with anyio.move_on_after(0.3) as scope:
        await MCPClient(hanging).connect()
    assert scope.cancelled_caught
    assert tiny_processes() == []


async def test_a_server_that_fails_to_start_raises_a_clear_error() -> None:
    with pytest.raises(MCPConnectionError, match="no-such-mcp-server"):
        async with MCPClient(StdioServer("no-such-mcp-server-binary")):
            pass
    script = "import sys; sys.stderr.write('missing API key\\n'); sys.exit(2)"
    with pytest.raises(MCPConnectionError) as info:
        async with MCPClient(StdioServer(sys.executable, ["-c", script]), name="broken"):
            pass
    assert "'broken'" in str(info.value)
    assert "missing API key" in str(info.value)


async def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    hanging = StdioServer(sys.executable, [str(TINY), "--hang"])
    client = MCPClient(hanging, name="silent", connect_timeout_s=0.5)
    with (
        anyio.fail_after(5),
        pytest.raises(MCPConnectionError, match=r"'silent' did not finish connecting within 0\.5s"),
    ):
        await client.connect()
    await client.aclose()


async def test_many_agents_share_one_client(tiny: StdioServer) -> None:
    from agentscope.agents import ReActAgent
    from agentscope.message import Msg, ToolResultBlock
    from agentscope.testing import ScriptedModel, tool_call
    from agentscope.tools import Toolkit

    async with MCPClient(tiny, timeout_s=10) as client:
        replies: dict[int, str] = {}

        async def run_agent(i: int) -> None:
            toolkit = Toolkit()
            await toolkit.register_mcp(client, prefix="tiny_", include=["add"])
            model = ScriptedModel(
                [
                    tool_call("tiny_add", a=i, b=100),
                    lambda req: str(req.messages[-1].blocks_of(ToolResultBlock)[0].output),
                ]
            )
            agent = ReActAgent(name=f"agent{i}", model=model, toolkit=toolkit)
            replies[i] = (await agent(Msg(role="user", content="add"))).text

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(run_agent, i)
        assert client.restarts == 0
    assert replies == {i: str(i + 100) for i in range(10)}


async def test_register_mcp_selects_renames_and_refuses_clashes(tiny: StdioServer) -> None:
    from agentscope.message import ToolUseBlock
    from agentscope.tools import Toolkit

    async with MCPClient(tiny, timeout_s=10) as client:
        toolkit = Toolkit()
        assert await toolkit.register_mcp(client, include=["echo", "add"]) == ["echo", "add"]
        schema = next(s for s in toolkit.schemas() if s.name == "add")
        assert schema.parameters == {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        }  # the server's own schema
        # All or nothing: "echo" is taken, so "pid" is not registered either.
        with pytest.raises(UsageError, match=r"\['echo'\] already registered"):
            await toolkit.register_mcp(client, include=["echo", "pid"])
        assert "pid" not in toolkit
        names = await toolkit.register_mcp(
            client, prefix="t.", exclude=lambda n: n in ("crash", "sleep"), group="basic", progress=False
        )
        assert names == ["t_echo", "t_add", "t_pid", "t_dotted_name"]  # names a model can call
        result = await toolkit.call(ToolUseBlock(id="1", name="t_dotted_name", input={}))
        assert result.output == "dotted"
        with pytest.raises(UsageError, match="does not exist"):
            await toolkit.register_mcp(client, group="nope")
