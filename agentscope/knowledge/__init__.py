"""Knowledge (RAG) and long-term memory, stored in one SQLite file.

- :class:`KnowledgeBase` reads documents (plain text, Markdown, HTML, PDF), cuts them into chunks that remember
  their source, page and heading, and retrieves them with SQLite FTS5 (BM25), offline and without a model; with
  an :class:`EmbeddingModel` (:class:`OpenAIEmbedding` for any OpenAI-compatible ``/v1/embeddings``,
  :class:`LocalEmbedding` for a local encoder by path) also by vector similarity, fused with BM25.
  :meth:`KnowledgeBase.as_tool` makes a retrieval tool whose results cite their sources.
- :class:`QdrantIndex` (a Qdrant server or its local mode) answers vector queries for large stores; the SQLite file
  stays the record.
- :class:`LongTermMemory` records facts per scope (a user, an agent) and recalls them in later sessions and
  processes, with tools for the agent to do both.

Errors: :class:`KnowledgeError` (an :class:`~agentscope.exceptions.AgentScopeError`) names the file or setting
and the problem; ``ValueError`` for an empty query or an out-of-range setting; SQLite failures are
:class:`~agentscope.exceptions.SessionError` naming the file. Readers for HTML and PDF need
``pip install -e '.[knowledge]'`` (Beautiful Soup, pypdf; sqlite-vec for vector search in C).
"""

from agentscope.knowledge._knowledge_base import AddReport, KnowledgeBase, format_passages
from agentscope.knowledge._local import LocalEmbedding
from agentscope.knowledge._long_term import LongTermMemory
from agentscope.knowledge._qdrant import QdrantIndex
from agentscope.knowledge._readers import SUPPORTED_SUFFIXES, read_document
from agentscope.knowledge._store import VectorEngine
from agentscope.knowledge._types import Fact, KnowledgeError, Passage, SearchMode, Section
from agentscope.knowledge._vectors import EmbeddingModel, OpenAIEmbedding, VectorSearch

__all__ = [
    "SUPPORTED_SUFFIXES",
    "AddReport",
    "EmbeddingModel",
    "Fact",
    "KnowledgeBase",
    "KnowledgeError",
    "LocalEmbedding",
    "LongTermMemory",
    "OpenAIEmbedding",
    "Passage",
    "QdrantIndex",
    "SearchMode",
    "Section",
    "VectorEngine",
    "VectorSearch",
    "format_passages",
    "read_document",
]
