"""Agents: the ReAct loop, the human in the loop, and the base class for your own.

The agent spec (``path/to/file.py[:name]`` or ``module:name``, naming an agent factory) is how every command names
its agent: :func:`load_agent_factory` loads one, :func:`build_agent` calls it with the arguments it declares.

The hook vocabulary (``Hook``, ``HookPayloads``, ``HookType``, ``ReplyArguments``) and ``ApprovalDecision`` (a
human's decision on a tool call waiting for approval) are defined in :mod:`agentscope.types` and re-exported here.
"""

from agentscope.agents._base import AgentBase
from agentscope.agents._browser import BrowserAgent
from agentscope.agents._react import ReActAgent
from agentscope.agents._spec import (
    DEFAULT_FACTORY_NAME,
    AgentFactory,
    build_agent,
    load_agent_factory,
    takes_argument,
)
from agentscope.agents._user import InputFunction, UserAgent
from agentscope.types import ApprovalDecision, Hook, HookPayloads, HookType, ReplyArguments

__all__ = [
    "DEFAULT_FACTORY_NAME",
    "AgentBase",
    "AgentFactory",
    "ApprovalDecision",
    "BrowserAgent",
    "Hook",
    "HookPayloads",
    "HookType",
    "InputFunction",
    "ReActAgent",
    "ReplyArguments",
    "UserAgent",
    "build_agent",
    "load_agent_factory",
    "takes_argument",
]
