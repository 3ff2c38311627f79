"""BrowserAgent: a ReActAgent that drives a browser page through accessibility refs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentscope.agents._react import ReActAgent
from agentscope.tools import Toolkit
from agentscope.tools.builtin import make_browser_tools

if TYPE_CHECKING:
    from agentscope.models import ChatModel
    from agentscope.sandbox import BrowserSession

__all__ = ["BrowserAgent"]

BROWSER_SYS_PROMPT = """You operate a web browser to complete the user's task.

Each browser tool returns what you see next: the page's URL, its title and an accessibility snapshot, a YAML tree
in which every element has a ref such as [ref=e12]{screenshot_note}. Act on elements by their ref: browser_click
(ref), browser_type (ref, text, submit), browser_select (ref, option), browser_press (key), browser_scroll;
browser_navigate opens a URL. Refs
change when the page changes: always use refs from the latest observation. Only the origins you were given can be
reached (local addresses included); others are blocked. When the task is done, answer with the result and stop
calling tools."""


class BrowserAgent(ReActAgent):
    """A ReActAgent with browser tools over one :class:`~agentscope.sandbox.BrowserSession`.

    Each tool call returns the next observation (URL, title, accessibility snapshot with element refs, and a
    screenshot when ``screenshots`` is set), so the model sees the page after every action.

    Example::

        async with open_browser(allowed_origins=["http://127.0.0.1:8000"]) as page:
            agent = BrowserAgent("surfer", model, page)
            reply = await agent(Msg("user", "Open http://127.0.0.1:8000/ and press 'Sign in'.", "user"))

    Args:
        name: The agent's name.
        model: The model that reasons.
        session: The browser page to drive (:func:`~agentscope.sandbox.open_browser`).
        sys_prompt: Instructions; default: how to read observations and use the tools.
        screenshots: Add a screenshot to every observation (for vision models).
        toolkit: More tools next to the browser's (the browser tools are added to it).
        max_iters: Most reason-act steps per reply (browsing takes many).
        **kwargs: Anything else :class:`ReActAgent` takes (memory, model_settings, ...).
    """

    def __init__(
        self,
        name: str,
        model: ChatModel,
        session: BrowserSession,
        *,
        sys_prompt: str | None = None,
        screenshots: bool = False,
        toolkit: Toolkit | None = None,
        max_iters: int = 20,
        **kwargs: Any,
    ) -> None:
        toolkit = toolkit if toolkit is not None else Toolkit()
        for tool in make_browser_tools(session, screenshots=screenshots):
            toolkit.register(tool)
        if sys_prompt is None:
            note = ", plus a screenshot of the viewport" if screenshots else ""
            sys_prompt = BROWSER_SYS_PROMPT.format(screenshot_note=note)
        super().__init__(name, sys_prompt, model, toolkit=toolkit, max_iters=max_iters, **kwargs)
        self.session = session
        """The browser page the agent drives."""
