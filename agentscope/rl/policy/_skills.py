"""A generic tool-use corpus for pretraining the tiny policy: copying and looking things up, with made-up tools.

A pretrained LLM brings to RL the skill of copying a span of its context (a name, an id, a value) to where it is
needed; a randomly initialised tiny policy has none, and a few hundred task demonstrations are too few to grow it
(the warm-started policy memorises the demonstrations' names instead). This corpus teaches that skill on its own,
before any task is seen: short conversations in which made-up tools (``open_ticket``, ``read_box``...) are called
with values copied from the user's message or from an earlier tool result, and the answer is a field of a result
or of the message. Its tools, templates and words are its own, not those of any task suite (checked by a test), and
it is generated from a seed, so the pretraining is the same fixed step for every task set.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from pydantic import JsonValue

from agentscope.message import ContentBlock, Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import ToolSchema
from agentscope.rl.policy._warm_start import Demonstration

__all__ = ["SKILL_TOOL_NAMES", "skills_corpus"]

_VERBS = ("open", "read", "fetch", "check", "show", "load", "scan", "query", "inspect", "pull")
_NOUNS = (
    "ticket", "box", "note", "song", "book", "crate", "parcel", "planet", "river", "garden",
    "lamp", "engine", "badge", "recipe", "island", "vessel", "tower", "letter", "meter", "kite",
)  # fmt: skip
_FIELDS = (
    "color", "size", "owner", "shape", "weight", "label", "code", "zone", "mood", "origin",
    "status", "level", "flavor", "tone", "grade", "speed", "theme", "brand", "model", "rank",
)  # fmt: skip
_WORDS = (
    "amber", "basil", "cedar", "delta", "ember", "fable", "grove", "harbor", "indigo", "jasper",
    "kelp", "lotus", "maple", "nectar", "onyx", "pebble", "quartz", "raven", "saffron", "thistle",
    "umber", "velvet", "willow", "yarrow", "zephyr", "acorn", "birch", "coral", "dune", "fern",
    "glacier", "hazel", "iris", "juniper", "lilac", "meadow", "nutmeg", "olive", "pine", "quill",
    "reed", "sage", "tulip", "violet", "walnut", "cobalt", "crimson", "silver", "golden", "scarlet",
    "round", "square", "tiny", "huge", "heavy", "light", "calm", "brisk", "north", "south",
)  # fmt: skip
_GIVEN = (
    "Arlo", "Bea", "Cyrus", "Dora", "Eli", "Faye", "Gil", "Hugo", "Iris", "Joel", "Kira", "Leo",
    "Mara", "Ned", "Opal", "Pax", "Rhea", "Sol", "Tess", "Uri", "Vik", "Wren", "Xan", "Zoe",
)  # fmt: skip
_FAMILY = (
    "Abbot", "Birch", "Crane", "Drake", "Ellis", "Frost", "Grant", "Hale", "Irwin", "Joyce",
    "Knox", "Lane", "Marsh", "Noble", "Oakes", "Pryce", "Quill", "Rowe", "Sykes", "Tate",
)  # fmt: skip
_ASK_ONE_HOP = (
    "What is the {field} of the {noun} {key}?",
    "Find the {noun} {key} and tell me its {field}.",
    "I need the {field} of {noun} {key}.",
    "Which {field} does the {noun} {key} have?",
)
_ASK_TWO_HOP = (
    "What is the {field} of the {noun} owned by {key}?",
    "Look up who {key} is, then give the {field} of their {noun}.",
    "Tell me the {field} of the {noun} that belongs to {key}.",
)
_ASK_IN_CONTEXT = (
    "{facts}. What is the {field}?",
    "Here are the facts: {facts}. Give me the {field}.",
    "{facts}. Which {field} is it?",
)
_ASK_INDEX = (
    "Options: {options}. Which number is {choice}?",
    "Pick the number of {choice} among: {options}.",
)
_ANSWER = ("{value}", "{value}", "{value}", "The {field} is {value}.")

SKILL_TOOL_NAMES = frozenset(f"{verb}_{noun}" for verb in _VERBS for noun in _NOUNS) | frozenset(
    f"find_{noun}_owner" for noun in _NOUNS
)
"""Every tool name the corpus may use (none is a tool of a task suite)."""


def _tool(name: str, description: str, arg: str, kind: str) -> ToolSchema:
    return ToolSchema(
        name=name,
        description=description,
        parameters={
            "additionalProperties": False,
            "properties": {arg: {"type": kind}},
            "required": [arg],
            "type": "object",
        },
    )


def _record(rng: random.Random, fields: Sequence[str]) -> dict[str, str]:
    return {f: rng.choice(_WORDS) if rng.random() < 0.8 else str(rng.randint(1, 999)) for f in fields}


def _render(record: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in record.items())


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}"


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.messages: list[Msg] = []
        self.calls = 0

    def user(self, text: str) -> None:
        self.messages.append(Msg(role="user", name="user", content=text))

    def call(self, tool: str, arguments: dict[str, JsonValue], output: str) -> None:
        self.calls += 1
        call_id = f"call_{self.calls}"
        blocks: list[ContentBlock] = [ToolUseBlock(id=call_id, name=tool, input=arguments)]
        self.messages.append(Msg(role="assistant", content=blocks))
        self.messages.append(
            Msg(role="tool", content=[ToolResultBlock(id=call_id, name=tool, output=output)])
        )

    def answer(self, field: str, value: str) -> None:
        template = self.rng.choice(_ANSWER)
        self.messages.append(Msg(role="assistant", content=template.format(field=field, value=value)))


def _one_hop(rng: random.Random) -> Demonstration:
    noun = rng.choice(_NOUNS)
    tool = f"{rng.choice(_VERBS)}_{noun}"
    key = rng.choice(_WORDS) if rng.random() < 0.5 else str(rng.randint(1, 999))
    fields = rng.sample(_FIELDS, rng.randint(2, 4))
    record = _record(rng, fields)
    field = rng.choice(fields)
    b = _Builder(rng)
    b.user(rng.choice(_ASK_ONE_HOP).format(field=field, noun=noun, key=key))
    b.call(tool, {"key": key}, _render(record))
    b.answer(field, record[field])
    return Demonstration(b.messages, [_tool(tool, f"Read a {noun} by its key.", "key", "string")])


def _two_hop(rng: random.Random) -> Demonstration:
    noun = rng.choice(_NOUNS)
    finder = f"find_{noun}_owner"
    reader = f"{rng.choice(_VERBS)}_{noun}"
    person = _person(rng)
    number = rng.randint(10, 999)
    fields = rng.sample(_FIELDS, rng.randint(2, 4))
    record = _record(rng, fields)
    field = rng.choice(fields)
    b = _Builder(rng)
    b.user(rng.choice(_ASK_TWO_HOP).format(field=field, noun=noun, key=person))
    b.call(finder, {"owner": person}, f"{noun} {number}")
    b.call(reader, {"number": number}, _render(record))
    b.answer(field, record[field])
    tools = [
        _tool(finder, f"Find the number of the {noun} an owner has.", "owner", "string"),
        _tool(reader, f"Read a {noun} by its number.", "number", "integer"),
    ]
    rng.shuffle(tools)
    return Demonstration(b.messages, tools)


def _in_context(rng: random.Random) -> Demonstration:
    fields = rng.sample(_FIELDS, rng.randint(2, 5))
    record = _record(rng, fields)
    field = rng.choice(fields)
    b = _Builder(rng)
    b.user(rng.choice(_ASK_IN_CONTEXT).format(facts=_render(record), field=field))
    b.answer(field, record[field])
    return Demonstration(b.messages, [])


def _index(rng: random.Random) -> Demonstration:
    options = rng.sample(_WORDS, rng.randint(3, 6))
    numbers = rng.sample(range(1, 40), len(options))
    choice = rng.randrange(len(options))
    listing = ", ".join(f"[{n}] {w}" for n, w in zip(numbers, options, strict=True))
    b = _Builder(rng)
    b.user(rng.choice(_ASK_INDEX).format(options=listing, choice=options[choice]))
    b.messages.append(Msg(role="assistant", content=str(numbers[choice])))
    return Demonstration(b.messages, [])


_KINDS = ((_one_hop, 4), (_two_hop, 4), (_in_context, 1), (_index, 1))


def skills_corpus(seed: int = 0) -> Iterator[Demonstration]:
    """An endless, seeded stream of generic tool-use conversations (see the module docstring)."""
    rng = random.Random(f"skills:{seed}")
    makers = [maker for maker, weight in _KINDS for _ in range(weight)]
    while True:
        yield rng.choice(makers)(rng)
