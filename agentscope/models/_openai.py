"""OpenAI Chat Completions client over httpx2 (no SDK): OpenAI, vLLM, SGLang and AgentScope's rollout service.

The wire format, RL fields included (token ids, log-probs, policy version), is the OpenAI codec's:
:func:`~agentscope.formatters.format_openai_request` writes each request, :func:`~agentscope.formatters.parse_openai_response`
and :class:`~agentscope.formatters.OpenAIStreamDecoder` read each answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentscope.formatters import OpenAIStreamDecoder, format_openai_request, parse_openai_response
from agentscope.message import Msg
from agentscope.models._http_model import HTTPChatModel, ReplyCodec, RequestOptions

__all__ = ["OpenAIChatModel"]

_REPLY = ReplyCodec(parse_openai_response, OpenAIStreamDecoder)


class OpenAIChatModel(HTTPChatModel):
    """A model served behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Takes the arguments of :class:`~agentscope.models._http_model.HTTPChatModel`: ``base_url`` defaults to
    ``https://api.openai.com/v1`` (requests go to ``{base_url}/chat/completions``) and ``api_key`` to the
    ``OPENAI_API_KEY`` environment variable, sent as a bearer token.
    """

    provider = "OpenAI-compatible API"
    default_base_url = "https://api.openai.com/v1"
    endpoint = "/chat/completions"
    api_key_env = "OPENAI_API_KEY"

    def _provider_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def _encode(
        self, messages: Sequence[Msg], options: RequestOptions, stream: bool
    ) -> tuple[dict[str, Any], ReplyCodec]:
        return format_openai_request(self.model_name, messages, stream=stream, **options), _REPLY
