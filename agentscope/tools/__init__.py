"""Tools: Python functions (and MCP servers) turned into something a model can call."""

from agentscope.tools._response import ToolResponse

__all__ = ["ToolResponse"]
