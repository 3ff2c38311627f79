"""KnowledgeBase on SQLite FTS5: retrieval over a folder of mixed documents with cited sources, BM25 ranking,
re-adding, removing, an agent using the retrieval tool, and bad input refused with a clear error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentscope.agents import ReActAgent
from agentscope.exceptions import SessionError, UsageError
from agentscope.knowledge import KnowledgeBase, KnowledgeError, Passage, format_passages
from agentscope.message import Msg, ToolResultBlock
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit


async def test_folder_of_mixed_documents_is_searchable_with_sources(
    docs_folder: Path, tmp_path: Path
) -> None:
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        report = await kb.add_folder(docs_folder)
        assert sorted(report.added) == ["faq.html", "guides/install.md", "notes.txt", "report.pdf"]
        assert report.skipped == ["image.png"]  # hidden files are left out, not skipped
        assert report.chunks >= 4
        assert await kb.documents() == ["faq.html", "guides/install.md", "notes.txt", "report.pdf"]

        [pdf] = await kb.search("penguin nests", limit=1)
        assert (pdf.source, pdf.page, pdf.heading) == ("report.pdf", 2, None)
        assert "Bouvet Island" in pdf.text
        assert pdf.path == str((docs_folder / "report.pdf").resolve())
        assert pdf.citation == f"report.pdf, page 2, chunk {pdf.chunk_id}"

        [md] = await kb.search("debian apt daemon", limit=1)
        assert (md.source, md.heading) == ("guides/install.md", "Installation > Linux")
        [html] = await kb.search("how long until refunds are paid?", limit=1)
        assert (html.source, html.heading) == ("faq.html", "Widget FAQ > Questions > Refunds")
        [txt] = await kb.search("budget review", limit=1)
        assert txt.source == "notes.txt"
        # The hidden file was not added, and scripts in HTML are not text.
        assert await kb.search("secret") == []
        assert await kb.search("ignored") == []


async def test_bm25_puts_the_relevant_chunk_first(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    filler = "The committee discussed the agenda, the minutes and the weather at length."
    for i in range(8):
        (folder / f"filler{i}.txt").write_text(f"{filler} Item {i} of the meeting.", encoding="utf-8")
    (folder / "mentions.txt").write_text(f"{filler} A kestrel was seen once.", encoding="utf-8")
    (folder / "wildlife.txt").write_text(
        "Kestrel habitats: the kestrel hunts over open fields; kestrel pairs nest in old crow nests.",
        encoding="utf-8",
    )
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        await kb.add_folder(folder)
        hits = await kb.search("where does the kestrel nest?", limit=3)
    assert [h.source for h in hits[:2]] == ["wildlife.txt", "mentions.txt"]
    assert hits[0].score > hits[1].score


async def test_re_adding_skips_unchanged_and_replaces_changed_documents(tmp_path: Path) -> None:
    doc = tmp_path / "plan.md"
    doc.write_text("# Plan\n\nLaunch the rocket on Monday.\n", encoding="utf-8")
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        assert (await kb.add_file(doc)).added == ["plan.md"]
        assert (await kb.add_file(doc)).unchanged == ["plan.md"]
        doc.write_text("# Plan\n\nLaunch the balloon on Friday.\n", encoding="utf-8")
        assert (await kb.add_file(doc)).updated == ["plan.md"]
        assert await kb.search("rocket") == []
        [hit] = await kb.search("balloon")
        assert hit.heading == "Plan"
        assert await kb.remove("plan.md") is True
        assert await kb.remove("plan.md") is False
        assert await kb.search("balloon") == []
        assert await kb.documents() == []


async def test_store_survives_reopening(docs_folder: Path, tmp_path: Path) -> None:
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        await kb.add_folder(docs_folder)
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        [hit] = await kb.search("Rotterdam parcels", limit=1)
    assert hit.source == "faq.html"


async def test_agent_calls_the_retrieval_tool_and_sees_cited_sources(
    docs_folder: Path, tmp_path: Path
) -> None:
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        await kb.add_folder(docs_folder)
        toolkit = Toolkit()
        toolkit.register(kb.as_tool(limit=2))
        model = ScriptedModel(
            [
                tool_call("search_knowledge", query="How many penguins on Bouvet Island?"),
                tool_call("search_knowledge", query="   "),
                "The colony doubled (report.pdf, page 2).",
            ]
        )
        agent = ReActAgent(name="librarian", model=model, toolkit=toolkit)
        reply = await agent(Msg(role="user", content="What happened to the penguins?"))

    assert reply.text == "The colony doubled (report.pdf, page 2)."
    schema = model.requests[0].tools[0]
    assert schema.name == "search_knowledge"
    assert list(schema.parameters["properties"]) == ["query"]
    results = [b for m in model.last_request.messages for b in m.blocks_of(ToolResultBlock)]
    found, empty = results
    assert isinstance(found.output, str)
    assert not found.is_error
    first = found.output.split("\n\n")[0]
    assert first.startswith("[1] report.pdf, page 2, chunk ")
    assert "penguin colony on Bouvet Island doubled" in first
    assert empty.is_error
    assert "empty" in str(empty.output)
    model.assert_complete()


def test_format_passages_cites_each_and_says_when_nothing_matched() -> None:
    passages = [
        Passage(chunk_id=7, source="a.md", path="/x/a.md", text="Alpha.", score=2.0, heading="Intro"),
        Passage(chunk_id=9, source="b.pdf", path="/x/b.pdf", text="Beta.", score=1.0, page=3),
    ]
    assert format_passages("q", passages) == (
        "[1] a.md, section 'Intro', chunk 7\nAlpha.\n\n[2] b.pdf, page 3, chunk 9\nBeta."
    )
    assert format_passages("zebra", []) == "No passage in the knowledge base matches 'zebra'."


async def test_bad_input_is_refused_naming_the_problem_and_loses_nothing(
    docs_folder: Path, tmp_path: Path
) -> None:
    async with KnowledgeBase(tmp_path / "kb.db") as kb:
        await kb.add_file(docs_folder / "notes.txt")
        with pytest.raises(KnowledgeError, match=r"no such file: .*missing\.pdf"):
            await kb.add_file(docs_folder / "missing.pdf")
        with pytest.raises(KnowledgeError, match=r"unsupported document type '\.png' for .*image\.png"):
            await kb.add_file(docs_folder / "image.png")
        with pytest.raises(KnowledgeError, match=r"no such folder: .*nowhere"):
            await kb.add_folder(tmp_path / "nowhere")
        only_images = tmp_path / "images"
        only_images.mkdir()
        (only_images / "a.png").write_bytes(b"\x89PNG")
        with pytest.raises(KnowledgeError, match=r"holds no supported document"):
            await kb.add_folder(only_images)
        # One unreadable document stops a folder before anything of it is written.
        (docs_folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
        with pytest.raises(KnowledgeError, match=r"broken\.pdf.*not a readable PDF"):
            await kb.add_folder(docs_folder)
        for query in ("", "  ?! "):
            with pytest.raises(ValueError, match="empty"):
                await kb.search(query)
        with pytest.raises(ValueError, match="limit must be between 1 and 50, got 0"):
            await kb.search("budget", limit=0)
        with pytest.raises(
            UsageError, match=r"search mode 'vector' needs an embedding model: pass embedder="
        ):
            await kb.search("budget", mode="vector")
        with pytest.raises(ValueError, match=r"mode must be 'hybrid', 'keyword' or 'vector', got 'semantic'"):
            await kb.search("budget", mode="semantic")  # type: ignore[arg-type]
        assert await kb.documents() == ["notes.txt"]
        assert [h.source for h in await kb.search("budget")] == ["notes.txt"]


async def test_a_file_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE stuff (x)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(SessionError, match=r"knowledge store .*other\.db.*belongs to some other program"):
        async with KnowledgeBase(path):
            pass
