"""Anthropic Messages API client over httpx2 (no SDK).

The wire format is the Anthropic codec's: :func:`~agentscope.formatters.format_anthropic_request` writes each
request (``response_format`` emulated with a forced tool), :func:`~agentscope.formatters.parse_anthropic_response`
and :class:`~agentscope.formatters.AnthropicStreamDecoder` read each answer (``finish_reason`` normalised to the
OpenAI names, the provider's ``stop_reason``, cache counts and redacted thinking kept in ``metadata``); their
module docstrings say exactly how.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Unpack

from agentscope.formatters import AnthropicStreamDecoder, format_anthropic_request, parse_anthropic_response
from agentscope.message import Msg
from agentscope.models._http_model import HTTPChatModel, HTTPModelOptions, ReplyCodec, RequestOptions

__all__ = ["AnthropicChatModel"]

ANTHROPIC_VERSION = "2023-06-01"

_REPLY = ReplyCodec(parse_anthropic_response, AnthropicStreamDecoder)


class AnthropicChatModel(HTTPChatModel):
    """A Claude model behind the Anthropic Messages API (``POST {base_url}/v1/messages``).

    Takes the arguments of :class:`~agentscope.models._http_model.HTTPChatModel` (``base_url`` defaults to
    ``https://api.anthropic.com``, ``api_key`` to the ``ANTHROPIC_API_KEY`` environment variable, sent as
    ``x-api-key``; ``headers`` may add, for example, ``anthropic-beta``), plus:

    Args:
        max_tokens: ``max_tokens`` when the settings do not give one (the API requires it).

    Settings map to ``temperature``, ``top_p``, ``max_tokens``, ``stop_sequences`` (from ``stop``) and
    ``tool_choice.disable_parallel_tool_use`` (from ``parallel_tool_calls=False``); ``seed`` is not
    supported by the API and is ignored. Extended thinking is switched on through ``extra_body``, e.g.
    ``{"thinking": {"type": "enabled", "budget_tokens": 2048}}``.
    """

    provider = "Anthropic API"
    default_base_url = "https://api.anthropic.com"
    endpoint = "/v1/messages"
    api_key_env = "ANTHROPIC_API_KEY"

    def __init__(self, model: str, *, max_tokens: int = 4096, **options: Unpack[HTTPModelOptions]) -> None:
        """``max_tokens`` as in the class docstring; ``options`` as for ``HTTPChatModel`` (see ``help()``)."""
        super().__init__(model, **options)
        self.max_tokens = max_tokens

    def _provider_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def _encode(
        self, messages: Sequence[Msg], options: RequestOptions, stream: bool
    ) -> tuple[dict[str, Any], ReplyCodec]:
        body, format_tool = format_anthropic_request(
            self.model_name, messages, stream=stream, max_tokens=self.max_tokens, **options
        )
        if format_tool is None:
            return body, _REPLY
        reply = ReplyCodec(
            functools.partial(parse_anthropic_response, format_tool=format_tool),
            functools.partial(AnthropicStreamDecoder, format_tool),
        )
        return body, reply
