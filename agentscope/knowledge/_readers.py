"""Readers: a file in, its text out as :class:`Section` s that remember their page or heading.

- plain text (``.txt``, ``.text``): one section;
- Markdown (``.md``, ``.markdown``): one section per heading, parsed with ``markdown-it-py`` (CommonMark: ATX and
  setext headings, a ``#`` inside a fenced code block is no heading);
- HTML (``.html``, ``.htm``): one section per ``<h1>``-``<h6>``, parsed with Beautiful Soup on the standard
  library's ``html.parser`` (no compiled parser needed); scripts, styles and templates dropped;
- PDF (``.pdf``): one section per page, read with ``pypdf``.

All of it is blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

from agentscope._lazy import install_hint
from agentscope.knowledge._types import KnowledgeError, Section

__all__ = ["SUPPORTED_SUFFIXES", "load_document", "read_document"]

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_DROP_TAGS = ("script", "style", "noscript", "template", "svg", "head")
_HEADING_MARK = "\x00H"


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise KnowledgeError(
            f"{str(path)!r} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8"
        ) from None


def _read_text(path: Path, data: bytes) -> list[Section]:
    return [Section(text=_decode(path, data))]


def _heading_path(stack: list[tuple[int, str]]) -> str | None:
    return " > ".join(title for _, title in stack) or None


def _push(stack: list[tuple[int, str]], level: int, title: str) -> None:
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, title))


def _read_markdown(path: Path, data: bytes) -> list[Section]:
    from markdown_it import MarkdownIt

    text = _decode(path, data)
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    # (first line, line after the heading, level, title) of every heading, in order.
    headings: list[tuple[int, int, int, str]] = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
            headings.append((token.map[0], token.map[1], int(token.tag[1]), title))
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    start = 0
    for first, after, level, title in [*headings, (len(lines), len(lines), 0, "")]:
        body = "\n".join(lines[start:first]).strip()
        if body:
            sections.append(Section(text=body, heading=_heading_path(stack)))
        if level:
            _push(stack, level, title)
        start = after
    return sections


def _squeeze(text: str) -> str:
    """Paragraphs (split at blank lines) with their inner whitespace collapsed."""
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


def _read_html(path: Path, data: bytes) -> list[Section]:
    try:
        from bs4 import BeautifulSoup
    except ImportError as e:
        raise KnowledgeError(f"reading HTML needs beautifulsoup4: {install_hint('knowledge')}") from e
    soup = BeautifulSoup(_decode(path, data), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(True):
        if re.fullmatch(r"h[1-6]", tag.name):
            level = int(tag.name[1])
            tag.replace_with(f"\n\n{_HEADING_MARK}{level}{' '.join(tag.get_text(' ').split())}\n\n")
        elif tag.name in _BLOCK_TAGS:
            tag.insert_before("\n\n")
            tag.insert_after("\n\n")
    sections: list[Section] = []
    stack: list[tuple[int, str]] = [(0, title)] if title else []
    body: list[str] = []

    def flush() -> None:
        text = _squeeze("\n".join(body))
        if text:
            sections.append(Section(text=text, heading=_heading_path(stack)))
        body.clear()

    for line in soup.get_text().split("\n"):
        if line.startswith(_HEADING_MARK):
            flush()
            _push(stack, int(line[len(_HEADING_MARK)]), line[len(_HEADING_MARK) + 1 :].strip())
        else:
            body.append(line)
    flush()
    return sections


def _read_pdf(path: Path, data: bytes) -> list[Section]:
    try:
        from pypdf import PasswordType, PdfReader
    except ImportError as e:
        raise KnowledgeError(f"reading PDF needs pypdf: {install_hint('knowledge')}") from e
    try:
        reader = PdfReader(io.BytesIO(data))
        # A PDF with an empty user password is only permission-protected: any viewer opens it.
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise KnowledgeError(f"{str(path)!r} is an encrypted PDF; decrypt it first")
        pages = [page.extract_text() or "" for page in reader.pages]
    except KnowledgeError:
        raise
    except Exception as e:
        # pypdf raises many kinds on malformed files (struct.error, zlib.error, RecursionError, its own errors).
        raise KnowledgeError(f"{str(path)!r} is not a readable PDF: {type(e).__name__}: {e}") from e
    return [Section(text=text, page=number) for number, text in enumerate(pages, 1) if text.strip()]


_READERS: dict[str, Callable[[Path, bytes], list[Section]]] = {
    ".txt": _read_text,
    ".text": _read_text,
    ".md": _read_markdown,
    ".markdown": _read_markdown,
    ".html": _read_html,
    ".htm": _read_html,
    ".pdf": _read_pdf,
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(sorted(_READERS))
"""The file name suffixes :func:`read_document` reads (compared case-insensitively)."""


def read_document(path: Path) -> list[Section]:
    """The sections of the document at ``path``, chosen by its suffix. Blocking.

    Raises:
        KnowledgeError: the file does not exist, is not a file, has an unsupported suffix, cannot be decoded or
            parsed, or holds no text (a scanned PDF needs OCR first).
    """
    return load_document(path)[0]


def load_document(path: Path) -> tuple[list[Section], bytes]:
    """:func:`read_document`'s sections and the file's bytes, read once (for a digest of what was parsed)."""
    if not path.exists():
        raise KnowledgeError(f"no such file: {str(path)!r}")
    if not path.is_file():
        raise KnowledgeError(f"{str(path)!r} is not a file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise KnowledgeError(
            f"unsupported document type {path.suffix or '(no suffix)'!r} for {str(path)!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        data = path.read_bytes()
        sections = reader(path, data)
    except OSError as e:
        raise KnowledgeError(f"could not read {str(path)!r}: {e}") from e
    if not any(s.text.strip() for s in sections):
        hint = " (a scanned PDF needs OCR first)" if path.suffix.lower() == ".pdf" else ""
        raise KnowledgeError(f"{str(path)!r} holds no text{hint}")
    return sections, data
