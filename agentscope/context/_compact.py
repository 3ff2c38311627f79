"""ContextManager: keep each model request under the agent's token budget, recorded as a ``compact_context`` span."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentscope.context._config import (
    ContextConfig,
    DropOldTurns,
    OffloadToolResults,
    Policy,
    SummarizeOldTurns,
)
from agentscope.context._tokens import CHARS_PER_TOKEN, TokenCounter, token_counter_for
from agentscope.exceptions import ModelError
from agentscope.formatters import tool_result_text
from agentscope.message import ImageBlock, Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatModel
from agentscope.tracing import span
from agentscope.types import ToolSchema

__all__ = ["READ_OFFLOADED", "CompactionResult", "ContextManager"]

logger = logging.getLogger("agentscope.context")

READ_OFFLOADED = "read_offloaded"
"""Name of the tool that reads an offloaded tool result."""

_READ_CHARS = 4000
"""Characters ``read_offloaded`` returns per call by default."""

_OFFLOADED_MARK = "[offloaded]"
_DROPPED_NOTE = "[{n} earlier message(s) were left out here to fit the context window.]"
_SUMMARY_HEAD = "[Summary of the earlier conversation, written to fit the context window]\n"
_TRANSCRIPT_RESULT_CHARS = 2000


@dataclass(slots=True)
class CompactionResult:
    """What one compaction did (also the ``compact_context`` span's attributes)."""

    messages: list[Msg]
    """The request's messages after compaction."""
    tokens_before: int
    """Tokens of the request before."""
    tokens_after: int
    """Tokens of the request after (counted again, exactly as before)."""
    policies: list[str] = field(default_factory=list[str])
    """The policies that changed the request, in order."""
    offloaded: list[str] = field(default_factory=list[str])
    """Ids of the calls whose results were offloaded."""
    dropped: int = 0
    """Messages left out."""
    summarized: int = 0
    """Messages replaced by the summary."""
    summary_error: str | None = None
    """Why the summary call failed (the policy was then skipped), or None."""


@dataclass(slots=True)
class _Unit:
    """Messages that stay or go together: one message, or a model message with the results of its calls."""

    messages: list[Msg]
    costs: list[int]
    protected: bool = False

    @property
    def cost(self) -> int:
        return sum(self.costs)

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages]


class ContextManager:
    """Counts each request and compacts it by the configured policies when it exceeds the budget.

    Args:
        config: The budget and the policies.
        counter: How to count tokens; default: chosen for the agent's model on first use (see
            :func:`~agentscope.context.token_counter_for` and :attr:`ContextConfig.tokenizer`).
        summarizer: The model that writes summaries (:class:`SummarizeOldTurns`); default: the agent's model.
            Give a separate one when the agent's model records its calls (an RL rollout client), so that
            summaries stay out of the trajectories. A summary call that fails (:class:`ModelError`) is logged
            and the policy skipped, so that the next ones can still make the request fit.

    One manager per agent: it keeps that agent's summary between requests.
    """

    def __init__(
        self,
        config: ContextConfig,
        *,
        counter: TokenCounter | None = None,
        summarizer: ChatModel | None = None,
    ) -> None:
        self.config = config
        """The budget and the policies."""
        self.counter = counter
        """How tokens are counted (set on first use when not given)."""
        self.summarizer = summarizer
        """The model that writes summaries; None: the agent's model."""
        self.summary: tuple[list[str], str] | None = None
        """The summary kept between requests: (ids of the messages it covers, its text)."""
        self.last: CompactionResult | None = None
        """The most recent compaction (None before the first)."""

    @property
    def offload_policy(self) -> OffloadToolResults | None:
        """The offloading policy, when configured."""
        return next((p for p in self.config.policies if isinstance(p, OffloadToolResults)), None)

    @property
    def offload_tool(self) -> ToolSchema | None:
        """The ``read_offloaded`` tool to offer the model (None without an offloading policy)."""
        if self.offload_policy is None:
            return None
        return ToolSchema(
            name=READ_OFFLOADED,
            description=(
                "Read a tool result that was shortened to fit the context window (it is marked [offloaded]). "
                "Returns the characters from `offset` on."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "ref": {"type": "string", "description": "The ref shown in the shortened result."},
                    "offset": {"type": "integer", "minimum": 0, "description": "First character to read."},
                },
                "required": ["ref"],
            },
        )

    def counter_for(self, model: object) -> TokenCounter:
        """The counter (chosen for ``model`` on first use)."""
        if self.counter is None:
            self.counter = token_counter_for(model, self.config.tokenizer)
        return self.counter

    # ------------------------------------------------------------------ fitting a request

    async def fit(
        self,
        messages: Sequence[Msg],
        tools: Sequence[ToolSchema],
        *,
        model: ChatModel,
        protect: Collection[str] = (),
    ) -> list[Msg]:
        """``messages`` as they fit the budget (unchanged when they already do).

        Args:
            messages: The request's messages, system prompt first, tool calls paired with their results.
            tools: The tool schemas sent with them (they count too).
            model: The agent's model (for the counter and, by default, summaries).
            protect: Ids of messages never left out (the message that started the reply).
        """
        counter = self.counter_for(model)
        before = await counter.count(messages, tools)
        if before <= self.config.max_tokens:
            return list(messages)
        attributes: dict[str, object] = {
            "agentscope.context.max_tokens": self.config.max_tokens,
            "agentscope.context.tokens_before": before,
            "agentscope.context.counter": counter.name,
            "agentscope.context.policy": [p.kind for p in self.config.policies],
            "agentscope.context.messages_before": len(messages),
        }
        with span("compact_context", "agent", attributes) as current:
            result = await self._compact(list(messages), tools, before, model, counter, protect)
            current.set_attributes(
                {
                    "agentscope.context.tokens_after": result.tokens_after,
                    "agentscope.context.messages_after": len(result.messages),
                    "agentscope.context.applied": result.policies,
                    "agentscope.context.messages_dropped": result.dropped,
                    "agentscope.context.messages_summarized": result.summarized,
                    "agentscope.context.results_offloaded": len(result.offloaded),
                    "agentscope.context.fits": result.tokens_after <= self.config.max_tokens,
                }
            )
            if result.summary_error is not None:
                current.set_attribute("agentscope.context.summary_error", result.summary_error)
        self.last = result
        if result.tokens_after > self.config.max_tokens:
            logger.warning(
                "context: the request still holds %d tokens after compaction (budget %d); sending it anyway",
                result.tokens_after,
                self.config.max_tokens,
            )
        return result.messages

    async def _compact(
        self,
        messages: list[Msg],
        tools: Sequence[ToolSchema],
        before: int,
        model: ChatModel,
        counter: TokenCounter,
        protect: Collection[str],
    ) -> CompactionResult:
        costs = await counter.count_each(messages)
        overhead = before - sum(costs)
        units = _units(messages, costs, protect, self.config.keep_recent_turns)
        target = int(self.config.max_tokens * self.config.target_ratio)
        result = CompactionResult(messages=messages, tokens_before=before, tokens_after=before)

        def total() -> int:
            return overhead + sum(u.cost for u in units)

        for policy in self.config.policies:
            if total() <= target:
                break
            changed = await self._apply(policy, units, total, target, model, counter, result)
            if changed:
                result.policies.append(policy.kind)
        result.messages = [m for u in units for m in u.messages]
        result.tokens_after = await counter.count(result.messages, tools)
        return result

    async def _apply(
        self,
        policy: Policy,
        units: list[_Unit],
        total: Any,
        target: int,
        model: ChatModel,
        counter: TokenCounter,
        result: CompactionResult,
    ) -> bool:
        if isinstance(policy, OffloadToolResults):
            return await _offload(policy, units, total, target, counter, result)
        if isinstance(policy, DropOldTurns):
            return await _drop(units, total, target, counter, result)
        return await self._summarize(policy, units, total, target, model, counter, result)

    # ------------------------------------------------------------------ summaries

    async def _summarize(
        self,
        policy: SummarizeOldTurns,
        units: list[_Unit],
        total: Any,
        target: int,
        model: ChatModel,
        counter: TokenCounter,
        result: CompactionResult,
    ) -> bool:
        candidates = [i for i, u in enumerate(units) if not u.protected]
        if not candidates:
            return False
        # Reuse the kept summary when the turns it covers are still the oldest ones that may go.
        previous = ""
        chosen: list[int] = []
        if self.summary is not None:
            covered = set(self.summary[0])
            prefix: list[int] = []
            for i in candidates:
                if not set(units[i].ids) <= covered:
                    break
                prefix.append(i)
            if prefix and {m for i in prefix for m in units[i].ids} == covered:
                previous = self.summary[1]
                chosen = prefix
        saved = sum(units[i].cost for i in chosen)
        if not (chosen and total() - saved + _estimate(previous) <= target):
            # Summarise every turn that may go, not just enough of them: the summary then lasts for several
            # requests before the model must be asked again.
            chosen = candidates
        covered_msgs = [m for i in chosen for m in units[i].messages]
        covered_ids = [m.id for m in covered_msgs]
        if self.summary is not None and previous and covered_ids == self.summary[0]:
            text = previous
        else:
            try:
                text = await self._write_summary(policy, previous, covered_msgs, model, counter)
            except ModelError as exc:  # the next policies (dropping) can still make the request fit
                logger.warning("context: the summary call failed, skipping summarize_old_turns: %s", exc)
                result.summary_error = str(exc)
                return False
            self.summary = (covered_ids, text)
        summary = Msg(role="user", name="summary", content=_SUMMARY_HEAD + text)
        cost = (await counter.count_each([summary]))[0]
        _replace(units, chosen, _Unit([summary], [cost], protected=True))
        result.summarized += len(covered_msgs)
        return True

    async def _write_summary(
        self,
        policy: SummarizeOldTurns,
        previous: str,
        messages: list[Msg],
        model: ChatModel,
        counter: TokenCounter,
    ) -> str:
        """Ask the model for a plain-text summary (no tools, no response format: any chat model can)."""
        kept_ids = set(self.summary[0]) if self.summary is not None and previous else set[str]()
        transcript = _transcript([m for m in messages if m.id not in kept_ids])
        if previous:
            transcript = f"Summary so far:\n{previous}\n\nWhat happened next:\n{transcript}"
        limit = int(self.config.max_tokens * CHARS_PER_TOKEN)
        if len(transcript) > limit:  # the summariser sees at most the budget: keep the most recent part
            transcript = "…" + transcript[-limit:]
        summarizer = self.summarizer or model
        response = await summarizer.generate(
            [Msg(role="system", content=policy.prompt), Msg(role="user", content=transcript)],
            settings={"max_tokens": policy.max_summary_tokens},
        )
        return response.text.strip() or "(the summariser returned nothing)"

    # ------------------------------------------------------------------ offloaded results

    async def read_offloaded(self, call: ToolUseBlock, history: Sequence[Msg]) -> ToolResultBlock:
        """Answer a ``read_offloaded`` call from ``history`` (the agent's memory, which keeps results whole)."""
        ref = call.input.get("ref")
        offset = call.input.get("offset", 0)
        if not isinstance(ref, str) or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            return ToolResultBlock(
                id=call.id,
                name=call.name,
                output="read_offloaded takes ref (a string) and offset (an integer >= 0)",
                is_error=True,
            )
        for msg in reversed(history):
            for block in msg.blocks_of(ToolResultBlock):
                if block.id == ref:
                    text = tool_result_text(block)
                    part = text[offset : offset + self._read_chars()]
                    end = offset + len(part)
                    more = (
                        f" {len(text) - end} more: read_offloaded(ref={ref!r}, offset={end})."
                        if end < len(text)
                        else " (the end)"
                    )
                    header = f"[result of {block.name} (ref {ref}), characters {offset}-{end} of {len(text)};{more}]"
                    return ToolResultBlock(id=call.id, name=call.name, output=f"{header}\n{part}")
        return ToolResultBlock(
            id=call.id, name=call.name, output=f"no tool result with ref {ref!r} is kept", is_error=True
        )

    def _read_chars(self) -> int:
        """Characters per ``read_offloaded`` call: as much as a result may hold without being offloaded."""
        policy = self.offload_policy
        return int(policy.max_result_tokens * CHARS_PER_TOKEN) if policy is not None else _READ_CHARS

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The kept summary, as JSON-safe data."""
        if self.summary is None:
            return {}
        return {"summary": {"covers": list(self.summary[0]), "text": self.summary[1]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        kept = state.get("summary")
        if isinstance(kept, dict):
            covers: list[str] = [str(i) for i in kept.get("covers", [])]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType, reportUnknownMemberType]
            self.summary = (covers, str(kept.get("text", "")))  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
        else:
            self.summary = None


def _estimate(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 8


def _units(messages: list[Msg], costs: list[int], protect: Collection[str], keep_recent: int) -> list[_Unit]:
    units: list[_Unit] = []
    for msg, cost in zip(messages, costs, strict=True):
        is_result = (
            msg.role == "tool"
            and bool(msg.blocks)
            and all(isinstance(b, ToolResultBlock) for b in msg.blocks)
        )
        if (
            is_result
            and units
            and (units[-1].messages[0].tool_calls or units[-1].messages[-1].role == "tool")
        ):
            units[-1].messages.append(msg)
            units[-1].costs.append(cost)
            continue
        units.append(_Unit([msg], [cost], protected=msg.role == "system" or msg.id in protect))
    for unit in units[max(0, len(units) - max(keep_recent, 1)) :]:  # the last message: what the model answers
        unit.protected = True
    return units


def _replace(units: list[_Unit], chosen: list[int], replacement: _Unit) -> None:
    """Put ``replacement`` where the last chosen unit was and remove the chosen ones."""
    last = max(chosen)
    keep = set(range(len(units))) - set(chosen)
    rebuilt: list[_Unit] = []
    for i, unit in enumerate(units):
        if i in keep:
            rebuilt.append(unit)
        if i == last:
            rebuilt.append(replacement)
    units[:] = rebuilt


async def _drop(
    units: list[_Unit], total: Any, target: int, counter: TokenCounter, result: CompactionResult
) -> bool:
    note_cost = (await _note(1, counter)).cost
    dropped: set[int] = set()
    saved = 0
    for i, unit in enumerate(units):
        runs = sum(1 for j in dropped if j - 1 not in dropped)
        if total() - saved + runs * note_cost <= target:
            break
        if not unit.protected:
            dropped.add(i)
            saved += unit.cost
    if not dropped:
        return False
    rebuilt: list[_Unit] = []
    run = 0
    for i, unit in enumerate(units):
        if i in dropped:
            run += len(unit.messages)
            result.dropped += len(unit.messages)
            continue
        if run:
            rebuilt.append(await _note(run, counter))
            run = 0
        rebuilt.append(unit)
    if run:
        rebuilt.append(await _note(run, counter))
    units[:] = rebuilt
    return True


async def _note(count: int, counter: TokenCounter) -> _Unit:
    note = Msg(role="user", name="context", content=_DROPPED_NOTE.format(n=count))
    return _Unit([note], await counter.count_each([note]), protected=True)


async def _offload(
    policy: OffloadToolResults,
    units: list[_Unit],
    total: Any,
    target: int,
    counter: TokenCounter,
    result: CompactionResult,
) -> bool:
    limit = int(policy.max_result_tokens * CHARS_PER_TOKEN)
    preview = int(policy.preview_tokens * CHARS_PER_TOKEN)
    changed = False
    for unit in units:
        for position, msg in enumerate(unit.messages):
            if total() <= target:
                return changed
            if msg.role != "tool" or isinstance(msg.content, str):
                continue
            blocks = list(msg.content)
            touched = False
            for index, block in enumerate(blocks):
                if not isinstance(block, ToolResultBlock):
                    continue
                text = tool_result_text(block)
                if len(text) <= limit or text.startswith(_OFFLOADED_MARK) or block.name == READ_OFFLOADED:
                    continue
                images = (
                    0
                    if isinstance(block.output, str)
                    else sum(isinstance(p, ImageBlock) for p in block.output)
                )
                note = f" and {images} image(s)" if images else ""
                short = (
                    f"{_OFFLOADED_MARK} {text[:preview]}\n[… {len(text) - preview} more characters{note} not shown. "
                    f"The full result is kept: call {READ_OFFLOADED}(ref={block.id!r}, offset={preview}) to read on.]"
                )
                blocks[index] = block.model_copy(update={"output": short})
                result.offloaded.append(block.id)
                touched = True
            if touched:
                new = msg.model_copy(update={"content": blocks})
                unit.messages[position] = new
                unit.costs[position] = (await counter.count_each([new]))[0]
                changed = True
    return changed


def _transcript(messages: Sequence[Msg]) -> str:
    """The messages as plain text for the summariser."""
    lines: list[str] = []
    for msg in messages:
        who = f"{msg.role} ({msg.name})" if msg.name else msg.role
        for block in msg.blocks:
            if isinstance(block, ToolUseBlock):
                lines.append(f"{who} called {block.name}({json.dumps(block.input, ensure_ascii=False)})")
            elif isinstance(block, ToolResultBlock):
                text = tool_result_text(block)
                if len(text) > _TRANSCRIPT_RESULT_CHARS:
                    text = text[:_TRANSCRIPT_RESULT_CHARS] + f"… ({len(text)} characters in all)"
                status = "error" if block.is_error else "result"
                lines.append(f"{block.name} {status}: {text}")
        if msg.text:
            lines.append(f"{who}: {msg.text}")
    return "\n".join(lines)
