"""A real uvicorn server on 127.0.0.1 serving an agent, for the service tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn  # noqa: F401  # imported here: the first import reads files, which the event loop must not

from agentscope._uvicorn import BackgroundServer
from agentscope.agents import AgentFactory
from agentscope.service import AgentService, ServeConfig, create_app

Serving = Callable[..., contextlib.AbstractAsyncContextManager[str]]
"""``serving(factory, **config)``: an async context manager giving the server's ``base_url`` (``.../v1``)."""


@pytest.fixture
def sessions_db(tmp_path: Path) -> Path:
    """The session store of the test (one file, so a restarted server finds the sessions)."""
    return tmp_path / "sessions.db"


@pytest.fixture
def serving(sessions_db: Path) -> Serving:
    """Serve an agent factory with uvicorn on a free loopback port, on the test's event loop."""

    @contextlib.asynccontextmanager
    async def serve(factory: AgentFactory, **config: Any) -> AsyncIterator[str]:
        config.setdefault("sessions_db", sessions_db)
        config.setdefault("model_name", "test-agent")
        service = AgentService(factory, ServeConfig(**config))
        server = BackgroundServer(create_app(service), name="agent service")
        await server.astart()
        try:
            yield f"http://127.0.0.1:{server.port}/v1"
        finally:
            await server.astop()
            await service.aclose()

    return serve
