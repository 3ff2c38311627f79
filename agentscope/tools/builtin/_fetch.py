"""``fetch_url``: the text of a web page, from hosts on an allow-list only."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from html.parser import HTMLParser
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import httpx

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


def make_fetch_url(
    allowed_hosts: Collection[str] | None = None,
    *,
    max_chars: int = 50_000,
    timeout_s: float = 20.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Callable[..., Any]:
    """A ``fetch_url`` tool that fetches pages only from ``allowed_hosts``.

    With no allow-list (the default) the tool is disabled: every call returns an error saying so. Hosts are
    matched exactly (``"docs.python.org"``, or ``"127.0.0.1:8000"`` for one port only); every redirect is
    checked again. HTML is reduced to its text; other text types are returned as they are.

    Args:
        allowed_hosts: Host names (or ``host:port``) the tool may fetch from.
        max_chars: Most characters returned; longer pages are cut (and say so).
        timeout_s: Limit for each request.
        transport: An ``httpx`` transport (for tests and proxies).
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
        async with httpx.AsyncClient(
            transport=transport, timeout=timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            for _ in range(_MAX_REDIRECTS + 1):
                scheme = urlsplit(current).scheme
                if scheme not in ("http", "https"):
                    raise ModelRetry(f"only http and https URLs can be fetched, not {current!r}")
                if not _host_allowed(current, allowed):
                    host = urlsplit(current).netloc or current
                    raise ModelRetry(
                        f"fetching from {host!r} is not allowed; allowed hosts: {', '.join(sorted(allowed))}"
                    )
                try:
                    response = await client.get(current, headers={"User-Agent": "agentscope-fetch_url"})
                except httpx.TimeoutException:
                    raise ModelRetry(f"no answer from {current} within {timeout_s:g}s") from None
                except httpx.HTTPError as exc:
                    raise ModelRetry(f"cannot fetch {current}: {type(exc).__name__}: {exc}") from None
                if response.is_redirect and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                return _page_text(current, response, max_chars)
        raise ModelRetry(f"too many redirects (more than {_MAX_REDIRECTS}) from {url}")

    return fetch_url


def _page_text(url: str, response: httpx.Response, max_chars: int) -> str:
    if response.status_code >= 400:
        raise ModelRetry(f"{url} answered HTTP {response.status_code} {response.reason_phrase}")
    content_type = response.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
    if not any(content_type.startswith(t) or content_type.endswith(t) for t in _TEXT_TYPES):
        raise ModelRetry(f"{url} is {content_type}, not text; it cannot be shown")
    text = response.text
    if content_type in ("text/html", "application/xhtml+xml"):
        text = html_to_text(text)
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n... (cut at {max_chars} characters of {len(text)})"
    return text
