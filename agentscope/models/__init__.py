"""Chat models: the seam between agents and language models."""

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

__all__ = [
    "ALLOW_MODEL_REQUESTS",
    "ChatModel",
    "ChatResponse",
    "ChatUsage",
    "ModelSettings",
    "ResponseFormat",
    "ToolChoice",
    "ToolSchema",
    "check_model_requests_allowed",
]
