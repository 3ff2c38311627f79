"""Readers and chunking: each document type comes out as text that knows its page or heading, cut into chunks
no longer than the limit that overlap, and bad files are refused with an error naming the file and the problem."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from agentscope.knowledge import KnowledgeError, Section, read_document
from agentscope.knowledge._chunking import check_chunking, chunk_sections


def test_markdown_sections_follow_headings_and_ignore_hashes_in_code(docs_folder: Path) -> None:
    sections = read_document(docs_folder / "guides" / "install.md")
    assert [s.heading for s in sections] == ["Installation", "Installation > Linux", "Installation > Windows"]
    linux = sections[1].text
    assert "install the package with apt" in linux
    assert "# not a heading" in linux  # the code block stays in its section, not a new heading


def test_markdown_setext_headings_count_too(tmp_path: Path) -> None:
    path = tmp_path / "setext.md"
    path.write_text("Title\n=====\n\nIntro.\n\nPart\n----\n\nBody.\n", encoding="utf-8")
    assert read_document(path) == [
        Section(text="Intro.", heading="Title"),
        Section(text="Body.", heading="Title > Part"),
    ]


def test_html_keeps_headings_and_inline_text_and_drops_scripts_and_styles(docs_folder: Path) -> None:
    sections = read_document(docs_folder / "faq.html")
    assert sections == [
        Section(
            text="Refunds are paid within fourteen days of a return.",
            heading="Widget FAQ > Questions > Refunds",
        ),
        Section(text="Parcels ship from Rotterdam.", heading="Widget FAQ > Questions > Shipping"),
    ]


def test_pdf_pages_are_numbered_from_one(docs_folder: Path) -> None:
    sections = read_document(docs_folder / "report.pdf")
    assert [s.page for s in sections] == [1, 2]
    assert "penguin colony on Bouvet Island" in sections[1].text
    assert "penguin" not in sections[0].text


def test_pdf_without_text_is_refused_with_a_hint(
    tmp_path: Path, pdf_maker: Callable[[list[list[str]]], bytes]
) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(pdf_maker([[]]))
    with pytest.raises(KnowledgeError, match=r"scan\.pdf.*holds no text.*OCR"):
        read_document(path)


def test_encrypted_pdf_is_refused(tmp_path: Path, pdf_maker: Callable[[list[list[str]]], bytes]) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = tmp_path / "plain.pdf"
    plain.write_bytes(pdf_maker([["Secret plans."]]))
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt("password")
    with (tmp_path / "locked.pdf").open("wb") as f:
        writer.write(f)
    with pytest.raises(KnowledgeError, match=r"locked\.pdf.*is an encrypted PDF; decrypt it first"):
        read_document(tmp_path / "locked.pdf")


def test_pdf_with_an_empty_user_password_is_read(
    tmp_path: Path, pdf_maker: Callable[[list[list[str]]], bytes]
) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = tmp_path / "plain.pdf"
    plain.write_bytes(pdf_maker([["Permissions only, no secret."]]))
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="", owner_password="owner")
    with (tmp_path / "restricted.pdf").open("wb") as f:
        writer.write(f)
    [section] = read_document(tmp_path / "restricted.pdf")
    assert section.text.strip() == "Permissions only, no secret."
    assert section.page == 1


def test_malformed_pdf_that_pypdf_rejects_with_its_own_error_is_named(
    tmp_path: Path, pdf_maker: Callable[[list[list[str]]], bytes]
) -> None:
    # A predictor pypdf refuses with LimitReachedError, which is no PdfReadError.
    path = tmp_path / "odd.pdf"
    path.write_bytes(
        pdf_maker([["Hello."]]).replace(
            b"<< /Length",
            b"<< /Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 999999999 >> /Length",
        )
    )
    with pytest.raises(KnowledgeError, match=r"odd\.pdf.*not a readable PDF: LimitReachedError"):
        read_document(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("slides.pptx", b"PK\x03\x04", r"unsupported document type '\.pptx' for .*slides\.pptx.*supported: "),
        ("broken.pdf", b"%PDF-1.4 this is not a pdf", r"broken\.pdf.*not a readable PDF"),
        ("latin1.txt", "café".encode("latin-1"), r"latin1\.txt.*not UTF-8 text \(bad byte at offset 3\)"),
        ("empty.md", b"\n\n", r"empty\.md.*holds no text"),
    ],
)
def test_bad_documents_name_the_file_and_the_problem(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(KnowledgeError, match=message):
        read_document(path)


def test_missing_file_and_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match=r"no such file: .*nope\.md"):
        read_document(tmp_path / "nope.md")
    with pytest.raises(KnowledgeError, match=r"is not a file"):
        read_document(tmp_path)


def test_chunks_respect_the_size_overlap_and_keep_page_and_heading() -> None:
    words = [f"word{i:04d}" for i in range(600)]
    sentences = " ".join(f"{' '.join(words[i : i + 12])}." for i in range(0, 600, 12))
    sections = [
        Section(text=f"Short intro.\n\n{sentences}\n\nA closing paragraph.", page=3, heading="A > B"),
        Section(text="Second section.", page=4),
    ]
    chunks = chunk_sections(sections, size=300, overlap=60)
    assert all(len(c.text) <= 300 for c in chunks)
    assert {(c.page, c.heading) for c in chunks[:-1]} == {(3, "A > B")}
    assert (chunks[-1].text, chunks[-1].page, chunks[-1].heading) == ("Second section.", 4, None)
    # Every word is in some chunk, in order, and consecutive chunks of the long paragraph share words.
    seen = [w for c in chunks for w in c.text.replace(".", " ").split() if w.startswith("word")]
    assert sorted(set(seen)) == words
    body = [c.text for c in chunks if "word" in c.text]
    for before, after in itertools.pairwise(body):
        assert set(before.split()) & set(after.split()), (before, after)


def test_short_paragraphs_are_packed_together() -> None:
    text = "\n\n".join(f"Paragraph {i} is short." for i in range(10))
    chunks = chunk_sections([Section(text=text)], size=100, overlap=0)
    assert len(chunks) == 3
    assert chunks[0].text.startswith("Paragraph 0 is short.\n\nParagraph 1 is short.")


@pytest.mark.parametrize(("size", "overlap", "message"), [(10, 0, "chunk_size"), (100, 60, "chunk_overlap")])
def test_chunking_settings_out_of_range_are_named(size: int, overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_chunking(size, overlap)
