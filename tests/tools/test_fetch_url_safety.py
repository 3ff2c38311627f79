"""``fetch_url`` against a real HTTP server on 127.0.0.1: the body is capped, non-public targets are refused after
DNS resolution (and on every redirect) unless allowed, and a malformed URL is a clear tool error.

Before: the whole body was read (an endless one until the timeout), ``localhost`` or any name resolving to a
private address was fetched, and a URL with a tab raised a raw ``httpx.InvalidURL``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncGenerator

import pytest

from agentscope.exceptions import ModelRetry
from agentscope.message import ToolUseBlock
from agentscope.tools import Toolkit
from agentscope.tools.builtin import make_fetch_url
from agentscope.tools.builtin._fetch import _non_public

CHUNK = b"<p>" + b"a" * 65_000 + b"</p>\n"


@pytest.fixture
async def web() -> AsyncGenerator[tuple[str, dict[str, int]]]:
    """A server on 127.0.0.1: ``/plain``, ``/endless`` (an HTML body that never ends: chunks until the client
    goes away, 500 MB at most), ``/to-localhost`` (a redirect to the same server by the name localhost).
    Yields the base URL and the number of body bytes ``/endless`` managed to send."""
    sent = {"endless": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ")[1].decode()
            port = writer.get_extra_info("sockname")[1]
            if path == "/plain":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\njust text"
                )
            elif path == "/to-localhost":
                location = f"http://localhost:{port}/plain"
                writer.write(
                    f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
                )
            elif path == "/endless":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                while sent["endless"] < 500_000_000:
                    writer.write(f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n")
                    await writer.drain()
                    sent["endless"] += len(CHUNK)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", sent
        server.close()


async def call(toolkit: Toolkit, url: str) -> tuple[str, bool]:
    result = await toolkit.call(ToolUseBlock(id="c", name="fetch_url", input={"url": url}))
    assert isinstance(result.output, str)
    return result.output, result.is_error


def kit(*hosts: str, **options: object) -> Toolkit:
    toolkit = Toolkit()
    toolkit.register(make_fetch_url(hosts, **options))  # type: ignore[arg-type]
    return toolkit


async def test_the_body_is_capped_and_the_rest_not_downloaded(web: tuple[str, dict[str, int]]) -> None:
    url, sent = web
    toolkit = kit("127.0.0.1", max_bytes=200_000, max_chars=1_000_000, timeout_s=10)
    started = time.monotonic()
    output, is_error = await call(toolkit, f"{url}/endless")
    assert not is_error, output
    assert time.monotonic() - started < 5
    assert output.endswith("... (cut: the page is larger than 200000 bytes)")
    assert 190_000 < len(output) < 210_000
    assert sent["endless"] < 50_000_000  # the client stopped reading; the server gave up


async def test_a_name_resolving_to_loopback_is_refused_unless_allowed(
    web: tuple[str, dict[str, int]],
) -> None:
    url, _ = web
    by_name = url.replace("127.0.0.1", "localhost") + "/plain"
    output, is_error = await call(kit("localhost"), by_name)
    assert is_error
    assert output.startswith("fetching from localhost (which resolves to ")
    assert "is refused: it is a private, loopback or otherwise non-public address" in output
    assert await call(kit("localhost", allow_private=True), by_name) == ("just text", False)
    # An IP address listed as it is was asked for explicitly.
    assert await call(kit("127.0.0.1"), f"{url}/plain") == ("just text", False)


async def test_every_redirect_is_resolved_and_checked_again(web: tuple[str, dict[str, int]]) -> None:
    url, _ = web
    output, is_error = await call(kit("127.0.0.1", "localhost"), f"{url}/to-localhost")
    assert is_error
    assert output.startswith("fetching from localhost (which resolves to ")
    both = kit("127.0.0.1", "localhost", allow_private=True)
    assert await call(both, f"{url}/to-localhost") == ("just text", False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/a\tb", "the URL contains a tab, which URLs cannot hold"),
        ("http://127.0.0.1/a\nb", "the URL contains a line break"),
        ("http://127.0.0.1/a b", "the URL contains a space"),
        ("http://127.0.0.1:99999/", "not a valid URL"),
        ("http:///nohost", "has no host"),
        ("ftp://127.0.0.1/", "only http and https"),
    ],
)
async def test_malformed_urls_are_clear_tool_errors(url: str, message: str) -> None:
    output, is_error = await call(kit("127.0.0.1"), url)
    assert is_error
    assert message in output
    with pytest.raises(ModelRetry):
        await make_fetch_url(["127.0.0.1"])(url)


@pytest.mark.parametrize(
    ("address", "non_public"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("8.8.8.8", False),
        ("2606:4700::1111", False),
        ("::ffff:8.8.8.8", False),
    ],
)
def test_which_addresses_count_as_non_public(address: str, non_public: bool) -> None:
    assert _non_public(ipaddress.ip_address(address)) is non_public
