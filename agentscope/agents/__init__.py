"""Agents: the ReAct loop, the human in the loop, and the base class for your own.

The hook vocabulary (``Hook``, ``HookPayloads``, ``HookType``, ``ReplyArguments``) is defined in
:mod:`agentscope.types` and re-exported here.
"""

from agentscope.agents._base import AgentBase
from agentscope.agents._browser import BrowserAgent
from agentscope.agents._react import ReActAgent
from agentscope.agents._user import InputFunction, UserAgent
from agentscope.types import Hook, HookPayloads, HookType, ReplyArguments

__all__ = [
    "AgentBase",
    "BrowserAgent",
    "Hook",
    "HookPayloads",
    "HookType",
    "InputFunction",
    "ReActAgent",
    "ReplyArguments",
    "UserAgent",
]
