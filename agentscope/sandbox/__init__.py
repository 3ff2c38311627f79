"""Sandboxes: where agents run model-written code, isolated and limited.

``open_sandbox`` starts one on Docker (when an engine answers) or bubblewrap (no daemon needed), with the same
interface on both; ``SandboxPool`` keeps warm ones for RL episodes; ``open_browser`` gives an isolated Chromium
page for GUI agents (``pip install 'agentscope[browser]'``), and ``Browser`` shares one Chromium among many.

Errors are :class:`~agentscope.exceptions.SandboxError`, each naming its fix.
"""

import typing as _typing

from agentscope.sandbox._base import Sandbox
from agentscope.sandbox._open import open_sandbox
from agentscope.sandbox._pool import PoolStats, SandboxPool
from agentscope.sandbox._types import BackendName, ExecResult, SandboxLimits, SandboxSpec

if _typing.TYPE_CHECKING:
    from agentscope.sandbox._browser import Browser, BrowserSession, open_browser

__all__ = [
    "BackendName",
    "Browser",
    "BrowserSession",
    "ExecResult",
    "PoolStats",
    "Sandbox",
    "SandboxLimits",
    "SandboxPool",
    "SandboxSpec",
    "open_browser",
    "open_sandbox",
]

_LAZY = {"Browser", "BrowserSession", "open_browser"}


def __getattr__(name: str) -> _typing.Any:
    # The browser backend loads on first use: it pulls in the toolkit, which may itself use sandboxes.
    if name in _LAZY:
        from agentscope.sandbox import _browser

        return getattr(_browser, name)
    raise AttributeError(f"module 'agentscope.sandbox' has no attribute {name!r}")
