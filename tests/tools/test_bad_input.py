"""A battery of 1,000 generated malformed tool-call payloads, through the real parse path: a provider answer on
127.0.0.1 -> the model client's parser -> the ReAct agent -> the toolkit -> the next request back to the server.

Every payload must end as a tool result the model sees (an error whose text says what is wrong, or the tool's
answer when the payload happens to be valid): no exception out of the agent, no lost call, and a conversation that
can still be stored and sent as JSON.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentscope.agents import ReActAgent
from agentscope.events import ReplyEvent
from agentscope.formatters import load_tool_arguments
from agentscope.memory import InMemoryMemory
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import AnthropicChatModel, ChatModel, ChatResponse, OpenAIChatModel
from agentscope.testing import AnthropicCompatServer, OpenAICompatServer
from agentscope.tools import Toolkit

pytestmark = pytest.mark.usefixtures("allow_model_requests")

PAYLOADS = 1000
PER_RESPONSE = 125  # tool calls in one model answer (run concurrently by the agent)

CLEAR_ERRORS = (
    "arguments were not valid JSON: ",
    "arguments are nested too deeply (more than 64 levels",
    "arguments contain invalid Unicode",
    "arguments contain a number JSON cannot carry",
    "Invalid arguments for tool 'typed':\n- ",
)


def typed(
    count: int, ratio: float, name: str, flags: list[bool], options: dict[str, int] | None = None
) -> str:
    """A tool with typed parameters, so that wrong types are caught.

    Args:
        count: A whole number.
        ratio: A number.
        name: A text.
        flags: Yes/no values.
        options: Named whole numbers.
    """
    return f"ok {count} {ratio} {len(name)} {len(flags)} {len(options or {})}"


VALID = {"count": 3, "ratio": 0.5, "name": "x", "flags": [True, False], "options": {"a": 1}}


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def malformed_payloads(n: int, seed: int = 11) -> Iterator[str]:
    """``n`` tool-call argument strings, each malformed in one of many ways (seeded: the same every run)."""
    rng = random.Random(seed)
    valid = json.dumps(VALID)
    wrong_values: list[Any] = [
        "three",
        3.5,
        [1],
        {"x": 1},
        None,
        True,
        10**30,
        -(10**19),
        "",
        [None],
        {"": None},
        1e308,
        -0.0,
    ]
    makers = [
        lambda: valid[: rng.randrange(1, len(valid) - 1)],  # truncated (cut off by max_tokens)
        lambda: "[" * rng.choice([100, 1000, 100_000]),  # deep, unclosed
        lambda: '{"count": ' + _nested(rng.choice([65, 200, 900, 3000])) + "}",  # deep, valid JSON
        lambda: '{"count": ' + "{" * rng.choice([70, 500]) + '"a": 1' + "}" * rng.choice([70, 500]) + "}",
        lambda: valid.replace(
            "3", rng.choice(["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "9" * 5000])
        ),
        lambda: valid.replace("0.5", rng.choice(["1e400", "1" + "0" * 400, "NaN", "5e-400"])),
        lambda: json.dumps({**VALID, rng.choice(list(VALID)): rng.choice(wrong_values)}),  # wrong type
        lambda: rng.choice(
            ["[]", "[1, 2]", "1", "-5", '"text"', "null", "true", "false", "3.14", '[{"count": 1}]']
        ),
        lambda: valid.replace(
            '"x"', rng.choice(['"\\ud800"', '"\\udfff\\ud800"', '"a\\udc00b"'])
        ),  # lone surrogates
        lambda: json.dumps({"\ud800": 1, **VALID}, ensure_ascii=rng.random() < 0.5),  # surrogate in a key
        lambda: (
            valid.replace('"x"', '"\\u0000\x00"') if rng.random() < 0.5 else '{"count\\u0000": 1}'
        ),  # NULs
        lambda: json.dumps(dict.fromkeys(VALID)),  # nulls everywhere
        lambda: json.dumps({"count": 1}),  # missing required arguments
        lambda: json.dumps({**VALID, "extra": 1, "more": [1, 2]}),  # unexpected arguments
        lambda: valid[:-1] + ', "count": "again"}',  # duplicate key
        lambda: rng.choice(["", " ", "\n\t", "{}", "{ }"]),  # empty
        lambda: rng.choice(
            ["{'count': 1}", "{count: 1}", '{"count": 1,}', '{"count": 1} trailing', "{/*c*/}"]
        ),
        lambda: "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(1, 80))),  # garbage text
        lambda: bytes(rng.randrange(256) for _ in range(60)).decode("utf-8", "surrogateescape"),  # raw bytes
        lambda: json.dumps({**VALID, "name": "y" * rng.choice([1000, 50_000])}),  # long string
        lambda: json.dumps({**VALID, "options": {"k" * 5000: 1}}),  # long key
        lambda: json.dumps({**VALID, "flags": [True] * 2000}),  # long array
        lambda: json.dumps(json.dumps(VALID)),  # arguments as a JSON string
        lambda: '{"count": 1, "ratio": 2, "name": "n", "flags": [' + _nested(70, "true") + "]}",
    ]
    for i in range(n):
        yield makers[i % len(makers)]()


def _responses(payloads: list[str]) -> Iterator[ChatResponse | str]:
    for start in range(0, len(payloads), PER_RESPONSE):
        yield ChatResponse(
            content=[
                ToolUseBlock(id=f"call_{start + i}", name="typed", raw_input=raw)
                for i, raw in enumerate(payloads[start : start + PER_RESPONSE])
            ]
        )
    yield "done"


def _check_results(payloads: list[str], messages: list[Msg]) -> None:
    results = {b.id: b for m in messages for b in m.blocks_of(ToolResultBlock)}
    assert len(results) == len(payloads), "a tool call got no result"
    for i, raw in enumerate(payloads):
        result = results[f"call_{i}"]
        assert isinstance(result.output, str)
        loaded = load_tool_arguments(raw)
        if result.is_error:
            assert result.output.startswith(CLEAR_ERRORS), (raw[:200], result.output[:300])
            assert len(result.output) < 2000, "the error is not short"
        else:  # the payload happened to be valid arguments: the tool ran
            assert isinstance(loaded, dict), raw[:200]
            assert result.output.startswith("ok "), result.output
    for message in messages:  # everything can still be stored and sent
        json.loads(message.model_dump_json())


def _agent(model: ChatModel) -> ReActAgent:
    toolkit = Toolkit()
    toolkit.register(typed)
    return ReActAgent(
        "battery",
        model=model,
        toolkit=toolkit,
        memory=InMemoryMemory(),
        max_iters=PAYLOADS // PER_RESPONSE + 2,
        max_concurrent_tools=32,
    )


def test_the_generator_covers_every_kind_of_damage() -> None:
    payloads = list(malformed_payloads(PAYLOADS))
    assert len(payloads) == PAYLOADS
    assert payloads == list(malformed_payloads(PAYLOADS)), "the battery must be the same every run"
    problems = [load_tool_arguments(p) for p in payloads]
    refused = [p for p in problems if isinstance(p, str)]
    assert len(refused) > PAYLOADS // 2  # mostly unusable; the rest fail validation or are fine
    for prefix in CLEAR_ERRORS[:4]:
        assert any(p.startswith(prefix) for p in refused), f"no payload is refused with {prefix!r}"


async def test_1000_malformed_payloads_through_an_openai_compatible_server() -> None:
    payloads = list(malformed_payloads(PAYLOADS))
    script = _responses(payloads)
    started = time.monotonic()
    async with OpenAICompatServer(lambda body: next(script)) as server:
        model = OpenAIChatModel("m", base_url=server.base_url, api_key="sk-test", max_retries=0)
        async with model:
            agent = _agent(model)
            reply = await agent(Msg(role="user", content="go"))
    assert reply.text == "done"
    _check_results(payloads, await agent.memory.get())
    # The conversation, every malformed payload included, went back to the server as JSON.
    assert len(server.requests) == PAYLOADS // PER_RESPONSE + 1
    assert time.monotonic() - started < 60


async def test_1000_malformed_payloads_streamed_by_an_anthropic_compatible_server() -> None:
    payloads = list(malformed_payloads(PAYLOADS, seed=12))
    script = _responses(payloads)
    # Arguments streamed in 4 KiB pieces (the parse joins them, as for any size).
    async with AnthropicCompatServer(lambda body: next(script), chunk_size=4096) as server:
        model = AnthropicChatModel("m", base_url=server.base_url, api_key="sk-test", max_retries=0)
        async with model:
            agent = _agent(model)
            events = [event async for event in agent.stream(Msg(role="user", content="go"))]
    final = events[-1]
    assert isinstance(final, ReplyEvent)
    assert final.msg.text == "done"
    _check_results(payloads, await agent.memory.get())
