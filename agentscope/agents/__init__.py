"""Agents: the ReAct loop, the human in the loop, and the base class for your own."""

from agentscope.agents._base import AgentBase, Hook, HookType
from agentscope.agents._browser import BrowserAgent
from agentscope.agents._react import ReActAgent
from agentscope.agents._user import InputFunction, UserAgent

__all__ = ["AgentBase", "BrowserAgent", "Hook", "HookType", "InputFunction", "ReActAgent", "UserAgent"]
