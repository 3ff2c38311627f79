"""Versioned policy weights, published once and read by any number of rollout servers.

The trainer's weights for version ``v`` are written once, as one safetensors file, into a directory that every
server can read (the run directory on one machine; a shared disk on a cluster). Each server then reloads from the
path on its own schedule (``POST /weights`` on the rollout app, or :class:`RemoteRolloutServer` from the
scheduler), so publishing costs one serialisation however many servers there are, and a server that falls behind
skips straight to the newest file.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agentscope.rl._files import link_or_copy

if TYPE_CHECKING:
    import torch

__all__ = ["WeightPublisher", "load_weights", "weights_from_bytes"]

_FILE = re.compile(r"^policy-v(\d+)\.safetensors$")


class WeightPublisher:
    """Writes each policy version once, as ``<root>/policy-v<version>.safetensors``, and keeps the newest few.

    Thread-safe: :meth:`publish` for a version already written returns its path without writing again (every
    server of a rolling sync asks for the same version). Files are written to a temporary name and renamed, so a
    reader never sees half a file.

    Args:
        root: Directory for the files (created on the first publish).
        keep: Versions kept on disk; older files are deleted when a newer one is published. Keep more than the
            servers can lag behind by: a server asked to load a deleted version answers an error.
    """

    def __init__(self, root: Path | str, *, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.root = Path(root)
        self.keep = keep
        self._lock = threading.Lock()

    def path(self, version: int) -> Path:
        """Where ``version`` is (or would be) written."""
        return self.root / f"policy-v{version:08d}.safetensors"

    def publish(self, state_dict: Mapping[str, torch.Tensor], version: int) -> Path:
        """Write ``state_dict`` as ``version`` unless it is already written; returns the file's absolute path.

        Blocking (file I/O): call it from a worker thread in async code."""
        from safetensors.torch import save_file  # pyright: ignore[reportUnknownVariableType]

        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            target = self.path(version).resolve()
            if target.is_file():
                return target
            staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
            save_file(_untied(tensors), str(staging), metadata={"policy_version": str(version)})
            staging.replace(target)
            self._prune()
            return target

    def stage(self, version: int) -> Path:
        """A directory holding only ``version``'s file, as ``model.safetensors`` (a hard link, else a copy): what
        servers that reload a *directory* read (vLLM's ``reload_weights``, SGLang's ``update_weights_from_disk``).
        Publish the version first. Keeps as many such directories as versions are kept. Blocking (file I/O).

        Raises:
            FileNotFoundError: ``version`` is not published.
        """
        path = self.path(version).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"version {version} is not published ({path})")
        root = self.root.resolve() / "staged"
        folder = root / f"v{version:08d}"
        target = folder / "model.safetensors"
        # A directory left by a crashed attempt may hold another file of the same version number: link again.
        if not (target.is_file() and os.path.samefile(target, path)):
            folder.mkdir(parents=True, exist_ok=True)
            staging = folder / f".model.{os.getpid()}.{uuid.uuid4().hex}.tmp"
            link_or_copy(path, staging)
            staging.replace(target)
        for old in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("v"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def versions(self) -> list[int]:
        """The versions on disk, oldest first."""
        if not self.root.is_dir():
            return []
        found = (_FILE.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m is not None)

    def newest(self) -> tuple[int, Path] | None:
        """The newest version on disk and its absolute path (None when there is none). Blocking (file I/O)."""
        versions = self.versions()
        return (versions[-1], self.path(versions[-1]).resolve()) if versions else None

    def clear(self) -> None:
        """Delete every version on disk (a run that starts or resumes: files left by a run that crashed hold
        versions it lost, which a new publish of the same number must not find). Blocking (file I/O)."""
        for version in self.versions():
            self.path(version).unlink(missing_ok=True)

    def _prune(self) -> None:
        for version in self.versions()[: -self.keep]:
            self.path(version).unlink(missing_ok=True)


def _untied(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): give each its own copy."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


def load_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (as :class:`WeightPublisher` writes them), on the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file  # pyright: ignore[reportUnknownVariableType]

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no weights file at {file}")
    try:
        return load_file(str(file))
    except SafetensorError as exc:
        raise ValueError(f"{file} is not a safetensors file: {exc}") from None


def weights_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes (an upload). Raises ValueError when they are not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except SafetensorError as exc:
        raise ValueError(f"the body is not a safetensors file: {exc}") from None
