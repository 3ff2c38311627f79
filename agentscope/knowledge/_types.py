"""The knowledge package's vocabulary: its error, a section of a read document, a retrieved passage, a fact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentscope.exceptions import AgentScopeError

__all__ = ["Fact", "KnowledgeError", "Passage", "SearchMode", "Section"]

SearchMode = Literal["hybrid", "keyword", "vector"]
"""How a search ranks: ``keyword`` (SQLite FTS5, BM25), ``vector`` (embedding similarity), ``hybrid`` (both,
fused by reciprocal rank)."""


class KnowledgeError(AgentScopeError):
    """A document could not be read or added, or the knowledge store cannot serve a request.

    The message names the file (or the setting) and the problem: a missing file, an unsupported type, a PDF
    without text, an embedding model that differs from the one the store was built with.
    """


@dataclass(frozen=True, slots=True)
class Section:
    """A stretch of a document under one heading or on one page, as a reader returns it."""

    text: str
    """Plain text; paragraphs separated by blank lines."""
    page: int | None = None
    """1-based page number (PDF)."""
    heading: str | None = None
    """The headings above the text, outermost first, joined by `` > `` (Markdown, HTML)."""


@dataclass(frozen=True, slots=True)
class Passage:
    """One chunk of a document found by a search, with where it came from."""

    chunk_id: int
    """The chunk's id in the store (stable until its document is re-added with new content)."""
    source: str
    """The document's name: its path relative to the folder it was added from, or its file name."""
    path: str
    """The document's absolute path when it was added."""
    text: str
    """The chunk's text."""
    score: float
    """Higher is better. Keyword search: the negated BM25 score; vector search: cosine similarity; hybrid:
    the reciprocal-rank-fusion score."""
    page: int | None = None
    """1-based page (PDF)."""
    heading: str | None = None
    """The headings above the chunk (Markdown, HTML)."""

    @property
    def citation(self) -> str:
        """Where the passage is from, as shown to a model: ``report.pdf, page 2, chunk 17``."""
        parts = [self.source]
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.heading:
            parts.append(f"section {self.heading!r}")
        parts.append(f"chunk {self.chunk_id}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact in long-term memory."""

    id: int
    """The fact's id in the store."""
    text: str
    """The fact, as recorded."""
    scope: str
    """Whose fact it is (a user, an agent, a project): recall searches one scope."""
    created_at: float
    """When it was first recorded (seconds since the epoch)."""
    score: float = 0.0
    """Relevance to the query that recalled it (higher is better); 0 when listed without a query."""
