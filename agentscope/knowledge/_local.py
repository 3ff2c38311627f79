"""LocalEmbedding: a Hugging Face encoder on this machine, by path (a sentence-transformers model folder, say).

Needs torch and transformers (``pip install -e '.[rl]'`` brings both); both are imported on first use, in a
worker thread, so ``import agentscope.knowledge`` stays light and the event loop never waits on the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from agentscope._lazy import install_hint
from agentscope.knowledge._types import KnowledgeError

__all__ = ["LocalEmbedding"]


class LocalEmbedding:
    """An encoder model loaded from a local folder; a text's vector is the mean of its token states.

    Mean pooling is what most sentence-transformers models use (``all-MiniLM-L6-v2``, ``bge``, ``e5``: their
    folder holds the encoder and its tokenizer at the top). For a model that pools otherwise, wrap
    ``SentenceTransformer(path).encode`` in a class with a ``name`` and an ``async embed`` of your own.

    Args:
        path: The model folder (``config.json``, weights, tokenizer files); nothing is downloaded.
        name: Identifies the model in the store, which refuses vectors of another model. Default: the folder's
            name, a dash and 12 hex digits of a SHA-256 of the folder's resolved path and its ``config.json``
            (e.g. ``all-MiniLM-L6-v2-3f2a…``), so two models in same-named folders never pass for each other;
            it changes when the folder moves or its ``config.json`` changes (the store then refuses it: pass
            the name it recorded as ``name=``). Weights replaced in place under the same ``config.json`` keep
            the name: give such a model a ``name`` of its own. Computed on first use, in a worker thread.
        batch_size: Texts per forward pass.
        max_length: Tokens kept of each text (the rest is cut).
        device: The torch device, e.g. ``"cpu"`` or ``"cuda"``.

    Raises:
        KnowledgeError: from :meth:`embed`, when the folder is missing or holds no model, or torch or transformers
            is not installed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._path = Path(path)
        self._name = name
        self._batch_size = batch_size
        self._max_length = max_length
        self._device = device
        self._model: tuple[Any, Any] | None = None
        """The tokenizer and the model, once loaded."""
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def name(self) -> str:
        """Identifies the model in the store (see ``name`` above; the default reads ``config.json``)."""
        if self._name is None:
            resolved = self._path.resolve()
            digest = hashlib.sha256(str(resolved).encode() + b"\0")
            with contextlib.suppress(OSError):  # no model there: embed() says so
                digest.update((resolved / "config.json").read_bytes())
            self._name = f"{resolved.name}-{digest.hexdigest()[:12]}"
        return self._name

    def __repr__(self) -> str:
        return f"LocalEmbedding({str(self._path)!r}, device={self._device!r})"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, computed in a worker thread (one batch at a time per instance)."""
        return await anyio.to_thread.run_sync(self._embed, list(texts), limiter=self._limiter)

    def _load(self) -> tuple[Any, Any]:
        _ = self.name  # computed here, in the worker thread, before anyone reads it on the event loop
        if self._model is None:
            try:
                import torch  # noqa: F401  # pyright: ignore[reportUnusedImport]
                from transformers import AutoModel, AutoTokenizer
            except ImportError as e:
                raise KnowledgeError(
                    f"LocalEmbedding needs torch and transformers ({install_hint('rl')} brings both)"
                ) from e
            if not (self._path / "config.json").is_file():
                raise KnowledgeError(f"no model in {str(self._path)!r}: it has no config.json")
            try:
                tokenizers: Any = AutoTokenizer
                models: Any = AutoModel
                tokenizer: Any = tokenizers.from_pretrained(self._path, local_files_only=True)
                model: Any = models.from_pretrained(self._path, local_files_only=True)
            except (OSError, ValueError) as e:
                raise KnowledgeError(f"could not load the model in {str(self._path)!r}: {e}") from e
            self._model = (tokenizer, model.to(self._device).eval())
        return self._model

    def _embed(self, texts: list[str]) -> list[list[float]]:
        import torch

        tokenizer, model = self._load()
        vectors: list[list[float]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self._batch_size):
                batch = texts[start : start + self._batch_size]
                encoded: Any = tokenizer(
                    batch, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
                ).to(self._device)
                states: torch.Tensor = model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors.extend(pooled.float().cpu().tolist())
        return vectors
