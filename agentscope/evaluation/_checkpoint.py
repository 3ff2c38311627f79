"""A trained checkpoint as the model under evaluation: the policy served by the embedded rollout engine.

``agentscope eval ... --checkpoint DIR`` (or :func:`checkpoint_model` from Python) hands the agent factory a chat
model backed by :class:`~agentscope.rl.rollout.RolloutService` over :class:`~agentscope.rl.rollout.TorchEngine`:
the same engine, chat format and tool-call parsing as training, with concurrent episodes batched together. Needs
the ``rl`` extra (torch, transformers).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from agentscope.exceptions import UsageError

if TYPE_CHECKING:
    from agentscope.rl.rollout import RolloutChatModel, TorchEngine

__all__ = ["checkpoint_model", "resolve_checkpoint"]


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The policy directory of ``path``: a directory ``from_pretrained`` loads (``config.json`` in it), or a run
    directory or checkpoint folder holding ``checkpoints/latest``. Blocking (reads the file system).

    Raises:
        UsageError: nothing loadable there, naming what was looked for.
    """
    directory = Path(path)
    for candidate in (directory, directory / "checkpoints" / "latest", directory / "latest"):
        if (candidate / "config.json").is_file():
            return candidate
    raise UsageError(
        f"checkpoint {str(path)!r}: no policy there (looked for config.json in it, in checkpoints/latest and in "
        "latest); give a checkpoint directory or a run directory of agentscope rl train"
    )


def _engine_class() -> type[TorchEngine]:
    from agentscope.rl.rollout import TorchEngine  # imports torch: called in a worker thread

    return TorchEngine


@asynccontextmanager
async def checkpoint_model(
    path: str | os.PathLike[str],
    *,
    concurrency: int = 4,
    temperature: float = 0.0,
    max_tokens: int = 256,
    max_seq_len: int = 2048,
    threads: int | None = None,
) -> AsyncGenerator[RolloutChatModel]:
    """The policy of a checkpoint as a chat model, while the context lasts (the engine runs until it exits).

    Args:
        path: A checkpoint directory, or a run directory of ``agentscope rl train`` (its latest checkpoint).
        concurrency: Most sequences the engine decodes together (the evaluation's concurrency).
        temperature: Sampling temperature; 0 decodes greedily (the default: an evaluation is repeatable).
        max_tokens: Most tokens per model call.
        max_seq_len: Longest prompt plus completion.
        threads: Torch's intra-op threads of the engine (None: one).

    Raises:
        UsageError: no policy at ``path``.
        ImportError: the ``rl`` extra is missing (naming it).
    """
    directory = await anyio.to_thread.run_sync(resolve_checkpoint, path)
    from agentscope.rl.policy import load_tokenizer
    from agentscope.rl.rollout import RolloutChatModel, RolloutService, SamplingParams

    engine_class = await anyio.to_thread.run_sync(_engine_class)
    tokenizer = await anyio.to_thread.run_sync(load_tokenizer, directory)
    engine = engine_class(
        directory,
        tokenizer=tokenizer,
        max_batch=concurrency,
        max_seq_len=max_seq_len,
        num_threads=threads if threads is not None else 1,
    )
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    async with RolloutService(engine, tokenizer, default_params=params) as service:
        yield RolloutChatModel(service, None)  # None: generate without recording turns
