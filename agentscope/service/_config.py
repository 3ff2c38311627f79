"""What ``agentscope serve`` is configured with: one pydantic model, each field documented."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["API_KEYS_ENV", "ServeConfig", "keys_from_environment"]

API_KEYS_ENV = "AGENTSCOPE_API_KEYS"
"""Environment variable with the accepted API keys, comma-separated (added to ``--api-key``)."""


def keys_from_environment() -> list[str]:
    """The API keys in :data:`API_KEYS_ENV` (comma-separated; blanks dropped)."""
    return [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]


class ServeConfig(BaseModel):
    """How an agent is served: address, processes, API keys, sessions and limits.

    The API keys are :class:`~pydantic.SecretStr`: they never show in ``repr``, logs or ``model_dump_json``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Interface to bind. Anything but loopback needs API keys (the server refuses to start without)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port to listen on (0: a free one)."""
    workers: int = Field(default=1, ge=1)
    """Server processes. More than one needs the agent as a spec (``path/to/file.py[:NAME]``), which each process
    loads; sessions stay consistent across processes through the session store's leases."""
    model_name: str = "agent"
    """The model id clients name (``GET /v1/models``, the ``model`` field of every answer)."""
    model: str | None = None
    """``PROVIDER:MODEL`` (:func:`~agentscope.models.model_from_spec`): one chat model per process, made at start
    and handed to the factory as ``model=`` for every agent, so that all requests share its connection pool. None:
    the factory's own model."""
    model_base_url: str | None = None
    """Endpoint of :attr:`model` (an OpenAI-compatible server); None: the provider's default. Its API key comes
    from the provider's environment variable (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``)."""
    api_keys: tuple[SecretStr, ...] = ()
    """Accepted ``Authorization: Bearer`` keys; empty: no authentication (loopback only)."""
    sessions_db: Path = Path(".agentscope/sessions.db")
    """SQLite file holding each session's agent state."""
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    """Largest request body accepted; a larger one gets 413."""
    session_lease_s: float = Field(default=30.0, gt=0)
    """How long a request holds its session before it must renew the hold (it renews every third of this); a
    process that dies holding one frees it after this long."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """On shutdown (SIGTERM, Ctrl-C), how long requests in flight may take to finish before they are cut."""
    trace: bool = False
    """Record every request (and the agent's model and tool calls) in the trace store."""
    trace_store: Path = Path(".agentscope/traces.db")
    """The trace store file (``agentscope studio`` reads it)."""
    trace_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Fraction of requests (traces) recorded."""
    trace_writer: Literal["thread", "process"] = "thread"
    """Where spans are encoded and written: a thread of each server process, or a writer process of its own
    (``agentscope.init(writer=...)``; ``benchmarks/RESULTS.md``, tracing and serve, says when which is faster)."""

    def key_bytes(self) -> tuple[bytes, ...]:
        """The API keys as bytes, for constant-time comparison."""
        return tuple(key.get_secret_value().encode() for key in self.api_keys)
