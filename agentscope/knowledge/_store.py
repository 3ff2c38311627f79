"""The SQLite file that holds a knowledge base and long-term memory, and the connection both use.

Layout (schema version 1, kept in ``PRAGMA user_version``)::

    meta(key TEXT PRIMARY KEY, value TEXT)              embedding_model, embedding_dim once vectors exist;
                                                        chunk_vectors_version, fact_vectors_version (incremented
                                                        by every transaction that changes those vectors);
                                                        store_id (random, for Qdrant collection names)
    documents(id, path UNIQUE, name, kind, sha256, added_at)
    chunks(id, document_id, ordinal, text, page, heading)
    chunks_fts   FTS5 over chunks(text, heading), kept in step by triggers; ranked with BM25
    chunk_vectors(chunk_id PRIMARY KEY, embedding BLOB)  unit float32 vectors; deleted with their chunk
    facts(id, scope, text, created_at), UNIQUE(scope, text)
    facts_fts    FTS5 over facts(text), kept in step by triggers
    fact_vectors(fact_id PRIMARY KEY, embedding BLOB)

Every call runs in a worker thread behind a per-instance limiter of one; the file is in WAL mode, so several
instances and processes can share it.
"""

from __future__ import annotations

import heapq
import os
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread

from agentscope._sqlite import SQLiteSchema, connect, sqlite_errors, write_transaction
from agentscope.exceptions import UsageError
from agentscope.knowledge._qdrant import IndexRow, QdrantIndex
from agentscope.knowledge._types import KnowledgeError, SearchMode
from agentscope.knowledge._vectors import (
    EmbeddingModel,
    VectorSearch,
    check_vector_search,
    dot,
    from_blob,
    load_sqlite_vec,
    to_blob,
)

__all__ = ["DEFAULT_PATH", "Kind", "Store", "VectorEngine", "check_limit", "fts_query", "rrf"]

_T = TypeVar("_T")

Kind = Literal["chunk", "fact"]
VectorEngine = Literal["sqlite-vec", "python", "qdrant"]

DEFAULT_PATH = ".agentscope/knowledge.db"
_TOKENIZE = "porter unicode61 remove_diacritics 2"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS documents (
        id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, name TEXT NOT NULL, kind TEXT NOT NULL,
        sha256 TEXT NOT NULL, added_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS chunks (
        id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT NULL,
        page INTEGER, heading TEXT)""",
    "CREATE TABLE IF NOT EXISTS chunk_vectors (chunk_id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fact_vectors (fact_id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id)",
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
        text, heading, content='chunks', content_rowid='id', tokenize='{_TOKENIZE}')""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, text, heading) VALUES (new.id, new.text, new.heading); END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, text, heading) VALUES ('delete', old.id, old.text, old.heading);
        DELETE FROM chunk_vectors WHERE chunk_id = old.id; END""",
    """CREATE TABLE IF NOT EXISTS facts (
        id INTEGER PRIMARY KEY, scope TEXT NOT NULL, text TEXT NOT NULL, created_at REAL NOT NULL,
        UNIQUE (scope, text))""",
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS facts_fts USING fts5(
        text, content='facts', content_rowid='id', tokenize='{_TOKENIZE}')""",
    """CREATE TRIGGER IF NOT EXISTS facts_ai AFTER INSERT ON facts BEGIN
        INSERT INTO facts_fts (rowid, text) VALUES (new.id, new.text); END""",
    """CREATE TRIGGER IF NOT EXISTS facts_ad AFTER DELETE ON facts BEGIN
        INSERT INTO facts_fts (facts_fts, rowid, text) VALUES ('delete', old.id, old.text);
        DELETE FROM fact_vectors WHERE fact_id = old.id; END""",
)
_FILE = SQLiteSchema(kind="knowledge store", marker_table="documents", version=1, statements=_SCHEMA)
_RRF_K = 60
_MAX_LIMIT = 50


def check_limit(limit: int) -> None:
    """Raise ValueError unless ``limit`` is a sensible number of results (1 to 50)."""
    if not 1 <= limit <= _MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {_MAX_LIMIT}, got {limit}")


def fts_query(query: str) -> str:
    """An FTS5 query that matches any word of ``query`` (BM25 ranks the rows that match more and rarer words).

    Raises:
        ValueError: the query has no words.
    """
    words = dict.fromkeys(w.lower() for w in re.findall(r"\w+", query))
    if not words:
        raise ValueError(f"the query {query!r} is empty: it has no words to search for")
    return " OR ".join(f'"{w}"' for w in words)


def rrf(*rankings: Sequence[int]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of several rankings of ids, best first, with their fused scores."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + 1.0 / (_RRF_K + rank + 1)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


class Store:
    """One connection to a knowledge store file, used from worker threads one call at a time.

    Args:
        path: The file; created with its directory on first use.
        embedder: The embedding model, if vectors are wanted; the file remembers the first model that wrote
            vectors into it and refuses another.
        vector_search: Who computes vector similarity in the file (see :data:`VectorSearch`).
        index: A Qdrant index that answers vector queries instead (the file keeps the vectors too).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedder: EmbeddingModel | None,
        vector_search: VectorSearch,
        index: QdrantIndex | None = None,
    ) -> None:
        self.path = Path(path)
        self.embedder = embedder
        self.vector_search: VectorSearch = check_vector_search(vector_search)
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self.index = index
        self._engine: VectorEngine = "qdrant" if index is not None else "python"
        self._indexed: set[Kind] = set()
        """The kinds whose Qdrant collection was checked against the file since it was opened."""
        self._store_id: str | None = None
        self._changes: dict[Kind, tuple[int, int]] = {}
        """Per kind, the file's vector version before and after the last write transaction (for :meth:`mirror`)."""

    @property
    def engine(self) -> VectorEngine:
        """Who computes vector similarity: ``qdrant``, ``sqlite-vec`` or ``python`` (known once the file is open)."""
        return self._engine

    async def run(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` with the open connection in a worker thread; SQLite errors name the file and ``action``."""
        return await anyio.to_thread.run_sync(self._call, action, fn, limiter=self._limiter)

    def _call(self, action: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with sqlite_errors(_FILE.kind, self.path, action):
            if self._conn is None:
                self._conn = self._open()
            self._changes.clear()  # none left over from a transaction that rolled back
            return fn(self._conn)

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path, _FILE)
        try:
            if self.vector_search != "python" and self.index is None:
                problem = load_sqlite_vec(conn)
                if problem is None:
                    self._engine = "sqlite-vec"
                elif self.vector_search == "sqlite-vec":
                    raise KnowledgeError(f"vector_search='sqlite-vec': {problem}")
            if self.embedder is not None:
                stored = meta(conn, "embedding_model")
                if stored is not None and stored != self.embedder.name:
                    raise KnowledgeError(
                        f"knowledge store {str(self.path)!r} holds vectors of embedding model {stored!r}, not "
                        f"{self.embedder.name!r}; use that model, or another file for this one"
                    )
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        """Close the connection (the store reopens on next use)."""

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._indexed.clear()
            if self.index is not None:
                self.index.close()

        await anyio.to_thread.run_sync(close, limiter=self._limiter)

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        """Embed ``texts`` with the store's model as blobs, checking the dimension against the file's."""
        assert self.embedder is not None
        if not texts:
            return []
        vectors = await self.embedder.embed(texts)
        if len(vectors) != len(texts) or len({len(v) for v in vectors}) != 1:
            raise KnowledgeError(
                f"embedding model {self.embedder.name!r} returned {len(vectors)} vectors of lengths "
                f"{sorted({len(v) for v in vectors})} for {len(texts)} texts; expected one per text, all alike"
            )
        dim = str(len(vectors[0]))
        stored = await self.run("read its embedding settings", lambda conn: meta(conn, "embedding_dim"))
        if stored is not None and stored != dim:
            raise KnowledgeError(
                f"embedding model {self.embedder.name!r} returned {dim}-dimensional vectors, but knowledge store "
                f"{str(self.path)!r} holds {stored}-dimensional ones"
            )
        return [to_blob(v) for v in vectors]

    async def embed_missing(self, kind: Kind) -> int:
        """Embed the chunks (or facts) stored without a vector, e.g. before an embedder was configured; returns how
        many were embedded. Nothing to do without an embedder."""
        if self.embedder is None:
            return 0
        table, vectors, id_column = f"{kind}s", f"{kind}_vectors", f"{kind}_id"

        def missing(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = conn.execute(
                f"SELECT t.id, t.text FROM {table} t "
                f"WHERE NOT EXISTS (SELECT 1 FROM {vectors} v WHERE v.{id_column} = t.id) ORDER BY t.id"
            )
            return [(int(i), str(text)) for i, text in rows]

        rows = await self.run("find what has no vector", missing)
        if not rows:
            return 0
        blobs = await self.embed([text for _, text in rows])

        def write(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                self.claim_vectors(conn, len(blobs[0]) // 4)
                # A row deleted meanwhile gets no vector.
                conn.executemany(
                    f"INSERT OR IGNORE INTO {vectors} ({id_column}, embedding) "
                    f"SELECT ?, ? WHERE EXISTS (SELECT 1 FROM {table} WHERE id = ?)",
                    [(i, blob, i) for (i, _), blob in zip(rows, blobs, strict=True)],
                )
                self.vectors_changed(conn, kind)
            self.mirror(conn, kind, added=[i for i, _ in rows])

        await self.run("store vectors", write)
        return len(rows)

    def vectors_changed(self, conn: sqlite3.Connection, kind: Kind) -> None:
        """Increment the file's version of the ``kind`` vectors; call it in every write transaction that adds or
        removes some (by hand or by deleting their chunk or fact), so that a Qdrant index sees the change even
        when another process without the index made it."""
        key = f"{kind}_vectors_version"
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, '1') "
            "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (key,),
        )
        after = int(meta(conn, key) or 0)
        self._changes[kind] = (after - 1, after)

    def _id(self, conn: sqlite3.Connection) -> str:
        """The file's random id (written on first use), which names its Qdrant collections."""
        if self._store_id is None:
            if meta(conn, "store_id") is None:
                with write_transaction(conn):
                    conn.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)",
                        (secrets.token_hex(8),),
                    )
            self._store_id = meta(conn, "store_id")
            assert self._store_id is not None
        return self._store_id

    def claim_vectors(self, conn: sqlite3.Connection, dim: int) -> None:
        """Record the store's embedding model and dimension (in the caller's write transaction), refusing to mix
        vectors with those another connection wrote meanwhile with another model."""
        assert self.embedder is not None
        for key, value in (("embedding_model", self.embedder.name), ("embedding_dim", str(dim))):
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            stored = meta(conn, key)
            if stored != value:
                raise KnowledgeError(
                    f"knowledge store {str(self.path)!r} holds vectors with {key} {stored!r}, not {value!r}; "
                    "use that model, or another file for this one"
                )

    async def search(
        self,
        query: str,
        *,
        mode: SearchMode | None,
        limit: int,
        kind: Kind,
        keyword_sql: str,
        scope: str | None = None,
        load: Callable[[sqlite3.Connection, int, float], _T | None],
        action: str,
    ) -> list[_T]:
        """The rows best matching ``query``, best first, each built by ``load(conn, id, score)``.

        ``keyword_sql`` selects ``(id, bm25 score)`` with placeholders for the FTS5 match, ``scope`` (when
        given) and the limit, in that order; vector search covers the chunks, or the facts of ``scope``.
        ``mode`` None means hybrid with an embedder, else keyword.

        Raises:
            ValueError: the query has no words, or ``limit`` or ``mode`` is out of range.
            UsageError: ``mode`` needs an embedder and there is none.
        """
        match = fts_query(query)
        check_limit(limit)
        if mode not in (None, "hybrid", "keyword", "vector"):
            raise ValueError(f"mode must be 'hybrid', 'keyword' or 'vector', got {mode!r}")
        mode = mode or ("hybrid" if self.embedder is not None else "keyword")
        if mode != "keyword" and self.embedder is None:
            raise UsageError(f"search mode {mode!r} needs an embedding model: pass embedder=...")
        query_blob = (await self.embed([query]))[0] if mode != "keyword" else b""
        pool = limit * 4 if mode == "hybrid" else limit

        def run(conn: sqlite3.Connection) -> list[_T]:
            keyword: list[tuple[int, float]] = []
            vector: list[tuple[int, float]] = []
            if mode != "vector":
                rows = conn.execute(keyword_sql, (match, *([] if scope is None else [scope]), pool))
                keyword = [(int(i), -float(score)) for i, score in rows]
            if mode != "keyword":
                vector = self.nearest(conn, kind, scope, query_blob, pool)
            if mode == "hybrid":
                ranked = rrf([i for i, _ in keyword], [i for i, _ in vector])[:limit]
            else:
                ranked = keyword or vector
            return [item for i, score in ranked if (item := load(conn, i, score)) is not None]

        return await self.run(action, run)

    def nearest(
        self, conn: sqlite3.Connection, kind: Kind, scope: str | None, query: bytes, limit: int
    ) -> list[tuple[int, float]]:
        """The ids (and cosine similarities) of the ``limit`` chunks or facts (of ``scope``) nearest ``query``."""
        if self.index is not None:
            self.sync_index(conn, kind)
            return self.index.query(self._id(conn), kind, query, limit, scope)
        rows_sql = f"SELECT {kind}_id AS id, embedding FROM {kind}_vectors"
        params: tuple[object, ...] = ()
        if scope is not None:
            rows_sql = (
                "SELECT v.fact_id AS id, v.embedding AS embedding FROM fact_vectors v "
                "JOIN facts f ON f.id = v.fact_id WHERE f.scope = ?"
            )
            params = (scope,)
        if self._engine == "sqlite-vec":
            sql = (
                f"SELECT id, 1.0 - vec_distance_cosine(embedding, ?) AS sim FROM ({rows_sql}) "
                "ORDER BY sim DESC, id LIMIT ?"
            )
            return [(int(i), float(s)) for i, s in conn.execute(sql, (query, *params, limit))]
        target = from_blob(query)
        rows = conn.execute(rows_sql, params)
        scored = ((dot(target, from_blob(blob)), -int(i)) for i, blob in rows)
        return [(-neg_id, sim) for sim, neg_id in heapq.nlargest(limit, scored)]

    def sync_index(self, conn: sqlite3.Connection, kind: Kind, *, rebuild: bool = False) -> None:
        """Make the Qdrant collection of ``kind`` hold the file's vectors (once per opening, or now if
        ``rebuild``); nothing to do before the file holds any vector."""
        if self.index is None or (kind in self._indexed and not rebuild):
            return
        store = self._id(conn)
        conn.execute("BEGIN")  # the version and the vectors read from one snapshot of the file
        try:
            dim = meta(conn, "embedding_dim")
            if dim is None:
                return
            version = int(meta(conn, f"{kind}_vectors_version") or 0)

            def rows() -> Iterable[IndexRow]:
                return _index_rows(conn, kind, None)

            self.index.prepare(store, kind, int(dim), version, rows, rebuild=rebuild)
        finally:
            conn.execute("COMMIT")
        self._indexed.add(kind)

    def mirror(
        self, conn: sqlite3.Connection, kind: Kind, *, added: Sequence[int] = (), removed: Sequence[int] = ()
    ) -> None:
        """Copy a committed change of the file's vectors to the Qdrant index, if there is one; when the index
        missed another change meanwhile (its version is not the one before this change) it is loaded again."""
        versions = self._changes.pop(kind, None)
        if self.index is None:
            return
        try:
            if versions is not None and kind in self._indexed:
                rows = list(_index_rows(conn, kind, added)) if added else []
                if self.index.apply(self._id(conn), kind, rows=rows, removed=removed, versions=versions):
                    return
                self._indexed.discard(kind)
            self.sync_index(conn, kind)
        except KnowledgeError as e:
            self._indexed.discard(kind)  # check it against the file again on next use
            raise KnowledgeError(
                f"{e}. The file {str(self.path)!r} holds the change; the index catches up on its next use or with "
                "rebuild_index()"
            ) from e


def _index_rows(conn: sqlite3.Connection, kind: Kind, ids: Sequence[int] | None) -> Iterable[IndexRow]:
    """(id, blob, scope) of the vectors of ``kind``, all of them or those of ``ids``."""
    if kind == "fact":
        sql = "SELECT v.fact_id, v.embedding, f.scope FROM fact_vectors v JOIN facts f ON f.id = v.fact_id"
        column = "v.fact_id"
    else:
        sql = "SELECT chunk_id, embedding, NULL FROM chunk_vectors"
        column = "chunk_id"
    if ids is None:
        cursor = conn.execute(sql)
    else:
        cursor = conn.execute(f"{sql} WHERE {column} IN ({','.join('?' * len(ids))})", tuple(ids))
    return ((int(i), bytes(blob), None if scope is None else str(scope)) for i, blob, scope in cursor)


def meta(conn: sqlite3.Connection, key: str) -> str | None:
    """A value of the ``meta`` table."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])
