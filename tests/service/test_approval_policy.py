"""An approval policy behind `agentscope serve`: a call the policy asks about pauses the session, and the human's
decision comes in a later request, after a server restart; a denied call never runs. Through the real ``openai``
client against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, cast

import anyio.to_thread
import openai

from agentscope.agents import ReActAgent
from agentscope.message import ContentBlock, Msg, ToolResultBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import ApprovalPolicy, Toolkit
from agentscope.types import ChatResponse

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL."""

SESSION = {"X-Session-Id": "ops-1"}

POLICY_YAML = r"""
rules:
  - tool: shell
    arguments: {command: 're:\brm\b'}
    action: deny
    reason: no deleting
  - tool: shell
    arguments: {command: 'deploy *'}
    action: ask
    reason: deploys need a human
default_action: allow
"""


def model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """``run C1; C2; ...`` -> one ``shell`` call per command (ids c1, c2...); shown the results -> lists them."""
    last = messages[-1]
    if last.role == "user":
        commands = last.text.removeprefix("run ").split("; ")
        calls: list[ContentBlock] = [
            tool_call("shell", _id=f"c{i}", command=c) for i, c in enumerate(commands, start=1)
        ]
        return ChatResponse(content=calls)
    asked = max(i for i, m in enumerate(messages) if m.role == "user")
    results = sorted((r for m in messages[asked:] for r in m.blocks_of(ToolResultBlock)), key=lambda r: r.id)
    return " | ".join(f"{r.id}: {r.output}" for r in results)


class Ops:
    def __init__(self, policy: ApprovalPolicy) -> None:
        self.policy = policy
        self.ran: list[str] = []

    def factory(self) -> ReActAgent:
        ran = self.ran

        def shell(command: str) -> str:
            """Run a shell command.

            Args:
                command: The command line.
            """
            ran.append(command)
            return f"ran {command}"

        toolkit = Toolkit(approval_policy=self.policy)
        toolkit.register(shell)
        return ReActAgent("ops", model=FunctionModel(model), toolkit=toolkit)


def extension(answer: Any) -> dict[str, Any]:
    return cast("dict[str, Any]", (answer.choices[0].message.model_extra or {})["agentscope"])


async def test_a_policy_ask_pauses_the_session_and_the_decision_comes_after_a_restart(
    serving: Serving, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY_YAML)
    policy = await anyio.to_thread.run_sync(ApprovalPolicy.from_file, tmp_path / "policy.yaml")
    ops = Ops(policy)
    async with serving(ops.factory) as base_url, openai.AsyncOpenAI(base_url=base_url, api_key="-") as client:
        paused = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "run deploy prod; rm -rf /srv; ls /srv"}],
            extra_headers=SESSION,
        )
    assert ops.ran == ["ls /srv"]  # the denied call never ran; the asked one waits
    assert (
        paused.choices[0].message.content == "I need approval before running: shell (deploys need a human)."
    )
    assert extension(paused)["approval_required"] == [
        {
            "call_id": "c1",
            "name": "shell",
            "arguments": {"command": "deploy prod"},
            "reason": "deploys need a human",
        }
    ]

    async with serving(ops.factory) as base_url, openai.AsyncOpenAI(base_url=base_url, api_key="-") as client:
        done = await client.chat.completions.create(
            model="m",
            messages=[],
            extra_headers=SESSION,
            extra_body={"agentscope": {"approvals": [{"call_id": "c1", "action": "approve"}]}},
        )
    assert ops.ran == ["ls /srv", "deploy prod"]  # approved once, run once, not asked again
    assert done.choices[0].message.content == (
        "c1: ran deploy prod | c2: denied by policy: no deleting | c3: ran ls /srv"
    )
    assert "approval_required" not in extension(done)
    assert [(s["id"], s["output"]) for s in extension(done)["steps"]] == [("c1", "ran deploy prod")]


def test_the_policy_example_in_the_docs_loads() -> None:
    """docs/approvals.md's YAML example is the one this test serves."""
    docs = (Path(__file__).parents[2] / "docs" / "approvals.md").read_text()
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = ApprovalPolicy.from_yaml(example)
    assert policy.decide("shell", {"command": "sudo rm -rf /"})[0] == "deny"
    assert policy.decide("shell", {"command": "deploy prod"}) == ("ask", "deploys need a human")
    assert policy.decide("shell", {"command": "ls -l"})[0] == "allow"
    assert policy.decide("write_file", {"path": "/etc/hosts", "content": ""})[0] == "ask"
    assert policy.decide("write_file", {"path": "notes.txt", "content": ""})[0] == "allow"
