"""AgentScope: build LLM agents, trace them, serve them, and make them better with reinforcement learning.

``import agentscope`` is kept light: it loads pydantic, httpx and anyio-based core modules only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
