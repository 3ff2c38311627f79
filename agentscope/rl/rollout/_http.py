"""The rollout service over HTTP: an OpenAI-compatible Chat Completions app (FastAPI).

Any OpenAI-compatible client works; :class:`~agentscope.models.OpenAIChatModel` reads the RL fields back::

    model = OpenAIChatModel("policy", base_url=server.base_url, api_key="-",
                            default_settings={"extra_body": {"session_id": sid}})

Routes:

- ``POST /v1/chat/completions``: the standard body (``messages``, ``tools``, ``temperature``, ``top_p``,
  ``max_tokens``/``max_completion_tokens``, ``stop``, ``seed``, ``stream``) plus ``session_id`` (the turn is
  recorded in that session, opened on first use; without it nothing is recorded; with ``session_continues: true``
  the session must already be open here, else 404: a client whose earlier turns went to a server since replaced). The answer adds
  ``prompt_token_ids`` and ``policy_version`` at the top level (``version_head`` and ``session_id`` too) and, in
  the choice, ``token_ids`` and ``logprobs.content[*]`` (``token`` is ``token_id:<id>``): the field names vLLM
  uses. ``stream: true`` answers the same in server-sent events (the whole message in one delta, the RL fields
  with the finish).
- ``GET /v1/models``; ``POST /sessions`` (optional body ``{"session_id": ...}``) → ``{"session_id"}``;
  ``DELETE /sessions/{id}`` → ``{"session_id", "turns": [...]}``; ``POST /sessions/drop`` (body
  ``{"session_ids": [...]}``) forgets many sessions at once, without sending their turns back (those not held
  are skipped) → ``{"dropped": n}``; ``GET /stats``.
- ``GET /weights`` → ``{"version"}``; ``POST /weights`` loads new weights between decode steps (running requests
  continue with them) and answers ``{"version", "tensors"}`` once they serve. The body is ``{"version": N, "path":
  FILE}`` (a safetensors file the server can read, as :class:`~agentscope.rl.rollout.WeightPublisher` writes it),
  or the file itself as ``application/octet-stream`` with ``?version=N``. Any subset of the parameters may be
  sent. A version not newer than the one serving is refused with 409 (a late update never rolls a server back);
  an unreadable file, an unknown parameter name or a wrong shape with 400, the weights left as they were.

Requests are decoded and answers written by the OpenAI codec (:func:`~agentscope.formatters.parse_openai_request`,
:func:`~agentscope.formatters.format_openai_response`, :func:`~agentscope.formatters.format_openai_stream`); a
request it cannot decode gets a 400 naming the problem, and so does a prompt that leaves no room to generate
within the engine's context (OpenAI's ``"code": "context_length_exceeded"``). Images become ``[image]`` text (the policy reads text
only); ``tool_choice`` and ``response_format`` are decoded but not applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from agentscope._net import is_loopback_host
from agentscope._uvicorn import BackgroundServer
from agentscope.exceptions import UsageError
from agentscope.formatters import parse_openai_messages
from agentscope.message import Msg
from agentscope.rl.rollout._service import RolloutService

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["RolloutHTTPServer", "create_rollout_app", "messages_from_openai"]


def create_rollout_app(service: RolloutService, *, token: str | None = None) -> FastAPI:
    """An OpenAI-compatible FastAPI app over ``service`` (routes in the module docstring).

    With ``token``, every request must carry ``Authorization: Bearer <token>`` (else 401): required to serve
    beyond loopback, since ``POST /weights`` replaces the policy. The app does not start or stop the engine: start
    it first (``async with service``)."""
    try:
        from agentscope.rl.rollout._app import build_app
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if (exc.name or "").split(".")[0] not in ("fastapi", "starlette"):
            raise
        raise ImportError("the rollout HTTP app needs fastapi: pip install -e '.[serve]'") from exc
    return build_app(service, token=token)


def messages_from_openai(items: list[Any]) -> list[Msg]:
    """Chat Completions ``messages`` back into :class:`Msg` objects, as the rollout service reads them.

    :func:`~agentscope.formatters.parse_openai_messages` with images as ``[image]`` text (the policy reads text
    only): consecutive ``tool`` messages become one ``tool`` message (as a ReActAgent stores one step's results),
    tool results get the tool name from the assistant call they answer (``Error: `` text marks a failed call),
    and arguments are parsed as the OpenAI client parses them (malformed ones kept in ``raw_input``). Raises
    ValueError for an unknown role or content part.
    """
    return parse_openai_messages(items, images_as_text=True)


class RolloutHTTPServer:
    """Serve :func:`create_rollout_app` with uvicorn on the current event loop (127.0.0.1 by default).

    ::

        async with service, RolloutHTTPServer(service) as server:
            model = OpenAIChatModel("policy", base_url=server.base_url, api_key="-")

    Args:
        service: The rollout service (start its engine first).
        host: Interface to bind (beyond loopback only with a ``token``).
        port: Port; 0 picks a free one (read :attr:`port` after entering).
        token: A bearer token every request must carry (see :func:`create_rollout_app`).
    """

    def __init__(
        self, service: RolloutService, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> None:
        if not is_loopback_host(host) and not token:
            raise UsageError(
                f"serving the rollout app on {host} lets anyone who reaches it replace the policy's weights: "
                "give it a token (AGENTSCOPE_ROLLOUT_TOKEN) or bind 127.0.0.1"
            )
        self.token = token
        self.service = service
        self.host = host
        self.port = port
        self._background: BackgroundServer | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``: the ``base_url`` for OpenAI-compatible clients."""
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> Self:
        background = BackgroundServer(
            create_rollout_app(self.service, token=self.token),
            host=self.host,
            port=self.port,
            name="the rollout HTTP server",
            install_hint="pip install -e '.[serve]'",
        )
        await background.astart()  # on this loop: the app calls the service, which lives here
        self._background, self.port = background, background.port
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        background, self._background = self._background, None
        if background is not None:
            await background.astop()
