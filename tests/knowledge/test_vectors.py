"""Vector and hybrid search, with embeddings from a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentscope.exceptions import ModelHTTPError, ModelRequestsBlockedError
from agentscope.knowledge import (
    EmbeddingModel,
    KnowledgeBase,
    KnowledgeError,
    LongTermMemory,
    OpenAIEmbedding,
)
from agentscope.knowledge._vectors import load_sqlite_vec

EmbeddingServer = Any  # the conftest's class; its module cannot be imported under importlib mode


def _sqlite_vec_problem() -> str | None:
    conn = sqlite3.connect(":memory:")
    try:
        return load_sqlite_vec(conn)
    finally:
        conn.close()


SQLITE_VEC_PROBLEM = _sqlite_vec_problem()


def embedder(server: EmbeddingServer, **kwargs: Any) -> OpenAIEmbedding:
    return OpenAIEmbedding("stems-256", base_url=server.base_url, api_key="sk-local", **kwargs)


async def test_vector_search_finds_what_keywords_miss(
    docs_folder: Path, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    model = embedder(embedding_server, batch_size=3)
    assert isinstance(model, EmbeddingModel)
    async with KnowledgeBase(tmp_path / "kb.db", embedder=model, vector_search="python") as kb:
        report = await kb.add_folder(docs_folder)
        # "Bouvetian" shares no indexed word with the documents, only a prefix the embedding model hashes.
        assert await kb.search("Bouvetian", mode="keyword") == []
        [hit] = await kb.search("Bouvetian", mode="vector", limit=1)
        assert (hit.source, hit.page) == ("report.pdf", 2)
        assert 0 < hit.score <= 1
        assert kb.vector_engine == "python"
    chunk_requests = [r for r in embedding_server.requests if r["input"] != ["Bouvetian"]]
    assert sum(len(r["input"]) for r in chunk_requests) == report.chunks
    assert max(len(r["input"]) for r in chunk_requests) == 3  # batched
    assert {(r["path"], r["model"], r["auth"]) for r in embedding_server.requests} == {
        ("/v1/embeddings", "stems-256", "Bearer sk-local")
    }


async def test_hybrid_is_the_default_with_an_embedder_and_fuses_both_rankings(
    docs_folder: Path, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    async with KnowledgeBase(tmp_path / "kb.db", embedder=embedder(embedding_server)) as kb:
        await kb.add_folder(docs_folder)
        hits = await kb.search("refunds paid days")
        keyword = await kb.search("refunds paid days", mode="keyword")
    assert hits[0].source == "faq.html"
    assert hits[0].heading == "Widget FAQ > Questions > Refunds"
    # Reciprocal rank fusion scores: at most 2/61 (first in both rankings), unlike BM25's.
    assert 0 < hits[0].score <= 2 / 61
    assert keyword[0].chunk_id == hits[0].chunk_id


async def test_store_refuses_another_embedding_model_or_dimension(
    tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("Some text about kestrels.", encoding="utf-8")
    async with KnowledgeBase(tmp_path / "kb.db", embedder=embedder(embedding_server)) as kb:
        await kb.add_file(doc)
    other = OpenAIEmbedding("other-model", base_url=embedding_server.base_url)
    with pytest.raises(
        KnowledgeError, match=r"holds vectors of embedding model 'stems-256', not 'other-model'"
    ):
        async with KnowledgeBase(tmp_path / "kb.db", embedder=other):
            pass

    class Wider:
        name = "stems-256"

        async def embed(self, texts: Any) -> list[list[float]]:
            return [[1.0] * 257 for _ in texts]

    async with KnowledgeBase(tmp_path / "kb.db", embedder=Wider()) as kb:
        with pytest.raises(
            KnowledgeError, match=r"257-dimensional vectors, but .* holds 256-dimensional ones"
        ):
            await kb.search("kestrels")
        # Keyword search still works on the store.
        assert [h.source for h in await kb.search("kestrels", mode="keyword")] == ["a.txt"]


async def test_endpoint_errors_are_model_errors(tmp_path: Path, embedding_server: EmbeddingServer) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("Text.", encoding="utf-8")
    wrong = OpenAIEmbedding("stems-256", base_url=embedding_server.base_url.removesuffix("/v1"))
    async with KnowledgeBase(tmp_path / "kb.db", embedder=wrong) as kb:
        with pytest.raises(
            ModelHTTPError, match=r"embeddings http://127\.0\.0\.1:\d+/embeddings answered 404"
        ):
            await kb.add_file(doc)
        assert await kb.documents() == []  # nothing half-written


async def test_embedding_requests_honour_allow_model_requests(tmp_path: Path) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("Text.", encoding="utf-8")
    blocked = OpenAIEmbedding("m", base_url="http://127.0.0.1:9/v1")
    async with KnowledgeBase(tmp_path / "kb.db", embedder=blocked) as kb:
        with pytest.raises(ModelRequestsBlockedError):
            await kb.add_file(doc)


async def test_long_term_memory_recalls_by_vector_within_its_scope(
    tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    async with LongTermMemory(
        tmp_path / "kb.db", scope="user:alice", embedder=embedder(embedding_server)
    ) as ltm:
        await ltm.record("Alice keeps two Bouvetian penguins as pets.")
        await ltm.record("Alice's birthday is in March.")
        await ltm.record("Bob keeps penguins too.", scope="user:bob")
        [fact] = await ltm.recall("bouvet", mode="vector", limit=1)
        assert fact.text == "Alice keeps two Bouvetian penguins as pets."
        # Bob's fact matches best by both keyword and vector, but belongs to another scope.
        facts = await ltm.recall("keeps penguins", limit=5)
        assert facts[0].text == "Alice keeps two Bouvetian penguins as pets."
        assert {f.scope for f in facts} == {"user:alice"}
        assert [f.text for f in await ltm.recall("keeps penguins", scope="user:bob")] == [
            "Bob keeps penguins too."
        ]


@pytest.mark.skipif(SQLITE_VEC_PROBLEM is None, reason="this Python's sqlite3 loads sqlite-vec")
async def test_asking_for_sqlite_vec_where_it_cannot_load_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(
        KnowledgeError, match=r"vector_search='sqlite-vec': .*(enable_load_extension|sqlite-vec)"
    ):
        async with KnowledgeBase(tmp_path / "kb.db", vector_search="sqlite-vec"):
            pass
    # "auto" falls back to the exact scan in Python.
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        assert kb.vector_engine == "python"


@pytest.mark.skipif(
    SQLITE_VEC_PROBLEM is not None, reason=f"sqlite-vec cannot load here: {SQLITE_VEC_PROBLEM}"
)
async def test_sqlite_vec_ranks_like_the_python_scan(
    docs_folder: Path, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    results = {}
    for engine in ("sqlite-vec", "python"):
        async with KnowledgeBase(
            tmp_path / f"{engine}.db", embedder=embedder(embedding_server), vector_search=engine
        ) as kb:
            await kb.add_folder(docs_folder)
            assert kb.vector_engine == engine
            results[engine] = [
                (h.source, h.page, h.heading) for h in await kb.search("penguin nests", mode="vector")
            ]
    assert results["sqlite-vec"] == results["python"]


def test_vector_search_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(
        KnowledgeError, match="vector_search must be 'auto', 'sqlite-vec' or 'python', got 'faiss'"
    ):
        KnowledgeBase(tmp_path / "kb.db", vector_search="faiss")  # type: ignore[arg-type]


async def test_chunks_and_facts_stored_before_an_embedder_get_vectors_later(
    docs_folder: Path, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    path = tmp_path / "kb.db"
    async with KnowledgeBase(path) as kb, LongTermMemory(path) as ltm:
        report = await kb.add_folder(docs_folder)
        await ltm.record("The Bouvetian expedition leaves in May.")
    async with KnowledgeBase(path, embedder=embedder(embedding_server)) as kb:
        assert await kb.search("Bouvetian", mode="vector") == []  # no chunk has a vector yet
        assert await kb.embed_missing() == report.chunks
        assert await kb.embed_missing() == 0
        [hit] = await kb.search("Bouvetian", mode="vector", limit=1)
        assert (hit.source, hit.page) == ("report.pdf", 2)
    async with LongTermMemory(path, embedder=embedder(embedding_server)) as ltm:
        await ltm.record("Penguins moult once a year.")  # embeds the older fact too
        assert await ltm.embed_missing() == 0
        [fact] = await ltm.recall("bouvet", mode="vector", limit=1)
        assert fact.text == "The Bouvetian expedition leaves in May."


async def test_two_stores_racing_with_different_models_do_not_mix_vectors(
    tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("Kestrels hover.", encoding="utf-8")
    path = tmp_path / "kb.db"
    other = OpenAIEmbedding("other-model", base_url=embedding_server.base_url)
    # Both open the file before either wrote a vector, so neither is refused at opening.
    async with (
        KnowledgeBase(path, embedder=embedder(embedding_server)) as first,
        KnowledgeBase(path, embedder=other) as second,
    ):
        await first.add_file(doc)
        doc2 = tmp_path / "b.txt"
        doc2.write_text("Owls hoot.", encoding="utf-8")
        with pytest.raises(
            KnowledgeError, match=r"holds vectors with embedding_model 'stems-256', not 'other-model'"
        ):
            await second.add_file(doc2)
        assert await first.documents() == ["a.txt"]  # nothing of the refused writes was stored
