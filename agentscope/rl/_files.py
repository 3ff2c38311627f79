"""The names of the files in a run directory (``agentscope.rl._runner`` describes each), and small file helpers of
the RL runner (plain, blocking I/O: call them in a worker thread)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "BATCHES_FILE",
    "CONFIG_FILE",
    "EVAL_FILE",
    "LOGS",
    "METRICS_FILE",
    "PINNED_POLICY_DIR",
    "RESUMES_FILE",
    "RUN_MARKS",
    "STORE_FILE",
    "TRACE_FILE",
    "WEIGHTS_DIR",
    "link_or_copy",
    "pin_directory",
    "run_marks",
    "write_text_atomically",
]

STORE_FILE = "trajectories.db"
METRICS_FILE = "metrics.jsonl"
BATCHES_FILE = "batches.jsonl"
TRACE_FILE = "traces.db"
CONFIG_FILE = "config.yaml"
WEIGHTS_DIR = "weights"
"""Where rollout servers out of process read the policy's versions from (one safetensors file each)."""
PINNED_POLICY_DIR = "policy-start"
"""The policy a resumed run started from, pinned (hard links) for services out of process: they restart from it,
and the checkpoint it came from may be pruned meanwhile."""
RESUMES_FILE = "resumes.jsonl"
LOGS = (METRICS_FILE, BATCHES_FILE)
"""Per-step logs, cut back to the checkpoint's step on resume."""
EVAL_FILE = "eval.json"
RUN_MARKS = (STORE_FILE, "checkpoints", METRICS_FILE, BATCHES_FILE)
"""What a run leaves in its directory once it has stored or trained anything, whatever ``data.store``: a new run
there would mix its checkpoints and logs with these (``config.yaml`` and ``policy_init/`` alone are not a run:
they are written before the first trajectory)."""


def run_marks(root: Path) -> list[str]:
    """The :data:`RUN_MARKS` that exist in ``root``: empty when no run was started there."""
    return [name for name in RUN_MARKS if (root / name).exists()]


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader (a crash, another process sharing a cache) sees the old file or
    the new one, never half of one: written beside it, flushed to disk, then renamed over it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with partial.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def pin_directory(source: Path, target: Path) -> Path:
    """Make ``target`` a copy of the files under ``source`` that outlives it: hard links where the file system
    allows (no bytes copied), copies elsewhere. An earlier ``target`` is replaced whole (built beside it, then
    renamed over it). Returns ``target``."""
    source = source.resolve()  # DIR/checkpoints/latest is a symlink
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    for path in sorted(source.rglob("*")):
        destination = partial / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(path, destination)
    partial.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` (which must not exist) the file ``source``: a hard link (no bytes copied; it outlives
    ``source``'s deletion), or a copy where the file system refuses links."""
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)
