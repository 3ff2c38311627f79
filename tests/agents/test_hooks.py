"""Agent hooks: each hook type gets the payload HookPayloads documents, a returned value replaces it, and a type
checker rejects a hook whose signature does not fit its hook type."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from agentscope.agents import AgentBase, HookPayloads, HookType, ReActAgent, ReplyArguments
from agentscope.message import Msg, TextBlock, ToolResultBlock
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit
from agentscope.types import ChatResponse

REPO = Path(__file__).resolve().parents[2]
PAYLOADS = get_type_hints(HookPayloads)


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First number.
        b: Second number.
    """
    return a + b


def is_documented_payload(hook_type: HookType, payload: object) -> bool:
    """Whether ``payload`` is an instance of what HookPayloads documents for ``hook_type``."""
    expected = PAYLOADS[hook_type]
    if expected is ReplyArguments:  # a TypedDict: a dict holding the required key
        return isinstance(payload, dict) and "msg" in payload
    if get_origin(expected) is list:
        [item] = get_args(expected)
        return isinstance(payload, list) and all(isinstance(m, item) for m in payload)  # pyright: ignore[reportUnknownVariableType]
    return isinstance(payload, expected)


@dataclass
class Case:
    """A replacement a hook returns, and how the agent's behaviour shows that it took it."""

    replace: Callable[[Any], Any]
    check: Callable[[Msg, ScriptedModel, ReActAgent], Awaitable[None]]


def _tool_result(model: ScriptedModel) -> ToolResultBlock:
    [result] = [b for m in model.requests[1].messages for b in m.blocks_of(ToolResultBlock)]
    return result


async def _check_pre_reply(reply: Msg, model: ScriptedModel, agent: ReActAgent) -> None:
    assert model.requests[0].messages[-1].text == "rewritten"


async def _check_post_reply(reply: Msg, model: ScriptedModel, agent: ReActAgent) -> None:
    assert reply.text == "replaced reply"


async def _check_pre_reasoning(reply: Msg, model: ScriptedModel, agent: ReActAgent) -> None:
    assert [r.messages[-1].text for r in model.requests] == ["injected", "injected"]


async def _check_post_reasoning(reply: Msg, model: ScriptedModel, agent: ReActAgent) -> None:
    assert reply.text == "replaced response"
    assert (await agent.memory.get())[-1].text == "replaced response"


async def _check_pre_acting(reply: Msg, model: ScriptedModel, agent: ReActAgent) -> None:
    assert _tool_result(model).output == "42"


async def _check_post_acting(reply: Msg, model: ScriptedModel, agent: ReActAgent) -> None:
    assert _tool_result(model).output == "replaced result"


async def _check_pre_observe(reply: Msg, model: ScriptedModel, agent: ReActAgent) -> None:
    assert (await agent.memory.get())[0].text == "replaced observation"


def _replace_post_reasoning(response: ChatResponse) -> ChatResponse | None:
    if response.tool_calls:
        return None  # let the tool call through; replace the final answer
    return ChatResponse(content=[TextBlock(text="replaced response")])


CASES: dict[HookType, Case] = {
    "pre_reply": Case(lambda args: {**args, "msg": Msg(role="user", content="rewritten")}, _check_pre_reply),
    "post_reply": Case(
        lambda reply: Msg(role="assistant", name="calc", content="replaced reply"), _check_post_reply
    ),
    "pre_reasoning": Case(lambda msgs: [*msgs, Msg(role="user", content="injected")], _check_pre_reasoning),
    "post_reasoning": Case(_replace_post_reasoning, _check_post_reasoning),
    "pre_acting": Case(lambda call: call.model_copy(update={"input": {"a": 40, "b": 2}}), _check_pre_acting),
    "post_acting": Case(
        lambda result: result.model_copy(update={"output": "replaced result"}), _check_post_acting
    ),
    "pre_observe": Case(lambda msg: Msg(role="user", content="replaced observation"), _check_pre_observe),
}


def test_every_hook_type_has_a_documented_payload_and_a_case() -> None:
    assert set(PAYLOADS) == set(get_args(HookType)) == set(AgentBase.hook_types) == set(CASES)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("hook_type", list(CASES))
async def test_a_hook_sees_the_documented_payload_and_its_return_replaces_it(
    hook_type: HookType, is_async: bool
) -> None:
    model = ScriptedModel([tool_call("add", a=1, b=2), "three"])
    toolkit = Toolkit()
    toolkit.register(add)
    agent = ReActAgent(name="calc", sys_prompt="You add numbers.", model=model, toolkit=toolkit)
    case = CASES[hook_type]
    before: list[object] = []
    returned: list[object] = []
    after: list[object] = []

    def look(_agent: AgentBase, payload: object) -> None:
        assert _agent is agent
        before.append(payload)

    def replace(_agent: AgentBase, payload: object) -> Any:
        returned.append(case.replace(payload))
        return returned[-1]

    async def replace_async(_agent: AgentBase, payload: object) -> Any:
        return replace(_agent, payload)

    agent.register_hook(hook_type, "look", look)
    agent.register_hook(hook_type, "replace", replace_async if is_async else replace)
    agent.register_hook(hook_type, "after", lambda _agent, payload: after.append(payload))

    await agent.observe(Msg(role="user", content="an observation", name="peer"))
    reply = await agent(Msg(role="user", content="What is 1 + 2?"))

    assert before, f"no {hook_type} hook ran"
    assert all(is_documented_payload(hook_type, p) for p in before), [type(p) for p in before]
    assert all(is_documented_payload(hook_type, p) for p in after), [type(p) for p in after]
    # Hooks chain: the hook after the replacing one sees what it returned (None keeps the payload).
    assert len(after) == len(returned) == len(before)
    for seen, given, original in zip(after, returned, before, strict=True):
        assert seen is (original if given is None else given)
    await case.check(reply, model, agent)
    model.assert_complete()


# ---------------------------------------------------------------------------------------------------- pyright

SNIPPET = """
from agentscope.agents import AgentBase, HookType, ReActAgent, ReplyArguments
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.types import ChatResponse


async def acting(agent: AgentBase, call: ToolUseBlock) -> ToolUseBlock | None:
    return None


def observing(agent: AgentBase, msg: Msg) -> Msg:
    return msg


def replying(agent: AgentBase, arguments: ReplyArguments) -> None:
    arguments["msg"] = None


def react_acting(agent: ReActAgent, call: ToolUseBlock) -> None: ...
def any_payload(agent: AgentBase, payload: object) -> None: ...
def acting_str(agent: AgentBase, call: ToolUseBlock) -> str:
    return ""


def reasoning(agent: AgentBase, response: ChatResponse) -> None: ...
def result(agent: AgentBase, result: ToolResultBlock) -> ToolResultBlock:
    return result


def register(agent: AgentBase, react: ReActAgent, hook_type: HookType) -> None:
    agent.register_hook("pre_acting", "ok", acting)  # ok
    agent.register_hook("pre_observe", "ok", observing)  # ok
    agent.register_hook("pre_reply", "ok", replying)  # ok
    react.register_hook("pre_acting", "ok", react_acting)  # ok
    agent.register_hook(hook_type, "ok", any_payload)  # ok
    agent.register_hook("post_acting", "ok", result)  # ok
    agent.register_hook("pre_acting", "bad", observing)  # bad: "ToolUseBlock" is not assignable to "Msg"
    agent.register_hook("pre_acting", "bad", acting_str)  # bad: "str" is not assignable to "ToolUseBlock"
    agent.register_hook("pre_acting", "bad", react_acting)  # bad: "AgentBase" is not assignable to "ReActAgent"
    agent.register_hook("pre_reasoning", "bad", reasoning)  # bad: "list[Msg]" is not assignable to "ChatResponse"
    agent.register_hook("post_reply", "bad", acting)  # bad: "Msg" is not assignable to "ToolUseBlock"
"""


def _pyright() -> list[str] | None:
    beside = Path(sys.executable).with_name("pyright")
    if beside.exists():
        return [str(beside)]
    if importlib.util.find_spec("pyright") is not None:
        return [sys.executable, "-m", "pyright"]
    found = shutil.which("pyright")
    return [found] if found else None


def test_pyright_rejects_a_hook_that_does_not_fit_its_hook_type(tmp_path: Path) -> None:
    command = _pyright()
    if command is None:
        pytest.skip("pyright is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    snippet = tmp_path / "hooks_snippet.py"
    snippet.write_text(textwrap.dedent(SNIPPET))
    config = tmp_path / "pyrightconfig.json"
    config.write_text(
        json.dumps({"typeCheckingMode": "strict", "pythonVersion": "3.11", "extraPaths": [str(REPO)]})
    )
    run = subprocess.run(
        [*command, "--outputjson", "--pythonpath", sys.executable, "-p", str(config), str(snippet)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = json.loads(run.stdout)
    errors: dict[int, str] = {}
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] == "error":
            line = diagnostic["range"]["start"]["line"]
            errors[line] = errors.get(line, "") + diagnostic["message"] + "\n"
    lines = snippet.read_text().splitlines()
    expected = {i: line.partition("# bad: ")[2] for i, line in enumerate(lines) if "# bad: " in line}
    assert len(expected) == 5
    unexpected = {lines[i].strip(): message for i, message in errors.items() if i not in expected}
    assert unexpected == {}, "pyright rejected hooks that fit their hook type"
    for index, mismatch in expected.items():
        assert mismatch in errors.get(index, ""), (
            f"{lines[index].strip()}: pyright said {errors.get(index)!r}"
        )
