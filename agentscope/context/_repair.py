"""Tool-call history that every provider accepts: each call answered by exactly one result, right after it.

Providers reject a conversation in which a tool call has no result, a result answers no call (or one already
answered), a result does not directly follow the call's message, or a call's arguments are not a JSON object
(vLLM parses them; the Anthropic API takes an object). Interruptions, timeouts, errors, malformed model output
and histories sent by clients all produce such conversations. Two repairs keep them valid:

- :class:`ToolCallLedger` repairs **on write**: an agent passes each message it stores through it, so memory
  itself holds every call with exactly one result.
- :func:`repair_tool_history` repairs **on read**: a pure function over any list of messages (whoever wrote
  them), applied to every request an agent sends.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from agentscope.message import ContentBlock, Msg, ToolResultBlock, ToolUseBlock

__all__ = [
    "INVALID_ARGUMENTS_KEY",
    "NO_RESULT_OUTPUT",
    "RepairReport",
    "ToolCallLedger",
    "repair_tool_history",
]

NO_RESULT_OUTPUT = (
    "This call got no result (it was interrupted, timed out or was abandoned before it finished); "
    "it may or may not have taken effect."
)
"""The output of the synthetic error result given to a call that has none."""

INVALID_ARGUMENTS_KEY = "invalid_tool_arguments"
"""Key of ``Msg.metadata`` holding ``{call id: the arguments as the model wrote them}`` for calls whose
arguments were not a JSON object (the call itself then carries ``{}``)."""


@dataclass(slots=True)
class RepairReport:
    """What a repair changed (all zero when the history was valid)."""

    synthetic_results: list[str] = field(default_factory=list[str])
    """Ids of the calls that got a synthetic error result."""
    dropped_results: list[str] = field(default_factory=list[str])
    """Ids of the results dropped: duplicates, and results that answer no call."""
    fixed_arguments: list[str] = field(default_factory=list[str])
    """Ids of the calls whose arguments were replaced by ``{}`` (the original kept in the message metadata)."""
    moved_results: int = 0
    """Results moved to directly follow their call's message."""

    @property
    def changed(self) -> bool:
        """True when anything was repaired."""
        return bool(
            self.synthetic_results or self.dropped_results or self.fixed_arguments or self.moved_results
        )


def _synthetic(call: ToolUseBlock) -> ToolResultBlock:
    return ToolResultBlock(id=call.id, name=call.name, output=NO_RESULT_OUTPUT, is_error=True)


def _fix_arguments(msg: Msg, report: RepairReport) -> Msg:
    """``msg`` with every call's unparsable arguments replaced by ``{}`` (the raw text kept in the metadata)."""
    if not any(b.raw_input is not None for b in msg.tool_calls):
        return msg
    raw: dict[str, JsonValue] = {}
    blocks: list[ContentBlock] = []
    for block in msg.blocks:
        if isinstance(block, ToolUseBlock) and block.raw_input is not None:
            raw[block.id] = block.raw_input
            report.fixed_arguments.append(block.id)
            block = block.model_copy(update={"input": {}, "raw_input": None})
        blocks.append(block)
    previous = msg.metadata.get(INVALID_ARGUMENTS_KEY)
    if isinstance(previous, dict):
        raw = {**previous, **raw}
    return msg.model_copy(
        update={"content": blocks, "metadata": {**msg.metadata, INVALID_ARGUMENTS_KEY: raw}}
    )


def _is_canonical(messages: Sequence[Msg]) -> bool:
    """True when every call is answered exactly once by the ``tool`` messages right after it, nothing else.

    On the path of every model request: one pass over the blocks, no copies.
    """
    open_ids: set[str] = set()
    seen_calls: set[str] = set()
    for msg in messages:
        content = msg.content
        if isinstance(content, str):
            if open_ids:
                return False
            continue
        if open_ids:
            if msg.role != "tool":
                return False
            for block in content:
                if not isinstance(block, ToolResultBlock) or block.id not in open_ids:
                    return False
                open_ids.discard(block.id)
            continue
        is_assistant = msg.role == "assistant"
        for block in content:
            if isinstance(block, ToolResultBlock):
                return False
            if is_assistant and isinstance(block, ToolUseBlock):
                if block.raw_input is not None or block.id in seen_calls:
                    return False
                seen_calls.add(block.id)
                open_ids.add(block.id)
    return not open_ids


def repair_tool_history(messages: Sequence[Msg]) -> tuple[list[Msg], RepairReport]:
    """``messages`` made valid for every provider, and what was changed. Pure: the input is not modified.

    - every call (a :class:`ToolUseBlock` of an ``assistant`` message) is followed directly by one ``tool``
      message holding exactly one result per call, in call order: its first result wherever that was, else a
      synthetic error result (:data:`NO_RESULT_OUTPUT`);
    - other results (duplicates, and results that answer no call) are dropped, and a message left empty by that
      is dropped;
    - arguments that could not be parsed (``raw_input``) become ``{}``, the original text kept in the message's
      ``metadata["invalid_tool_arguments"]``;
    - a call id used again by a later call is renamed (``<id>~2``), so that ids stay unique.

    A valid history comes back as a new list of the same messages (checked in one pass, nothing copied).
    """
    report = RepairReport()
    if _is_canonical(messages):
        return list(messages), report
    calls: set[str] = set()
    results: dict[str, ToolResultBlock] = {}
    for msg in messages:
        if isinstance(msg.content, str):
            continue
        if msg.role == "assistant":
            calls.update(b.id for b in msg.tool_calls)
        for block in msg.content:
            if isinstance(block, ToolResultBlock):
                if block.id in results or block.id not in calls:
                    report.dropped_results.append(block.id)
                else:
                    results[block.id] = block
    out: list[Msg] = []
    used_ids: set[str] = set()
    for index, msg in enumerate(messages):
        if isinstance(msg.content, str):
            out.append(msg)
            continue
        if msg.role == "assistant" and msg.tool_calls:
            msg = _fix_arguments(msg, report)
            msg, answers = _answer_calls(msg, results, used_ids, report)
            out.append(msg)
            following = messages[index + 1] if index + 1 < len(messages) else None
            if following is not None and [id(b) for b in following.blocks] == [id(b) for b in answers]:
                out.append(following)  # already in place: keep the message itself (id, timestamp)
            else:
                nearby = following.blocks if following is not None else []
                report.moved_results += sum(
                    1 for b in answers if b.id not in report.synthetic_results and b not in nearby
                )
                out.append(Msg(role="tool", content=list(answers)))
            continue
        if out and out[-1] is msg:
            continue
        kept = [b for b in msg.content if not isinstance(b, ToolResultBlock)]
        if len(kept) == len(msg.content):
            out.append(msg)
        elif kept:
            out.append(msg.model_copy(update={"content": kept}))
    return out, report


def _answer_calls(
    msg: Msg, results: dict[str, ToolResultBlock], used_ids: set[str], report: RepairReport
) -> tuple[Msg, list[ToolResultBlock]]:
    """The results for ``msg``'s calls (synthetic where missing), renaming call ids used before."""
    answers: list[ToolResultBlock] = []
    renamed = False
    blocks: list[ContentBlock] = []
    for block in msg.blocks:
        if isinstance(block, ToolUseBlock):
            if block.id in used_ids:
                new_id, n = block.id, 2
                while new_id in used_ids:
                    new_id, n = f"{block.id}~{n}", n + 1
                block = block.model_copy(update={"id": new_id})
                renamed = True
                answers.append(_synthetic(block))
                report.synthetic_results.append(block.id)
            else:
                result = results.pop(block.id, None)
                if result is None:
                    result = _synthetic(block)
                    report.synthetic_results.append(block.id)
                answers.append(result)
            used_ids.add(block.id)
        blocks.append(block)
    return (msg.model_copy(update={"content": blocks}) if renamed else msg), answers


class ToolCallLedger:
    """Repairs messages as an agent writes them, so that memory holds every call with exactly one result.

    It knows which calls of the conversation still wait for their result. :meth:`write` returns what to store
    for the messages given:

    - a result for a call that does not wait (a duplicate, or one that answers no call) is dropped;
    - when a message other than tool results comes while calls wait (the conversation moves on: a new user
      message, the next model turn, an interruption's reply), the waiting calls first get a synthetic error
      result (:data:`NO_RESULT_OUTPUT`), except the ``held`` ones (calls waiting for a human's approval, whose
      result comes with the decision);
    - unparsable arguments become ``{}`` (the original text kept in ``metadata["invalid_tool_arguments"]``; the
      toolkit's error result quotes it to the model too).

    A ledger starts unprimed: :meth:`prime` it with the memory's last messages before the first write, so that
    calls left waiting by an earlier process (or sent by a client) are known.
    """

    __slots__ = ("_open", "primed", "report")

    def __init__(self) -> None:
        self._open: dict[str, ToolUseBlock] = {}
        self.primed = False
        """Whether :meth:`prime` has run since the ledger was made or :meth:`reset`."""
        self.report = RepairReport()
        """Everything repaired so far (for logs and tests)."""

    @property
    def waiting(self) -> list[ToolUseBlock]:
        """The calls that still wait for their result, oldest first."""
        return list(self._open.values())

    def reset(self) -> None:
        """Forget everything (the memory was replaced): the next write primes again."""
        self._open = {}
        self.primed = False

    def prime(self, tail: Sequence[Msg]) -> None:
        """Learn the waiting calls from the memory's last messages (oldest first): the calls among them that no
        later message among them answers. A call's results always follow it, so any tail that holds the call
        holds its results."""
        self._open = {}
        for msg in tail:
            for block in msg.blocks:
                if isinstance(block, ToolResultBlock):
                    self._open.pop(block.id, None)
                elif isinstance(block, ToolUseBlock) and msg.role == "assistant":
                    self._open[block.id] = block
        self.primed = True

    def close(self, *, held: Collection[str] = ()) -> Msg | None:
        """A ``tool`` message answering every waiting call (``held`` ones left waiting), or None if none wait."""
        closing = [c for i, c in self._open.items() if i not in held]
        if not closing:
            return None
        for call in closing:
            del self._open[call.id]
            self.report.synthetic_results.append(call.id)
        return Msg(role="tool", content=[_synthetic(c) for c in closing])

    def write(self, msgs: Msg | Sequence[Msg], *, held: Collection[str] = ()) -> list[Msg]:
        """What to store for ``msgs``, in order (see the class docstring)."""
        out: list[Msg] = []
        for msg in [msgs] if isinstance(msgs, Msg) else msgs:
            if isinstance(msg.content, str):
                if msg.content or msg.role != "tool":
                    self._moving_on(out, held)
                out.append(msg)
                continue
            kept: list[ContentBlock] = []
            has_results = False
            for block in msg.content:
                if isinstance(block, ToolResultBlock):
                    has_results = True
                    if self._open.pop(block.id, None) is None:
                        self.report.dropped_results.append(block.id)
                        continue
                kept.append(block)
            others = [b for b in kept if not isinstance(b, ToolResultBlock)]
            if others or not has_results:
                self._moving_on(out, held)
            if not kept and has_results:
                continue  # only results nobody waited for
            if len(kept) != len(msg.content):
                msg = msg.model_copy(update={"content": kept})
            if msg.role == "assistant" and msg.tool_calls:
                msg = _fix_arguments(msg, self.report)
                self._open.update((c.id, c) for c in msg.tool_calls)
            out.append(msg)
        return out

    def _moving_on(self, out: list[Msg], held: Collection[str]) -> None:
        closing = self.close(held=held)
        if closing is not None:
            out.append(closing)
