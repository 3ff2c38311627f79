"""Fixtures for the memory tests: every backend runs the conformance suite through ``make_memory``.

To put a new backend through the suite, add an entry to ``BACKENDS``: a function that, given a fresh
temporary directory, returns a factory ``(session_id) -> MemoryBase`` whose instances share one store (so two
instances with different session ids test isolation, and persistent backends can be reopened).

Blocking calls on the event loop are caught by the autouse BlockBuster fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agentscope.memory import InMemoryMemory, MemoryBase, SQLiteMemory

MemoryFactory = Callable[[str], MemoryBase]


BACKENDS: dict[str, Callable[[Path], Callable[[str], MemoryBase]]] = {
    "in_memory": lambda _tmp: lambda session_id: InMemoryMemory(session_id),
    "sqlite": lambda tmp: lambda session_id: SQLiteMemory(tmp / "memory.db", session_id=session_id),
}


@pytest.fixture(params=sorted(BACKENDS))
async def make_memory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MemoryFactory]:
    """A factory of memories of one backend sharing one store; every memory it made is closed afterwards."""
    build = BACKENDS[request.param](tmp_path)
    made: list[MemoryBase] = []

    def make(session_id: str) -> MemoryBase:
        mem = build(session_id)
        made.append(mem)
        return mem

    yield make
    for mem in made:
        await mem.aclose()


@pytest.fixture
def memory(make_memory: MemoryFactory) -> MemoryBase:
    """One memory of each backend, session ``default``."""
    return make_memory("default")
