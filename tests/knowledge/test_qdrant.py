"""Qdrant as the vector index (its local mode, in-process and on disk: the real Qdrant engine of qdrant-client),
kept in step with the SQLite file that stays the record."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentscope.knowledge import KnowledgeBase, KnowledgeError, LongTermMemory, OpenAIEmbedding, QdrantIndex

pytest.importorskip("qdrant_client", reason="pip install -e '.[qdrant]'")

EmbeddingServer = Any  # the conftest's class; its module cannot be imported under importlib mode


def embedder(server: EmbeddingServer) -> OpenAIEmbedding:
    return OpenAIEmbedding("stems-256", base_url=server.base_url)


def store_id(path: Path) -> str:
    """The random id a store file was given, which names its Qdrant collections."""
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])


async def test_qdrant_answers_like_the_exact_scan_and_follows_every_change(
    docs_folder: Path, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    index = QdrantIndex(path=tmp_path / "qdrant")
    async with (
        KnowledgeBase(tmp_path / "kb.db", embedder=embedder(embedding_server), vector_index=index) as kb,
        KnowledgeBase(
            tmp_path / "exact.db", embedder=embedder(embedding_server), vector_search="python"
        ) as exact,
    ):
        report = await kb.add_folder(docs_folder)
        await exact.add_folder(docs_folder)
        assert kb.vector_engine == "qdrant"
        assert index.count(store_id(tmp_path / "kb.db"), "chunk") == report.chunks
        for query in ("Bouvetian penguins", "refund days", "install on Debian"):
            # Every chunk with its similarity (both files hold the same chunks under the same ids).
            ours = {(h.chunk_id, round(h.score, 4)) for h in await kb.search(query, mode="vector", limit=50)}
            theirs = {
                (h.chunk_id, round(h.score, 4)) for h in await exact.search(query, mode="vector", limit=50)
            }
            assert len(ours) == report.chunks
            assert ours == theirs, query
        [hit] = await kb.search("Bouvetian", mode="vector", limit=1)
        assert (hit.source, hit.page) == ("report.pdf", 2)
        assert 0 < hit.score <= 1.0001

        # A changed document replaces its vectors; a removed one takes them away.
        (docs_folder / "notes.txt").write_text("Only one line about Bouvetian weather now.", encoding="utf-8")
        assert (await kb.add_folder(docs_folder)).updated == ["notes.txt"]
        assert index.count(store_id(tmp_path / "kb.db"), "chunk") == report.chunks
        assert {h.source for h in await kb.search("Bouvetian weather", mode="vector", limit=2)} == {
            "notes.txt",
            "report.pdf",
        }
        assert await kb.remove("report.pdf") is True
        assert (
            index.count(store_id(tmp_path / "kb.db"), "chunk") == report.chunks - 2
        )  # the PDF had two chunks, one per page
        assert all(h.source != "report.pdf" for h in await kb.search("Bouvetian", mode="vector"))


async def test_a_lost_index_is_loaded_again_from_the_file(
    docs_folder: Path, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    async with KnowledgeBase(tmp_path / "kb.db", embedder=embedder(embedding_server)) as kb:
        report = await kb.add_folder(docs_folder)  # no index yet: vectors in the file only
    index = QdrantIndex(path=":memory:")
    async with KnowledgeBase(
        tmp_path / "kb.db", embedder=embedder(embedding_server), vector_index=index
    ) as kb:
        [hit] = await kb.search("Bouvetian", mode="vector", limit=1)  # the first query loads the collection
        assert (hit.source, hit.page) == ("report.pdf", 2)
        assert index.count(store_id(tmp_path / "kb.db"), "chunk") == report.chunks
        index.delete(store_id(tmp_path / "kb.db"), "chunk", [hit.chunk_id])  # written to by hand
        assert index.count(store_id(tmp_path / "kb.db"), "chunk") == report.chunks - 1
        await kb.rebuild_index()
        assert index.count(store_id(tmp_path / "kb.db"), "chunk") == report.chunks


async def vector_hits(kb: KnowledgeBase, query: str) -> set[tuple[int, str, float]]:
    return {
        (h.chunk_id, h.source, round(h.score, 4)) for h in await kb.search(query, mode="vector", limit=50)
    }


async def test_two_files_on_one_index_keep_their_own_chunks(
    docs_folder: Path, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "birds.txt").write_text("Kestrels hover over the moor.\n\nOwls hunt at night.", encoding="utf-8")
    index = QdrantIndex(path=tmp_path / "qdrant")
    model = embedder(embedding_server)
    async with (
        KnowledgeBase(tmp_path / "a.db", embedder=model, vector_index=index) as a,
        KnowledgeBase(tmp_path / "b.db", embedder=model, vector_index=index) as b,
    ):
        await a.add_folder(docs_folder)
        await b.add_folder(other)  # its chunk ids are 1, 2, ... like a's
        assert store_id(tmp_path / "a.db") != store_id(tmp_path / "b.db")
        for query in ("Bouvetian penguins", "kestrels hover"):
            a_hits, b_hits = await vector_hits(a, query), await vector_hits(b, query)
            async with (
                KnowledgeBase(tmp_path / "a.db", embedder=model, vector_search="python") as exact_a,
                KnowledgeBase(tmp_path / "b.db", embedder=model, vector_search="python") as exact_b,
            ):
                assert a_hits == await vector_hits(exact_a, query)
                assert b_hits == await vector_hits(exact_b, query)
            assert {source for _, source, _ in b_hits} == {"birds.txt"}


async def test_a_change_made_without_the_index_is_seen_even_with_the_same_count(
    tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Kestrels hover over the moor.", encoding="utf-8")
    (folder / "c.txt").write_text("Penguins swim in cold water.", encoding="utf-8")
    path, model = tmp_path / "kb.db", embedder(embedding_server)
    index = QdrantIndex(path=tmp_path / "qdrant")
    async with KnowledgeBase(path, embedder=model, vector_index=index) as kb:
        await kb.add_folder(folder)
        assert index.count(store_id(path), "chunk") == 2
    # Another process, without the index: one chunk out, another in; the count stays 2 (and SQLite reuses the id).
    async with KnowledgeBase(path, embedder=model, vector_search="python") as elsewhere:
        assert await elsewhere.remove("c.txt")
        (folder / "b.txt").write_text("A Bouvetian volcano erupts rarely.", encoding="utf-8")
        await elsewhere.add_file(folder / "b.txt")
        exact = await vector_hits(elsewhere, "volcano erupts")
    async with KnowledgeBase(path, embedder=model, vector_index=index) as kb:
        assert await vector_hits(kb, "volcano erupts") == exact
        assert index.count(store_id(path), "chunk") == 2


async def test_long_term_memory_on_qdrant_keeps_scopes_apart(
    tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    index = QdrantIndex(path=tmp_path / "qdrant")
    async with LongTermMemory(
        tmp_path / "m.db", scope="user:alice", embedder=embedder(embedding_server), vector_index=index
    ) as ltm:
        kept = await ltm.record("Alice keeps Bouvetian penguins.")
        await ltm.record("Bob keeps Bouvetian penguins too.", scope="user:bob")
        assert [f.text for f in await ltm.recall("bouvet penguins", mode="vector")] == [kept.text]
        assert index.count(store_id(tmp_path / "m.db"), "fact") == 2
        assert await ltm.forget(kept.id)
        assert index.count(store_id(tmp_path / "m.db"), "fact") == 1
        assert await ltm.recall("bouvet penguins", mode="vector") == []


async def test_bad_settings_and_unreachable_servers_are_named(
    tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    with pytest.raises(ValueError, match=r"exactly one of url= .* or path="):
        QdrantIndex()
    with pytest.raises(ValueError, match="exactly one of"):
        QdrantIndex(url="http://127.0.0.1:6333", path=tmp_path)
    doc = tmp_path / "a.txt"
    doc.write_text("Kestrels hover.", encoding="utf-8")
    # Port 9 (discard) has no listener here: the write to the index fails after the file committed.
    nowhere = QdrantIndex(url="http://127.0.0.1:9")
    async with KnowledgeBase(
        tmp_path / "kb.db", embedder=embedder(embedding_server), vector_index=nowhere
    ) as kb:
        with pytest.raises(
            KnowledgeError,
            match=r"Qdrant \(http://127\.0\.0\.1:9\): could not prepare collection .*kb\.db' holds the change; "
            r"the index catches up on its next use or with rebuild_index\(\)",
        ):
            await kb.add_file(doc)
        assert await kb.documents() == ["a.txt"]
        # Keyword search does not need the index.
        assert [h.source for h in await kb.search("kestrels", mode="keyword")] == ["a.txt"]
