"""Tools: Python functions (and MCP servers) turned into something a model can call.

The MCP client and server (``MCPClient``, ``serve_mcp``...) load the ``mcp`` SDK, which takes most of a second and
pulls in starlette and uvicorn; they are imported on first use (module ``__getattr__``), so ``import
agentscope.tools`` stays light.

``ToolResponse`` is defined in :mod:`agentscope.types` (the layer below tools, models and formatters) and
re-exported here.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from agentscope.tools._approval import approved_calls, require_approval
from agentscope.tools._mcp_stdio import StdioServer
from agentscope.tools._toolkit import BASIC_GROUP, ToolGroup, ToolInfo, Toolkit
from agentscope.types import ToolResponse

if _typing.TYPE_CHECKING:
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
    "MCPClient",
    "MCPConnectionError",
    "MCPLogMessage",
    "MCPProgress",
    "MCPRequestError",
    "StdioServer",
    "ToolGroup",
    "ToolInfo",
    "ToolResponse",
    "Toolkit",
    "approved_calls",
    "build_mcp_server",
    "mcp_http_app",
    "require_approval",
    "serve_mcp",
]

_LAZY: dict[str, str] = {
    "MCPClient": "agentscope.tools._mcp_client",
    "MCPConnectionError": "agentscope.tools._mcp_client",
    "MCPLogMessage": "agentscope.tools._mcp_client",
    "MCPProgress": "agentscope.tools._mcp_client",
    "MCPRequestError": "agentscope.tools._mcp_client",
    "build_mcp_server": "agentscope.tools._mcp_server",
    "mcp_http_app": "agentscope.tools._mcp_server",
    "serve_mcp": "agentscope.tools._mcp_server",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value
