"""KnowledgeBase: documents read, chunked and stored in SQLite; searched by BM25, vectors, or both."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio.to_thread

from agentscope._sqlite import write_transaction
from agentscope.exceptions import ModelRetry
from agentscope.knowledge._chunking import Chunk, check_chunking, chunk_sections
from agentscope.knowledge._qdrant import QdrantIndex
from agentscope.knowledge._readers import SUPPORTED_SUFFIXES, load_document
from agentscope.knowledge._store import DEFAULT_PATH, Store, VectorEngine, check_limit
from agentscope.knowledge._types import KnowledgeError, Passage, SearchMode
from agentscope.knowledge._vectors import EmbeddingModel, VectorSearch

__all__ = ["AddReport", "KnowledgeBase", "format_passages"]


@dataclass(slots=True)
class AddReport:
    """What an ``add_*`` call did, by document name."""

    added: list[str] = field(default_factory=list[str])
    """Documents new to the store."""
    updated: list[str] = field(default_factory=list[str])
    """Documents whose content changed since they were added: their chunks were replaced."""
    unchanged: list[str] = field(default_factory=list[str])
    """Documents already stored with the same content: left as they were."""
    skipped: list[str] = field(default_factory=list[str])
    """Files of a folder that no reader handles (their suffix is not supported)."""
    chunks: int = 0
    """Chunks written."""


@dataclass(frozen=True, slots=True)
class _Read:
    path: Path
    name: str
    kind: str
    sha256: str
    chunks: list[Chunk]


def format_passages(query: str, passages: Sequence[Passage]) -> str:
    """Passages as a model reads them: each under a numbered line that cites its source."""
    if not passages:
        return f"No passage in the knowledge base matches {query!r}."
    blocks = [f"[{i}] {p.citation}\n{p.text}" for i, p in enumerate(passages, 1)]
    return "\n\n".join(blocks)


class KnowledgeBase:
    """Documents (text, Markdown, HTML, PDF) cut into chunks and stored in an SQLite file for retrieval.

    Keyword search (SQLite FTS5, BM25 ranking) always works, offline and without a model. With an
    ``embedder`` (e.g. :class:`OpenAIEmbedding`), chunks also get vectors and searches are hybrid: BM25 and
    vector similarity fused by reciprocal rank. ::

        async with KnowledgeBase(".agentscope/knowledge.db") as kb:
            await kb.add_folder("docs/")
            for passage in await kb.search("how do I install it?"):
                print(passage.citation, passage.text)
            toolkit.register(kb.as_tool())  # the agent searches it, citing sources

    Args:
        path: The SQLite file (created with its directory on first use); long-term memory may share it.
        embedder: An embedding model; None for keyword search only.
        chunk_size: Most characters in a chunk.
        chunk_overlap: Characters a chunk repeats from the one before (at most ``chunk_size // 2``).
        vector_search: Who computes vector similarity: ``"auto"`` (sqlite-vec when this Python's sqlite3 can load
            it, else an exact scan in Python), ``"sqlite-vec"`` (fail if it cannot load) or ``"python"``.
        vector_index: A :class:`QdrantIndex` that answers vector queries instead (for large stores); the file
            keeps every vector too, and the index is loaded from it when it lacks them.

    Raises:
        ValueError: a chunking setting is out of range.
        KnowledgeError: from any method, when a document cannot be read, or the store was built with another
            embedding model.
        SessionError: from any method, when the file cannot be created, read or written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        embedder: EmbeddingModel | None = None,
        chunk_size: int = 1200,
        chunk_overlap: int = 150,
        vector_search: VectorSearch = "auto",
        vector_index: QdrantIndex | None = None,
    ) -> None:
        check_chunking(chunk_size, chunk_overlap)
        self._store = Store(path, embedder, vector_search, vector_index)
        self._chunk_size = chunk_size
        self._chunk_overlap = chunk_overlap

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._store.path

    @property
    def embedder(self) -> EmbeddingModel | None:
        """The embedding model, if any."""
        return self._store.embedder

    @property
    def vector_engine(self) -> VectorEngine:
        """Who computes vector similarity: ``"qdrant"``, ``"sqlite-vec"`` or ``"python"`` (known once the store is
        open)."""
        return self._store.engine

    async def rebuild_index(self) -> None:
        """Load the Qdrant index again from the file's vectors (after it was lost or written to by hand)."""
        await self._store.run(
            "rebuild its index", lambda conn: self._store.sync_index(conn, "chunk", rebuild=True)
        )

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

    # ------------------------------------------------------------------ adding

    async def add_file(self, path: str | os.PathLike[str], *, name: str | None = None) -> AddReport:
        """Read, chunk and store one document; a document already stored is replaced if its content changed.

        Args:
            path: A ``.txt``, ``.md``, ``.html`` or ``.pdf`` file (see :data:`SUPPORTED_SUFFIXES`).
            name: The name passages cite; default: the file name.

        Raises:
            KnowledgeError: the file is missing, of an unsupported type, unreadable, or holds no text.
        """
        file = Path(path)
        report = AddReport()
        read = await anyio.to_thread.run_sync(self._read, file, name or file.name)
        await self._write([read], report)
        return report

    async def add_folder(self, folder: str | os.PathLike[str], *, recursive: bool = True) -> AddReport:
        """Add every supported document under ``folder``; each is cited by its path relative to ``folder``.

        Files no reader handles are listed in the report's ``skipped``; hidden files and folders (``.name``) are
        left out. All documents are read before any is written: one that cannot be read stops the call and
        nothing of it is stored.

        Raises:
            KnowledgeError: the folder is missing or holds no supported document, or a document cannot be read.
        """
        root = Path(folder)
        report = AddReport()

        def list_files() -> list[Path]:
            if not root.is_dir():
                raise KnowledgeError(f"no such folder: {str(root)!r}")
            found = root.rglob("*") if recursive else root.glob("*")
            return sorted(
                p
                for p in found
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )

        files = await anyio.to_thread.run_sync(list_files)
        readable = [p for p in files if p.suffix.lower() in SUPPORTED_SUFFIXES]
        report.skipped = [p.relative_to(root).as_posix() for p in files if p not in readable]
        if not readable:
            raise KnowledgeError(
                f"folder {str(root)!r} holds no supported document (supported: {', '.join(SUPPORTED_SUFFIXES)})"
            )
        reads = [
            await anyio.to_thread.run_sync(self._read, p, p.relative_to(root).as_posix()) for p in readable
        ]
        await self._write(reads, report)
        return report

    def _read(self, path: Path, name: str) -> _Read:
        sections, data = load_document(path)
        digest = hashlib.sha256(data).hexdigest()
        chunks = chunk_sections(sections, size=self._chunk_size, overlap=self._chunk_overlap)
        return _Read(path.resolve(), name, path.suffix.lower().lstrip("."), digest, chunks)

    async def _write(self, reads: list[_Read], report: AddReport) -> None:
        def stored_digests(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute("SELECT path, sha256 FROM documents").fetchall()
            return {str(p): str(d) for p, d in rows}

        digests = await self._store.run("read its documents", stored_digests)
        todo: list[_Read] = []
        for read in reads:
            if digests.get(str(read.path)) == read.sha256:
                report.unchanged.append(read.name)
            else:
                todo.append(read)
        texts = [c.text for read in todo for c in read.chunks]
        blobs = await self._store.embed(texts) if self._store.embedder is not None else []

        def write(conn: sqlite3.Connection) -> None:
            vectors = iter(blobs)
            removed: list[int] = []
            added: list[int] = []
            with write_transaction(conn):
                if blobs:
                    self._store.claim_vectors(conn, len(blobs[0]) // 4)
                for read in todo:
                    row = conn.execute(
                        "SELECT id FROM documents WHERE path = ?", (str(read.path),)
                    ).fetchone()
                    if row is not None:
                        removed.extend(_delete_document(conn, row[0]))
                    doc_id = conn.execute(
                        "INSERT INTO documents (path, name, kind, sha256, added_at) VALUES (?, ?, ?, ?, ?)",
                        (str(read.path), read.name, read.kind, read.sha256, time.time()),
                    ).lastrowid
                    (report.updated if row is not None else report.added).append(read.name)
                    for ordinal, chunk in enumerate(read.chunks):
                        chunk_id = conn.execute(
                            "INSERT INTO chunks (document_id, ordinal, text, page, heading) VALUES (?, ?, ?, ?, ?)",
                            (doc_id, ordinal, chunk.text, chunk.page, chunk.heading),
                        ).lastrowid
                        assert chunk_id is not None
                        if blobs:
                            conn.execute(
                                "INSERT INTO chunk_vectors (chunk_id, embedding) VALUES (?, ?)",
                                (chunk_id, next(vectors)),
                            )
                            added.append(chunk_id)
                    report.chunks += len(read.chunks)
                if added or removed:
                    self._store.vectors_changed(conn, "chunk")
            self._store.mirror(conn, "chunk", added=added, removed=removed)

        await self._store.run("add documents", write)
        if self._store.embedder is not None:
            await self._store.embed_missing("chunk")

    async def embed_missing(self) -> int:
        """Give a vector to every chunk stored without one (added before the embedder was configured); returns
        how many. ``add_file`` and ``add_folder`` do it too. Nothing to do without an embedder."""
        return await self._store.embed_missing("chunk")

    # ------------------------------------------------------------------ reading

    async def documents(self) -> list[str]:
        """The names of the stored documents, sorted."""

        def names(conn: sqlite3.Connection) -> list[str]:
            return [str(n) for (n,) in conn.execute("SELECT name FROM documents ORDER BY name")]

        return await self._store.run("list documents", names)

    async def remove(self, name: str) -> bool:
        """Remove the document cited as ``name`` and its chunks; False when there is none."""

        def delete(conn: sqlite3.Connection) -> bool:
            removed: list[int] = []
            with write_transaction(conn):
                ids = [int(i) for (i,) in conn.execute("SELECT id FROM documents WHERE name = ?", (name,))]
                for doc_id in ids:
                    removed.extend(_delete_document(conn, doc_id))
                if removed:
                    self._store.vectors_changed(conn, "chunk")
            self._store.mirror(conn, "chunk", removed=removed)
            return bool(ids)

        return await self._store.run("remove a document", delete)

    async def search(self, query: str, *, limit: int = 5, mode: SearchMode | None = None) -> list[Passage]:
        """The passages that best answer ``query``, best first.

        Args:
            query: What to look for, in words.
            limit: Most passages returned (1 to 50).
            mode: ``"keyword"`` (BM25), ``"vector"`` or ``"hybrid"``; default: hybrid with an embedder, else
                keyword.

        Raises:
            ValueError: the query has no words, or ``limit`` is out of range.
            UsageError: ``mode`` needs an embedder and there is none.
        """
        return await self._store.search(
            query,
            mode=mode,
            limit=limit,
            keyword_sql="SELECT rowid, bm25(chunks_fts, 1.0, 0.5) AS s FROM chunks_fts WHERE chunks_fts MATCH ? "
            "ORDER BY s LIMIT ?",
            kind="chunk",
            load=_passage,
            action="search",
        )

    def as_tool(self, *, name: str = "search_knowledge", limit: int = 5) -> Callable[[str], Awaitable[str]]:
        """A tool for :meth:`Toolkit.register <agentscope.tools.Toolkit.register>` that searches this knowledge
        base and returns passages each headed by its citation (document, page or section, chunk id)::

            toolkit.register(kb.as_tool())

        An empty query goes back to the model as a tool error it can correct.
        """
        check_limit(limit)

        async def search_knowledge(query: str) -> str:
            """Search the knowledge base for passages about a topic. Each passage is headed by its source
            (document, page or section, chunk id): cite it when you use the passage.

            Args:
                query: Keywords or a question describing what to look for.
            """
            try:
                passages = await self.search(query, limit=limit)
            except ValueError as e:
                raise ModelRetry(str(e)) from None
            return format_passages(query, passages)

        search_knowledge.__name__ = search_knowledge.__qualname__ = name
        return search_knowledge

    def __repr__(self) -> str:
        return f"KnowledgeBase({str(self.path)!r}, embedder={self.embedder!r})"


def _delete_document(conn: sqlite3.Connection, doc_id: int) -> list[int]:
    """Delete a document and its chunks (their vectors go with them); returns the chunk ids."""
    chunk_ids = [int(i) for (i,) in conn.execute("SELECT id FROM chunks WHERE document_id = ?", (doc_id,))]
    conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
    conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
    return chunk_ids


def _passage(conn: sqlite3.Connection, chunk_id: int, score: float) -> Passage | None:
    row = conn.execute(
        "SELECT d.name, d.path, c.text, c.page, c.heading FROM chunks c JOIN documents d ON d.id = c.document_id "
        "WHERE c.id = ?",
        (chunk_id,),
    ).fetchone()
    if row is None:
        return None
    name, path, text, page, heading = row
    return Passage(
        chunk_id=chunk_id, source=name, path=path, text=text, score=score, page=page, heading=heading
    )
