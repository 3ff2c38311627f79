"""LongTermMemory: facts recorded in one session are recalled in another, in another process too, per scope;
the agent records and recalls them through its tools."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from agentscope.agents import ReActAgent
from agentscope.knowledge import KnowledgeBase, LongTermMemory
from agentscope.message import Msg, ToolResultBlock
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit

_RECALL_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from agentscope.knowledge import LongTermMemory

    async def main() -> None:
        async with LongTermMemory(sys.argv[1], scope="user:alice") as ltm:
            facts = await ltm.recall(sys.argv[2])
            await ltm.record("Alice moved to Lisbon in 2026.")
        print(json.dumps([f.text for f in facts]))

    asyncio.run(main())
    """
)


async def test_a_new_process_recalls_what_an_earlier_one_recorded(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with LongTermMemory(path, scope="user:alice") as ltm:
        await ltm.record("Alice is allergic to peanuts.")
        await ltm.record("Alice prefers answers in French.")
        await ltm.record("Bob is allergic to cats.", scope="user:bob")
    result = await anyio.run_process(
        [sys.executable, "-c", _RECALL_SCRIPT, str(path), "what is alice allergic to"]
    )
    recalled = json.loads(result.stdout)
    assert recalled[0] == "Alice is allergic to peanuts."
    assert "Bob is allergic to cats." not in recalled  # another scope
    # And what the other process recorded is here now.
    async with LongTermMemory(path, scope="user:alice") as ltm:
        [fact] = await ltm.recall("where does she live? Lisbon")
        assert fact.text == "Alice moved to Lisbon in 2026."
        assert [f.text for f in await ltm.facts()] == [
            "Alice is allergic to peanuts.",
            "Alice prefers answers in French.",
            "Alice moved to Lisbon in 2026.",
        ]


async def test_recording_twice_keeps_one_fact_and_forget_removes_it(tmp_path: Path) -> None:
    async with LongTermMemory(tmp_path / "m.db") as ltm:
        first = await ltm.record("The deploy key rotates monthly.")
        again = await ltm.record("  The deploy key rotates monthly.  ")
        assert again.id == first.id
        assert again.created_at == first.created_at
        assert len(await ltm.facts()) == 1
        assert await ltm.forget(first.id) is True
        assert await ltm.forget(first.id) is False
        assert await ltm.recall("deploy key") == []


async def test_forget_leaves_another_scopes_fact_alone(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    async with (
        LongTermMemory(path, scope="user:alice") as alice,
        LongTermMemory(path, scope="user:bob") as bob,
    ):
        fact = await alice.record("Alice is allergic to peanuts.")
        assert await bob.forget(fact.id) is False
        assert [f.text for f in await alice.facts()] == ["Alice is allergic to peanuts."]
        assert await alice.forget(fact.id) is True
        assert await alice.facts() == []


async def test_memory_and_knowledge_share_one_file(docs_folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with KnowledgeBase(path) as kb, LongTermMemory(path) as ltm:
        await kb.add_folder(docs_folder)
        await ltm.record("The user reads the penguin report every Monday.")
        assert [h.source for h in await kb.search("penguin", limit=1)] == ["report.pdf"]
        assert [f.text for f in await ltm.recall("penguin")] == [
            "The user reads the penguin report every Monday."
        ]


async def test_bad_input_is_refused_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope must be 1 to 200 characters"):
        LongTermMemory(tmp_path / "m.db", scope="")
    async with LongTermMemory(tmp_path / "m.db") as ltm:
        with pytest.raises(ValueError, match="the fact to record is empty"):
            await ltm.record("   ")
        with pytest.raises(ValueError, match="at most 4000 characters, got 4001"):
            await ltm.record("x" * 4001)
        with pytest.raises(ValueError, match="empty"):
            await ltm.recall("...")
        with pytest.raises(ValueError, match="limit must be between 1 and 50"):
            await ltm.recall("x", limit=51)
        assert await ltm.facts() == []


async def test_agent_records_in_one_session_and_recalls_in_the_next(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"

    def agent_with_memory(ltm: LongTermMemory, script: list[object]) -> tuple[ReActAgent, ScriptedModel]:
        toolkit = Toolkit()
        toolkit.register(ltm.record_tool())
        toolkit.register(ltm.recall_tool())
        model = ScriptedModel(script)  # type: ignore[arg-type]
        return ReActAgent(name="assistant", model=model, toolkit=toolkit), model

    async with LongTermMemory(path, scope="user:carol") as ltm:
        agent, model = agent_with_memory(
            ltm,
            [
                tool_call("remember", fact="Carol's favourite colour is teal."),
                tool_call("remember", fact=""),
                "Noted.",
            ],
        )
        await agent(Msg(role="user", content="Remember that my favourite colour is teal."))
        saved, empty = [b for m in model.last_request.messages for b in m.blocks_of(ToolResultBlock)]
        assert str(saved.output).startswith("Recorded fact 1: Carol's favourite colour is teal.")
        assert empty.is_error
        assert "empty" in str(empty.output)
        assert sorted(model.requests[0].tool_names) == ["recall", "remember"]

    async with LongTermMemory(path, scope="user:carol") as ltm:  # a new session
        agent, model = agent_with_memory(ltm, [tool_call("recall", query="favourite colour"), "Teal."])
        reply = await agent(Msg(role="user", content="What is my favourite colour?"))
        [result] = [b for m in model.last_request.messages for b in m.blocks_of(ToolResultBlock)]
        assert reply.text == "Teal."
        assert str(result.output).startswith("- Carol's favourite colour is teal. (fact 1, recorded ")
        model.assert_complete()

    async with LongTermMemory(path, scope="user:dave") as ltm:  # another user sees nothing of Carol's
        assert await ltm.recall_tool()("favourite colour") == "No remembered fact matches 'favourite colour'."
