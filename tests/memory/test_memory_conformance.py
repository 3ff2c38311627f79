"""The behaviour every memory backend must have. Each test runs once per entry of ``conftest.BACKENDS``."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from agentscope.exceptions import SessionError
from agentscope.memory import MemoryBase
from agentscope.message import (
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)

MemoryFactory = Callable[[str], MemoryBase]
"""``make_memory(session_id)``: see ``conftest.py``."""


def user(text: str) -> Msg:
    return Msg(role="user", content=text)


def every_kind_of_message() -> list[Msg]:
    """Messages using every content block type, metadata, names and awkward text."""
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    return [
        Msg(role="system", content="You are terse."),
        Msg(role="user", content="", name="empty"),
        Msg(
            role="user",
            name="alice",
            content=[
                TextBlock(text="What is in these pictures?"),
                ImageBlock(source=Base64Source(media_type="image/png", data=png)),
                ImageBlock(source=URLSource(url="https://example.com/cat.jpg?size=large&q=1")),
            ],
            metadata={
                "lang": "en",
                "tags": ["a", "b"],
                "nested": {"n": 1, "x": 2.5, "ok": True, "none": None},
            },
        ),
        Msg(
            role="assistant",
            name="bot",
            content=[
                ThinkingBlock(thinking="The user wants a description.", signature="sig-abc=="),
                ThinkingBlock(thinking="no signature"),
                TextBlock(text="Let me look."),
                ToolUseBlock(
                    id="call_1", name="describe", input={"index": 0, "detail": ["high"], "opts": {}}
                ),
                ToolUseBlock(id="call_2", name="describe", raw_input='{"index": 1,'),
            ],
            metadata={"structured_output": {"answer": 42}},
        ),
        Msg(
            role="tool",
            content=[
                ToolResultBlock(id="call_1", name="describe", output="a cat"),
                ToolResultBlock(
                    id="call_2",
                    name="describe",
                    output=[
                        TextBlock(text="arguments did not parse"),
                        ImageBlock(source=Base64Source(media_type="image/png", data=png)),
                        ImageBlock(source=URLSource(url="file:///tmp/x.png")),
                    ],
                    is_error=True,
                ),
            ],
        ),
        Msg(
            role="user",
            name="ユーザー",
            content=(
                'héllo 世界 🌍🚀 مرحبا \u200b zero-width, tab\t, newline\n, quote " backslash \\ nul \x00 end'
            ),
            metadata={"emoji": "🧪", "键": "值", "big": 2**53, "neg": -1e-300},
        ),
        Msg(role="assistant", content="precise timestamp", timestamp=1_700_000_000.123456789),
    ]


async def test_add_and_get_keep_order(memory: MemoryBase) -> None:
    a, b, c, d = user("a"), user("b"), user("c"), user("d")
    await memory.add(a)
    await memory.add([b, c])
    await memory.add(None)
    await memory.add([])
    await memory.add((d,))
    assert await memory.get() == [a, b, c, d]
    assert await memory.size() == 4


async def test_empty_memory(memory: MemoryBase) -> None:
    assert await memory.get() == []
    assert await memory.get(limit=3) == []
    assert await memory.size() == 0
    assert await memory.delete(["nope"]) == 0
    await memory.clear()
    assert await memory.size() == 0


async def test_get_limit_returns_the_last_n_oldest_first(memory: MemoryBase) -> None:
    msgs = [user(str(i)) for i in range(5)]
    await memory.add(msgs)
    assert await memory.get(limit=2) == msgs[3:]
    assert await memory.get(limit=1) == msgs[4:]
    assert await memory.get(limit=5) == msgs
    assert await memory.get(limit=100) == msgs
    assert await memory.get(limit=0) == []
    assert await memory.get(limit=None) == msgs
    with pytest.raises(ValueError, match="limit"):
        await memory.get(limit=-1)


async def test_get_returns_a_new_list_each_time(memory: MemoryBase) -> None:
    await memory.add([user("a"), user("b")])
    got = await memory.get()
    got.clear()
    got.append(user("intruder"))
    limited = await memory.get(limit=1)
    limited.pop()
    assert [m.text for m in await memory.get()] == ["a", "b"]


async def test_delete_by_id(memory: MemoryBase) -> None:
    msgs = [user(str(i)) for i in range(5)]
    await memory.add(msgs)
    assert await memory.delete([msgs[1].id, msgs[3].id, "unknown-id"]) == 2
    assert await memory.get() == [msgs[0], msgs[2], msgs[4]]
    assert await memory.delete([msgs[1].id]) == 0
    assert await memory.delete([]) == 0
    assert await memory.size() == 3


async def test_delete_refuses_a_bare_string(memory: MemoryBase) -> None:
    msg = user("a")
    await memory.add(msg)
    with pytest.raises(TypeError, match="list"):
        await memory.delete(msg.id)
    assert await memory.size() == 1


async def test_delete_many_ids_at_once(memory: MemoryBase) -> None:
    msgs = [user(str(i)) for i in range(1200)]
    await memory.add(msgs)
    assert await memory.delete([m.id for m in msgs[:1100]]) == 1100
    assert await memory.get() == msgs[1100:]


async def test_the_same_message_added_twice_is_kept_twice(memory: MemoryBase) -> None:
    msg = user("echo")
    await memory.add([msg, user("between"), msg])
    assert [m.text for m in await memory.get()] == ["echo", "between", "echo"]
    assert await memory.delete([msg.id]) == 2
    assert [m.text for m in await memory.get()] == ["between"]


async def test_clear(memory: MemoryBase) -> None:
    await memory.add([user("a"), user("b")])
    await memory.clear()
    assert await memory.get() == []
    assert await memory.size() == 0
    c = user("c")
    await memory.add(c)
    assert await memory.get() == [c]


async def test_add_rejects_what_is_not_a_msg(memory: MemoryBase) -> None:
    with pytest.raises(TypeError, match="str"):
        await memory.add("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dict"):
        await memory.add({"role": "user", "content": "hi"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        await memory.add([user("ok"), 3])  # type: ignore[list-item]
    assert await memory.size() == 0, "a batch with a bad item must add nothing"


async def test_every_content_block_type_round_trips(make_memory: MemoryFactory) -> None:
    msgs = every_kind_of_message()
    writer = make_memory("roundtrip")
    await writer.add(msgs)
    got = await writer.get()
    assert got == msgs
    for original, back in zip(got, msgs, strict=True):
        assert back.model_dump_json() == original.model_dump_json()
        assert type(back.content) is type(original.content)
    # And through a state dict written as JSON text, as an agent checkpoint would be.
    state = json.loads(json.dumps(writer.state_dict()))
    reader = make_memory("other")
    reader.load_state_dict(state)
    assert await reader.get() == msgs


async def test_sessions_are_isolated(make_memory: MemoryFactory) -> None:
    alice, bob = make_memory("alice"), make_memory("bob")
    assert (alice.session_id, bob.session_id) == ("alice", "bob")
    a1, a2, b1 = user("a1"), user("a2"), user("b1")
    await alice.add(a1)
    await bob.add(b1)
    await alice.add(a2)
    assert await alice.get() == [a1, a2]
    assert await bob.get() == [b1]
    assert await alice.delete([b1.id]) == 0
    await alice.clear()
    assert await bob.get() == [b1]
    assert await alice.size() == 0


async def test_state_dict_restores_into_a_fresh_memory(make_memory: MemoryFactory) -> None:
    source = make_memory("checkpointed")
    msgs = [user(str(i)) for i in range(3)]
    await source.add(msgs)
    state = source.state_dict()
    assert state["session_id"] == "checkpointed"
    assert json.loads(json.dumps(state)) == state, "state must be JSON-safe"

    target = make_memory("something-else")
    await target.add(user("forgotten on restore"))
    target.load_state_dict(json.loads(json.dumps(state)))
    assert target.session_id == "checkpointed"
    assert await target.get() == msgs
    assert await target.size() == 3
    assert target.state_dict() == state


async def test_load_state_dict_rejects_foreign_state(memory: MemoryBase) -> None:
    await memory.add(user("kept"))
    backend = memory.state_dict()["backend"]
    for bad in (
        {},
        {"backend": "no-such-backend", "session_id": "s"},
        {"backend": backend},
        {"backend": backend, "session_id": ""},
    ):
        with pytest.raises(SessionError):
            memory.load_state_dict(bad)
    assert memory.session_id == "default"
    assert [m.text for m in await memory.get()] == ["kept"]


async def test_session_id_must_be_a_non_empty_string(make_memory: MemoryFactory) -> None:
    with pytest.raises(ValueError, match="session_id"):
        make_memory("")


async def test_concurrent_adds_from_many_tasks_lose_nothing(memory: MemoryBase) -> None:
    n_tasks, per_task = 40, 25
    sent: dict[int, list[Msg]] = {t: [] for t in range(n_tasks)}

    async def writer(t: int) -> None:
        for i in range(per_task):
            msg = Msg(role="assistant", content=f"{t}:{i}", metadata={"task": t})
            sent[t].append(msg)
            if i % 5 == 4:
                # Some batches too: a batch stays contiguous and in order.
                batch = [
                    Msg(role="assistant", content=f"{t}:{i}:{j}", metadata={"task": t}) for j in range(3)
                ]
                sent[t].extend(batch)
                await memory.add([msg, *batch])
            else:
                await memory.add(msg)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for t in range(n_tasks):
            tg.start_soon(writer, t)

    got = await memory.get()
    total = sum(len(v) for v in sent.values())
    assert len(got) == total == await memory.size()
    assert {m.id for m in got} == {m.id for v in sent.values() for m in v}
    for t, msgs in sent.items():
        assert [m for m in got if m.metadata["task"] == t] == msgs, f"task {t} lost its order"


async def test_async_with_closes_and_is_reusable(make_memory: MemoryFactory) -> None:
    mem = make_memory("ctx")
    async with mem as opened:
        assert opened is mem
        await mem.add(user("inside"))
    await mem.aclose()  # idempotent
    assert [m.text for m in await mem.get()] == ["inside"]
