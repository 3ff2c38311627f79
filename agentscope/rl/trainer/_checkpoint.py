"""Asynchronous, crash-safe checkpoints in the style of DataStates-LLM: snapshot in memory, write in the background.

``save()`` blocks only for the snapshot: the model's weights and the optimizer state are copied into host buffers
(reused from one checkpoint to the next, pinned when the tensors live on a GPU), RNG states and the JSON extras
are captured. A background thread then writes the checkpoint while training goes on::

    DIR/checkpoints/.tmp-step_00000012-<pid>/   written here first:
        config.json, model.safetensors, ...      model.save_pretrained(state_dict=snapshot)
        tokenizer files                          tokenizer.save_pretrained
        trainer_state.pt                         optimizer state, steps done, trainer config (torch.save)
        rng.pt                                   python, numpy, torch (and CUDA) RNG states
        extra.json                               what the caller passed: data-manager cursor, run config, ...
        meta.json                                step, time, file sizes: written last
    every file and the directory fsynced, then renamed to DIR/checkpoints/step_00000012/ (atomic), then
    DIR/checkpoints/latest -> step_00000012 (a relative symlink, swapped by an atomic rename), then old
    checkpoints beyond ``keep`` removed.

A process killed at any moment leaves ``latest`` pointing at a complete checkpoint (or absent, before the first),
so ``AutoModelForCausalLM.from_pretrained(DIR/checkpoints/latest)`` and :meth:`AsyncCheckpointer.load_latest`
always work. Leftover temporary directories are removed by the next checkpointer on that run directory.

A checkpoint damaged afterwards (a file truncated or overwritten on disk) is refused when loaded: every file must
have the size ``meta.json`` recorded and read back. :meth:`AsyncCheckpointer.load_latest` then falls back to the
newest checkpoint that loads and says which it passed over and why; when none loads it raises
:class:`~agentscope.rl.trainer.CheckpointError` naming each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import torch
from pydantic import JsonValue

from agentscope.rl.trainer._errors import CheckpointError

__all__ = ["AsyncCheckpointer", "CheckpointState", "copy_state_dict"]

_FORMAT: Final = 1
_STEP_DIR: Final = re.compile(r"^step_(\d{8,})(?:\.(\d+))?$")
_LATEST: Final = "latest"
_META: Final = "meta.json"
_WRITER_NICENESS: Final = 10


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (the directory's entries: a rename in it becomes durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _quiet_transformers() -> Generator[None]:
    """No "Writing model shards" progress bar from a background thread every step (it would garble the run's
    own progress display)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _step_key(path: Path) -> tuple[int, int] | None:
    """(step, duplicate index) of a checkpoint directory's name; ``None`` for other names."""
    match = _STEP_DIR.match(path.name)
    return None if match is None else (int(match.group(1)), int(match.group(2) or 0))


@dataclass(frozen=True)
class CheckpointState:
    """A complete checkpoint, as :meth:`AsyncCheckpointer.load_latest` reads it."""

    step: int
    """The training step it was saved after."""
    path: Path
    """Its directory: ``AutoModelForCausalLM.from_pretrained(path)`` / ``AutoTokenizer.from_pretrained(path)``."""
    trainer_state: dict[str, Any]
    """What ``Trainer.state_dict()`` returned (optimizer state, steps done, config): ``Trainer.load_state_dict``."""
    rng: dict[str, Any]
    """RNG states (python, numpy, torch, CUDA): :meth:`restore_rng`."""
    extra: dict[str, JsonValue]
    """The ``extra`` given to :meth:`AsyncCheckpointer.save` (data-manager cursor, run config, ...)."""
    created_at: float
    """When the snapshot was taken."""
    skipped: tuple[tuple[Path, str], ...] = ()
    """Checkpoints :meth:`AsyncCheckpointer.load_latest` tried first and refused, each with why (empty: ``latest``
    itself loaded)."""

    def describe(self) -> str:
        """One line for a person: which checkpoint this is and what was passed over to reach it."""
        text = f"checkpoint of step {self.step} ({self.path})"
        if self.skipped:
            text += "; refused: " + "; ".join(f"{path.name}: {why}" for path, why in self.skipped)
        return text

    def restore_rng(self) -> None:
        """Put every RNG back in the state it was in at the snapshot."""
        python = self.rng.get("python")
        if python is not None:
            version, state, gauss = python
            random.setstate((version, tuple(state), gauss))
        numpy_state = self.rng.get("numpy")
        if numpy_state is not None and "numpy" in sys.modules:
            import numpy as np

            name, keys, pos, has_gauss, cached = numpy_state
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch_state = self.rng.get("torch")
        if isinstance(torch_state, torch.Tensor):
            torch.set_rng_state(torch_state)
        cuda_states = self.rng.get("cuda")
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)


def copy_state_dict(
    module: torch.nn.Module, copy: Callable[[str, torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with each tensor replaced by ``copy(name, tensor)``, called once per storage:
    tensors that share memory (tied weights) share their copy too."""
    copies: dict[tuple[int, int, tuple[int, ...], torch.dtype], torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        alias = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.dtype,
        )
        if alias not in copies:
            copies[alias] = copy(name, tensor)
        out[name] = copies[alias]
    return out


def _capture_rng() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    rng: dict[str, Any] = {"python": (version, list(state), gauss), "torch": torch.get_rng_state()}
    if "numpy" in sys.modules:
        import numpy as np

        name, keys, pos, has_gauss, cached = cast(tuple[str, Any, int, int, float], np.random.get_state())
        rng["numpy"] = (name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


class _Snapshotter:
    """Copies tensors into host buffers kept from one snapshot to the next (no allocation after the first)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self.bytes = 0

    def tensor(self, key: str, value: torch.Tensor) -> torch.Tensor:
        source = value.detach()
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
            buffer = torch.empty(
                source.shape,
                dtype=source.dtype,
                device="cpu",
                pin_memory=source.is_cuda and torch.cuda.is_available(),
            )
            self._buffers[key] = buffer
        buffer.copy_(source, non_blocking=source.is_cuda)
        self.bytes += buffer.numel() * buffer.element_size()
        return buffer

    def state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The module's state; tensors sharing storage (tied weights) share one buffer, as save_pretrained
        expects."""
        seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        for name, value in module.state_dict().items():
            alias = (
                value.untyped_storage().data_ptr(),
                value.storage_offset(),
                tuple(value.shape),
                value.dtype,
            )
            if alias not in seen:
                seen[alias] = self.tensor(f"model/{name}", value)
            out[name] = seen[alias]
        return out

    def tree(self, key: str, value: Any) -> Any:
        """A copy of a nested dict/list/tuple whose tensors go to buffers (optimizer states)."""
        if isinstance(value, torch.Tensor):
            return self.tensor(key, value)
        if isinstance(value, Mapping):
            mapping = cast(Mapping[Any, Any], value)
            return {k: self.tree(f"{key}/{k}", v) for k, v in mapping.items()}
        if isinstance(value, list | tuple):
            items = [
                self.tree(f"{key}/{i}", v) for i, v in enumerate(cast(list[Any] | tuple[Any, ...], value))
            ]
            return items if isinstance(value, list) else tuple(items)
        return value

    def finish(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()


@dataclass
class _Job:
    step: int
    model: Any
    tokenizer: Any
    weights: dict[str, torch.Tensor]
    trainer_state: Any
    rng: dict[str, Any]
    extra_json: str
    created_at: float


class AsyncCheckpointer:
    """Writes checkpoints of a run under ``run_dir/checkpoints/`` in the background (see the module docstring).

    One checkpoint is written at a time: :meth:`save` first waits for the previous write (whose host buffers it
    reuses), so training never runs more than one checkpoint ahead of the disk.

    Args:
        run_dir: the run directory (``checkpoints/`` is created in it).
        keep: complete checkpoints kept on disk (the newest; ``latest``'s target is never removed); None keeps
            every one (to evaluate each afterwards).
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, keep: int | None = 2) -> None:
        if keep is not None and keep < 1:
            raise ValueError("keep must be at least 1 (None: keep every checkpoint)")
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.keep = keep
        self._snapshots = _Snapshotter()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stats: dict[str, float] = {}
        self._on_file: Callable[[str], None] | None = None
        """Test seam: called in the writer thread after each file is written and at each stage."""
        self._ready = False
        """Whether ``checkpoints/`` exists and leftovers of killed writes are gone (done by the first save: no
        file I/O in the constructor, which may run on an event loop)."""

    # -- the caller's side -------------------------------------------------------------------------------

    def save(
        self,
        *,
        step: int,
        model: torch.nn.Module,
        tokenizer: Any,
        trainer_state: Mapping[str, Any],
        extra: Mapping[str, JsonValue] | None = None,
    ) -> None:
        """Snapshot now, write in the background.

        Blocks until the previous checkpoint is written, then for the in-memory snapshot only. ``model`` is a
        Hugging Face ``PreTrainedModel`` (written with ``save_pretrained``); ``tokenizer`` anything with
        ``save_pretrained`` (or ``None``); ``trainer_state`` what ``Trainer.state_dict()`` returns; ``extra``
        must be JSON-serialisable.

        Raises:
            RuntimeError: the previous checkpoint's write failed (the error is its cause).
        """
        waited = time.perf_counter()
        self.wait()
        if not self._ready:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
            self._ready = True
        started = time.perf_counter()
        cpu_started = time.thread_time()
        extra_json = json.dumps(dict(extra or {}))
        snap = self._snapshots
        snap.bytes = 0
        weights = snap.state_dict(model)
        state = snap.tree("trainer", dict(trainer_state))
        snap.finish()
        job = _Job(step, model, tokenizer, weights, state, _capture_rng(), extra_json, time.time())
        self._stats.update(
            {
                "checkpoint/wait_s": started - waited,
                "checkpoint/snapshot_s": time.perf_counter() - started,
                "checkpoint/snapshot_cpu_s": time.thread_time() - cpu_started,
                "checkpoint/snapshot_bytes": float(snap.bytes),
                "checkpoint/step": float(step),
            }
        )
        self._thread = threading.Thread(
            target=self._run, args=(job,), name=f"checkpoint-{step}", daemon=False
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until the checkpoint being written (if any) is complete.

        Raises:
            RuntimeError: the write failed (the error is its cause); the previous ``latest`` is intact.
        """
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"writing a checkpoint under {self.dir} failed: {error}") from error

    def close(self) -> None:
        """Wait for the last write (same as :meth:`wait`)."""
        self.wait()

    @property
    def busy(self) -> bool:
        """Whether a checkpoint is being written."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, float]:
        """The last checkpoint's ``checkpoint/snapshot_s`` (what ``save`` blocked for),
        ``checkpoint/write_s`` (background), their CPU times (``..._cpu_s``, of the calling and the
        writer thread), ``checkpoint/wait_s`` (``save`` waiting for the previous write) and sizes."""
        return dict(self._stats)

    # -- the writer thread -------------------------------------------------------------------------------

    def _run(self, job: _Job) -> None:
        if sys.platform == "linux":
            # Linux schedules threads as tasks: lower this one's priority only, so the write yields the cores to
            # training (and to the rollout engine) instead of slowing them down.
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _WRITER_NICENESS)
        try:
            self._write(job)
        except BaseException as e:  # reported by wait(); the thread must not die silently
            self._error = e

    def _notify(self, what: str) -> None:
        if self._on_file is not None:
            self._on_file(what)

    def _write(self, job: _Job) -> None:
        started = time.perf_counter()
        cpu_started = time.thread_time()
        name = _step_dir_name(job.step)
        tmp = self.dir / f".tmp-{name}-{os.getpid()}-{threading.get_ident()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        with _quiet_transformers():
            job.model.save_pretrained(tmp, state_dict=job.weights, safe_serialization=True)
        self._notify("model")
        if job.tokenizer is not None:
            job.tokenizer.save_pretrained(tmp)
            self._notify("tokenizer")
        torch.save(job.trainer_state, tmp / "trainer_state.pt")
        self._notify("trainer_state.pt")
        torch.save(job.rng, tmp / "rng.pt")
        (tmp / "extra.json").write_text(job.extra_json, encoding="utf-8")
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        meta = {"format": _FORMAT, "step": job.step, "created_at": job.created_at, "files": files}
        (tmp / _META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for path in tmp.iterdir():
            _fsync_path(path)
        _fsync_path(tmp)
        self._notify("synced")

        target = self._free_name(name)
        os.rename(tmp, target)
        _fsync_path(self.dir)
        self._notify("renamed")

        self._point_latest(target.name)
        self._notify("published")

        self._prune(keep_name=target.name)
        self._stats["checkpoint/write_s"] = time.perf_counter() - started
        self._stats["checkpoint/write_cpu_s"] = time.thread_time() - cpu_started
        self._stats["checkpoint/bytes"] = float(sum(files.values()))

    def _point_latest(self, name: str) -> None:
        """Swap ``latest`` to the checkpoint directory ``name`` by an atomic rename, durably."""
        link = self.dir / f".latest-{os.getpid()}"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(name, target_is_directory=True)
        os.replace(link, self.dir / _LATEST)
        _fsync_path(self.dir)

    def _free_name(self, name: str) -> Path:
        """``step_N``, or ``step_N.k`` when a checkpoint of that step exists already (never overwritten in
        place: ``latest`` may point at it)."""
        target = self.dir / name
        k = 0
        while target.exists():
            k += 1
            target = self.dir / f"{name}.{k}"
        return target

    def _prune(self, *, keep_name: str) -> None:
        if self.keep is None:
            return
        complete = [p for p in self.dir.iterdir() if _step_key(p) is not None and (p / _META).exists()]
        complete.sort(key=lambda p: _step_key(p) or (0, 0))
        for path in complete[: max(0, len(complete) - self.keep)]:
            if path.name != keep_name:
                shutil.rmtree(path, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Temporary directories and links of writes that never finished (a killed process)."""
        for path in self.dir.iterdir():
            if path.name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(".latest-") and path.is_symlink():
                path.unlink(missing_ok=True)

    def set_aside(self, state: CheckpointState) -> list[Path]:
        """Move the checkpoints refused on the way to ``state`` (:attr:`CheckpointState.skipped`) out of the way,
        renamed ``refused-<name>`` (kept to inspect; never loaded or pruned), and point ``latest`` at ``state``'s
        checkpoint. Without it a damaged newer checkpoint would outrank the ones the resumed run writes when old
        checkpoints are pruned. Returns the new paths."""
        moved: list[Path] = []
        here = (
            self.dir.resolve()
        )  # load_latest resolves ``latest``: compare real paths (run dirs may be relative)
        for path, _ in state.skipped:
            if path.resolve().parent == here and path.is_dir() and _step_key(path) is not None:
                target = self.dir / f"refused-{path.name}"
                k = 0
                while target.exists():
                    k += 1
                    target = self.dir / f"refused-{path.name}.{k}"
                os.rename(path, target)
                moved.append(target)
        if state.skipped and state.path.resolve().parent == here:
            self._point_latest(state.path.name)
        return moved

    # -- loading -----------------------------------------------------------------------------------------

    @staticmethod
    def load_latest(run_dir: str | os.PathLike[str]) -> CheckpointState | None:
        """The checkpoint ``run_dir/checkpoints/latest`` points at; ``None`` when the run has no checkpoint yet.

        Every file is checked against the size ``meta.json`` recorded, then read. When ``latest`` is missing or
        refused, the newest other checkpoint that loads is returned and :attr:`CheckpointState.skipped` names
        each one refused and why.

        Raises:
            CheckpointError: checkpoints exist but none loads (the message names each and why).
        """
        directory = Path(run_dir) / "checkpoints"
        if not directory.is_dir():
            return None
        candidates: list[Path] = []
        latest = directory / _LATEST
        if latest.is_symlink() or latest.exists():
            candidates.append(latest.resolve())
        steps = [p for p in directory.iterdir() if _step_key(p) is not None and p.is_dir()]
        steps.sort(key=lambda p: _step_key(p) or (0, 0), reverse=True)
        candidates += [p for p in steps if p.resolve() not in candidates]
        skipped: list[tuple[Path, str]] = []
        for path in candidates:
            try:
                state = _load(path)
            except CheckpointError as e:
                skipped.append((path, str(e)))
                continue
            return dataclasses.replace(state, skipped=tuple(skipped))
        if not skipped:
            return None
        refused = "; ".join(f"{path}: {why}" for path, why in skipped)
        raise CheckpointError(f"no checkpoint under {directory} can be loaded: {refused}")


def _load(path: Path) -> CheckpointState:
    """Read the checkpoint in ``path``, checking every file; raises CheckpointError saying what is wrong."""
    meta_path = path / _META
    if not path.is_dir():
        raise CheckpointError("the directory is missing")
    if not meta_path.is_file():
        raise CheckpointError(f"{_META} is missing (not a complete checkpoint)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        step, created_at, files = int(meta["step"]), float(meta["created_at"]), dict(meta["files"])
        fmt = meta.get("format")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{_META} cannot be read: {type(e).__name__}: {e}") from e
    if fmt != _FORMAT:
        raise CheckpointError(f"{_META} has format {fmt!r}, this AgentScope reads {_FORMAT}")
    for name, size in files.items():
        try:
            actual = (path / str(name)).stat().st_size
        except OSError:
            raise CheckpointError(f"{name} is missing") from None
        if actual != size:
            raise CheckpointError(
                f"{name} has {actual} bytes, {_META} recorded {size} (truncated or overwritten)"
            )

    def read(name: str, reader: Callable[[Path], Any]) -> Any:
        try:
            return reader(path / name)
        except Exception as e:  # pickle, zip, JSON and OS errors alike: the file is damaged
            raise CheckpointError(f"{name} cannot be read: {type(e).__name__}: {e}") from e

    def torch_file(file: Path) -> Any:
        return torch.load(file, map_location="cpu", weights_only=True)

    def weights_header(file: Path) -> list[str]:
        # The header and tensor index only (no tensor data): a file overwritten at the same size from its start fails
        # here, before the run directory is rolled back to this checkpoint; damage inside the tensor data does not.
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as weights:  # pyright: ignore[reportUnknownVariableType]
            keys: list[str] = list(cast(Any, weights).keys())
        return keys

    for name in sorted(str(n) for n in files if str(n).endswith(".safetensors")):
        if not read(name, weights_header):
            raise CheckpointError(f"{name} holds no tensors")
    trainer_state = read("trainer_state.pt", torch_file)
    rng = read("rng.pt", torch_file)
    extra = read("extra.json", lambda file: json.loads(file.read_text(encoding="utf-8")))
    if not isinstance(trainer_state, dict) or not isinstance(rng, dict) or not isinstance(extra, dict):
        raise CheckpointError("trainer_state.pt, rng.pt or extra.json does not hold a mapping")
    return CheckpointState(
        step=step,
        path=path,
        trainer_state=cast(dict[str, Any], trainer_state),
        rng=cast(dict[str, Any], rng),
        extra=cast(dict[str, JsonValue], extra),
        created_at=created_at,
    )
