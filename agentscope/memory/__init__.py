"""Conversation memory: what an agent remembers of a session, in a list or in an SQLite file.

Every backend implements :class:`MemoryBase` (async ``add`` / ``get`` / ``delete`` / ``clear`` / ``size``, and
sync ``state_dict`` / ``load_state_dict`` for checkpoints), and all of them pass the same conformance suite in
``tests/memory``.
"""

from agentscope.memory._base import MemoryBase
from agentscope.memory._in_memory import InMemoryMemory
from agentscope.memory._sqlite import SQLiteMemory

__all__ = [
    "InMemoryMemory",
    "MemoryBase",
    "SQLiteMemory",
]
