"""Models by name: ``openai:gpt-4o-mini``, ``anthropic:claude-...``, as the command line takes them."""

from __future__ import annotations

import os

from agentscope.exceptions import UsageError
from agentscope.models._anthropic import AnthropicChatModel
from agentscope.models._base import ChatModel
from agentscope.models._openai import OpenAIChatModel

__all__ = ["model_from_spec"]


def model_from_spec(spec: str, *, base_url: str | None = None, api_key: str | None = None) -> ChatModel:
    """The chat model ``spec`` names: ``PROVIDER:MODEL`` with provider ``openai`` (any OpenAI-compatible server:
    pass ``base_url``, else ``OPENAI_BASE_URL`` or OpenAI's) or ``anthropic`` (``ANTHROPIC_BASE_URL`` or
    Anthropic's). ``api_key`` defaults to the provider's environment variable.

    Raises:
        UsageError: no ``:`` in the spec, or an unknown provider (the message names both choices).
    """
    provider, _, name = spec.partition(":")
    if not name:
        raise UsageError(f"expected PROVIDER:MODEL such as openai:gpt-4o-mini, got {spec!r}")
    if provider == "openai":
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return OpenAIChatModel(name, base_url=url, api_key=api_key)
    if provider == "anthropic":
        url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        return AnthropicChatModel(name, base_url=url, api_key=api_key)
    raise UsageError(f"unknown provider {provider!r} in {spec!r}; use openai or anthropic")
