"""The studio: a web UI over the trace store (``agentscope studio --store .agentscope/traces.db``).

:func:`create_app` builds the FastAPI app (JSON API under ``/api``, live feed at ``/api/events``, the UI at ``/``);
:func:`serve` runs it with uvicorn (refusing a non-loopback address without a token: :func:`check_binding`);
:func:`studio_url` is the address to open. Needs the ``studio`` extra (``pip install -e '.[studio]'``); importing
this package does not load FastAPI.
"""

from agentscope.studio._app import create_app
from agentscope.studio._server import check_binding, serve, studio_url

__all__ = ["check_binding", "create_app", "serve", "studio_url"]
