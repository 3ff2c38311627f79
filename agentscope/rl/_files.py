"""The names of the files in a run directory (``agentscope.rl._runner`` describes each), and small file helpers of
the RL runner (plain, blocking I/O: call them in a worker thread)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BATCHES_FILE",
    "CONFIG_FILE",
    "EVAL_FILE",
    "LOGS",
    "METRICS_FILE",
    "RESUMES_FILE",
    "STORE_FILE",
    "TRACE_FILE",
    "WEIGHTS_DIR",
    "write_text_atomically",
]

STORE_FILE = "trajectories.db"
METRICS_FILE = "metrics.jsonl"
BATCHES_FILE = "batches.jsonl"
TRACE_FILE = "traces.db"
CONFIG_FILE = "config.yaml"
WEIGHTS_DIR = "weights"
"""Where rollout servers out of process read the policy's versions from (one safetensors file each)."""
RESUMES_FILE = "resumes.jsonl"
LOGS = (METRICS_FILE, BATCHES_FILE)
"""Per-step logs, cut back to the checkpoint's step on resume."""
EVAL_FILE = "eval.json"


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader (a crash, another process sharing a cache) sees the old file or
    the new one, never half of one: written beside it, flushed to disk, then renamed over it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with partial.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
