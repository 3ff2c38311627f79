"""What the task sets share: the ``level`` argument of their specs, and reading a conversation the way a scripted
policy may (the task as the agent was given it, the tool results).

Experts and random policies read only the conversation (never the task object), so what they prove is that the
conversation carries everything the task needs.
"""

from __future__ import annotations

import re

from agentscope.message import ImageBlock, Msg, ToolResultBlock

__all__ = [
    "answer_matches",
    "forced_to_answer",
    "normalise_answer",
    "parse_levels",
    "task_text",
    "tool_outputs",
]

_LEVELS = (1, 2, 3)


def parse_levels(task_set: str, level: int | str) -> tuple[int, ...]:
    """The levels a spec's ``level`` names: 1, 2 or 3; a range such as ``"1-3"`` (what ``level=1-3`` parses to);
    0 for all of them. Raises ValueError naming the task set otherwise."""
    if isinstance(level, int) and not isinstance(level, bool):
        if level == 0:
            return _LEVELS
        if level in _LEVELS:
            return (level,)
    elif isinstance(level, str):
        match = re.fullmatch(r"\s*([1-3])\s*-\s*([1-3])\s*", level)
        if match and int(match[1]) <= int(match[2]):
            return tuple(range(int(match[1]), int(match[2]) + 1))
    raise ValueError(f"{task_set} level must be 1, 2 or 3, a range such as 1-3, or 0 (= 1-3); got {level!r}")


_ANSWER_PREFIX = re.compile(r"^(?:the answer is|answer)\s*:?\s*", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def task_text(messages: list[Msg]) -> str:
    """The text of the first user message: the task as the agent received it ("" when there is none)."""
    return next((m.text for m in messages if m.role == "user"), "")


def _result_text(block: ToolResultBlock) -> str:
    if isinstance(block.output, str):
        return block.output
    return "\n".join(part.text for part in block.output if not isinstance(part, ImageBlock))


def tool_outputs(messages: list[Msg]) -> list[tuple[str, bool]]:
    """The text of every tool result so far, in order, with whether it is an error."""
    return [
        (_result_text(block), block.is_error)
        for message in messages
        for block in message.blocks_of(ToolResultBlock)
    ]


def forced_to_answer(messages: list[Msg]) -> bool:
    """True when the last message is a user message after the first one: the agent ran out of steps and asks for
    the answer (a ReActAgent's ``max_iters`` hint); a tool call would not run now."""
    users = [m for m in messages if m.role == "user"]
    return bool(messages) and messages[-1].role == "user" and len(users) > 1


def normalise_answer(text: str) -> str:
    """``text`` as answers are compared: an optional leading "The answer is" dropped, surrounding quotes, spaces
    and a final full stop stripped, inner whitespace collapsed, lower case."""
    text = _ANSWER_PREFIX.sub("", text.strip())
    text = text.strip().strip("\"'`").strip()
    text = text.removesuffix(".").strip()
    return _SPACES.sub(" ", text).lower()


def answer_matches(reply: str, expected: str) -> bool:
    """Whether the reply *is* the expected answer once both are normalised (``Lyon``, ``lyon.`` and ``The answer
    is Lyon.`` match ``Lyon``; a reply that lists several candidates does not)."""
    return normalise_answer(reply) == normalise_answer(expected) != ""
