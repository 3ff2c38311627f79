"""What verl 0.9.1's FSDP actor worker needs around it in a process: a CPU platform when there is no GPU, verl's FSDP
engine registered for it and, for the one rank in the driver, a one-rank process group and the environment its
``Worker`` base class reads (the ranks on Ray get theirs from verl's ``RayWorkerGroup``: ``_verl_ranks``).

verl picks its device through a platform plugin (``verl.plugin.platform``) with CUDA, NPU and ROCm platforms
only: without an accelerator it falls back to CUDA and fails on the first ``torch.cuda`` call. :class:`CPUPlatform`
is a platform for the plain CPU (device ``cpu``, collectives over gloo), installed with ``set_platform`` before
verl's engine modules are imported (they read the device name at import); and verl's FSDP engine, registered for
``cuda``/``npu`` only, is registered for ``cpu`` too. Nothing else of verl is changed.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Generator
from typing import Any

import torch
import torch.distributed as dist
from verl.plugin.platform import platform_manager
from verl.plugin.platform.platform_base import PlatformBase

__all__ = ["CPUPlatform", "install_platform", "prepare_verl", "process_group_backend", "worker_environment"]


class _CPUDevice:
    """The ``torch.cuda``-like module verl calls through ``get_torch_device()``: no-ops, zero memory, device
    ``cpu`` (verl's FLOPs counter reads the name ``CPU``)."""

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def get_device_name(*_args: object) -> str:
        return "CPU"

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def mem_get_info(*_args: object) -> tuple[int, int]:
        return 0, 0

    @staticmethod
    def max_memory_allocated(*_args: object) -> int:
        return 0

    @staticmethod
    def max_memory_reserved(*_args: object) -> int:
        return 0

    @staticmethod
    def memory_allocated(*_args: object) -> int:
        return 0

    @staticmethod
    def memory_reserved(*_args: object) -> int:
        return 0

    @staticmethod
    def synchronize(*_args: object) -> None:
        return None

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def reset_peak_memory_stats(*_args: object) -> None:
        return None

    @staticmethod
    def set_device(*_args: object) -> None:
        return None

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)


class CPUPlatform(PlatformBase):
    """verl platform for the CPU: device ``cpu``, gloo collectives, no profiler, no IPC."""

    _module = _CPUDevice()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> Any:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._module

    def is_available(self) -> bool:
        return True

    def current_device(self) -> Any:  # verl moves tensors with .to(current_device()): "cpu"
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str) -> Generator[None]:  # pyright: ignore[reportIncompatibleMethodOverride]
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def install_platform() -> None:
    """Make verl's FSDP engine usable in this process: the CPU platform when torch sees no GPU (before verl's
    engine modules load), and verl's FSDP engine registered for it. Idempotent; no process group."""
    if not torch.cuda.is_available():
        current = getattr(platform_manager, "_current_platform", None)
        if not isinstance(current, CPUPlatform):
            platform_manager.set_platform(CPUPlatform())
    with warnings.catch_warnings():
        # verl.workers.engine warns for each optional engine (torchtitan, veomni, megatron, ...) not installed
        warnings.simplefilter("ignore")
        importlib.import_module(
            "verl.workers.engine_workers"
        )  # imports every engine, warning for each missing
        from verl.workers.engine import EngineRegistry, FSDPEngineWithLMHead
    if not torch.cuda.is_available():
        try:
            EngineRegistry.get_engine_cls("language_model", "fsdp2")
        except ValueError:
            EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(
                FSDPEngineWithLMHead
            )


def process_group_backend() -> str:
    """The collectives' backend of a rank: gloo on the CPU; gloo for CPU tensors and NCCL with a GPU."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def prepare_verl() -> None:
    """:func:`install_platform`, and a one-rank process group over an in-memory store unless one is initialised
    already: verl's FSDP actor worker in this process, alone. Idempotent."""
    install_platform()
    if not dist.is_initialized():
        store = dist.HashStore()  # pyright: ignore[reportPrivateImportUsage]
        dist.init_process_group(process_group_backend(), store=store, rank=0, world_size=1)


_WORKER_ENV = {
    "RANK": "0",
    "WORLD_SIZE": "1",
    "LOCAL_RANK": "0",
    "LOCAL_WORLD_SIZE": "1",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "0",  # only read, never bound: the process group above uses an in-memory store
}


@contextlib.contextmanager
def worker_environment() -> Generator[None]:
    """The variables verl's ``Worker.__init__`` reads (rank 0 of 1) for the duration of building workers; the
    process's environment is restored afterwards (the worker writes some of them, and Redis's host, itself)."""
    keys = [*_WORKER_ENV, "REDIS_STORE_SERVER_HOST", "CUDA_VISIBLE_DEVICES"]
    saved = {key: os.environ.get(key) for key in keys}
    for key, value in _WORKER_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
