"""Formatters: one two-way wire codec per provider, pure functions with no I/O.

Each provider's codec covers four directions, used by the model clients, the test servers and the rollout
service's HTTP app alike:

================================  =====================================  =========================================
direction                         OpenAI Chat Completions                Anthropic Messages
================================  =====================================  =========================================
messages -> request body          :func:`format_openai_request`          :func:`format_anthropic_request`
request body -> messages          :func:`parse_openai_request`           :func:`parse_anthropic_request`
response JSON -> ChatResponse     :func:`parse_openai_response`          :func:`parse_anthropic_response`
stream events -> ChatResponse     :class:`OpenAIStreamDecoder`           :class:`AnthropicStreamDecoder`
ChatResponse -> response JSON     :func:`format_openai_response`         :func:`format_anthropic_response`
ChatResponse -> stream events     :func:`format_openai_stream`           :func:`format_anthropic_stream`
error body                        :func:`format_openai_error`            :func:`format_anthropic_error`
================================  =====================================  =========================================

Each provider module documents exactly how every message and content block is mapped, and what a round trip
gives back.
"""

from agentscope.formatters._anthropic import (
    AnthropicFormatTool,
    AnthropicPayload,
    format_anthropic_messages,
    format_anthropic_request,
    format_anthropic_tool_choice,
    format_anthropic_tools,
    parse_anthropic_request,
)
from agentscope.formatters._anthropic_response import (
    AnthropicStreamDecoder,
    format_anthropic_error,
    format_anthropic_response,
    format_anthropic_stream,
    parse_anthropic_response,
)
from agentscope.formatters._common import (
    MAX_ARGUMENT_DEPTH,
    ChatRequest,
    JsonSchemaFormat,
    dump_tool_arguments,
    encode_sse,
    json_value_problem,
    load_tool_arguments,
    parse_tool_arguments,
    resolve_response_format,
    sanitize_name,
    tool_result_text,
)
from agentscope.formatters._openai import (
    format_openai_messages,
    format_openai_request,
    format_openai_response_format,
    format_openai_tool_choice,
    format_openai_tools,
    parse_openai_messages,
    parse_openai_request,
)
from agentscope.formatters._openai_response import (
    OpenAIStreamDecoder,
    format_openai_error,
    format_openai_response,
    format_openai_stream,
    parse_openai_response,
)

__all__ = [
    "MAX_ARGUMENT_DEPTH",
    "AnthropicFormatTool",
    "AnthropicPayload",
    "AnthropicStreamDecoder",
    "ChatRequest",
    "JsonSchemaFormat",
    "OpenAIStreamDecoder",
    "dump_tool_arguments",
    "encode_sse",
    "format_anthropic_error",
    "format_anthropic_messages",
    "format_anthropic_request",
    "format_anthropic_response",
    "format_anthropic_stream",
    "format_anthropic_tool_choice",
    "format_anthropic_tools",
    "format_openai_error",
    "format_openai_messages",
    "format_openai_request",
    "format_openai_response",
    "format_openai_response_format",
    "format_openai_stream",
    "format_openai_tool_choice",
    "format_openai_tools",
    "json_value_problem",
    "load_tool_arguments",
    "parse_anthropic_request",
    "parse_anthropic_response",
    "parse_openai_messages",
    "parse_openai_request",
    "parse_openai_response",
    "parse_tool_arguments",
    "resolve_response_format",
    "sanitize_name",
    "tool_result_text",
]
