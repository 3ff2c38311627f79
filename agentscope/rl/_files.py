"""Small file helpers of the RL runner (plain, blocking I/O: call them in a worker thread)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_text_atomically"]


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader (a crash, another process sharing a cache) sees the old file or
    the new one, never half of one: written beside it, flushed to disk, then renamed over it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with partial.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
