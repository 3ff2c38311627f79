"""Tools: Python functions (and MCP servers) turned into something a model can call.

The MCP client and server (``MCPClient``, ``serve_mcp``...) load the ``mcp`` SDK, which takes most of a second and
pulls in starlette and uvicorn; they are imported on first use (module ``__getattr__``), so ``import
agentscope.tools`` stays light.

Sync tools run in :data:`tool_threads` (a :class:`ToolThreads`; set its ``max_threads`` to run more than 40
blocking tools at once).

``ToolResponse`` is defined in :mod:`agentscope.types` (the layer below tools, models and formatters) and
re-exported here.
"""

from __future__ import annotations

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.tools._approval import approved_calls, require_approval
from agentscope.tools._mcp_stdio import StdioServer
from agentscope.tools._policy import ApprovalPolicy, ApprovalRule
from agentscope.tools._threads import ToolThreads, tool_threads
from agentscope.tools._toolkit import BASIC_GROUP, ToolGroup, ToolInfo, Toolkit
from agentscope.types import ToolResponse

if _typing.TYPE_CHECKING:
    from agentscope.tools._a2a import A2AAgent
    from agentscope.tools._mcp_client import (
        MCPClient,
        MCPConnectionError,
        MCPLogMessage,
        MCPProgress,
        MCPRequestError,
    )
    from agentscope.tools._mcp_server import build_mcp_server, mcp_http_app, serve_mcp

__all__ = [
    "BASIC_GROUP",
    "A2AAgent",
    "ApprovalPolicy",
    "ApprovalRule",
    "MCPClient",
    "MCPConnectionError",
    "MCPLogMessage",
    "MCPProgress",
    "MCPRequestError",
    "StdioServer",
    "ToolGroup",
    "ToolInfo",
    "ToolResponse",
    "ToolThreads",
    "Toolkit",
    "approved_calls",
    "build_mcp_server",
    "mcp_http_app",
    "require_approval",
    "serve_mcp",
    "tool_threads",
]

# The mcp SDK is a core dependency (no extra to name) but slow to import; the A2A client needs the serve extra.
__getattr__ = _lazy_exports(
    __name__,
    {
        "A2AAgent": "_a2a",
        "MCPClient": "_mcp_client",
        "MCPConnectionError": "_mcp_client",
        "MCPLogMessage": "_mcp_client",
        "MCPProgress": "_mcp_client",
        "MCPRequestError": "_mcp_client",
        "build_mcp_server": "_mcp_server",
        "mcp_http_app": "_mcp_server",
        "serve_mcp": "_mcp_server",
    },
    extras={"_a2a": "serve"},
)
