"""Shared fixtures: a tracer installed around a test (set up and torn down outside the event loop)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentscope import tracing
from agentscope.tools import Toolkit


@pytest.fixture
def spans() -> Iterator[tracing.InMemoryExporter]:
    """Tracing on into an in-memory exporter; ``await tracing.aflush()`` before reading ``spans.spans``."""
    exporter = tracing.InMemoryExporter()
    tracing.init(None, exporters=[exporter], project="tests", run_name="spans", flush_interval_s=0.02)
    try:
        yield exporter
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


async def slow_double(x: int) -> int:
    """Double a number, slowly.

    Args:
        x: The number.
    """
    import anyio

    await anyio.sleep(0.05)
    return 2 * x


def lookup(city: str) -> str:
    """Look a city up.

    Args:
        city: The city.
    """
    raise KeyError(f"no such city: {city}")


@pytest.fixture
def toolkit() -> Toolkit:
    """``add`` (sync), ``slow_double`` (async, 50 ms) and ``lookup`` (always raises)."""
    tk = Toolkit()
    tk.register(add)
    tk.register(slow_double)
    tk.register(lookup)
    return tk
