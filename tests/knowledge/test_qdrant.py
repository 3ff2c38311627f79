"""Qdrant as the vector index (its local mode, in-process and on disk: the real Qdrant engine of qdrant-client),
kept in step with the SQLite file that stays the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentscope.knowledge import KnowledgeBase, KnowledgeError, LongTermMemory, OpenAIEmbedding, QdrantIndex

pytest.importorskip("qdrant_client", reason="pip install -e '.[qdrant]'")

EmbeddingServer = Any  # the conftest's class; its module cannot be imported under importlib mode


def embedder(server: EmbeddingServer) -> OpenAIEmbedding:
    return OpenAIEmbedding("stems-256", base_url=server.base_url)


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
        assert index.count("chunk") == report.chunks
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
        assert index.count("chunk") == report.chunks
        assert {h.source for h in await kb.search("Bouvetian weather", mode="vector", limit=2)} == {
            "notes.txt",
            "report.pdf",
        }
        assert await kb.remove("report.pdf") is True
        assert index.count("chunk") == report.chunks - 2  # the PDF had two chunks, one per page
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
        assert index.count("chunk") == 0
        [hit] = await kb.search("Bouvetian", mode="vector", limit=1)  # the first query loads the collection
        assert (hit.source, hit.page) == ("report.pdf", 2)
        assert index.count("chunk") == report.chunks
        index.delete("chunk", [hit.chunk_id])  # written to by hand
        assert index.count("chunk") == report.chunks - 1
        await kb.rebuild_index()
        assert index.count("chunk") == report.chunks


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
        assert index.count("fact") == 2
        assert await ltm.forget(kept.id)
        assert index.count("fact") == 1
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
