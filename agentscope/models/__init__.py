"""Chat models: the seam between agents and language models."""

from agentscope.models._anthropic import AnthropicChatModel
from agentscope.models._base import (
    ALLOW_MODEL_REQUESTS,
    ChatModel,
    ChatResponse,
    ChatUsage,
    ModelSettings,
    ResponseFormat,
    ToolChoice,
    ToolSchema,
    check_model_requests_allowed,
)
from agentscope.models._openai import OpenAIChatModel

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
