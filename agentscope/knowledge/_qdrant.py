"""Qdrant as the vector index of a knowledge store, for stores too large for an exact scan.

The SQLite file stays the record: texts, the FTS5 index, and every vector as a blob. Qdrant holds a copy of the
vectors (per store file one collection for chunks and one for facts, named after the random ``store_id`` in the
file's ``meta`` table, cosine distance, each fact with its scope as payload) and answers the nearest-neighbour
queries. Every transaction that changes a kind's vectors increments its ``{kind}_vectors_version`` in ``meta``; the
collection keeps the version it holds in its metadata. A collection that is missing, or holds another version than
the file (another process changed the file without the index, or a copy to the index failed), is loaded again from
the file on first use; :meth:`KnowledgeBase.rebuild_index` does it on demand. All of it is blocking: the store
calls it from its worker thread.
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
_VERSION_KEY = "agentscope_vectors_version"


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
        collection: The prefix of the collection names (``{collection}_{store_id}_chunks`` and ``_facts``, where
            ``store_id`` is the random id the store file was given on first use: files never share a collection).

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

    def name(self, store: str, kind: Literal["chunk", "fact"]) -> str:
        """The collection that holds the vectors of ``kind`` of the store file with id ``store``."""
        return f"{self._prefix}_{store}_{kind}s"

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
        store: str,
        kind: Literal["chunk", "fact"],
        dim: int,
        version: int,
        rows: Callable[[], Iterable[IndexRow]],
        *,
        rebuild: bool = False,
    ) -> None:
        """Make the collection of ``kind`` hold version ``version`` of the file's vectors, loading ``rows()``
        when it holds another (or none)."""
        from qdrant_client import models

        name = self.name(store, kind)
        with self._errors(f"prepare collection {name!r}") as client:
            if client.collection_exists(name):
                size = _vector_size(client, name)
                if not rebuild and size == dim and _version(client, name) == version:
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
            # Recorded last: a load cut short leaves no version, so the next use loads again.
            client.update_collection(name, metadata={_VERSION_KEY: version})

    def apply(
        self,
        store: str,
        kind: Literal["chunk", "fact"],
        *,
        rows: Sequence[IndexRow],
        removed: Sequence[int],
        versions: tuple[int, int],
    ) -> bool:
        """Copy one committed change (vectors ``rows`` added or replaced, ids ``removed`` gone) that took the
        file from version ``versions[0]`` to ``versions[1]``. Returns False, changing nothing, when the collection
        does not hold ``versions[0]``: it missed another change and must be loaded again."""
        from qdrant_client import models

        name = self.name(store, kind)
        with self._errors(f"write to {name!r}") as client:
            if not client.collection_exists(name) or _version(client, name) != versions[0]:
                return False
            if removed:
                client.delete(name, points_selector=models.PointIdsList(points=list(removed)))
            _upsert(client, name, rows)
            client.update_collection(name, metadata={_VERSION_KEY: versions[1]})
            return True

    def delete(self, store: str, kind: Literal["chunk", "fact"], ids: Sequence[int]) -> None:
        """Remove vectors by id (ids without one are ignored); the collection's version is left as it is."""
        if not ids:
            return
        from qdrant_client import models

        name = self.name(store, kind)
        with self._errors(f"delete from {name!r}") as client:
            if client.collection_exists(name):
                client.delete(name, points_selector=models.PointIdsList(points=list(ids)))

    def query(
        self, store: str, kind: Literal["chunk", "fact"], vector: bytes, limit: int, scope: str | None
    ) -> list[tuple[int, float]]:
        """The ids (and cosine similarities) of the ``limit`` vectors nearest ``vector``, of ``scope`` if given."""
        from qdrant_client import models

        name = self.name(store, kind)
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

    def count(self, store: str, kind: Literal["chunk", "fact"]) -> int:
        """How many vectors the collection of ``kind`` holds (0 when it does not exist)."""
        name = self.name(store, kind)
        with self._errors(f"count {name!r}") as client:
            if not client.collection_exists(name):
                return 0
            return client.count(name, exact=True).count

    def close(self) -> None:
        """Close the client (it reopens when used again)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _vector_size(client: QdrantClient, name: str) -> int | None:
    vectors = client.get_collection(name).config.params.vectors
    return vectors.size if vectors is not None and not isinstance(vectors, dict) else None


def _version(client: QdrantClient, name: str) -> int | None:
    metadata = client.get_collection(name).config.metadata or {}
    version = metadata.get(_VERSION_KEY)
    return version if isinstance(version, int) else None


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
