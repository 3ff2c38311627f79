"""Rule-based approval policies on a Toolkit: allow, ask or deny each call by tool name and argument pattern; an
asked call pauses a ReActAgent exactly as ``require_approval`` does, and a denied one never runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from agentscope.agents import ApprovalDecision, ReActAgent
from agentscope.exceptions import ApprovalRequired, ConfigError
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import (
    ApprovalPolicy,
    ApprovalRule,
    MCPClient,
    StdioServer,
    Toolkit,
    approved_calls,
    require_approval,
)
from agentscope.types import ChatResponse


class Host:
    """Tools that record each run, so a test can tell which calls really ran (and how often)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, dict[str, Any]]] = []
        self.seen: dict[str, ToolResultBlock] = {}
        """The tool results the model was shown, by call id."""

    def toolkit(self, policy: ApprovalPolicy | None = None) -> Toolkit:
        runs = self.runs

        def shell(command: str, timeout: int = 10) -> str:
            """Run a shell command.

            Args:
                command: The command line.
                timeout: Seconds it may take.
            """
            runs.append(("shell", {"command": command, "timeout": timeout}))
            return f"ran {command}"

        def write_file(path: str, content: str, tags: list[str] | None = None) -> str:
            """Write a file.

            Args:
                path: Where.
                content: What.
                tags: Labels.
            """
            runs.append(("write_file", {"path": path, "content": content}))
            return f"wrote {path}"

        def remove(path: str) -> str:
            """Remove a file; always asks a human first.

            Args:
                path: The file.
            """
            require_approval(f"removing {path}")
            runs.append(("remove", {"path": path}))
            return f"removed {path}"

        toolkit = Toolkit(approval_policy=policy)
        for tool in (shell, write_file, remove):
            toolkit.register(tool)
        return toolkit

    def model(self, messages: list[Msg], request: ModelRequest) -> ScriptItem:
        """A user message holding a JSON list of ``[tool, arguments]`` -> those calls (ids c1, c2... counting on
        across the conversation); shown their results -> an answer listing them."""
        last = messages[-1]
        if last.role == "user":
            done = sum(len(m.blocks_of(ToolUseBlock)) for m in messages)
            wanted: list[tuple[str, dict[str, Any]]] = json.loads(last.text)
            return ChatResponse(
                content=[
                    tool_call(name, _id=f"c{done + i}", **args)
                    for i, (name, args) in enumerate(wanted, start=1)
                ]
            )
        asked = max(i for i, m in enumerate(messages) if m.role == "user")
        results = sorted(
            (r for m in messages[asked:] for r in m.blocks_of(ToolResultBlock)), key=lambda r: r.id
        )
        self.seen.update((r.id, r) for r in results)
        return " | ".join(f"{r.id}: {r.output}" for r in results)

    def agent(self, policy: ApprovalPolicy | None = None) -> ReActAgent:
        return ReActAgent("ops", model=FunctionModel(self.model), toolkit=self.toolkit(policy))


def waiting(reply: Msg) -> list[dict[str, Any]]:
    """The calls a paused reply lists as waiting for approval."""
    return cast("list[dict[str, Any]]", reply.metadata["approval_required"])


def calls(*wanted: tuple[str, dict[str, Any]]) -> Msg:
    return Msg(role="user", content=json.dumps(list(wanted)))


POLICY = ApprovalPolicy(
    rules=(
        ApprovalRule(tool="shell", arguments={"command": r"re:\brm\b"}, action="deny", reason="no deleting"),
        ApprovalRule(tool="shell", arguments={"command": "ls*"}, action="allow"),
        ApprovalRule(tool="write_file", arguments={"path": "/etc/shadow"}, action="deny"),
        ApprovalRule(tool="write_file", arguments={"path": "/etc/*"}, action="ask", reason="system config"),
        ApprovalRule(tool="shell", action="ask"),
    )
)


async def test_a_denied_call_never_runs_and_the_model_sees_why() -> None:
    host = Host()
    reply = await host.agent(POLICY)(
        calls(("shell", {"command": "rm -rf /srv"}), ("shell", {"command": "ls -l /srv"}))
    )
    assert host.runs == [("shell", {"command": "ls -l /srv", "timeout": 10})]
    assert reply.text == "c1: denied by policy: no deleting | c2: ran ls -l /srv"
    assert host.seen["c1"].is_error
    assert not host.seen["c2"].is_error
    assert "approval_required" not in reply.metadata


async def test_an_asked_call_pauses_and_an_approval_runs_it_once_without_asking_again() -> None:
    host = Host()
    agent = host.agent(POLICY)
    paused = await agent(
        calls(("write_file", {"path": "/etc/hosts", "content": "x"}), ("shell", {"command": "ls"}))
    )
    assert paused.metadata["approval_required"] == [
        {
            "id": "c1",
            "name": "write_file",
            "input": {"path": "/etc/hosts", "content": "x"},
            "reason": "system config",
        }
    ]
    assert paused.text == "I need approval before running: write_file (system config)."
    # The allowed call ran; the asked one waits.
    assert host.runs == [("shell", {"command": "ls", "timeout": 10})]
    assert [c.id for c in agent.pending_approvals] == ["c1"]

    done = await agent(approve=["c1"])
    assert done.text == "c1: wrote /etc/hosts | c2: ran ls"  # c2's result came before the pause
    assert "approval_required" not in done.metadata
    assert host.runs[1:] == [("write_file", {"path": "/etc/hosts", "content": "x"})]
    assert agent.pending_approvals == []
    with pytest.raises(ValueError, match="has no tool call waiting for approval"):
        await agent(approve=["c1"])
    assert len(host.runs) == 2  # ran once


async def test_edit_and_reject_decisions_on_calls_the_policy_asked_about() -> None:
    host = Host()
    agent = host.agent(POLICY)
    paused = await agent(
        calls(("write_file", {"path": "/etc/motd", "content": "hi"}), ("shell", {"command": "make deploy"}))
    )
    assert [(c["id"], c["reason"]) for c in waiting(paused)] == [
        ("c1", "system config"),
        ("c2", "rule 4 for 'shell'"),  # a rule without a reason names itself
    ]
    done = await agent(
        decisions=[
            ApprovalDecision(call_id="c1", action="edit", arguments={"path": "/tmp/motd", "content": "hi"}),
            ApprovalDecision(call_id="c2", action="reject", reason="not on a Sunday"),
        ]
    )
    assert host.runs == [("write_file", {"path": "/tmp/motd", "content": "hi"})]
    assert done.text == (
        'c1: [A human changed the arguments to {"path": "/tmp/motd", "content": "hi"}]\nwrote /tmp/motd'
        " | c2: A human refused this call: not on a Sunday"
    )


async def test_an_approval_does_not_lift_a_deny_an_edit_runs_into() -> None:
    host = Host()
    agent = host.agent(POLICY)
    await agent(calls(("write_file", {"path": "/etc/motd", "content": "hi"})))
    done = await agent(
        decisions=[
            ApprovalDecision(
                call_id="c1", action="edit", arguments={"path": "/etc/shadow", "content": "root::0"}
            )
        ]
    )
    assert host.runs == []
    assert "denied by policy: rule 2 for 'write_file'" in done.text
    assert host.seen["c1"].is_error


async def test_allow_does_not_override_a_tool_that_asks_itself() -> None:
    host = Host()
    agent = host.agent(ApprovalPolicy(rules=(ApprovalRule(tool="*", action="allow"),)))
    paused = await agent(calls(("remove", {"path": "a.txt"})))
    assert [c["reason"] for c in waiting(paused)] == ["removing a.txt"]
    assert host.runs == []
    assert (await agent(approve=["c1"])).text == "c1: removed a.txt"
    assert host.runs == [("remove", {"path": "a.txt"})]


async def test_the_paused_state_of_a_policy_ask_resumes_in_a_fresh_agent() -> None:
    host = Host()
    first = host.agent(POLICY)
    await first(calls(("shell", {"command": "make deploy"})))
    state = json.loads(json.dumps(first.state_dict()))
    fresh = host.agent(POLICY)
    fresh.load_state_dict(state)
    done = await fresh(approve=["c1"])
    assert done.text == "c1: ran make deploy"
    assert host.runs == [("shell", {"command": "make deploy", "timeout": 10})]


def policy_of(*rules: tuple[str, dict[str, str], str], default: str = "allow") -> ApprovalPolicy:
    return ApprovalPolicy.model_validate(
        {"rules": [{"tool": t, "arguments": a, "action": x} for t, a, x in rules], "default_action": default}
    )


async def outcome(toolkit: Toolkit, name: str, **arguments: Any) -> str:
    """``ran``, ``ask: <reason>`` or the error the model sees."""
    try:
        result = await toolkit.call(ToolUseBlock(id="t", name=name, input=arguments))
    except ApprovalRequired as exc:
        return f"ask: {exc.reason}"
    return "ran" if not result.is_error else str(result.output)


async def test_the_first_matching_rule_wins() -> None:
    allow_ls_first = Host().toolkit(policy_of(("shell", {"command": "ls *"}, "allow"), ("shell", {}, "deny")))
    deny_first = Host().toolkit(policy_of(("shell", {}, "deny"), ("shell", {"command": "ls *"}, "allow")))
    assert await outcome(allow_ls_first, "shell", command="ls -l") == "ran"
    assert await outcome(allow_ls_first, "shell", command="cat x") == "denied by policy: rule 1 for 'shell'"
    assert await outcome(deny_first, "shell", command="ls -l") == "denied by policy: rule 0 for 'shell'"


async def test_the_default_action_applies_when_no_rule_matches() -> None:
    host = Host()
    toolkit = host.toolkit()
    assert await outcome(toolkit, "shell", command="reboot") == "ran"  # no policy
    toolkit.approval_policy = ApprovalPolicy()  # an empty policy allows everything, as before
    assert await outcome(toolkit, "shell", command="reboot") == "ran"
    toolkit.approval_policy = policy_of(("write_file", {}, "allow"), default="deny")
    assert (
        await outcome(toolkit, "shell", command="reboot")
        == "denied by policy: no rule matched (default action)"
    )
    assert await outcome(toolkit, "write_file", path="a", content="b") == "ran"
    toolkit.approval_policy = policy_of(default="ask")
    assert await outcome(toolkit, "shell", command="reboot") == "ask: no rule matched (default action)"
    with approved_calls():  # a call a human approved is not asked again
        assert await outcome(toolkit, "shell", command="reboot") == "ran"
    assert [name for name, _ in host.runs] == ["shell", "shell", "write_file", "shell"]


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("ls*", "ls -l", True),
        ("ls*", "sudo ls", False),  # a glob matches the whole text
        ("LS*", "ls", False),  # case-sensitive
        ("/etc/*", "/etc/ssh/sshd_config", True),  # '*' crosses '/'
        ("re:rm\\s", "sudo rm -rf /", True),  # a regex matches anywhere
        ("re:^rm\\s", "sudo rm -rf /", False),
        ("30", 30, True),  # non-string arguments are matched on their JSON form
        ("re:^[0-9]{3,}$", 30, False),
        ("true", True, True),
        ('[[]"a", "b"]', ["a", "b"], True),  # '[' opens a set in a glob: '[[]' is a literal one
        ('["a", "b"]', ["a", "b"], False),
        ("*secret*", ["public", "secret"], True),
    ],
)
async def test_argument_patterns(pattern: str, value: object, matches: bool) -> None:
    name = "write_file" if isinstance(value, list) else "shell"
    arg = {"shell": "timeout" if not isinstance(value, str) else "command", "write_file": "tags"}[name]
    arguments: dict[str, Any] = {
        "shell": {"command": "x", "timeout": 1},
        "write_file": {"path": "p", "content": "c"},
    }[name]
    toolkit = Host().toolkit(policy_of((name, {arg: pattern}, "deny")))
    assert (await outcome(toolkit, name, **{**arguments, arg: value}) != "ran") is matches


async def test_an_argument_the_call_leaves_out_matches_nothing() -> None:
    toolkit = Host().toolkit(policy_of(("shell", {"timeout": "*"}, "deny")))
    assert await outcome(toolkit, "shell", command="ls") == "ran"  # timeout defaults to 10, but was not sent
    assert (await outcome(toolkit, "shell", command="ls", timeout=10)).startswith("denied by policy")


async def test_arguments_that_do_not_fit_are_refused_before_the_policy_is_asked() -> None:
    toolkit = Host().toolkit(policy_of(default="ask"))
    assert "missing required argument 'command'" in await outcome(toolkit, "shell")


async def test_a_streamed_call_is_asked_and_denied_like_any_other() -> None:
    toolkit = Host().toolkit(POLICY)
    denied = [
        item async for item in toolkit.stream(ToolUseBlock(id="s", name="shell", input={"command": "rm x"}))
    ]
    assert denied == [
        ToolResultBlock(id="s", name="shell", output="denied by policy: no deleting", is_error=True)
    ]
    with pytest.raises(ApprovalRequired, match="rule 4 for 'shell'"):
        async for _ in toolkit.stream(ToolUseBlock(id="s", name="shell", input={"command": "make"})):
            pass


def test_a_policy_loads_from_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "default_action: ask\n"
        "rules:\n"
        "  - tool: 'shell'\n"
        "    arguments: {command: 're:\\brm\\b'}\n"
        "    action: deny\n"
        "    reason: no deleting\n"
        "  - {tool: 'read_*', action: allow}\n"
    )
    (tmp_path / "policy.json").write_text(
        json.dumps(
            {
                "default_action": "ask",
                "rules": [
                    {
                        "tool": "shell",
                        "arguments": {"command": r"re:\brm\b"},
                        "action": "deny",
                        "reason": "no deleting",
                    },
                    {"tool": "read_*", "action": "allow"},
                ],
            }
        )
    )
    from_yaml = ApprovalPolicy.from_file(tmp_path / "policy.yaml")
    assert ApprovalPolicy.from_file(tmp_path / "policy.json") == from_yaml
    assert from_yaml.decide("shell", {"command": "rm -f a"}) == ("deny", "no deleting")
    assert from_yaml.decide("shell", {"command": "rmdir a"}) == ("ask", "no rule matched (default action)")
    assert from_yaml.decide("read_file", {}) == ("allow", "rule 1 for 'read_*'")
    assert ApprovalPolicy.from_yaml("") == ApprovalPolicy()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: [{tool: shell, action: maybe}]", "rules.0.action: Input should be 'allow', 'ask' or 'deny'"),
        (
            "rules: [{tool: a, action: allow}, {tool: shell, arguments: {command: 're:(rm'}, action: deny}]",
            "rules.1.arguments.command: invalid regular expression 're:(rm': missing ), unterminated subpattern",
        ),
        ("rules: [{tool: 're:*'}]", "rules.0.tool: invalid regular expression 're:*'"),
        ("rules: [{tool: 're:*'}]", "rules.0.action: Field required"),
        ("rules: [{tools: shell, action: ask}]", "rules.0.tools: unknown field"),
        ("default_action: never", "default_action: Input should be 'allow', 'ask' or 'deny'"),
        (
            "rules: [{tool: shell, arguments: {command: 3}, action: ask}]",
            "rules.0.arguments.command: Input should be",
        ),
        ("- tool: shell", "must be a mapping with 'rules' and 'default_action', not list"),
        ("rules: [", "is not valid YAML"),
    ],
)
def test_a_bad_policy_fails_at_load_naming_the_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        ApprovalPolicy.from_file(path)
    assert problem in str(refused.value)
    assert str(path) in str(refused.value)


def test_a_bad_policy_from_python_fails_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"rules\.0\.arguments\.path\n.*invalid regular expression"):
        ApprovalPolicy.model_validate(
            {"rules": [{"tool": "x", "arguments": {"path": "re:["}, "action": "ask"}]}
        )
    with pytest.raises(ValidationError, match=r"action\n.*Input should be 'allow', 'ask' or 'deny'"):
        ApprovalRule(tool="x", action="maybe")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ConfigError, match="cannot read approval policy"):
        ApprovalPolicy.from_file("/nonexistent/policy.yaml")


TINY_MCP_SERVER = Path(__file__).parents[1] / "mcp" / "servers" / "tiny_server.py"


@pytest.mark.integration
async def test_the_policy_governs_mcp_tools_registered_in_the_toolkit() -> None:
    policy = policy_of(("tiny_echo", {"message": "re:secret"}, "deny"), ("tiny_add", {}, "ask"))
    async with MCPClient(
        StdioServer(sys.executable, [str(TINY_MCP_SERVER)]), name="tiny", timeout_s=60
    ) as client:
        toolkit = Toolkit(approval_policy=policy)
        await toolkit.register_mcp(client, prefix="tiny_", include=["echo", "add"], progress=False)
        assert (
            await outcome(toolkit, "tiny_echo", message="the secret")
            == "denied by policy: rule 0 for 'tiny_echo'"
        )
        assert await outcome(toolkit, "tiny_add", a=1, b=2) == "ask: rule 1 for 'tiny_add'"
        echoed = await toolkit.call(ToolUseBlock(id="e", name="tiny_echo", input={"message": "hello"}))
        with approved_calls():
            added = await toolkit.call(ToolUseBlock(id="a", name="tiny_add", input={"a": 1, "b": 2}))
    assert echoed.output == "echo: hello"
    assert added.output == "3"
