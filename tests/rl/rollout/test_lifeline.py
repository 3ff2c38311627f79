"""A server launched for a rollout (vLLM's, in a session of its own) dies with the process that launched it, even
when that process is killed with SIGKILL, and otherwise behaves as the command it runs (its exit code)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Generator
from pathlib import Path

import anyio
import pytest

from agentscope.rl.rollout._vllm_server import VLLMServer, _launch  # pyright: ignore[reportPrivateUsage]

pytestmark = pytest.mark.timeout(60)

_SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
_STUBBORN = [  # ignores SIGTERM: only SIGKILL stops it
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)",
]


def _state(pid: int) -> tuple[str, int] | None:
    """A process's state letter and process group (None: gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[2])


def _server_pids(group: int) -> list[int]:
    """The processes of ``group`` that still run (zombies count as gone: what matters is that nothing of it runs)."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [
        pid for pid in pids if (state := _state(pid)) is not None and state[1] == group and state[0] != "Z"
    ]


def _group_alive(group: int) -> bool:
    return bool(_server_pids(group))


def _wait_gone(group: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _group_alive(group):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def _owner(
    tmp_path: Path, command: list[str], grace_s: float
) -> Generator[tuple[subprocess.Popen[str], int]]:
    """A process that launches ``command`` as the vLLM server is launched and then just lives: it and the
    launched group's id, once the command runs; both are gone on the way out, whatever the test did."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from agentscope.rl.rollout._vllm_server import _launch
        env = dict(os.environ, AGENTSCOPE_LIFELINE_GRACE_S={str(grace_s)!r})
        process = _launch({command!r}, env, Path({str(tmp_path / "server.log")!r}))
        print(process.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    group = int(owner.stdout.readline())
    try:
        deadline = time.monotonic() + 20
        while len(_server_pids(group)) < 2:  # the lifeline and the command
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.05)
        yield owner, group
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
        if _group_alive(group):
            os.killpg(group, signal.SIGKILL)


def test_the_launched_server_dies_when_its_owner_is_killed(tmp_path: Path) -> None:
    with _owner(tmp_path, _SLEEPER, grace_s=30) as (owner, group):
        owner.kill()  # SIGKILL: no cleanup code of the owner runs
        owner.wait()
        assert _wait_gone(group, 15), f"the server's group {group} outlived its owner: {_server_pids(group)}"


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    with _owner(tmp_path, _STUBBORN, grace_s=1) as (owner, group):
        deadline = time.monotonic() + 10
        while "ready" not in (tmp_path / "server.log").read_text():  # its SIGTERM handler is set
            assert time.monotonic() < deadline
            time.sleep(0.05)
        owner.kill()
        owner.wait()
        time.sleep(0.5)
        assert _group_alive(group), "the grace period was not given"
        assert _wait_gone(group, 10), "SIGKILL did not follow the grace period"


def test_the_launched_process_exits_with_the_commands_code(tmp_path: Path) -> None:
    process = _launch(
        [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"], dict(os.environ), tmp_path / "log"
    )
    assert process.wait(20) == 3
    assert process.stdin is not None
    process.stdin.close()
    assert "hello" in (tmp_path / "log").read_text()


def test_the_lifeline_refuses_a_missing_command() -> None:
    lifeline = Path(__file__).parents[3] / "agentscope" / "rl" / "rollout" / "_lifeline.py"
    done = subprocess.run([sys.executable, str(lifeline)], capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert "usage" in done.stderr


def _fake_python(tmp_path: Path, then: str) -> Path:
    """An interpreter for :class:`VLLMServer` that starts a helper in its group (as vLLM starts its engine
    core), writes the helper's pid to ``helper.pid``, then runs the shell line ``then``."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {tmp_path / 'helper.pid'}\n{then}\n")
    fake.chmod(0o755)
    return fake


def _running(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state[0] != "Z"


async def _wait_helper(tmp_path: Path) -> int:
    pid_file = tmp_path / "helper.pid"
    with anyio.fail_after(20):
        while not pid_file.is_file() or not pid_file.read_text().strip():  # noqa: ASYNC110 - a file it writes
            await anyio.sleep(0.05)
    return int(pid_file.read_text())


async def test_a_server_that_exits_while_starting_leaves_nothing_of_its_group(tmp_path: Path) -> None:
    server = VLLMServer(tmp_path, python=_fake_python(tmp_path, "exit 3"), log_path=tmp_path / "log")
    with pytest.raises(RuntimeError, match="exited with code 3"):
        await server.start()
    helper = await _wait_helper(tmp_path)
    assert not _running(helper), "the server's helper outlived the failed start"


async def test_a_cancelled_start_leaves_nothing_of_the_server(tmp_path: Path) -> None:
    server = VLLMServer(tmp_path, python=_fake_python(tmp_path, "sleep 600"), log_path=tmp_path / "log")
    helper = 0
    with anyio.move_on_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.start)
            helper = await _wait_helper(tmp_path)
            tg.cancel_scope.cancel()
    assert helper, "the server did not start"
    assert not _running(helper), "a cancelled start left the server running"
