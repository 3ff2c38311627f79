"""Chat models: the seam between agents and language models.

``ChatResponse``, ``ChatUsage``, ``ModelSettings``, ``ResponseFormat``, ``ToolChoice`` and ``ToolSchema`` are
defined in :mod:`agentscope.types` (the layer below models, formatters and tools) and re-exported here.
"""

from agentscope.models._anthropic import AnthropicChatModel
from agentscope.models._base import ALLOW_MODEL_REQUESTS, ChatModel, check_model_requests_allowed
from agentscope.models._openai import OpenAIChatModel
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
    "ToolChoice",
    "ToolSchema",
    "check_model_requests_allowed",
]
