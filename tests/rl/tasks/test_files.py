"""The files suite: generation, levels, splits, the sandbox check, the mirror between the file tools' directory and
the sandbox, crashes, and the expert and random policies played through the real environment cluster and agent."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

import anyio
import pytest

from agentscope.exceptions import SandboxError
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.rl import Task
from agentscope.rl.envs import EnvCluster, ScriptedRollout, react_agent_factory
from agentscope.rl.tasks import (
    FilesEnv,
    files_expert,
    files_random_policy,
    files_tasks,
    get_task_set,
    load_tasks,
    overlapping,
    split_of,
)
from agentscope.sandbox import Sandbox, open_sandbox
from agentscope.testing import ScriptItem, tool_call
from agentscope.tools import Toolkit

if TYPE_CHECKING:
    from conftest import Play  # type: ignore[import-not-found]

FORMS = {
    1: re.compile(r"Create (\w+\.txt) containing exactly: ([a-z]+(?: [a-z]+){1,3})"),
    2: re.compile(r"In (\w+\.ini) set (\w+) to (\w+)\."),
    3: re.compile(r"Run python3 (\w+\.py), then fix (\w+\.ini) so that it prints ok\."),
}
EXPERT_CALLS = {1: 1, 2: 2, 3: 3}
_usable: dict[str, str | None] = {}


async def skip_unless_usable(backend: str) -> None:
    """Skip the test when ``backend`` cannot start a sandbox here (saying why)."""
    if backend not in _usable:
        try:
            async with open_sandbox(backend):  # type: ignore[arg-type]
                _usable[backend] = None
        except SandboxError as exc:
            _usable[backend] = str(exc)
    if _usable[backend] is not None:
        pytest.skip(f"{backend} sandboxes cannot run here: {_usable[backend]}")


def test_generation_is_deterministic_and_levels_do_what_they_say() -> None:
    tasks = load_tasks("files:n=60,seed=0,level=1-3")
    assert tasks == load_tasks("files:n=60,seed=0,level=1-3")
    assert tasks != load_tasks("files:n=60,seed=1,level=1-3")
    assert load_tasks("files:n=60,seed=0,level=0") == tasks
    assert len({t.id for t in tasks}) == 60
    for i, task in enumerate(tasks):
        level = task.metadata["level"]
        files = task.metadata["files"]
        assert level == i % 3 + 1
        assert isinstance(files, dict)
        match = FORMS[level].fullmatch(task.prompt)
        assert match is not None, task.prompt
        if level == 1:
            assert files == {}
        elif level == 2:
            assert list(files) == [match[1]]
            text = files[match[1]]
            assert isinstance(text, str)
            old = re.search(rf"^{match[2]} = (\w+)$", text, re.MULTILINE)
            assert old is not None
            assert old[1] != match[3]
            assert old[1] not in task.prompt.split()  # the line to replace is only in the file: view it first
        else:
            program, config = match[1], match[2]
            assert set(files) == {program, config}
            source = files[program]
            assert isinstance(source, str)
            wanted = re.search(r'must be (\w+)"\)', source)
            assert wanted is not None
            assert wanted[1] not in task.prompt  # only running (or reading) the program tells what to fix
    with pytest.raises(ValueError, match="files level must be 1, 2 or 3"):
        files_tasks(n=1, level=5)


def test_splits_are_disjoint_by_content() -> None:
    splits = {
        s: load_tasks(f"files:n=80,seed={i},level=1-3,split={s}")
        for i, s in enumerate(("train", "warm", "eval"))
    }
    for name, tasks in splits.items():
        assert len(tasks) == 80
        assert {split_of(t) for t in tasks} == {name}
    assert not overlapping(splits["eval"], splits["train"] + splits["warm"])
    assert not overlapping(splits["warm"], splits["train"])


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
async def test_the_expert_solves_every_level_through_the_real_agent(
    backend: str, play_episodes: Play
) -> None:
    await skip_unless_usable(backend)
    tasks = load_tasks("files:n=9,seed=5,level=1-3,split=eval")
    trajectories = await play_episodes(functools.partial(FilesEnv, backend=backend), files_expert(), tasks)
    for task, trajectory in zip(tasks, trajectories, strict=True):
        level = task.metadata["level"]
        assert isinstance(level, int)
        assert (trajectory.status, trajectory.success, trajectory.reward) == ("ok", True, 1.0), (
            trajectory.error
        )
        assert trajectory.metrics["env/steps"] == EXPERT_CALLS[level]


async def test_the_random_policy_is_a_low_baseline(play_episodes: Play) -> None:
    await skip_unless_usable("bwrap")
    tasks = load_tasks("files:n=24,seed=6,level=1-3")
    trajectories = await play_episodes(
        functools.partial(FilesEnv, backend="bwrap"), files_random_policy(0), tasks, slots=1
    )
    assert {t.status for t in trajectories} == {"ok"}
    assert sum(t.metrics["env/steps"] for t in trajectories) / len(trajectories) > 1.0  # it does act
    # measured: 0.013 over 600 episodes (benchmarks/RESULTS.md, rl_tasks); a lax check would let it pass more
    assert sum(t.success for t in trajectories) / len(trajectories) <= 0.15


async def _call(toolkit: Toolkit, tool: str, **arguments: object) -> ToolResultBlock:
    return await toolkit.call(ToolUseBlock(id="c", name=tool, input=arguments))  # type: ignore[arg-type]


def _task(level: int, seed: int = 0) -> Task:
    return files_tasks(n=1, seed=seed, level=level)[0]


async def test_the_check_runs_in_the_sandbox_and_rejects_wrong_work() -> None:
    await skip_unless_usable("bwrap")
    env = FilesEnv(backend="bwrap")
    try:
        # level 1: nothing written, a wrong text, then the text asked for (a trailing newline is fine)
        task = _task(1)
        match = FORMS[1].fullmatch(task.prompt)
        assert match is not None
        path, text = match[1], match[2]
        await env.reset(task)
        judged = await env.evaluate(Msg(role="assistant", content="done"))
        assert (judged.success, judged.info["check"]) == (False, f"fail: {path} is missing")
        toolkit = (await env.reset(task)).toolkit
        await _call(toolkit, "write_file", path=path, content=text.upper())
        assert not (await env.evaluate(Msg(role="assistant", content="done"))).success
        toolkit = (await env.reset(task)).toolkit
        await _call(toolkit, "write_file", path=path, content=text + "\n")
        judged = await env.evaluate(Msg(role="assistant", content="anything"))
        assert (judged.reward, judged.success, judged.info) == (1.0, True, {"level": 1, "check": "ok"})

        # level 2: the value right but another key lost is wrong
        task = _task(2, seed=1)
        match = FORMS[2].fullmatch(task.prompt)
        assert match is not None
        toolkit = (await env.reset(task)).toolkit
        await _call(toolkit, "write_file", path=match[1], content=f"{match[2]} = {match[3]}\n")
        assert not (await env.evaluate(Msg(role="assistant", content="done"))).success

        # level 3: making the program print ok is not fixing the config
        task = _task(3, seed=2)
        match = FORMS[3].fullmatch(task.prompt)
        assert match is not None
        toolkit = (await env.reset(task)).toolkit
        await _call(toolkit, "write_file", path=match[1], content='print("ok")\n')
        ran = await _call(toolkit, "execute_shell_command", command=f"python3 {match[1]}")
        assert ran.output == "exit code 0\nstdout:\nok"  # the sandbox sees the host's file
        judged = await env.evaluate(Msg(role="assistant", content="done"))
        assert (judged.success, judged.info["check"]) == (False, f"fail: {match[1]} was changed")
    finally:
        await env.close()


async def test_what_a_command_changes_in_the_sandbox_comes_back_to_the_file_tools() -> None:
    await skip_unless_usable("bwrap")
    env = FilesEnv(backend="bwrap")
    task = _task(3, seed=3)
    match = FORMS[3].fullmatch(task.prompt)
    assert match is not None
    program, config = match[1], match[2]
    try:
        toolkit = (await env.reset(task)).toolkit
        failing = await _call(toolkit, "execute_shell_command", command=f"python3 {program}")
        assert failing.is_error
        wanted = re.search(r"error: (\w+) must be (\w+)", str(failing.output))
        assert wanted is not None
        # fix it with sed inside the sandbox, make a file and delete the program's copy of nothing else
        command = f"sed -i 's/^{wanted[1]} = .*/{wanted[1]} = {wanted[2]}/' {config} && echo hi > made.txt"
        assert not (await _call(toolkit, "execute_shell_command", command=command)).is_error
        viewed = await _call(toolkit, "view_file", path=config)
        assert f"{wanted[1]} = {wanted[2]}" in str(viewed.output)
        assert (await _call(toolkit, "view_file", path="made.txt")).output == "made.txt (1 lines)\n1  hi"
        await _call(toolkit, "execute_shell_command", command="rm made.txt")
        assert (await _call(toolkit, "view_file", path="made.txt")).is_error
        judged = await env.evaluate(Msg(role="assistant", content="done"))
        assert (judged.success, judged.info["check"]) == (True, "ok")
        # the next episode starts from the task's files only, in a clean sandbox
        toolkit = (await env.reset(task)).toolkit
        listing = await _call(toolkit, "execute_shell_command", command="ls")
        assert sorted(str(listing.output).split("\n", 2)[2].split()) == sorted([program, config])
    finally:
        await env.close()


async def test_a_fifo_where_the_check_reads_fails_quickly_not_as_infra(play_episodes: Play) -> None:
    """``mkfifo notes.txt`` made the check's open() block until the check's timeout: evaluate raised SandboxError,
    and the episode was thrown away as an infrastructure failure instead of scored 0."""
    await skip_unless_usable("bwrap")
    task = _task(1, seed=7)
    match = FORMS[1].fullmatch(task.prompt)
    assert match is not None

    def policy(messages: list[Msg]) -> ScriptItem:
        if any(m.blocks_of(ToolResultBlock) for m in messages):
            return "done"
        return tool_call("execute_shell_command", command=f"mkfifo {match[1]}")

    started = anyio.current_time()
    [trajectory] = await play_episodes(functools.partial(FilesEnv, backend="bwrap"), policy, [task], slots=1)
    elapsed = anyio.current_time() - started
    assert (trajectory.status, trajectory.success, trajectory.reward) == ("ok", False, 0.0), trajectory.error
    assert trajectory.metrics["env/steps"] == 1
    assert elapsed < 5.0  # the check's timeout is 10 s; a blocked open used all of it


async def test_the_check_scores_what_is_no_regular_file_as_a_failure() -> None:
    await skip_unless_usable("bwrap")
    env = FilesEnv(backend="bwrap")
    cases = [  # level, which file of the prompt (FORMS' group), the command
        (1, 1, "mkfifo {path}"),
        (1, 1, "ln -s /dev/zero {path}"),  # reading it would never end
        (1, 1, "mkdir {path}"),
        (2, 1, "rm {path} && mkfifo {path}"),
        (3, 1, "rm {path} && mkfifo {path}"),  # the program
        (3, 2, "rm {path} && mkfifo {path}"),  # its config: the program would block reading it
    ]
    try:
        for level, group, command in cases:
            task = _task(level, seed=7)
            match = FORMS[level].fullmatch(task.prompt)
            assert match is not None
            path = match[group]
            toolkit = (await env.reset(task)).toolkit
            ran = await _call(toolkit, "execute_shell_command", command=command.format(path=path))
            assert not ran.is_error, ran.output
            with anyio.fail_after(4):  # the check's own timeout is 10 s
                judged = await env.evaluate(Msg(role="assistant", content="done"))
            assert (judged.reward, judged.success) == (0.0, False)
            assert judged.info["check"] == f"fail: {path} is not a regular file", command
    finally:
        await env.close()


def _kill(sandbox: Sandbox) -> None:
    """Kill the sandbox from outside, as a crash would."""
    if sandbox.backend == "docker":
        from agentscope.sandbox._docker import docker_client

        docker_client().api.kill(sandbox._container)  # type: ignore[attr-defined]
    else:
        sandbox._process.kill()  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
async def test_a_crashed_sandbox_fails_the_episode_as_infra_and_the_env_is_replaced(backend: str) -> None:
    await skip_unless_usable(backend)
    envs: list[FilesEnv] = []
    expert = files_expert()
    tasks = [_task(3, seed=4), _task(1, seed=4), _task(3, seed=5)]
    # the sandbox dies before the first command, before the check, never
    kill_before = {tasks[0].prompt: "command", tasks[1].prompt: "check", tasks[2].prompt: None}

    def factory() -> FilesEnv:
        envs.append(FilesEnv(backend=backend))
        return envs[-1]

    async def policy(messages: list[Msg]) -> ScriptItem:
        step = expert(messages)
        when = kill_before[messages[1].text]
        command = isinstance(step, ToolUseBlock) and step.name == "execute_shell_command"
        if (when == "command" and command) or (when == "check" and isinstance(step, str)):
            sandbox = envs[-1].sandbox
            assert sandbox is not None
            await anyio.to_thread.run_sync(_kill, sandbox)
        return step

    rollout = ScriptedRollout(policy)
    cluster = EnvCluster(factory, react_agent_factory, rollout, slots=1, model_factory=rollout.model)
    try:
        during, at_check, after = [await cluster.run_episode(task, task.id) for task in tasks]
    finally:
        await cluster.aclose()
    assert during.status == "failed_infra"
    assert during.error is not None
    assert "sandbox" in during.error
    assert len(during.turns) == 1  # stopped right after the failing tool call
    assert at_check.status == "failed_infra"
    assert at_check.error is not None
    assert at_check.error.startswith("evaluate raised SandboxError")
    assert (after.status, after.success) == ("ok", True)
    assert len(envs) == 3  # each crashed environment was closed and replaced
    assert cluster.stats()["env/restarts"] == 2.0
    assert all(env.sandbox is None for env in envs)


def test_the_task_set_is_registered() -> None:
    task_set = get_task_set("files")
    assert task_set.load(n=3, level=2) == files_tasks(n=3, level=2)
    assert task_set.expert is not None
    assert task_set.random_policy is not None
