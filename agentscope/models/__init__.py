"""Chat models: the seam between agents and language models.

``ChatResponse``, ``ChatUsage``, ``ModelSettings``, ``ResponseFormat``, ``ToolChoice`` and ``ToolSchema`` are
defined in :mod:`agentscope.types` (the layer below models, formatters and tools) and re-exported here.
:data:`ScriptItem` and :func:`to_response` (with :func:`tool_call` and :func:`text_response`) are responses
written by hand: what experts, scripted policies and the test doubles of :mod:`agentscope.testing` answer.
"""

from agentscope.models._anthropic import AnthropicChatModel
from agentscope.models._base import ALLOW_MODEL_REQUESTS, ChatModel, check_model_requests_allowed
from agentscope.models._from_spec import model_from_spec
from agentscope.models._openai import OpenAIChatModel
from agentscope.models._scripted import ScriptItem, text_response, to_response, tool_call
from agentscope.types import ChatResponse, ChatUsage, ModelSettings, ResponseFormat, ToolChoice, ToolSchema

__all__ = [
    "ALLOW_MODEL_REQUESTS",
    "AnthropicChatModel",
    "ChatModel",
    "ChatResponse",
    "ChatUsage",
    "ModelSettings",
    "OpenAIChatModel",
    "ResponseFormat",
    "ScriptItem",
    "ToolChoice",
    "ToolSchema",
    "check_model_requests_allowed",
    "model_from_spec",
    "text_response",
    "to_response",
    "tool_call",
]
