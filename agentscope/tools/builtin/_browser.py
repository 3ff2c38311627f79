"""``browser_navigate``, ``browser_click`` and the other browser tools: a page driven by accessibility refs.

Written against :class:`BrowserLike`, the part of :class:`agentscope.sandbox.BrowserSession` they use, not the
browser backend (as the code tools are written against ``SandboxLike``): the tools need neither Playwright nor the
sandbox package, and any object with these methods works, a test double included. Every action returns the
observation that follows it (URL, title, accessibility snapshot and, when asked, a screenshot).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agentscope.exceptions import SandboxError
from agentscope.message import ImageBlock
from agentscope.types import ToolResponse

__all__ = ["BrowserLike", "make_browser_tools"]


class BrowserLike(Protocol):
    """The part of :class:`agentscope.sandbox.BrowserSession` the browser tools use.

    Each action returns a short note on its outcome, or raises :class:`~agentscope.exceptions.SandboxError` with a
    message for the model (a bad ref, a blocked origin); any other exception is a failure of the page (a timeout,
    a detached element), shown to the model with the observation that follows it.
    """

    async def navigate(self, url: str) -> str:
        """Open ``url``."""
        ...

    async def click(self, ref: str | None = None, *, x: float | None = None, y: float | None = None) -> str:
        """Click the element ``ref`` of the snapshot, or the viewport point (``x``, ``y``)."""
        ...

    async def type(self, ref: str, text: str, *, submit: bool = False) -> str:
        """Replace the text of the field ``ref``; press Enter after when ``submit``."""
        ...

    async def select(self, ref: str, option: str) -> str:
        """Choose ``option`` in the drop-down or list box ``ref``."""
        ...

    async def press(self, key: str) -> str:
        """Press a key or chord on the focused element."""
        ...

    async def scroll(self, dx: float = 0, dy: float = 600) -> str:
        """Scroll the page by (``dx``, ``dy``) pixels."""
        ...

    async def observe(self, *, screenshot: bool = False, note: str = "") -> ToolResponse:
        """What the agent sees now (URL, title, snapshot, and a screenshot when asked), after ``note``."""
        ...

    async def screenshot(self) -> ImageBlock:
        """A screenshot of the viewport."""
        ...


def make_browser_tools(browser: BrowserLike, *, screenshots: bool = False) -> list[Callable[..., Any]]:
    """The browser tools over one page: ``browser_navigate``, ``browser_click``, ``browser_type``,
    ``browser_select``, ``browser_press``, ``browser_scroll``, ``browser_snapshot`` and ``browser_screenshot``.

    Register them with ``for f in make_browser_tools(page): toolkit.register(f)``
    (:class:`~agentscope.agents.BrowserAgent` does). Each action's result is the observation that follows it; an
    action that fails is an error result (with the observation, unless the page refused the action outright).

    Args:
        browser: The page to drive (a :class:`~agentscope.sandbox.BrowserSession`, from
            :func:`~agentscope.sandbox.open_browser`).
        screenshots: Add a screenshot of the viewport to every observation (for vision models).
    """

    async def act(action: Callable[[], Awaitable[str]]) -> ToolResponse:
        try:
            note = await action()
        except SandboxError as exc:
            return ToolResponse.text(str(exc), is_error=True)
        except Exception as exc:  # a Playwright error: timeouts, detached elements, navigation errors
            message = str(exc).split("\n", 1)[0]
            observation = await browser.observe(screenshot=screenshots, note=f"Failed: {message}")
            observation.is_error = True
            return observation
        return await browser.observe(screenshot=screenshots, note=str(note))

    async def browser_navigate(url: str) -> ToolResponse:
        """Open a URL in the browser and show the page.

        Args:
            url: The address to open, e.g. http://127.0.0.1:8000/.
        """
        return await act(lambda: browser.navigate(url))

    async def browser_click(ref: str = "", x: float | None = None, y: float | None = None) -> ToolResponse:
        """Click an element by its ref from the snapshot (preferred), or a point of the viewport.

        Args:
            ref: The element's ref, such as e12, from the latest snapshot.
            x: Horizontal pixel position, when clicking a point instead of a ref.
            y: Vertical pixel position, when clicking a point instead of a ref.
        """
        return await act(lambda: browser.click(ref or None, x=x, y=y))

    async def browser_type(ref: str, text: str, submit: bool = False) -> ToolResponse:
        """Type text into an input field, replacing what is there.

        Args:
            ref: The field's ref from the latest snapshot.
            text: The text to enter.
            submit: Press Enter afterwards.
        """
        return await act(lambda: browser.type(ref, text, submit=submit))

    async def browser_select(ref: str, option: str) -> ToolResponse:
        """Choose an option of a drop-down or list box.

        Args:
            ref: The drop-down's ref from the latest snapshot.
            option: The option's text, as the snapshot shows it.
        """
        return await act(lambda: browser.select(ref, option))

    async def browser_press(key: str) -> ToolResponse:
        """Press a key on the focused element, e.g. Enter, Tab, ArrowDown or Control+A.

        Args:
            key: The key or chord.
        """
        return await act(lambda: browser.press(key))

    async def browser_scroll(dy: float = 600, dx: float = 0) -> ToolResponse:
        """Scroll the page.

        Args:
            dy: Pixels down (negative: up).
            dx: Pixels right (negative: left).
        """
        return await act(lambda: browser.scroll(dx, dy))

    async def browser_snapshot() -> ToolResponse:
        """Show the current page again: URL, title and accessibility snapshot."""
        return await browser.observe(screenshot=screenshots)

    async def browser_screenshot() -> ToolResponse:
        """Take a screenshot of the visible part of the page."""
        return ToolResponse(content=[await browser.screenshot()])

    return [
        browser_navigate,
        browser_click,
        browser_type,
        browser_select,
        browser_press,
        browser_scroll,
        browser_snapshot,
        browser_screenshot,
    ]
