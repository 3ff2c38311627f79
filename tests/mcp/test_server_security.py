"""``serve_mcp`` / ``agentscope mcp serve`` over HTTP: a token off the loopback, Bearer checks, and DNS-rebinding
protection (Host and Origin) on every interface.

Before: bound to 127.0.0.2 (or 0.0.0.0) the server had no Host/Origin checks at all (the SDK enables them only
for the literal hosts 127.0.0.1, localhost and ::1), so requests with ``Host: evil.example`` got 200, and any
interface could be bound without authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

import anyio
import httpx2
import pytest
from click.testing import Result

from agentscope.exceptions import UsageError
from agentscope.tools import MCPClient, Toolkit, serve_mcp
from agentscope.tools._mcp_server import _host_names, check_mcp_binding, parse_host_entry

TOKEN = "s3cret-token-0123456789"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def ping() -> str:
    """Answer pong."""
    return "pong"


@contextlib.asynccontextmanager
async def served(
    host: str, *, token: str | None = None, allowed_hosts: Sequence[str] = ()
) -> AsyncGenerator[str]:
    toolkit = Toolkit()
    toolkit.register(ping)
    ready: list[str] = []
    task = asyncio.ensure_future(
        serve_mcp(
            toolkit,
            transport="http",
            host=host,
            port=0,
            token=token,
            allowed_hosts=allowed_hosts,
            on_ready=ready.append,
        )
    )
    try:
        with anyio.fail_after(10):
            while not ready and not task.done():  # noqa: ASYNC110 (on_ready is a plain callback)
                await anyio.sleep(0.01)
        if task.done():
            task.result()
        yield ready[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def post(url: str, **headers: str) -> int:
    async with httpx2.AsyncClient(trust_env=False) as client:
        response = await client.post(url, json=INITIALIZE, headers={**HEADERS, **headers})
        return response.status_code


def _can_bind(host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


needs_127_0_0_2 = pytest.mark.skipif(not _can_bind("127.0.0.2"), reason="127.0.0.2 cannot be bound here")


@needs_127_0_0_2
async def test_foreign_host_and_origin_are_refused_on_any_loopback_address() -> None:
    async with served("127.0.0.2") as url:
        assert url.startswith("http://127.0.0.2:")
        assert await post(url, Host="evil.example") == 421
        assert await post(url, Origin="http://evil.example") == 403
        port = url.split(":")[2].split("/")[0]
        assert await post(url, Origin=f"http://127.0.0.2:{port}") == 200
        assert await post(url) == 200
        async with MCPClient(url, timeout_s=10) as client:
            assert (await client.call_tool("ping")).text_content == "pong"


@needs_127_0_0_2
async def test_a_token_is_checked_on_every_request() -> None:
    async with served("127.0.0.2", token=TOKEN) as url:
        assert await post(url) == 401
        assert await post(url, Authorization="Bearer wrong-token-0123456789") == 401
        assert await post(url, Authorization=f"Basic {TOKEN}") == 401
        assert await post(url, Authorization=f"Bearer {TOKEN}") == 200
        assert await post(url, Authorization=f"Bearer {TOKEN}", Host="evil.example") == 421
        async with MCPClient(url, timeout_s=10, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            assert (await client.call_tool("ping")).text_content == "pong"
        async with httpx2.AsyncClient(trust_env=False) as raw:
            refused = await raw.post(url, json=INITIALIZE, headers=HEADERS)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "needs its token" in refused.text


async def test_allowed_hosts_add_names_clients_may_use() -> None:
    async with served("127.0.0.1", allowed_hosts=["mcp.internal"]) as url:
        assert await post(url, Host="mcp.internal") == 200
        assert await post(url, Host="mcp.internal:9999") == 200
        assert await post(url, Host="evil.example") == 421


async def test_an_allowed_host_with_a_port_is_reached_on_that_port_only() -> None:
    # Before: every name with a ':' was taken for an IPv6 address and bracketed ("[mcp.internal:8000]"), so
    # "--allowed-host mcp.internal:8000", the documented form, refused every request with 421.
    allowed = ["mcp.internal:8000", "any.internal", "MCP.Proxy:443", "[fd00::5]:8000", "fd00::6"]
    async with served("127.0.0.1", allowed_hosts=allowed) as url:
        assert await post(url, Host="mcp.internal:8000") == 200
        assert await post(url, Host="mcp.internal:8001") == 421
        assert await post(url, Host="mcp.internal") == 421
        assert await post(url, Host="mcp.internal:8000", Origin="http://mcp.internal:8000") == 200
        assert await post(url, Host="mcp.internal:8000", Origin="https://mcp.internal:8000") == 200
        assert await post(url, Host="mcp.internal:8000", Origin="http://mcp.internal:8001") == 403
        # Without a port: any port.
        assert await post(url, Host="any.internal") == 200
        assert await post(url, Host="any.internal:8001") == 200
        assert await post(url, Host="any.internal:8001", Origin="https://any.internal:8001") == 200
        # Clients leave a default port out of Host and Origin.
        assert await post(url, Host="mcp.proxy", Origin="https://mcp.proxy") == 200
        assert await post(url, Host="mcp.proxy:443") == 200
        assert await post(url, Host="mcp.proxy:8443") == 421
        assert await post(url, Host="mcp.proxy", Origin="http://mcp.proxy") == 403
        # IPv6: bracketed with a port, bare for any port.
        assert await post(url, Host="[fd00::5]:8000") == 200
        assert await post(url, Host="[fd00::5]:8001") == 421
        assert await post(url, Host="[fd00::6]:8001", Origin="http://[fd00::6]:8001") == 200
        assert await post(url, Host="[fd00::6]") == 200
        assert await post(url, Host="evil.example:8000") == 421


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("mcp.internal", ("mcp.internal", None)),
        (" MCP.Internal:8000 ", ("mcp.internal", 8000)),
        ("10.0.0.5:65535", ("10.0.0.5", 65535)),
        ("::1", ("[::1]", None)),
        ("[::1]", ("[::1]", None)),
        ("[FD00::5]:8000", ("[fd00::5]", 8000)),
    ],
)
def test_allowed_host_entries_are_read_as_name_and_port(entry: str, parsed: tuple[str, int | None]) -> None:
    assert parse_host_entry(entry) == parsed


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("", "the name is empty"),
        (":8000", "the name is empty"),
        ("mcp.internal:", "the port '' is not a number"),
        ("mcp.internal:http", "the port 'http' is not a number"),
        ("mcp.internal:0", "the port '0' is not a number from 1 to 65535"),
        ("mcp.internal:65536", "the port '65536' is not a number"),
        ("http://mcp.internal:8000", "not a URL"),
        ("fd00::5:8000:x", "write an IPv6 address with a port as [address]:port"),
        ("[fd00::5", "write an IPv6 address as [address]"),
        ("[mcp.internal]:8000", "write an IPv6 address as [address]"),
        ("[fd00::5]8000", "write an IPv6 address as [address]"),
        ("[fd00::5]:", "the port '' is not a number"),
    ],
)
def test_a_malformed_allowed_host_is_refused_naming_the_problem(entry: str, problem: str) -> None:
    with pytest.raises(UsageError, match=re.escape(f"bad host {entry!r}: ") + ".*" + re.escape(problem)):
        parse_host_entry(entry)


def test_cli_refuses_a_malformed_allowed_host_before_serving(cli: Callable[..., Result]) -> None:
    result = cli(
        "mcp",
        "serve",
        "tests/mcp/servers/toolkit_app.py:toolkit",
        "--transport",
        "http",
        "--port",
        "0",
        "--allowed-host",
        "http://mcp.internal:8000",
    )
    assert result.exit_code == 2
    assert "--allowed-host" in result.output
    assert "not a URL" in result.output


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_a_non_loopback_bind_needs_a_long_enough_token(host: str) -> None:
    with pytest.raises(UsageError, match=f"binding the MCP server to {re.escape(host)} lets anyone"):
        check_mcp_binding(host, None)
    with pytest.raises(UsageError, match="at least 16 characters"):
        check_mcp_binding(host, "short")
    check_mcp_binding(host, TOKEN)
    for loopback in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        check_mcp_binding(loopback, None)


async def test_serve_mcp_refuses_before_binding() -> None:
    # 192.0.2.10 (TEST-NET-1) is no address of this machine: binding it would fail, but the check comes first.
    with (
        anyio.fail_after(10),
        pytest.raises(UsageError, match=r"binding the MCP server to 192\.0\.2\.10 lets anyone"),
    ):
        await serve_mcp(Toolkit(), transport="http", host="192.0.2.10", port=0)


def test_a_wildcard_bind_answers_to_this_machine_s_names_only() -> None:
    names = _host_names("0.0.0.0", ["Proxy.Example"])
    assert {"127.0.0.1", "localhost", "::1", socket.gethostname(), "proxy.example"} <= set(names)
    assert "0.0.0.0" not in names
    assert _host_names("127.0.0.2", []) == ["127.0.0.1", "localhost", "::1", "127.0.0.2"]


def test_cli_refuses_a_public_bind_without_a_token(cli: Callable[..., Result]) -> None:
    result = cli(
        "mcp", "serve", "tests/mcp/servers/toolkit_app.py:toolkit", "--transport", "http", "--host", "0.0.0.0"
    )
    assert result.exit_code == 2
    assert "binding the MCP server to 0.0.0.0 lets anyone" in result.output
    assert "--token" in result.output


def test_cli_documents_token_and_allowed_hosts(cli: Callable[..., Result]) -> None:
    result: Any = cli("mcp", "serve", "--help")
    assert "--token" in result.output
    assert "--allowed-host" in result.output
