"""Where the trainer and the rollout engine compute, and in which dtype: the config's ``device``/``dtype`` made
into torch's (``auto``: the first CUDA GPU when torch sees one, else the CPU; bfloat16 on a GPU, float32 on the
CPU). Imports torch: only the modules that compute call it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from pydantic import Field

from agentscope.exceptions import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceSpec", "DtypeSpec", "TrainDtypeSpec", "resolve_device", "resolve_dtype"]

DeviceSpec: TypeAlias = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
"""``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``."""
DtypeSpec: TypeAlias = Literal["auto", "float32", "bfloat16", "float16"]
"""A compute dtype, or ``auto``: bfloat16 on a GPU, float32 on the CPU."""
TrainDtypeSpec: TypeAlias = Literal["auto", "float32", "bfloat16"]
"""A training compute dtype: no float16, which needs loss scaling (bfloat16 has float32's range)."""


def resolve_device(spec: str, field: str) -> torch.device:
    """The torch device ``spec`` names (``field`` names the config field in errors).

    Raises:
        ConfigError: a CUDA device was asked for and torch sees none (or not that many).
    """
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{field}: {spec!r}, but this torch ({torch.__version__}) sees no CUDA GPU; use cpu or auto"
            )
        if (device.index or 0) >= count:
            raise ConfigError(f"{field}: {spec!r}, but torch sees {count} CUDA GPU(s)")
    return device


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """The torch dtype ``spec`` names on ``device`` (``auto``: bfloat16 on a GPU, float32 on the CPU)."""
    import torch

    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[spec]
