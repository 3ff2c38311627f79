"""Qdrant as the vector index of a knowledge store, for stores too large for an exact scan.

The SQLite file stays the record: texts, the FTS5 index, and every vector as a blob. Qdrant holds a copy of the
vectors (one collection for chunks, one for facts, cosine distance, each fact with its scope as payload) and
answers the nearest-neighbour queries. A collection that is missing, or holds another number of points than the
file, is loaded again from the file on first use; :meth:`KnowledgeBase.rebuild_index` does it on demand. All of it
is blocking: the store calls it from its worker thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agentscope._lazy import install_hint
from agentscope.knowledge._types import KnowledgeError
from agentscope.knowledge._vectors import from_blob

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = ["IndexRow", "QdrantIndex"]

IndexRow = tuple[int, bytes, str | None]
"""(id, vector blob, scope or None) of one chunk or fact."""
_BATCH = 256


class QdrantIndex:
    """A Qdrant server or Qdrant's local mode as the vector index of a :class:`KnowledgeBase` or
    :class:`LongTermMemory` (``pip install -e '.[qdrant]'``)::

        index = QdrantIndex(url="http://127.0.0.1:6333")  # a server
        index = QdrantIndex(path=".agentscope/qdrant")  # local mode: in-process, kept in a folder
        kb = KnowledgeBase(".agentscope/knowledge.db", embedder=embedder, vector_index=index)

    Args:
        url: A Qdrant server's URL.
        path: A folder for Qdrant's local mode (one process at a time), or ``":memory:"``.
        api_key: The server's API key.
        collection: The prefix of the collection names (``{collection}_chunks``, ``{collection}_facts``): one
            prefix per knowledge store file.

    Raises:
        ValueError: not exactly one of ``url`` and ``path`` is given.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        path: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        collection: str = "agentscope",
    ) -> None:
        if (url is None) == (path is None):
            raise ValueError(
                "pass exactly one of url= (a Qdrant server) or path= (local mode: a folder, or ':memory:')"
            )
        self._url = url
        self._path = None if path is None else str(path)
        self._api_key = api_key
        self._prefix = collection
        self._client: QdrantClient | None = None
        self._lock = threading.Lock()
        """One call at a time: a knowledge base and a memory may share the index (and local mode's client)."""

    @property
    def where(self) -> str:
        """The server's URL or the local folder, for messages."""
        return self._url or f"local mode {self._path}"

    def __repr__(self) -> str:
        return f"QdrantIndex({self.where!r}, collection={self._prefix!r})"

    def name(self, kind: Literal["chunk", "fact"]) -> str:
        """The collection that holds the vectors of ``kind``."""
        return f"{self._prefix}_{kind}s"

    @contextmanager
    def _errors(self, action: str) -> Generator[QdrantClient]:
        try:
            from qdrant_client.http.exceptions import ApiException
        except ImportError as e:
            raise KnowledgeError(f"QdrantIndex needs qdrant-client: {install_hint('qdrant')}") from e
        with self._lock:
            try:
                yield self._open()
            except (ApiException, OSError, RuntimeError, ValueError) as e:
                raise KnowledgeError(f"Qdrant ({self.where}): could not {action}: {e}") from e

    def _open(self) -> QdrantClient:
        from qdrant_client import QdrantClient

        if self._client is None:
            if self._url is not None:
                self._client = QdrantClient(url=self._url, api_key=self._api_key, check_compatibility=False)
            elif self._path == ":memory:":
                self._client = QdrantClient(location=":memory:", force_disable_check_same_thread=True)
            else:
                assert self._path is not None
                Path(self._path).mkdir(parents=True, exist_ok=True)
                self._client = QdrantClient(path=self._path, force_disable_check_same_thread=True)
        return self._client

    def prepare(
        self,
        kind: Literal["chunk", "fact"],
        dim: int,
        count: int,
        rows: Callable[[], Iterable[IndexRow]],
        *,
        rebuild: bool = False,
    ) -> None:
        """Make the collection of ``kind`` hold the file's ``count`` vectors, loading ``rows()`` when it does not."""
        from qdrant_client import models

        name = self.name(kind)
        with self._errors(f"prepare collection {name!r}") as client:
            if client.collection_exists(name):
                size = _vector_size(client, name)
                if not rebuild and size == dim and client.count(name, exact=True).count == count:
                    return
                client.delete_collection(name)
            client.create_collection(
                name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )
            if kind == "fact" and self._url is not None:  # local mode has no payload indexes (and warns)
                client.create_payload_index(name, "scope", models.PayloadSchemaType.KEYWORD)
            batch: list[IndexRow] = []
            for row in rows():
                batch.append(row)
                if len(batch) == _BATCH:
                    _upsert(client, name, batch)
                    batch = []
            _upsert(client, name, batch)

    def upsert(self, kind: Literal["chunk", "fact"], rows: Sequence[IndexRow]) -> None:
        """Add or replace vectors."""
        with self._errors(f"write to {self.name(kind)!r}") as client:
            _upsert(client, self.name(kind), rows)

    def delete(self, kind: Literal["chunk", "fact"], ids: Sequence[int]) -> None:
        """Remove vectors by id (ids without one are ignored)."""
        if not ids:
            return
        from qdrant_client import models

        with self._errors(f"delete from {self.name(kind)!r}") as client:
            if client.collection_exists(self.name(kind)):
                client.delete(self.name(kind), points_selector=models.PointIdsList(points=list(ids)))

    def query(
        self, kind: Literal["chunk", "fact"], vector: bytes, limit: int, scope: str | None
    ) -> list[tuple[int, float]]:
        """The ids (and cosine similarities) of the ``limit`` vectors nearest ``vector``, of ``scope`` if given."""
        from qdrant_client import models

        name = self.name(kind)
        where = (
            None
            if scope is None
            else models.Filter(
                must=[models.FieldCondition(key="scope", match=models.MatchValue(value=scope))]
            )
        )
        with self._errors(f"search {name!r}") as client:
            if not client.collection_exists(name):
                return []
            found = client.query_points(name, query=list(from_blob(vector)), query_filter=where, limit=limit)
            return [(int(p.id), float(p.score)) for p in found.points]

    def count(self, kind: Literal["chunk", "fact"]) -> int:
        """How many vectors the collection of ``kind`` holds (0 when it does not exist)."""
        with self._errors(f"count {self.name(kind)!r}") as client:
            if not client.collection_exists(self.name(kind)):
                return 0
            return client.count(self.name(kind), exact=True).count

    def close(self) -> None:
        """Close the client (it reopens when used again)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _vector_size(client: QdrantClient, name: str) -> int | None:
    vectors = client.get_collection(name).config.params.vectors
    return vectors.size if vectors is not None and not isinstance(vectors, dict) else None


def _upsert(client: QdrantClient, name: str, rows: Sequence[IndexRow]) -> None:
    from qdrant_client import models

    if rows:
        points = [
            models.PointStruct(
                id=i, vector=list(from_blob(blob)), payload={} if scope is None else {"scope": scope}
            )
            for i, blob, scope in rows
        ]
        client.upsert(name, points=points)
