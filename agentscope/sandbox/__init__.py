"""Sandboxes: where agents run model-written code, isolated and limited.

``open_sandbox`` starts one on Docker (when an engine answers) or bubblewrap (no daemon needed), with the same
interface on both; ``SandboxPool`` keeps warm ones for RL episodes; ``open_browser`` gives an isolated Chromium
page for GUI agents (``pip install 'agentscope[browser]'``).
"""

from agentscope.sandbox._base import Sandbox
from agentscope.sandbox._open import open_sandbox
from agentscope.sandbox._pool import PoolStats, SandboxPool
from agentscope.sandbox._types import BackendName, ExecResult, SandboxLimits, SandboxSpec

__all__ = [
    "BackendName",
    "ExecResult",
    "PoolStats",
    "Sandbox",
    "SandboxLimits",
    "SandboxPool",
    "SandboxSpec",
    "open_sandbox",
]
