"""The browser backend: pages an agent drives, in isolated contexts of one shared Chromium process.

Needs ``pip install -e '.[browser]'`` (Playwright) and a Chromium binary: Debian's ``chromium`` at
``/usr/bin/chromium`` by default (never ``playwright install``). One :class:`Browser` is one headless Chromium
process; each :class:`BrowserSession` is a fresh, isolated context (its own cookies, storage, cache) with one page.

Network: a session reaches the origins it allows (``scheme://host:port``), nothing else: not even the loopback,
whose other ports hold this machine's services (the studio's API, model servers); a page on 127.0.0.1 is reachable
only when its origin, port included, is listed (``allowed_origins=["http://127.0.0.1:8123"]``). Every request and
WebSocket (``ws``/``wss`` count as ``http``/``https`` of the same host and port) is checked against that list and
blocked otherwise (``session.blocked`` lists them); and, unless the Browser is opened with ``external_hosts=True``, Chromium resolves no host name but localhost, so
nothing can leave the machine even by a path the check does not see (a service worker, a prefetch). Background
traffic (updates, safe browsing, metrics) is switched off.

The page is driven by accessibility refs: :meth:`BrowserSession.snapshot` returns the page's ARIA tree in
Playwright's AI mode, where each element carries ``[ref=eN]``; ``click``, ``type`` and friends take such a ref (or
coordinates). :func:`agentscope.tools.builtin.make_browser_tools` turns a session into tools for a
:class:`~agentscope.tools.Toolkit`; each action's result is the new observation (URL, title, snapshot and, when
asked, a screenshot), which is what :class:`~agentscope.agents.BrowserAgent` runs on.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import anyio

from agentscope._net import is_loopback_host
from agentscope.exceptions import SandboxError
from agentscope.message import Base64Source, ImageBlock, TextBlock
from agentscope.sandbox._background import Background
from agentscope.types import ToolResponse

if TYPE_CHECKING:
    from playwright.async_api import Browser as PlaywrightBrowser
    from playwright.async_api import BrowserContext, Page, Playwright, Route, WebSocketRoute

__all__ = ["CHROMIUM_ARGS", "DEFAULT_CHROMIUM", "Browser", "BrowserSession", "open_browser"]

logger = logging.getLogger("agentscope.sandbox")

DEFAULT_CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium; pass ``executable_path`` (or set ``AGENTSCOPE_CHROMIUM``) for another."""
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--safebrowsing-disable-auto-update",
)
"""Headless Chromium flags: no GPU, no background traffic of any kind."""
_VIEWPORT = (1280, 800)
_TIMEOUT_S = 15.0
_SNAPSHOT_LIMIT = 20_000
_REF_RE = re.compile(r"^e\d+$")
_VISIBLE_POINT_JS = """e => {
  const r = e.getBoundingClientRect();
  if (!r.width || !r.height || r.left < 0 || r.top < 0 || r.right > innerWidth || r.bottom > innerHeight) return null;
  for (const fy of [0.5, 0.25, 0.75, 0.1, 0.9]) for (const fx of [0.5, 0.25, 0.75, 0.1, 0.9]) {
    const hit = document.elementFromPoint(r.left + r.width * fx, r.top + r.height * fy);
    if (hit && (hit === e || e.contains(hit))) return fx === 0.5 && fy === 0.5 ? null : {x: r.width * fx, y: r.height * fy};
  }
  return null;
}"""
"""Where a click reaches the element itself: None for its centre (or when the page must scroll, or nothing shows:
Playwright's own checks then apply), else an offset inside its box that no other element covers."""


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``; a WebSocket belongs to the http(s) origin of its host and port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme, 0)
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def _is_loopback(url: str) -> bool:
    return is_loopback_host((urlsplit(url).hostname or "").lower())  # 127.example.com is a name, not loopback


class Browser:
    """One headless Chromium process shared by many isolated :class:`BrowserSession` s.

    Example::

        async with Browser() as browser:
            async with browser.session(allowed_origins=["http://127.0.0.1:8000"]) as page:
                print(await page.navigate("http://127.0.0.1:8000/"))

    Args:
        executable_path: the Chromium binary (default ``$AGENTSCOPE_CHROMIUM`` or ``/usr/bin/chromium``).
        external_hosts: let Chromium resolve host names other than localhost (needed for non-loopback
            ``allowed_origins``); default False: nothing but the loopback can be reached at all.
        host_map: extra ``{host: ip}`` resolutions, e.g. ``{"app.test": "127.0.0.1"}``.
        args: more Chromium flags.
        warm_sessions: keep this many fresh sessions (context and page, default viewport and timeout) ready in
            the background, so that :meth:`new_session` hands one out in milliseconds instead of waiting for a
            renderer process to start (~0.5 s). Each is used once.
    """

    def __init__(
        self,
        *,
        executable_path: str | None = None,
        external_hosts: bool = False,
        host_map: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        warm_sessions: int = 0,
    ) -> None:
        if warm_sessions < 0:
            raise SandboxError(f"warm_sessions must be 0 or more, got {warm_sessions}")
        self.executable_path = executable_path or os.environ.get("AGENTSCOPE_CHROMIUM") or DEFAULT_CHROMIUM
        """The Chromium binary."""
        self.external_hosts = external_hosts
        """Whether host names other than localhost resolve."""
        self.host_map = dict(host_map or {})
        self._args = list(args)
        self._playwright: Playwright | None = None
        self._browser: PlaywrightBrowser | None = None
        self._sessions: set[BrowserSession] = set()
        self.warm_sessions = warm_sessions
        """Fresh sessions kept ready."""
        self._warm: deque[BrowserSession] = deque()
        self._warming = 0
        self._wake = anyio.Event()
        self._background = Background("Browser")

    def _launch_args(self) -> list[str]:
        rules = [f"MAP {host} {ip}" for host, ip in self.host_map.items()]
        if not self.external_hosts:
            rules += ["MAP * ~NOTFOUND", "EXCLUDE localhost", "EXCLUDE 127.0.0.1", "EXCLUDE [::1]"]
        args = [*CHROMIUM_ARGS, *self._args]
        if rules:
            args.append("--host-resolver-rules=" + ", ".join(rules))
        return args

    @property
    def is_running(self) -> bool:
        """Whether Chromium is started and still connected (False after a crash of the browser process)."""
        return self._browser is not None and self._browser.is_connected()

    async def start(self) -> None:
        """Launch Chromium (``async with Browser()`` does this)."""
        if self._browser is not None:
            return
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            raise SandboxError("the browser backend needs Playwright: pip install -e '.[browser]'") from None
        if not await anyio.Path(self.executable_path).is_file():
            raise SandboxError(
                f"no Chromium at {self.executable_path}: apt-get install chromium, or pass executable_path= "
                "(or set AGENTSCOPE_CHROMIUM); never `playwright install` here"
            )
        playwright = await async_playwright().start()
        try:
            self._browser = await playwright.chromium.launch(
                executable_path=self.executable_path, headless=True, args=self._launch_args()
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await playwright.stop()
            raise SandboxError(f"Chromium ({self.executable_path}) failed to start: {exc}") from None
        self._playwright = playwright
        if self.warm_sessions:
            self._background.start_soon(self._fill_forever)

    async def _fill_forever(self) -> None:
        while True:
            missing = self.warm_sessions - len(self._warm) - self._warming
            if missing <= 0:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            self._warming += missing
            for _ in range(missing):  # one at a time: each start is a renderer process
                try:
                    session = await self._make_session(frozenset(), _VIEWPORT, _TIMEOUT_S)
                except Exception as exc:
                    logger.warning("browser: could not warm a session (%s); retrying in 1 s", exc)
                    await anyio.sleep(1)
                    continue
                finally:
                    self._warming -= 1
                self._warm.append(session)

    async def aclose(self) -> None:
        """Close every session and Chromium. Safe to call twice."""
        with anyio.CancelScope(shield=True):
            await self._background.aclose()
            while self._warm:
                await self._warm.popleft().aclose()
            for session in list(self._sessions):
                await session.aclose()
            browser, self._browser = self._browser, None
            playwright, self._playwright = self._playwright, None
            if browser is not None:
                with contextlib.suppress(Exception):
                    await browser.close()
            if playwright is not None:
                with contextlib.suppress(Exception):
                    await playwright.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def new_session(
        self,
        *,
        allowed_origins: Sequence[str] = (),
        viewport: tuple[int, int] = _VIEWPORT,
        timeout_s: float = _TIMEOUT_S,
    ) -> BrowserSession:
        """A fresh isolated context with one blank page; close it with ``await session.aclose()``.

        ``allowed_origins`` are the only origins the page may reach (``scheme://host:port``; without a scheme,
        https). The loopback is no exception: list each local server by its port, e.g. ``http://127.0.0.1:8000``.
        """
        if self._browser is None:
            raise SandboxError("this Browser is not started: use `async with Browser() as browser`")
        origins = {_origin(o if "://" in o else f"https://{o}") for o in allowed_origins}
        if not self.external_hosts:
            remote = sorted(
                o
                for o in origins
                if not _is_loopback(o) and o.split("://")[1].rsplit(":", 1)[0] not in self.host_map
            )
            if remote:
                raise SandboxError(
                    f"allowed origins {remote} need host names resolved: open the Browser with external_hosts=True"
                )
        if viewport == _VIEWPORT and timeout_s == _TIMEOUT_S and self._warm:
            session = self._warm.popleft()
            session.allowed_origins = frozenset(origins)
            self._wake.set()  # warm the next one
        else:
            session = await self._make_session(frozenset(origins), viewport, timeout_s)
        self._sessions.add(session)
        return session

    async def _make_session(
        self, origins: frozenset[str], viewport: tuple[int, int], timeout_s: float
    ) -> BrowserSession:
        if self._browser is None:
            raise SandboxError("this Browser is closed")
        context = await self._browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]},
            service_workers="block",
            accept_downloads=False,
        )
        return await BrowserSession.start(
            self, context, set(origins), timeout_s, on_close=self._sessions.discard
        )

    @asynccontextmanager
    async def session(
        self,
        *,
        allowed_origins: Sequence[str] = (),
        viewport: tuple[int, int] = _VIEWPORT,
        timeout_s: float = _TIMEOUT_S,
    ) -> AsyncGenerator[BrowserSession]:
        """A session for the duration of the block (see :meth:`new_session`)."""
        session = await self.new_session(
            allowed_origins=allowed_origins, viewport=viewport, timeout_s=timeout_s
        )
        try:
            yield session
        finally:
            await session.aclose()


@asynccontextmanager
async def open_browser(
    *,
    browser: Browser | None = None,
    allowed_origins: Sequence[str] = (),
    viewport: tuple[int, int] = _VIEWPORT,
    timeout_s: float = _TIMEOUT_S,
    executable_path: str | None = None,
) -> AsyncGenerator[BrowserSession]:
    """A page in a fresh isolated browser context, closed on exit.

    With ``browser``, the session is one more context of that shared Chromium process (~50 ms); without, a
    Chromium is launched for this session alone (~1 s) and closed with it. The page reaches ``allowed_origins``
    only (see :meth:`Browser.new_session`).

    Raises:
        SandboxError: Playwright or Chromium is missing, or an allowed origin cannot be reached as configured.
    """
    if browser is not None:
        async with browser.session(
            allowed_origins=allowed_origins, viewport=viewport, timeout_s=timeout_s
        ) as s:
            yield s
        return
    async with (
        Browser(executable_path=executable_path) as own,
        own.session(allowed_origins=allowed_origins, viewport=viewport, timeout_s=timeout_s) as s,
    ):
        yield s


class BrowserSession:
    """One isolated browser context with one page, driven by accessibility refs or coordinates.

    Every action returns the observation that follows it (see :meth:`observe`). Made by
    :meth:`Browser.new_session` or :func:`open_browser`.
    """

    def __init__(
        self,
        browser: Browser,
        context: BrowserContext,
        origins: set[str],
        timeout_s: float,
        *,
        on_close: Callable[[BrowserSession], None] | None = None,
    ) -> None:
        self.browser = browser
        """The shared Chromium process."""
        self.context = context
        """The Playwright browser context (isolated cookies, storage and cache)."""
        self.allowed_origins = frozenset(origins)
        """The origins the page may reach, as ``scheme://host:port`` (the loopback only as listed here)."""
        self.timeout_s = timeout_s
        """Per-action timeout."""
        self.blocked: list[str] = []
        """URLs of the requests and WebSockets that were blocked."""
        self._page: Page | None = None
        self._closed = False
        self._on_close = on_close

    @classmethod
    async def start(
        cls,
        browser: Browser,
        context: BrowserContext,
        origins: set[str],
        timeout_s: float,
        *,
        on_close: Callable[[BrowserSession], None] | None = None,
    ) -> BrowserSession:
        """A ready session over ``context``: the origin filter installed and the page open (the context is
        closed if that fails). ``on_close`` is called with the session when it closes."""
        session = cls(browser, context, origins, timeout_s, on_close=on_close)
        try:
            await session._setup()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await session.aclose()
            raise
        return session

    @property
    def page(self) -> Page:
        """The Playwright page."""
        if self._page is None:
            raise SandboxError("this browser session is closed")
        return self._page

    def allows(self, url: str) -> bool:
        """Whether the session may reach ``url``: its origin is allowed (``data:``, ``blob:`` and ``about:``
        URLs load nothing from the network and are always allowed)."""
        if url.startswith(("data:", "blob:", "about:")):
            return True
        return _origin(url) in self.allowed_origins

    async def _setup(self) -> None:
        await self.context.route("**/*", self._route)
        await self.context.route_web_socket("**/*", self._route_ws)
        self.context.set_default_timeout(self.timeout_s * 1000)
        self._page = await self.context.new_page()

    async def _route(self, route: Route) -> None:
        url = route.request.url
        if self.allows(url):
            await route.continue_()
        else:
            self.blocked.append(url)
            await route.abort("blockedbyclient")

    async def _route_ws(self, ws: WebSocketRoute) -> None:
        if self.allows(ws.url):
            ws.connect_to_server()
        else:
            self.blocked.append(ws.url)
            await ws.close(code=1008, reason="blocked by the sandbox")

    async def aclose(self) -> None:
        """Close the context (and its page). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._page = None
        if self._on_close is not None:
            self._on_close(self)
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self.context.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ reading the page

    async def snapshot(self, *, max_chars: int = _SNAPSHOT_LIMIT) -> str:
        """The page's accessibility tree (YAML), each element with its ``[ref=eN]``."""
        text = await self.page.locator("body").aria_snapshot(mode="ai")
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n... (snapshot cut at {max_chars} characters)"
        return text

    async def screenshot(self, *, full_page: bool = False) -> ImageBlock:
        """A PNG screenshot of the viewport (or the whole page) as an image block."""
        png = await self.page.screenshot(full_page=full_page, type="png")
        return ImageBlock(
            source=Base64Source(media_type="image/png", data=base64.b64encode(png).decode("ascii"))
        )

    async def observe(self, *, screenshot: bool = False, note: str = "") -> ToolResponse:
        """What the agent sees: URL, title and snapshot (and a screenshot), after ``note``."""
        page = self.page
        with contextlib.suppress(Exception):
            await page.wait_for_load_state("domcontentloaded", timeout=self.timeout_s * 1000)
        try:
            title = await page.title()
            snapshot = await self.snapshot()
        except Exception as exc:
            title, snapshot = "", f"(no snapshot: {exc})"
        header = f"{note}\n" if note else ""
        text = f"{header}URL: {page.url}\nTitle: {title}\nSnapshot:\n{snapshot}"
        content: list[TextBlock | ImageBlock] = [TextBlock(text=text)]
        if screenshot:
            content.append(await self.screenshot())
        return ToolResponse(content=content, metadata={"url": page.url})

    # ------------------------------------------------------------------ acting on it

    def _locator(self, ref: str) -> Any:
        ref = ref.strip().strip("[]").removeprefix("ref=")
        if not _REF_RE.match(ref):
            raise SandboxError(
                f"{ref!r} is not an element ref: use one of the [ref=eN] of the snapshot, e.g. e3"
            )
        return self.page.locator(f"aria-ref={ref}")

    async def navigate(self, url: str) -> str:
        """Open ``url``; returns a note about the outcome."""
        if "://" not in url and not url.startswith(("about:", "data:")):
            url = "http://" + url
        if not self.allows(url):
            self.blocked.append(url)
            raise SandboxError(
                f"{url} is not reachable from this browser: only the allowed origins "
                f"({', '.join(sorted(self.allowed_origins)) or 'none'})"
            )
        response = await self.page.goto(url, wait_until="domcontentloaded")
        status = response.status if response is not None else "no response"
        return f"Opened {url} (status {status})."

    async def click(self, ref: str | None = None, *, x: float | None = None, y: float | None = None) -> str:
        """Click the element ``ref`` (from the snapshot) or the viewport point (``x``, ``y``).

        An element partly covered by another is clicked where it shows (as a person would), not at its centre.
        """
        if ref:
            locator = self._locator(ref)
            point: dict[str, float] | None = await locator.evaluate(_VISIBLE_POINT_JS)
            await locator.click(position=point) if point else await locator.click()
            return f"Clicked {ref}."
        if x is None or y is None:
            raise SandboxError("click needs an element ref, or both x and y")
        await self.page.mouse.click(x, y)
        return f"Clicked at ({x:.0f}, {y:.0f})."

    async def type(self, ref: str, text: str, *, submit: bool = False) -> str:
        """Replace the text of the field ``ref`` with ``text``; press Enter after when ``submit``."""
        locator = self._locator(ref)
        await locator.fill(text)
        if submit:
            await locator.press("Enter")
        return f"Typed {len(text)} characters into {ref}{' and pressed Enter' if submit else ''}."

    async def select(self, ref: str, option: str) -> str:
        """Choose ``option`` (its label, else its value) in the drop-down or list box ``ref``."""
        locator = self._locator(ref)
        choices: list[list[str]] = await locator.evaluate(
            "e => Array.from(e.options || [], o => [o.label.trim(), o.value])"
        )
        if not choices:
            raise SandboxError(f"{ref} is not a drop-down or list box (it has no options)")
        wanted = option.strip()
        index = next((i for i, (label, _v) in enumerate(choices) if label == wanted), None)
        if index is None:
            index = next((i for i, (_l, value) in enumerate(choices) if value == wanted), None)
        if index is None:
            labels = ", ".join(repr(label) for label, _v in choices[:20])
            raise SandboxError(f"{ref} has no option {option!r}; its options: {labels}")
        await locator.select_option(index=index)
        return f"Selected {choices[index][0]!r} in {ref}."

    async def press(self, key: str) -> str:
        """Press a key (or a chord such as ``Control+A``) on the focused element."""
        await self.page.keyboard.press(key)
        return f"Pressed {key}."

    async def scroll(self, dx: float = 0, dy: float = 600) -> str:
        """Scroll the page by (``dx``, ``dy``) pixels."""
        await self.page.mouse.wheel(dx, dy)
        await self.page.wait_for_timeout(100)
        position = await self.page.evaluate("[window.scrollX, window.scrollY]")
        return f"Scrolled; the page is now at {position}."
