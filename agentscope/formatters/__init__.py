"""Formatters: pure functions from AgentScope messages and tool schemas to provider payloads.

Each provider module documents exactly how every message and content block is mapped.
"""

from agentscope.formatters._anthropic import (
    AnthropicPayload,
    format_anthropic_messages,
    format_anthropic_tool_choice,
    format_anthropic_tools,
)
from agentscope.formatters._common import (
    MAX_ARGUMENT_DEPTH,
    JsonSchemaFormat,
    dump_tool_arguments,
    json_value_problem,
    load_tool_arguments,
    parse_tool_arguments,
    resolve_response_format,
    sanitize_name,
)
from agentscope.formatters._openai import (
    format_openai_messages,
    format_openai_response_format,
    format_openai_tool_choice,
    format_openai_tools,
)

__all__ = [
    "MAX_ARGUMENT_DEPTH",
    "AnthropicPayload",
    "JsonSchemaFormat",
    "dump_tool_arguments",
    "format_anthropic_messages",
    "format_anthropic_tool_choice",
    "format_anthropic_tools",
    "format_openai_messages",
    "format_openai_response_format",
    "format_openai_tool_choice",
    "format_openai_tools",
    "json_value_problem",
    "load_tool_arguments",
    "parse_tool_arguments",
    "resolve_response_format",
    "sanitize_name",
]
