"""Human approval on a ReActAgent: approve, edit the arguments or reject each waiting call, also from a fresh agent
in a new process that restores the paused state from JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from agentscope.agents import ApprovalDecision, ReActAgent
from agentscope.events import ReplyEvent, ToolCallEvent, ToolResultEvent
from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit, require_approval
from agentscope.types import ChatResponse


def delete_file(path: str, keep_backup: bool = False) -> str:
    """Delete a file.

    Args:
        path: The file to delete.
        keep_backup: Keep a copy next to it.
    """
    require_approval(f"deleting {Path(path).name}")
    target = Path(path)
    with (target.parent / "runs.log").open("a") as log:  # every run, so a test can count them
        log.write(f"{target.name}\n")
    target.unlink()
    return f"deleted {target.name}"


def cleaner_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """Asked ``delete P1 P2 ...``, calls delete_file once per path (ids d1, d2..., counting on across requests);
    shown the results, repeats them."""
    last = messages[-1]
    if last.role == "user":
        done = sum(len(m.blocks_of(ToolUseBlock)) for m in messages)
        paths = last.text.split()[1:]
        return ChatResponse(
            content=[
                tool_call("delete_file", _id=f"d{done + i}", path=p) for i, p in enumerate(paths, start=1)
            ]
        )
    asked = max(i for i, m in enumerate(messages) if m.role == "user")
    results = [r for m in messages[asked:] for r in m.blocks_of(ToolResultBlock)]
    return " | ".join(f"{r.id}: {_text(r)}" for r in sorted(results, key=lambda r: r.id))


def _text(result: ToolResultBlock) -> str:
    output = result.output
    return output if isinstance(output, str) else "".join(b.text for b in output if isinstance(b, TextBlock))


def build_agent() -> ReActAgent:
    """The factory, also loaded by the subprocess through the agent spec ``<this file>:build_agent``."""
    toolkit = Toolkit()
    toolkit.register(delete_file)
    return ReActAgent(
        "cleaner", "You delete files when asked.", FunctionModel(cleaner_model), toolkit=toolkit
    )


def files(tmp_path: Path, *names: str) -> list[str]:
    for name in names:
        (tmp_path / name).write_text(name)
    return [str(tmp_path / name) for name in names]


def remaining(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("?.txt"))


def runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "runs.log"
    return log.read_text().split() if log.exists() else []


async def assert_every_call_answered_once(agent: ReActAgent) -> None:
    history = await agent.memory.get()
    calls = [b.id for m in history for b in m.blocks_of(ToolUseBlock)]
    results = [b.id for m in history for b in m.blocks_of(ToolResultBlock)]
    assert sorted(calls) == sorted(results)
    assert len(set(results)) == len(results)


RESUME = """
import asyncio, json, sys
from agentscope.agents import build_agent, load_agent_factory
from agentscope.message import ToolResultBlock, ToolUseBlock
from agentscope.types import ApprovalDecision

async def main():
    spec, state_file, decisions_file = sys.argv[1:]
    agent = await build_agent(load_agent_factory(spec))
    agent.load_state_dict(json.loads(open(state_file).read()))
    decisions = [ApprovalDecision.model_validate(d) for d in json.loads(open(decisions_file).read())]
    reply = await agent(decisions=decisions)
    history = await agent.memory.get()
    print(json.dumps({
        "reply": reply.text,
        "pending": len(agent.pending_approvals),
        "calls": [b.id for m in history for b in m.blocks_of(ToolUseBlock)],
        "results": [b.id for m in history for b in m.blocks_of(ToolResultBlock)],
    }))

asyncio.run(main())
"""


async def test_a_paused_agent_resumes_in_a_new_process_with_approve_edit_and_reject(tmp_path: Path) -> None:
    a, b, c, d = files(tmp_path, "a.txt", "b.txt", "c.txt", "d.txt")
    agent = build_agent()
    paused = await agent(Msg(role="user", content=f"delete {a} {b} {d}"))
    assert paused.metadata["approval_required"] == [
        {"id": "d1", "name": "delete_file", "input": {"path": a}, "reason": "deleting a.txt"},
        {"id": "d2", "name": "delete_file", "input": {"path": b}, "reason": "deleting b.txt"},
        {"id": "d3", "name": "delete_file", "input": {"path": d}, "reason": "deleting d.txt"},
    ]
    assert "delete_file (deleting a.txt)" in paused.text
    assert runs(tmp_path) == []
    state = json.dumps(agent.state_dict())  # plain JSON: what a session store keeps
    (tmp_path / "state.json").write_text(state)
    decisions = [
        {"call_id": "d1", "action": "approve"},
        {"call_id": "d2", "action": "edit", "arguments": {"path": c}, "reason": "b.txt is still needed"},
        {"call_id": "d3", "action": "reject", "reason": "d.txt is the only copy"},
    ]
    (tmp_path / "decisions.json").write_text(json.dumps(decisions))

    done = await anyio.run_process(
        [
            sys.executable,
            "-c",
            RESUME,
            f"{__file__}:build_agent",
            str(tmp_path / "state.json"),
            str(tmp_path / "decisions.json"),
        ],
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    out = json.loads(done.stdout)

    assert sorted(runs(tmp_path)) == ["a.txt", "c.txt"]  # each ran once; the rejected call never ran
    assert remaining(tmp_path) == ["b.txt", "d.txt"]
    assert out["pending"] == 0
    assert sorted(out["calls"]) == sorted(out["results"]) == ["d1", "d2", "d3"]
    replies = dict(part.split(": ", 1) for part in out["reply"].split(" | "))
    assert replies["d1"] == "deleted a.txt"
    assert replies["d2"] == (
        f"[A human changed the arguments to {json.dumps({'path': c})}: b.txt is still needed]\ndeleted c.txt"
    )
    assert replies["d3"] == "A human refused this call: d.txt is the only copy"


async def test_invalid_decisions_are_refused_naming_the_problem_and_change_nothing(tmp_path: Path) -> None:
    (a,) = files(tmp_path, "a.txt")
    agent = build_agent()
    await agent(Msg(role="user", content=f"delete {a}"))
    before = json.dumps(agent.state_dict())

    bad: list[tuple[list[ApprovalDecision], str]] = [
        (
            [ApprovalDecision(call_id="nope", action="approve")],
            "no tool call 'nope' waits for approval (waiting: 'd1')",
        ),
        (
            [ApprovalDecision(call_id="d1", action="edit", arguments={"path": a, "force": True})],
            "unexpected argument 'force'",
        ),
        (
            [ApprovalDecision(call_id="d1", action="edit", arguments={"keep_backup": True})],
            "missing required argument 'path'",
        ),
        (
            [ApprovalDecision(call_id="d1", action="edit", arguments={"path": ["a"]})],
            "path: Input should be a valid string",
        ),
        (
            [
                ApprovalDecision(call_id="d1", action="approve"),
                ApprovalDecision(call_id="d1", action="reject"),
            ],
            "call 'd1' has more than one decision",
        ),
    ]
    for decisions, problem in bad:
        with pytest.raises(ValueError) as refused:
            await agent(decisions=decisions)
        assert problem in str(refused.value)
        assert json.dumps(agent.state_dict()) == before  # still paused, nothing recorded
    with pytest.raises(ValueError, match="has no tool call waiting"):
        await build_agent()(decisions=[ApprovalDecision(call_id="d1", action="approve")])
    assert runs(tmp_path) == []

    done = await agent(decisions=[ApprovalDecision(call_id="d1", action="edit", arguments={"path": a})])
    assert runs(tmp_path) == ["a.txt"]
    assert done.text.endswith("deleted a.txt")
    await assert_every_call_answered_once(agent)


def test_a_decision_says_what_it_needs() -> None:
    with pytest.raises(ValidationError, match="action 'edit' of call 'd1' needs the new 'arguments'"):
        ApprovalDecision(call_id="d1", action="edit")
    with pytest.raises(ValidationError, match="'arguments' are only for action 'edit'"):
        ApprovalDecision(call_id="d1", action="approve", arguments={"path": "x"})
    with pytest.raises(ValidationError, match="action"):
        ApprovalDecision.model_validate({"call_id": "d1", "action": "maybe"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ApprovalDecision.model_validate({"call_id": "d1", "action": "approve", "why": "ok"})


async def test_short_forms_and_unmentioned_calls(tmp_path: Path) -> None:
    a, b = files(tmp_path, "a.txt", "b.txt")
    agent = build_agent()
    await agent(Msg(role="user", content=f"delete {a} {b}"))
    done = await agent(approve=["d1"])  # d2 unmentioned: refused
    assert runs(tmp_path) == ["a.txt"]
    assert done.text == "d1: deleted a.txt | d2: A human refused this call."
    await assert_every_call_answered_once(agent)

    # The short forms and decisions mix; naming one call twice is refused.
    c, d = files(tmp_path, "c.txt", "d.txt")
    await agent(Msg(role="user", content=f"delete {c} {d}"))
    with pytest.raises(ValueError, match="call 'd3' has more than one decision"):
        await agent(deny=["d3"], decisions=[ApprovalDecision(call_id="d3", action="approve")])
    done = await agent(
        deny=["d3"], decisions=[ApprovalDecision(call_id="d4", action="approve", reason="fine")]
    )
    assert (
        done.text == "d3: A human refused this call. | d4: [A human approved this call: fine]\ndeleted d.txt"
    )
    assert runs(tmp_path) == ["a.txt", "d.txt"]
    await assert_every_call_answered_once(agent)


async def test_streaming_a_resumed_reply_sends_each_result_once_and_no_waiting_result(tmp_path: Path) -> None:
    a, b = files(tmp_path, "a.txt", "b.txt")
    agent = build_agent()
    first = [event async for event in agent.stream(Msg(role="user", content=f"delete {a} {b}"))]
    assert [e.call.id for e in first if isinstance(e, ToolCallEvent)] == ["d1", "d2"]
    assert not [e for e in first if isinstance(e, ToolResultEvent)]  # no result until a human decides
    decisions = [
        ApprovalDecision(call_id="d1", action="reject", reason="no"),
        ApprovalDecision(call_id="d2", action="approve"),
    ]
    second = [event async for event in agent.stream(decisions=decisions)]
    assert not [e for e in second if isinstance(e, ToolCallEvent)]  # announced when they began to wait
    results: dict[str, Any] = {e.result.id: e.result.output for e in second if isinstance(e, ToolResultEvent)}
    assert results == {"d1": "A human refused this call: no", "d2": "deleted b.txt"}
    reply = second[-1]
    assert isinstance(reply, ReplyEvent)
    assert reply.msg.text == "d1: A human refused this call: no | d2: deleted b.txt"
    assert runs(tmp_path) == ["b.txt"]
