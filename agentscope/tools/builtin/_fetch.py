"""``fetch_url``: the text of a web page, from hosts on an allow-list only."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Collection
from html.parser import HTMLParser
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import anyio
import httpx2

from agentscope.exceptions import ModelRetry

__all__ = ["make_fetch_url"]

_MAX_REDIRECTS: Final = 5
_TEXT_TYPES: Final = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "+json",
    "+xml",
)
_SKIP_TAGS: Final = frozenset({"script", "style", "noscript", "template", "svg"})
_BLOCK_TAGS: Final = frozenset(
    {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer", "pre"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "title", "blockquote"}
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML page: scripts, styles and tags dropped, blank runs collapsed."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _host_allowed(url: str, allowed: frozenset[str]) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return False
    port = parts.port
    return host in allowed or (port is not None and f"{host}:{port}" in allowed)


_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def _non_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is no public unicast address (private, loopback, link-local, shared, reserved,
    multicast...), looking through the IPv6 forms that carry an IPv4 address."""
    if ip.is_multicast or not ip.is_global:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return any(v4 is not None and _non_public(v4) for v4 in embedded)
    return False


async def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (without blocking the event loop); ModelRetry when none."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ModelRetry(f"cannot resolve the host {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise ModelRetry(f"cannot resolve the host {host!r}")
    return addresses


def _check_url(url: str) -> httpx2.URL:
    """``url`` parsed, or ModelRetry saying what is wrong with it (before anything is sent)."""
    bad = next((c for c in url if ord(c) < 0x20 or ord(c) == 0x7F or c.isspace()), None)
    if bad is not None:
        raise ModelRetry(
            f"the URL contains {_CONTROL_NAMES.get(bad, f'the character {bad!r}')}, which URLs cannot hold; "
            "send it without (spaces as %20)"
        )
    try:
        parsed = httpx2.URL(url)
        _ = urlsplit(url).port  # a port out of range
    except (httpx2.InvalidURL, ValueError) as exc:
        raise ModelRetry(f"not a valid URL: {url!r} ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise ModelRetry(f"only http and https URLs can be fetched, not {url!r}")
    if not parsed.host:
        raise ModelRetry(f"the URL {url!r} has no host")
    return parsed


_CONTROL_NAMES: Final = {"\t": "a tab", "\n": "a line break", "\r": "a carriage return", " ": "a space"}


def make_fetch_url(
    allowed_hosts: Collection[str] | None = None,
    *,
    max_chars: int = 50_000,
    max_bytes: int = 5_000_000,
    timeout_s: float = 20.0,
    allow_private: bool = False,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> Callable[..., Any]:
    """A ``fetch_url`` tool that fetches pages only from ``allowed_hosts``.

    With no allow-list (the default) the tool is disabled: every call returns an error saying so. Hosts are
    matched exactly (``"docs.python.org"``, or ``"127.0.0.1:8000"`` for one port only); every redirect is
    checked again. HTML is reduced to its text; other text types are returned as they are.

    Only public addresses are fetched: the host is resolved first (and again on every redirect), and a host
    that resolves to a private, loopback, link-local or other non-public address is refused, unless
    ``allow_private`` is set or the host is an IP address listed in ``allowed_hosts`` as it is. The request
    then goes to the address that was checked, so the name cannot resolve elsewhere in between.

    Args:
        allowed_hosts: Host names (or ``host:port``) the tool may fetch from.
        max_chars: Most characters returned; longer pages are cut (and say so).
        max_bytes: Most bytes of a response body read; the rest is not downloaded (the page says it was cut).
        timeout_s: Limit for each request.
        allow_private: Let allowed hosts resolve to non-public addresses (an intranet, a local server).
        transport: An ``httpx2`` transport (for tests and proxies).
    """
    allowed = frozenset(h.lower() for h in allowed_hosts or ())

    async def fetch_url(url: str) -> str:
        """Fetch a web page (http or https) and return its text (HTML is reduced to readable text).

        Args:
            url: The full URL, e.g. "https://example.com/page".
        """
        if not allowed:
            raise ModelRetry("fetch_url is disabled: no hosts are allowed (the allow-list is empty)")
        current = url.strip()
        # Built in a worker thread: creating a client loads the TLS trust store from disk.
        client = await anyio.to_thread.run_sync(
            functools.partial(
                httpx2.AsyncClient,
                transport=transport,
                timeout=timeout_s,
                follow_redirects=False,
                trust_env=False,
            )
        )
        async with client:
            for _ in range(_MAX_REDIRECTS + 1):
                target = _check_url(current)
                if not _host_allowed(current, allowed):
                    host = urlsplit(current).netloc or current
                    raise ModelRetry(
                        f"fetching from {host!r} is not allowed; allowed hosts: {', '.join(sorted(allowed))}"
                    )
                request = await _pinned_request(client, target, allowed, allow_private)
                try:
                    with anyio.fail_after(timeout_s):
                        response = await client.send(request, stream=True)
                        try:
                            if response.is_redirect and "location" in response.headers:
                                current = urljoin(current, response.headers["location"])
                                continue
                            body, cut = await _read_capped(response, max_bytes)
                        finally:
                            await response.aclose()
                except (TimeoutError, httpx2.TimeoutException):
                    raise ModelRetry(f"no answer from {current} within {timeout_s:g}s") from None
                except httpx2.HTTPError as exc:
                    raise ModelRetry(f"cannot fetch {current}: {type(exc).__name__}: {exc}") from None
                return _page_text(current, response, body, cut, max_chars, max_bytes)
        raise ModelRetry(f"too many redirects (more than {_MAX_REDIRECTS}) from {url}")

    return fetch_url


async def _pinned_request(
    client: httpx2.AsyncClient, target: httpx2.URL, allowed: frozenset[str], allow_private: bool
) -> httpx2.Request:
    """A GET of ``target`` sent to an address its host resolves to, after checking that address."""
    host = target.host
    port = target.port or (443 if target.scheme == "https" else 80)
    literal = _ip_literal(host)
    addresses = [str(literal)] if literal is not None else await _resolve(host, port)
    listed_literal = literal is not None and (host in allowed or f"{host}:{port}" in allowed)
    if not allow_private and not listed_literal:
        for address in addresses:
            if _non_public(ipaddress.ip_address(address.split("%", 1)[0])):
                what = host if literal is not None else f"{host} (which resolves to {address})"
                raise ModelRetry(
                    f"fetching from {what} is refused: it is a private, loopback or otherwise non-public "
                    "address (make_fetch_url(..., allow_private=True) allows it)"
                )
    address = addresses[0]
    headers = {"User-Agent": "agentscope-fetch_url", "Host": target.netloc.decode("ascii")}
    extensions: dict[str, Any] = {}
    if literal is None and target.scheme == "https":
        extensions["sni_hostname"] = host  # TLS still checks the certificate against the name
    pinned = target.copy_with(host=address)
    return client.build_request("GET", pinned, headers=headers, extensions=extensions)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _read_capped(response: httpx2.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the body, and whether there was more (the rest is not downloaded)."""
    if response.status_code >= 400:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            return b"".join(chunks)[:max_bytes], True
    return b"".join(chunks), False


def _page_text(
    url: str, response: httpx2.Response, body: bytes, cut: bool, max_chars: int, max_bytes: int
) -> str:
    if response.status_code >= 400:
        raise ModelRetry(f"{url} answered HTTP {response.status_code} {response.reason_phrase}")
    content_type = response.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
    if not any(content_type.startswith(t) or content_type.endswith(t) for t in _TEXT_TYPES):
        raise ModelRetry(f"{url} is {content_type}, not text; it cannot be shown")
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if content_type in ("text/html", "application/xhtml+xml"):
        text = html_to_text(text)
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n... (cut at {max_chars} characters of {len(text)})"
    elif cut:
        text += f"\n... (cut: the page is larger than {max_bytes} bytes)"
    return text
