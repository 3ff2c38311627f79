"""The context budget and the compaction policies, as data (pydantic: YAML and JSON load into them)."""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ContextConfig",
    "DropOldTurns",
    "OffloadToolResults",
    "Policy",
    "SummarizeOldTurns",
]

SUMMARY_PROMPT = (
    "You compress the earlier part of a conversation between a user, an AI agent and its tools, so that the "
    "agent can continue the task without it. Write a concise summary in plain text: the user's requests and "
    "constraints, what the agent did (tools called and what they returned), facts and numbers found, decisions "
    "taken, and what is still open. Keep names, ids, paths and numbers exact. Do not add anything that is not "
    "in the conversation."
)


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OffloadToolResults(_Policy):
    """Cut large tool results down to a preview; the full result stays retrievable with ``read_offloaded``.

    The oldest results go first. The preview tells the model the call id to pass to ``read_offloaded(ref=...,
    offset=...)``, a tool the agent offers while this policy is configured, which reads the full result from
    the agent's memory (memory keeps every result whole), ``max_result_tokens`` worth of characters per call
    (its own results are never offloaded).
    """

    kind: Literal["offload_tool_results"] = "offload_tool_results"
    max_result_tokens: int = Field(default=500, gt=0)
    """Results longer than this (estimated at 4 characters per token) are offloaded."""
    preview_tokens: int = Field(default=100, ge=0)
    """How much of an offloaded result's start stays in the request."""


class DropOldTurns(_Policy):
    """Leave the oldest turns out of the request, a note in their place (a tool call goes with its results)."""

    kind: Literal["drop_old_turns"] = "drop_old_turns"


class SummarizeOldTurns(_Policy):
    """Replace the oldest turns by a summary the model writes (a plain text call, no tools, no structured output).

    It summarises every turn that may go (all but system messages, the message that started the reply and the
    recent turns), so that one summary lasts for several requests. The summary is kept and reused while the
    request fits with it; when it no longer does, the previous summary and the turns since are summarised again.
    """

    kind: Literal["summarize_old_turns"] = "summarize_old_turns"
    max_summary_tokens: int = Field(default=512, gt=0)
    """The ``max_tokens`` of the summary call."""
    prompt: str = SUMMARY_PROMPT
    """The system prompt of the summary call."""


Policy: TypeAlias = Annotated[
    OffloadToolResults | DropOldTurns | SummarizeOldTurns, Field(discriminator="kind")
]
"""One compaction step, told apart by ``kind``."""


class ContextConfig(BaseModel):
    """A per-agent context budget and how to get under it.

    Before every model call the agent counts the request (messages and tool schemas). Above ``max_tokens`` it
    applies ``policies`` in order, each only as far as needed, until the request fits. Compaction changes the
    request only: memory keeps the full history.

    Never compacted: system messages, the message that started the current reply, and the last
    ``keep_recent_turns`` turns (a turn: one message, or a model message with its tool calls and their results;
    a tool call never goes without its result).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(gt=0)
    """Most tokens a request may hold (messages and tool schemas; the answer's tokens are not included)."""
    policies: tuple[Policy, ...] = (OffloadToolResults(), DropOldTurns())
    """The compaction steps, applied in this order until the request fits."""
    keep_recent_turns: int = Field(default=2, ge=0)
    """Turns at the end of the conversation that are never dropped or summarised (results may be offloaded)."""
    target_ratio: float = Field(default=0.9, gt=0, le=1)
    """Compaction aims at ``target_ratio * max_tokens``, leaving room to grow before the next compaction."""
    tokenizer: str | None = None
    """A Hugging Face tokenizer (local path, or name in the local cache) to count with; ``"auto"``: the model's
    name if found locally. None: the model's own ``count_tokens`` if it has one, else the estimate (characters
    / 4 of the formatted request)."""
