"""Running the service: uvicorn in this process, or ``--workers N`` processes that each load the agent spec.

uvicorn drains on shutdown: on SIGTERM or Ctrl-C it stops accepting connections and waits up to
``drain_timeout_s`` for the requests in flight (streams included) to finish, then closes the session store.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from agentscope._net import is_loopback_host
from agentscope.agents import AgentFactory, load_agent_factory
from agentscope.exceptions import UsageError
from agentscope.service._config import API_KEYS_ENV, ServeConfig, keys_from_environment

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentscope.service._service import AgentService

__all__ = ["check_binding", "serve", "worker_app"]

_SPEC_ENV = "AGENTSCOPE_SERVE_SPEC"
_CONFIG_ENV = "AGENTSCOPE_SERVE_CONFIG"
_LOG_LEVEL_ENV = "AGENTSCOPE_SERVE_LOG_LEVEL"


def check_binding(config: ServeConfig) -> None:
    """Refuse to listen beyond this machine without API keys.

    Raises:
        UsageError: ``config.host`` is not a loopback address and ``config.api_keys`` is empty.
    """
    if not is_loopback_host(config.host) and not config.api_keys:
        raise UsageError(
            f"serving on {config.host} makes the agent reachable from other machines, and no API key is set: "
            f"pass --api-key (or set {API_KEYS_ENV}), or bind 127.0.0.1"
        )


def serve(
    agent: str | AgentFactory,
    config: ServeConfig,
    *,
    agent_kwargs: Mapping[str, object] | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``agent`` (a spec such as ``examples/calculator.py``, or a factory) until interrupted; blocking.

    Raises:
        UsageError: a non-loopback host without API keys (:func:`check_binding`); several workers for a factory
            object or with ``agent_kwargs`` (each worker process must load the agent from its spec).
    """
    check_binding(config)
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("agentscope serve needs FastAPI and uvicorn: pip install -e '.[serve]'") from exc
    _configure_logging(log_level)
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "timeout_graceful_shutdown": math.ceil(config.drain_timeout_s),
        "log_level": log_level,
        "access_log": False,
    }
    if config.workers > 1:
        if not isinstance(agent, str) or agent_kwargs:
            raise UsageError(
                "several workers each load the agent from its spec: pass a spec, without agent_kwargs"
            )
        # The workers are spawned processes: they read what to serve from the environment they inherit.
        handed_over = {
            _SPEC_ENV: agent,
            _CONFIG_ENV: config.model_dump_json(exclude={"api_keys"}),
            API_KEYS_ENV: ",".join(key.get_secret_value() for key in config.api_keys),
            _LOG_LEVEL_ENV: log_level,
        }
        before = {name: os.environ.get(name) for name in handed_over}
        os.environ.update(handed_over)
        try:
            uvicorn.run(f"{__name__}:worker_app", factory=True, workers=config.workers, **options)
        finally:
            for name, value in before.items():  # leave the caller's environment as it was
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return
    from agentscope.service._app import create_app
    from agentscope.service._service import AgentService

    factory = load_agent_factory(agent) if isinstance(agent, str) else agent
    _start_tracing(config)
    app = _traced_app(create_app(AgentService(factory, config, agent_kwargs=agent_kwargs)))
    _freeze_startup_objects()
    try:
        uvicorn.run(app, **options)
    finally:
        _stop_tracing(config)


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process, from the spec and config :func:`serve` left in the environment."""
    from agentscope.service._app import create_app
    from agentscope.service._service import AgentService

    _configure_logging(os.environ.get(_LOG_LEVEL_ENV, "info"))
    spec = os.environ[_SPEC_ENV]
    settings = json.loads(os.environ[_CONFIG_ENV])
    settings["api_keys"] = [SecretStr(key) for key in keys_from_environment()]
    # Out of this worker's environment, so that the agent's tools and the processes they start never see them.
    os.environ.pop(API_KEYS_ENV, None)
    config = ServeConfig.model_validate(settings)
    _start_tracing(config)
    app = _traced_app(create_app(AgentService(load_agent_factory(spec), config)))
    _freeze_startup_objects()
    return app


def _freeze_startup_objects() -> None:
    """Keep what start-up loaded (the framework, the agent's modules, the app) out of every later garbage
    collection: a full collection otherwise walks all of it, a pause of milliseconds that lands on whichever
    requests are in flight (their p99)."""
    gc.collect()
    gc.freeze()


def _start_tracing(config: ServeConfig) -> None:
    if config.trace:
        from agentscope import tracing

        tracing.init(
            config.trace_store,
            run_name=f"serve {config.model_name}",
            config={"command": "serve", "model_name": config.model_name},
            sample_rate=config.trace_sample_rate,
            writer=config.trace_writer,
        )


def _traced_app(app: FastAPI) -> FastAPI:
    """``app``, whose lifespan ends by shutting tracing down (writing what is queued, marking the run finished).

    There, not after ``uvicorn.run`` returns: after a graceful stop on SIGTERM uvicorn raises the signal again with
    its default action, which ends the process before any ``finally`` of ours runs (the run stayed "running" and
    the spans still queued were lost); the lifespan's end comes after the requests in flight are drained.
    """
    service: AgentService = app.state.service
    if service.config.trace:
        service.call_on_close(
            _shut_tracing_down
        )  # after the protocols' own closers, registered by create_app
    return app


async def _shut_tracing_down() -> None:
    import anyio.to_thread

    from agentscope import tracing

    await anyio.to_thread.run_sync(tracing.shutdown)


def _stop_tracing(config: ServeConfig) -> None:
    if config.trace:
        from agentscope import tracing

        tracing.shutdown()


def _configure_logging(level: str) -> None:
    """Our access log (method, path, status, time, trace id; never headers) on stderr, next to uvicorn's."""
    service_logger = logging.getLogger("agentscope.service")
    if not service_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        service_logger.addHandler(handler)
    service_logger.setLevel(level.upper())
