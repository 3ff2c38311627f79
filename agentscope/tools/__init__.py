"""Tools: Python functions (and MCP servers) turned into something a model can call."""

from agentscope.tools._approval import approved_calls, require_approval
from agentscope.tools._response import ToolResponse
from agentscope.tools._toolkit import BASIC_GROUP, ToolGroup, ToolInfo, Toolkit

__all__ = [
    "BASIC_GROUP",
    "ToolGroup",
    "ToolInfo",
    "ToolResponse",
    "Toolkit",
    "approved_calls",
    "require_approval",
]
