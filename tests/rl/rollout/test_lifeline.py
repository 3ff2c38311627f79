"""A server launched for a rollout (vLLM's, in a session of its own) dies with the process that launched it, even
when that process is killed with SIGKILL, and otherwise behaves as the command it runs (its exit code)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentscope.rl.rollout._vllm_server import _launch  # pyright: ignore[reportPrivateUsage]

pytestmark = pytest.mark.timeout(60)

_SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
_STUBBORN = [  # ignores SIGTERM: only SIGKILL stops it
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)",
]


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    # zombies of the group count as gone: what matters is that nothing of it runs
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def _wait_gone(group: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _group_alive(group):
            return True
        time.sleep(0.1)
    return False


def _owner(tmp_path: Path, command: list[str], grace_s: float) -> tuple[subprocess.Popen[str], int]:
    """A process that launches ``command`` as the vLLM server is launched and then just lives; returns it and the
    launched group's id."""
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
    return owner, group


def _server_pids(group: int) -> list[int]:
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def _wait_for_server(group: int) -> None:
    deadline = time.monotonic() + 20
    while len(_server_pids(group)) < 2:  # the lifeline and the command
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.05)


def test_the_launched_server_dies_when_its_owner_is_killed(tmp_path: Path) -> None:
    owner, group = _owner(tmp_path, _SLEEPER, grace_s=30)
    try:
        _wait_for_server(group)
        owner.kill()  # SIGKILL: no cleanup code of the owner runs
        owner.wait()
        assert _wait_gone(group, 15), f"the server's group {group} outlived its owner: {_server_pids(group)}"
    finally:
        owner.kill()
        owner.wait()
        assert owner.stdout is not None
        owner.stdout.close()
        if _group_alive(group):
            os.killpg(group, signal.SIGKILL)


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    owner, group = _owner(tmp_path, _STUBBORN, grace_s=1)
    try:
        _wait_for_server(group)
        deadline = time.monotonic() + 10
        while "ready" not in (tmp_path / "server.log").read_text():  # its SIGTERM handler is set
            assert time.monotonic() < deadline
            time.sleep(0.05)
        owner.kill()
        owner.wait()
        time.sleep(0.5)
        assert _group_alive(group), "the grace period was not given"
        assert _wait_gone(group, 10), "SIGKILL did not follow the grace period"
    finally:
        owner.kill()
        owner.wait()
        assert owner.stdout is not None
        owner.stdout.close()
        if _group_alive(group):
            os.killpg(group, signal.SIGKILL)


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
