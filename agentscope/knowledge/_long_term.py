"""LongTermMemory: facts recorded in one session and recalled in later ones, in the knowledge store's file."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from agentscope._sqlite import write_transaction
from agentscope.exceptions import ModelRetry
from agentscope.knowledge._qdrant import QdrantIndex
from agentscope.knowledge._store import DEFAULT_PATH, Store
from agentscope.knowledge._types import Fact, SearchMode
from agentscope.knowledge._vectors import EmbeddingModel, VectorSearch

__all__ = ["LongTermMemory"]

_MAX_FACT_CHARS = 4000


def _check_scope(scope: str) -> str:
    if not scope or len(scope) > 200:
        raise ValueError(f"scope must be 1 to 200 characters, got {scope!r}")
    return scope


def _load_fact(conn: sqlite3.Connection, fact_id: int, score: float) -> Fact | None:
    row = conn.execute("SELECT id, scope, text, created_at FROM facts WHERE id = ?", (fact_id,)).fetchone()
    return None if row is None else _fact_row(row, score)


def _fact_row(row: tuple[object, ...], score: float) -> Fact:
    fact_id, scope, text, created_at = row
    return Fact(
        id=int(str(fact_id)), scope=str(scope), text=str(text), created_at=float(str(created_at)), score=score
    )


class LongTermMemory:
    """Facts that outlive a session: an agent records them in one run and recalls them in the next.

    Facts are kept per ``scope`` (a user, an agent, a project) in an SQLite file, the same kind of file as a
    :class:`KnowledgeBase` (they may share one). Recall ranks by BM25, and also by vector similarity when an
    ``embedder`` is given. ::

        async with LongTermMemory(".agentscope/knowledge.db", scope="user:alice") as ltm:
            await ltm.record("Alice prefers answers in French.")
            facts = await ltm.recall("which language does Alice like?")
            toolkit.register(ltm.record_tool())
            toolkit.register(ltm.recall_tool())

    Raises:
        SessionError: from any method, when the file cannot be created, read or written.
        KnowledgeError: from any method, when the file holds vectors of another embedding model.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        scope: str = "default",
        embedder: EmbeddingModel | None = None,
        vector_search: VectorSearch = "auto",
        vector_index: QdrantIndex | None = None,
    ) -> None:
        self._scope = _check_scope(scope)
        self._store = Store(path, embedder, vector_search, vector_index)

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._store.path

    @property
    def scope(self) -> str:
        """The scope used when a call names none."""
        return self._scope

    async def __aenter__(self) -> Self:
        await self._store.run("open it", lambda conn: None)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the file (it reopens when used again)."""
        await self._store.aclose()

    async def record(self, fact: str, *, scope: str | None = None) -> Fact:
        """Store ``fact`` in ``scope`` (default: this memory's); recording the same text again returns the fact
        already stored.

        Raises:
            ValueError: the fact is empty or longer than 4000 characters.
        """
        text = fact.strip()
        if not text:
            raise ValueError("the fact to record is empty")
        if len(text) > _MAX_FACT_CHARS:
            raise ValueError(f"a fact holds at most {_MAX_FACT_CHARS} characters, got {len(text)}")
        where = _check_scope(scope or self._scope)
        store = self._store
        blobs = await store.embed([text]) if store.embedder is not None else []

        def write(conn: sqlite3.Connection) -> Fact:
            with write_transaction(conn):
                row = conn.execute(
                    "SELECT id, scope, text, created_at FROM facts WHERE scope = ? AND text = ?",
                    (where, text),
                ).fetchone()
                if row is not None:
                    return _fact_row(row, 0.0)
                now = time.time()
                fact_id = conn.execute(
                    "INSERT INTO facts (scope, text, created_at) VALUES (?, ?, ?)", (where, text, now)
                ).lastrowid
                assert fact_id is not None
                if blobs:
                    store.claim_vectors(conn, len(blobs[0]) // 4)
                    conn.execute(
                        "INSERT INTO fact_vectors (fact_id, embedding) VALUES (?, ?)", (fact_id, blobs[0])
                    )
                    store.vectors_changed(conn, "fact")
            if blobs:
                store.mirror(conn, "fact", added=[fact_id])
            return Fact(id=fact_id, scope=where, text=text, created_at=now)

        saved = await store.run("record a fact", write)
        if store.embedder is not None:
            await store.embed_missing("fact")
        return saved

    async def rebuild_index(self) -> None:
        """Load the Qdrant index again from the file's vectors (after it was lost or written to by hand)."""
        await self._store.run(
            "rebuild its index", lambda conn: self._store.sync_index(conn, "fact", rebuild=True)
        )

    async def embed_missing(self) -> int:
        """Give a vector to every fact stored without one (recorded before the embedder was configured); returns
        how many. ``record`` does it too. Nothing to do without an embedder."""
        return await self._store.embed_missing("fact")

    async def recall(
        self, query: str, *, limit: int = 5, scope: str | None = None, mode: SearchMode | None = None
    ) -> list[Fact]:
        """The facts of ``scope`` most relevant to ``query``, best first.

        Raises:
            ValueError: the query has no words, or ``limit`` is not between 1 and 50.
            UsageError: ``mode`` needs an embedder and there is none.
        """
        return await self._store.search(
            query,
            mode=mode,
            limit=limit,
            keyword_sql="SELECT f.id, bm25(facts_fts) AS s FROM facts_fts JOIN facts f ON f.id = facts_fts.rowid "
            "WHERE facts_fts MATCH ? AND f.scope = ? ORDER BY s LIMIT ?",
            kind="fact",
            scope=_check_scope(scope or self._scope),
            load=_load_fact,
            action="recall facts",
        )

    async def facts(self, *, scope: str | None = None) -> list[Fact]:
        """Every fact of ``scope`` (default: this memory's), oldest first."""
        where = _check_scope(scope or self._scope)

        def run(conn: sqlite3.Connection) -> list[Fact]:
            rows = conn.execute(
                "SELECT id, scope, text, created_at FROM facts WHERE scope = ? ORDER BY id", (where,)
            ).fetchall()
            return [_fact_row(row, 0.0) for row in rows]

        return await self._store.run("list facts", run)

    async def forget(self, fact_id: int, *, scope: str | None = None) -> bool:
        """Delete the fact with id ``fact_id`` of ``scope`` (default: this memory's); False when that scope has
        none (a fact of another scope is left alone)."""
        where = _check_scope(scope or self._scope)

        def run(conn: sqlite3.Connection) -> bool:
            with write_transaction(conn):
                deleted = (
                    conn.execute("DELETE FROM facts WHERE id = ? AND scope = ?", (fact_id, where)).rowcount
                    > 0
                )
                if deleted:
                    self._store.vectors_changed(conn, "fact")
            if deleted:
                self._store.mirror(conn, "fact", removed=[fact_id])
            return deleted

        return await self._store.run("forget a fact", run)

    def record_tool(self, *, name: str = "remember") -> Callable[[str], Awaitable[str]]:
        """A tool the agent calls to record a fact in this memory's scope (for ``Toolkit.register``)."""

        async def remember(fact: str) -> str:
            """Save a fact to long-term memory, to be recalled in later conversations. Record durable facts
            (preferences, names, decisions), one per call, as a self-contained sentence.

            Args:
                fact: The fact, e.g. "The user's name is Alice and she prefers metric units."
            """
            try:
                saved = await self.record(fact)
            except ValueError as e:
                raise ModelRetry(str(e)) from None
            return f"Recorded fact {saved.id}: {saved.text}"

        remember.__name__ = remember.__qualname__ = name
        return remember

    def recall_tool(self, *, name: str = "recall", limit: int = 5) -> Callable[[str], Awaitable[str]]:
        """A tool the agent calls to recall facts of this memory's scope (for ``Toolkit.register``)."""

        async def recall(query: str) -> str:
            """Search long-term memory for facts recorded in earlier conversations.

            Args:
                query: Keywords or a question about what to recall.
            """
            try:
                facts = await self.recall(query, limit=limit)
            except ValueError as e:
                raise ModelRetry(str(e)) from None
            if not facts:
                return f"No remembered fact matches {query!r}."
            return "\n".join(
                f"- {f.text} (fact {f.id}, recorded {time.strftime('%Y-%m-%d', time.gmtime(f.created_at))})"
                for f in facts
            )

        recall.__name__ = recall.__qualname__ = name
        return recall

    def __repr__(self) -> str:
        return f"LongTermMemory({str(self.path)!r}, scope={self._scope!r})"
