"""Conversation memory: what an agent remembers of a session, in a list or in an SQLite file.

Every backend implements :class:`MemoryBase` (async ``add`` / ``get`` / ``delete`` / ``clear`` / ``size``, and
sync ``state_dict`` / ``load_state_dict`` for checkpoints), and all of them pass the same conformance suite in
``tests/memory``. ``SQLiteMemory`` is imported on first use (it loads ``sqlite3``), so agents that keep their
memory in a list do not pay for it.
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.memory._base import MemoryBase
from agentscope.memory._in_memory import InMemoryMemory

if _typing.TYPE_CHECKING:
    from agentscope.memory._sqlite import SQLiteMemory

__all__ = [
    "InMemoryMemory",
    "MemoryBase",
    "SQLiteMemory",
]

__getattr__ = _lazy_exports(__name__, {"SQLiteMemory": "_sqlite"})
