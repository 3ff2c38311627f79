"""What the writer process rebuilds of a span's objects (``_wire``'s decoder): light objects with the attributes the
encoder and its expanders read (``_records``, ``_expand``), not the app's pydantic models.

A message's, response's or tool result's content blocks stay the dicts they arrived as, which serialise to the same
JSON. Validating them again with pydantic cost the writer process more than a tenth of its work, for values the
app's models had already validated.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Agent", "Message", "Model", "Response", "ToolCall", "ToolResult", "Usage"]


class Model:
    """What an expander reads of a chat model: its ``model_name`` (its class name comes from the subclass)."""

    __slots__ = ("model_name",)

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name


class Message:
    """What the encoder reads of a message (``id``, ``role``, ``name``, ``content``, ``metadata``), without
    pydantic's validation: its content blocks stay the dicts they arrived as, which serialise to the same JSON."""

    __slots__ = ("content", "id", "metadata", "name", "role")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.id = fields["id"]
        self.role = fields["role"]
        self.name = fields["name"]
        self.content = fields["content"]
        self.metadata = fields["metadata"]


class ToolCall:
    """What the tool expander reads of a tool call."""

    __slots__ = ("id", "input", "name", "raw_input")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.id = fields["id"]
        self.name = fields["name"]
        self.input = fields["input"]
        self.raw_input = fields["raw_input"]


class Usage:
    """What the model expander reads of a response's token counts."""

    __slots__ = ("input_tokens", "output_tokens")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.input_tokens = fields["input_tokens"]
        self.output_tokens = fields["output_tokens"]


class Response:
    """What the model expander reads of a :class:`~agentscope.types.ChatResponse` (a non-finite log-prob arrives
    as null, and is written as null again)."""

    __slots__ = (
        "completion_token_ids",
        "content",
        "finish_reason",
        "id",
        "logprobs",
        "model",
        "policy_version",
        "prompt_token_ids",
        "usage",
    )

    def __init__(self, fields: dict[str, Any]) -> None:
        self.content = fields["content"]
        usage = fields["usage"]
        self.usage = None if usage is None else Usage(usage)
        self.finish_reason = fields["finish_reason"]
        self.id = fields["id"]
        self.model = fields["model"]
        self.prompt_token_ids = fields["prompt_token_ids"]
        self.completion_token_ids = fields["completion_token_ids"]
        self.logprobs = fields["logprobs"]
        self.policy_version = fields["policy_version"]


class ToolResult:
    """What the tool expander reads of a tool's result: a :class:`~agentscope.message.ToolResultBlock`'s
    ``output`` or a :class:`~agentscope.types.ToolResponse`'s ``content``, as ``content`` either way."""

    __slots__ = ("content", "is_error")

    def __init__(self, content: object, is_error: bool) -> None:
        self.content = content
        self.is_error = is_error


class Agent:
    """What an expander reads of an agent."""

    __slots__ = ("description", "id", "name")

    def __init__(self, name: str, id: str, description: str) -> None:
        self.name = name
        self.id = id
        self.description = description
