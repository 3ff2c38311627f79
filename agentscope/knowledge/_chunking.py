"""Chunking: sections cut into passages of at most ``size`` characters that overlap by up to ``overlap``.

A chunk never spans two sections, so each keeps one page and one heading. Within a section, whole paragraphs are
packed together; a paragraph longer than ``size`` is cut at sentence ends or, failing that, at spaces. Each new
chunk repeats the tail of the one before (at most ``overlap`` characters, starting at a word), so a sentence cut
at a boundary is still found whole in one of the two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agentscope.knowledge._types import Section

__all__ = ["Chunk", "check_chunking", "chunk_sections"]

_SENTENCE_END = re.compile(r"[.!?。！？]\s")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage ready to be stored: its text and where in the document it is."""

    text: str
    page: int | None
    heading: str | None


def check_chunking(size: int, overlap: int) -> None:
    """Raise ValueError naming the setting when ``size``/``overlap`` cannot make progress."""
    if size < 50:
        raise ValueError(f"chunk_size must be at least 50 characters, got {size}")
    if not 0 <= overlap <= size // 2:
        raise ValueError(f"chunk_overlap must be between 0 and chunk_size // 2 ({size // 2}), got {overlap}")


def _tail(text: str, overlap: int) -> str:
    """The last ``overlap`` characters of ``text`` or fewer, starting at a word."""
    if overlap == 0 or len(text) <= overlap:
        return text if overlap else ""
    cut = text[-overlap:]
    space = cut.find(" ")
    return cut[space + 1 :] if space >= 0 else cut


def _split_long(paragraph: str, size: int, overlap: int) -> list[str]:
    """Cut a paragraph longer than ``size`` into overlapping pieces at sentence ends or spaces."""
    pieces: list[str] = []
    start = 0
    while len(paragraph) - start > size:
        window = paragraph[start : start + size]
        ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > size // 2]
        cut = ends[-1] if ends else window.rfind(" ") + 1
        if cut <= size // 2:
            cut = size
        piece = window[:cut].strip()
        pieces.append(piece)
        start += max(cut - len(_tail(piece, overlap)), 1)
        while start < len(paragraph) and paragraph[start] == " ":
            start += 1
    rest = paragraph[start:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def chunk_sections(sections: Iterable[Section], *, size: int, overlap: int) -> list[Chunk]:
    """Cut ``sections`` into chunks of at most ``size`` characters overlapping by up to ``overlap``."""
    chunks: list[Chunk] = []
    for section in sections:
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", section.text)]
        current = ""
        fresh = False  # whether ``current`` holds text not yet emitted (beyond the overlap it started with)
        for paragraph in paragraphs:
            if not paragraph:
                continue
            for piece in _split_long(paragraph, size, overlap) if len(paragraph) > size else [paragraph]:
                joined = f"{current}\n\n{piece}" if current else piece
                if len(joined) <= size:
                    current, fresh = joined, True
                    continue
                if fresh:
                    chunks.append(Chunk(current, section.page, section.heading))
                tail = _tail(current, overlap) if fresh else ""
                current = f"{tail}\n\n{piece}" if tail and len(tail) + 2 + len(piece) <= size else piece
                fresh = True
        if fresh and current:
            chunks.append(Chunk(current, section.page, section.heading))
    return chunks
