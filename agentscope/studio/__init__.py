"""The studio: a web UI over the trace store (``agentscope studio --store .agentscope/traces.db``).

:func:`create_app` builds the FastAPI app (JSON API under ``/api``, live feed at ``/api/events``, the UI at ``/``);
:func:`serve` runs it with uvicorn. Needs the ``studio`` extra (``pip install -e '.[studio]'``); importing
this package does not load FastAPI.
"""

from agentscope.studio._app import STATIC_DIR, create_app
from agentscope.studio._server import check_binding, is_loopback, serve, studio_url

__all__ = ["STATIC_DIR", "check_binding", "create_app", "is_loopback", "serve", "studio_url"]
