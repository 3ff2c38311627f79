"""Sandboxes: where agents run model-written code, isolated and limited.

``open_sandbox`` starts one on Docker (when an engine answers) or bubblewrap (no daemon needed), with the same
interface on both; ``SandboxPool`` keeps warm ones for RL episodes; ``open_browser`` gives an isolated Chromium
page for GUI agents (``pip install -e '.[browser]'`` in a clone), and ``Browser`` shares one Chromium among many.

Errors are :class:`~agentscope.exceptions.SandboxError`, each naming its fix.
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
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

# The browser backend loads on first use; Playwright itself loads when a Browser starts.
__getattr__ = _lazy_exports(
    __name__,
    dict.fromkeys(("Browser", "BrowserSession", "open_browser"), "_browser"),
    extras={"_browser": "browser"},
)
