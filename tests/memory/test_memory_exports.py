"""The public surface of ``agentscope.memory`` is exactly its sorted ``__all__``."""

from __future__ import annotations

import agentscope.memory


def test_all_public_names_are_exported_and_sorted() -> None:
    for name in agentscope.memory.__all__:
        getattr(agentscope.memory, name)  # binds the lazy ones (SQLiteMemory)
    public = {name for name in vars(agentscope.memory) if not name.startswith("_")}
    assert agentscope.memory.__all__ == sorted(public)
    assert agentscope.memory.__all__ == ["InMemoryMemory", "MemoryBase", "SQLiteMemory"]
