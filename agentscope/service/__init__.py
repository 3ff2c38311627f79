"""Agents as services: ``agentscope serve AGENT_SPEC`` answers the OpenAI Chat Completions API, A2A and AG-UI over
HTTP.

- :class:`ServeConfig`: address, workers, API keys, sessions file, limits, tracing.
- :class:`AgentService`: the run layer every protocol shares: a fresh agent per stateless request, per session an
  agent restored from the session store (SQLite), requests on one session queued, state stored on success.
- :func:`create_app`: the FastAPI app over an :class:`AgentService` (or an agent factory): one router per protocol
  (OpenAI Chat Completions, A2A, AG-UI), sessions, ``/healthz``, API keys, body limit, tracing.
- :func:`serve`: run it with uvicorn (``--workers N`` processes), refusing a non-loopback address without API keys
  (:func:`check_binding`).

The endpoints, sessions, authentication and the tool-step extension are documented in docs/serving.md. FastAPI and
uvicorn come with the ``serve`` extra and load only when an app is built.
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.service._config import ServeConfig

if _typing.TYPE_CHECKING:
    from agentscope.service._app import create_app
    from agentscope.service._server import check_binding, serve
    from agentscope.service._service import AgentService

__all__ = ["AgentService", "ServeConfig", "check_binding", "create_app", "serve"]

__getattr__ = _lazy_exports(
    __name__,
    {"AgentService": "_service", "check_binding": "_server", "create_app": "_app", "serve": "_server"},
    extras={"_app": "serve"},
)
