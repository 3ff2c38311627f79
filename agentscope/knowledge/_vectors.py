"""Embeddings: the model protocol, an OpenAI-compatible ``/v1/embeddings`` client, and vector maths on blobs.

Vectors are stored unit-length as little-endian float32 blobs (the layout ``sqlite-vec`` reads), so cosine
similarity is a dot product. Search is exact: in C through ``sqlite-vec``'s ``vec_distance_cosine`` when this
Python's ``sqlite3`` can load extensions, else a scan in Python in the worker thread.
"""

from __future__ import annotations

import math
import operator
import os
import sqlite3
import sys
from array import array
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import anyio.to_thread
import httpx2

from agentscope._lazy import install_hint
from agentscope.exceptions import ModelConnectionError, ModelHTTPError, ModelResponseError, ModelTimeoutError
from agentscope.knowledge._types import KnowledgeError
from agentscope.models import check_model_requests_allowed

__all__ = [
    "EmbeddingModel",
    "OpenAIEmbedding",
    "VectorSearch",
    "from_blob",
    "load_sqlite_vec",
    "to_blob",
]

VectorSearch = Literal["auto", "sqlite-vec", "python"]
"""Who computes vector similarity: ``sqlite-vec`` (in C, needs an ``sqlite3`` that loads extensions),
``python`` (an exact scan in a worker thread), or ``auto`` (the first that works)."""


@runtime_checkable
class EmbeddingModel(Protocol):
    """Turns texts into vectors. Any object with these two members works (a local model wrapped by hand too)."""

    @property
    def name(self) -> str:
        """Identifies the model: a store built with one model refuses to be searched with another."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, all of the same length."""
        ...


class OpenAIEmbedding:
    """An OpenAI-compatible embeddings endpoint (``POST {base_url}/embeddings``): OpenAI, vLLM, Ollama, TEI...

    Args:
        model: The model name sent with each request.
        base_url: The API root, e.g. ``"https://api.openai.com/v1"`` or ``"http://127.0.0.1:8000/v1"``.
        api_key: Sent as a bearer token; default: ``$OPENAI_API_KEY`` when set, else no header.
        batch_size: Texts per request.
        timeout_s: Seconds one request may take.

    Requests honour ``agentscope.models.ALLOW_MODEL_REQUESTS`` like the chat models do.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout_s: float = 60.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._model = model
        self._url = base_url.rstrip("/") + "/embeddings"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._batch_size = batch_size
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        """The model name."""
        return self._model

    def __repr__(self) -> str:
        return f"OpenAIEmbedding(model={self._model!r}, url={self._url!r})"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` in batches of ``batch_size``.

        Raises:
            ModelHTTPError: the endpoint answered with an error status.
            ModelConnectionError: the endpoint could not be reached.
            ModelTimeoutError: no answer within ``timeout_s``.
            ModelResponseError: the answer is not an embeddings response for these texts.
        """
        check_model_requests_allowed()
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        vectors: list[list[float]] = []
        # Making a client loads the TLS certificates from disk: in a worker thread, off the event loop.
        client = await anyio.to_thread.run_sync(
            lambda: httpx2.AsyncClient(timeout=self._timeout_s, headers=headers)
        )
        async with client:
            for start in range(0, len(texts), self._batch_size):
                batch = list(texts[start : start + self._batch_size])
                vectors.extend(await self._embed_batch(client, batch))
        return vectors

    async def _embed_batch(self, client: httpx2.AsyncClient, batch: list[str]) -> list[list[float]]:
        try:
            response = await client.post(self._url, json={"model": self._model, "input": batch})
        except httpx2.TimeoutException as e:
            raise ModelTimeoutError(f"embeddings {self._url}: no answer within {self._timeout_s} s") from e
        except httpx2.TransportError as e:
            raise ModelConnectionError(f"embeddings {self._url}: could not connect: {e}") from e
        if response.status_code >= 400:
            raise ModelHTTPError(
                f"embeddings {self._url} answered {response.status_code}",
                status_code=response.status_code,
                body=response.text[:2000],
            )
        try:
            data: Any = response.json()["data"]
            rows = sorted(data, key=operator.itemgetter("index"))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelResponseError(f"embeddings {self._url}: not an embeddings response: {e!r}") from e
        if len(vectors) != len(batch):
            raise ModelResponseError(
                f"embeddings {self._url}: asked for {len(batch)} vectors, got {len(vectors)}"
            )
        return vectors


def to_blob(vector: Sequence[float]) -> bytes:
    """A vector scaled to unit length as little-endian float32 bytes. A zero vector stays zero."""
    norm = math.sqrt(math.fsum(x * x for x in vector)) or 1.0
    values = array("f", (x / norm for x in vector))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def from_blob(blob: bytes) -> array[float]:
    """The float32 vector stored in ``blob``."""
    values = array("f")
    values.frombytes(blob)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """The dot product (cosine similarity of unit vectors)."""
    return math.fsum(map(operator.mul, a, b))


def load_sqlite_vec(conn: sqlite3.Connection) -> str | None:
    """Load ``sqlite-vec`` into ``conn``: None when loaded, else why it cannot be (for error messages)."""
    if not hasattr(conn, "enable_load_extension"):
        return (
            "this Python's sqlite3 module was built without extension loading "
            "(sqlite3.Connection has no enable_load_extension), so sqlite-vec cannot load; "
            "use vector_search='python' or a Python built with --enable-loadable-sqlite-extensions"
        )
    try:
        import sqlite_vec  # pyright: ignore[reportMissingTypeStubs]
    except ImportError:
        return f"sqlite-vec is not installed: {install_hint('knowledge')}"
    try:
        conn.enable_load_extension(True)
        try:
            sqlite_vec.load(conn)  # pyright: ignore[reportUnknownMemberType]
        finally:
            conn.enable_load_extension(False)
    except sqlite3.Error as e:
        return f"sqlite-vec failed to load: {e}"
    return None


def check_vector_search(value: str) -> VectorSearch:
    """``value`` if it names a vector search, else a KnowledgeError listing the choices."""
    if value == "auto" or value == "sqlite-vec" or value == "python":
        return value
    raise KnowledgeError(f"vector_search must be 'auto', 'sqlite-vec' or 'python', got {value!r}")
