"""The file tasks' scripted policies: the expert (it solves every task through the tools) and the random baseline.

Both read only the conversation: the task as the agent sees it and the tool results.
"""

from __future__ import annotations

import random
import re
from typing import Final

from agentscope.message import Msg
from agentscope.models import ScriptItem, tool_call
from agentscope.rl.envs import ScriptedPolicy
from agentscope.rl.tasks._common import forced_to_answer, task_text, tool_outputs

__all__ = ["files_expert", "files_random_policy"]

_TOOLS: Final = ("view_file", "write_file", "edit_file", "execute_shell_command")
"""The tools the environment offers (built-in file and code tools)."""
_L1: Final = re.compile(r"Create (\S+) containing exactly: (.*)$")
_L2: Final = re.compile(r"In (\S+) set (\w+) to (\S+)\.")
_L3: Final = re.compile(r"Run (python3 \S+), then fix (\S+) so that it prints ok\.")


def _viewed_line(output: str, key: str) -> str | None:
    """The line of ``key`` in a ``view_file`` output (``"3  port = 3000"`` -> ``"port = 3000"``)."""
    match = re.search(rf"^\s*\d+  ({re.escape(key)}\s*=.*)$", output, re.MULTILINE)
    return match[1] if match else None


def files_expert() -> ScriptedPolicy:
    """The scripted expert of the file tasks: reads the task and the tool results of the conversation and makes
    the next call (write; view then edit; run, view, then edit), then says it is done (it solves every task)."""
    return _expert_step


def _expert_step(messages: list[Msg]) -> ScriptItem:
    task = task_text(messages)
    outputs = tool_outputs(messages)
    results = [text for text, _ in outputs]
    # A failing program is what level 3 starts from: only the file tools' errors mean the plan went wrong.
    failed = any(is_error for i, (_, is_error) in enumerate(outputs) if not (i == 0 and _L3.search(task)))
    if forced_to_answer(messages) or failed:
        return "failed"
    step = len(results)
    if found := _L1.search(task):
        return tool_call("write_file", path=found[1], content=found[2]) if step == 0 else "done"
    if found := _L2.search(task):
        path, key, value = found[1], found[2], found[3]
        if step == 0:
            return tool_call("view_file", path=path)
        line = _viewed_line(results[0], key)
        if step == 1 and line is not None:
            return tool_call("edit_file", path=path, old_text=line, new_text=f"{key} = {value}")
        return "done"
    if found := _L3.search(task):
        command, config = found[1], found[2]
        if step == 0:
            return tool_call("execute_shell_command", command=command)
        wanted = re.search(r"error: (\w+) must be (\S+)", results[0])
        if wanted is None:
            return "done"
        if step == 1:
            return tool_call("view_file", path=config)
        line = _viewed_line(results[1], wanted[1])
        if step == 2 and line is not None:
            return tool_call("edit_file", path=config, old_text=line, new_text=f"{wanted[1]} = {wanted[2]}")
        return "done"
    return "I do not know this task."


def _seen(messages: list[Msg]) -> tuple[list[str], list[str]]:
    """File names and text spans the conversation shows (the random policy's material)."""
    task = task_text(messages)
    texts = [text for text, _ in tool_outputs(messages)]
    paths = sorted(set(re.findall(r"[\w.-]+\.(?:txt|ini|py)\b", " ".join([task, *texts]))))
    spans = re.findall(r"(?<=: ).+$", task) + re.findall(r"[\w.=-]+", task)
    for text in texts:
        spans += [re.sub(r"^\s*\d+  ", "", line).strip() for line in text.splitlines() if line.strip()]
    return paths, spans


def files_random_policy(seed: int) -> ScriptedPolicy:
    """A policy that acts at random among what the conversation offers: each turn it answers with probability
    1/4 (always after three calls, or when asked to answer), else it calls one of the four tools at random on a
    file name seen, with text spans seen as contents, old and new text, and ``python3``/``cat`` of a seen file or
    ``ls`` as commands; its answer is ``done``. The baseline of the file tasks."""
    rng = random.Random(seed)

    def policy(messages: list[Msg]) -> ScriptItem:
        paths, spans = _seen(messages)
        if forced_to_answer(messages) or len(tool_outputs(messages)) >= 3 or rng.random() < 0.25:
            return "done"
        path = rng.choice(paths or ["notes.txt"])
        span = rng.choice(spans or ["done"])
        tool = rng.choice(_TOOLS)
        if tool == "view_file":
            return tool_call(tool, path=path)
        if tool == "write_file":
            return tool_call(tool, path=path, content=span)
        if tool == "edit_file":
            return tool_call(tool, path=path, old_text=span, new_text=rng.choice(spans or ["done"]))
        command = rng.choice([f"python3 {path}", f"cat {path}", "ls"])
        return tool_call(tool, command=command)

    return policy
