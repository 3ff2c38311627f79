"""The sandbox interface, on every backend: exec, files, timeouts, reset, concurrency, errors."""

from __future__ import annotations

import logging
import shutil
import time
from typing import TYPE_CHECKING

import anyio
import pytest

from agentscope.exceptions import SandboxError
from agentscope.sandbox import ExecResult, SandboxLimits, SandboxSpec, open_sandbox

if TYPE_CHECKING:
    from conftest import Opener  # type: ignore[import-not-found]

LIMITS = SandboxLimits(memory_mb=256, pids=64, timeout_s=20, disk_mb=64)


async def test_exec_argv_and_shell_string(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        assert sb.backend == api_backend.name
        r = await sb.exec(["python3", "-c", "print(1)"])
        assert isinstance(r, ExecResult)
        assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (0, "1\n", "", False)
        assert 0 < r.duration_s < 10
        r = await sb.exec("echo out; echo err >&2; exit 3")
        assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, "out\n", "err\n", False)
        assert r.output == "out\nerr\n"


async def test_exec_cwd_env_stdin_and_missing_command(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS, env={"GREETING": "hi"}) as sb:
        await sb.write_file("sub/dir/f.txt", "x")
        r = await sb.exec(
            "pwd; echo $GREETING $EXTRA; cat", cwd="sub/dir", env={"EXTRA": "there"}, stdin="in"
        )
        assert r.stdout == "/work/sub/dir\nhi there\nin"
        r = await sb.exec(["no-such-command-xyz"])
        assert r.exit_code == 127
        assert "not found" in r.stderr
        r = await sb.exec(["python3", "-c", "import os,signal; os.kill(os.getpid(), signal.SIGTERM)"])
        assert (r.exit_code, r.signal) == (128 + 15, 15)


async def test_files_round_trip(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        payload = bytes(range(256)) * 1000
        await sb.write_file("a/b.bin", payload)
        assert await sb.read_file("a/b.bin") == payload
        assert await sb.read_file("/work/a/b.bin") == payload
        r = await sb.exec(["sha256sum", "a/b.bin"])
        assert r.exit_code == 0
        await sb.write_file("run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
        assert (await sb.exec(["./run.sh"])).stdout == "ran\n"
        with pytest.raises(FileNotFoundError):
            await sb.read_file("missing.txt")
        with pytest.raises(IsADirectoryError):
            await sb.read_file("a")


async def test_files_that_are_not_regular_are_refused_at_once(api_backend: Opener) -> None:
    # Reading a FIFO blocked the guest's thread forever: after 120 s the host declared the whole sandbox dead.
    async with api_backend(limits=LIMITS) as sb:
        assert (await sb.exec(["python3", "-c", "import os; os.mkfifo('pipe')"])).exit_code == 0
        with anyio.fail_after(10):
            with pytest.raises(SandboxError, match="it is a FIFO, not a regular file"):
                await sb.read_file("pipe")
            with pytest.raises(SandboxError, match="it is a FIFO, not a regular file"):
                await sb.write_file("pipe", "x")
            with pytest.raises(SandboxError, match="character device"):
                await sb.read_file("/dev/zero")  # not 256 MiB of zeros first
        assert (await sb.exec("echo alive")).stdout == "alive\n"


async def test_output_is_truncated_at_the_limit(api_backend: Opener) -> None:
    limits = LIMITS.model_copy(update={"output_bytes": 4096})
    async with api_backend(limits=limits) as sb:
        r = await sb.exec(["python3", "-c", "print('x' * 100000)"])
        assert r.exit_code == 0
        assert r.truncated
        assert len(r.stdout_bytes) == 4096


async def test_timeout_kills_the_whole_tree(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        started = time.perf_counter()
        # A background grandchild in a new session, and a double-forked daemon: both must die with the command.
        script = "setsid sh -c 'sleep 300' & (sleep 301 &) ; sleep 302"
        r = await sb.exec(script, timeout=1.0)
        assert r.timed_out
        assert r.exit_code == 137
        assert time.perf_counter() - started < 6
        ps = await sb.exec(["ps", "-eo", "args"])
        assert "sleep 30" not in ps.stdout, ps.stdout


async def test_background_process_does_not_hold_exec(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        started = time.perf_counter()
        r = await sb.exec("sleep 30 & echo started")
        assert r.stdout == "started\n"
        assert time.perf_counter() - started < 3
        assert (r.killed, r.killed_count) == (("sleep 30",), 1)  # and it did not outlive the command


async def test_concurrent_execs_run_side_by_side(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        results: list[ExecResult] = []

        async def run(i: int) -> None:
            results.append(await sb.exec(f"sleep 0.5; echo {i}"))

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(run, i)
        assert time.perf_counter() - started < 3
        assert sorted(r.stdout for r in results) == [f"{i}\n" for i in range(8)]


async def test_cancelled_exec_kills_the_command(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        with anyio.move_on_after(0.5):
            await sb.exec("sleep 250")
        for _ in range(50):
            if "sleep 250" not in (await sb.exec(["ps", "-eo", "args"])).stdout:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("the cancelled command kept running")
        assert (await sb.exec("echo still-usable")).stdout == "still-usable\n"


async def test_a_start_cancelled_after_the_guest_answered_leaves_nothing_behind(
    api_backend: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last await of a start (reading the OOM-kill baseline) is where a pool closing while its filler starts
    # a replacement cancels it: the container or bwrap process must still be removed (checked at teardown).
    from agentscope.sandbox._base import Sandbox
    from agentscope.sandbox._bwrap import BwrapSandbox

    reached = anyio.Event()

    async def stall(self: Sandbox) -> int | None:
        reached.set()
        await anyio.sleep(60)
        return None

    monkeypatch.setattr(Sandbox, "_read_oom_kills", stall)
    monkeypatch.setattr(BwrapSandbox, "_read_oom_kills", stall)

    async def start() -> None:
        async with api_backend(limits=LIMITS):
            pytest.fail("the start was cancelled; nothing should be handed out")

    async with anyio.create_task_group() as tg:
        tg.start_soon(start)
        with anyio.fail_after(60):
            await reached.wait()
        tg.cancel_scope.cancel()


async def test_reset_empties_the_sandbox(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        await sb.write_file("keep.txt", "x")
        await sb.exec("echo t > /tmp/t; sleep 200 &", keep_background=True)
        await sb.reset()
        r = await sb.exec("ls -A /work /tmp; ps -eo args | grep -c '[s]leep 200' || true")
        assert r.stdout.split() == ["/tmp:", "/work:", "0"]
        assert await sb.ping()


async def test_closed_sandbox_refuses_calls(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        pass
    assert not sb.alive
    await sb.aclose()  # twice is fine
    assert not await sb.ping()
    with pytest.raises(SandboxError, match="closed"):
        await sb.exec("true")


async def test_crashed_sandbox_is_reported(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS) as sb:
        if sb.backend == "docker":
            from agentscope.sandbox._docker import docker_client

            await anyio.to_thread.run_sync(lambda: docker_client().api.kill(sb._container))  # type: ignore[attr-defined]
        else:
            sb._process.kill()  # type: ignore[attr-defined]
        with pytest.raises(SandboxError, match=r"died|dead"):  # noqa: PT012 - the kill lands within moments
            with anyio.fail_after(5):
                while True:
                    await sb.exec("true")
                    await anyio.sleep(0.01)
        assert not sb.alive
        assert not await sb.ping()


async def test_disk_limit(api_backend: Opener) -> None:
    async with api_backend(limits=LIMITS.model_copy(update={"disk_mb": 8})) as sb:
        r = await sb.exec("head -c 20000000 /dev/zero > big")
        assert r.exit_code != 0  # one file larger than the disk: stopped by the size rlimit or the full tmpfs
        r = await sb.exec("rm big; for i in 1 2 3 4; do head -c 3000000 /dev/zero > f$i || exit 9; done")
        assert r.exit_code == 9
        assert "space" in r.stderr.lower()


# ---------------------------------------------------------------------- errors naming the fix


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory_mb", 0), ("cpus", -1), ("pids", 1), ("timeout_s", 0), ("disk_mb", "lots")],
)
def test_bad_limits_name_the_field(field: str, value: object) -> None:
    with pytest.raises(SandboxError, match=field):
        SandboxLimits(**{field: value})


async def test_bad_arguments() -> None:
    with pytest.raises(SandboxError, match="workdir"):
        async with open_sandbox(SandboxSpec(backend="bwrap", workdir="relative")):
            pass
    with pytest.raises(SandboxError, match="backend"):
        async with open_sandbox("podman"):  # type: ignore[arg-type]
            pass
    with pytest.raises(SandboxError, match="memory_mb"):
        async with open_sandbox(SandboxSpec(backend="bwrap", limits={"memory_mb": -5})):
            pass
    with pytest.raises(SandboxError, match="network"):
        async with open_sandbox(SandboxSpec(backend="docker", network=True)):
            pass


def test_a_spec_checks_and_normalises_its_paths() -> None:
    spec = SandboxSpec(workdir="/work/", mounts=["/opt/venv"], limits={"memory_mb": 64}, env={"A": "1"})
    assert (spec.workdir, spec.mounts, spec.limits.memory_mb) == ("/work", ("/opt/venv",), 64)
    for workdir in ("relative", "/usr", "/tmp/", "/work/../etc"):
        with pytest.raises(SandboxError) as caught:
            SandboxSpec(workdir=workdir)
        assert str(caught.value) == (
            f"invalid sandbox spec: workdir: workdir must be an absolute path of its own, such as /work "
            f"(got {workdir!r})"
        )
    for mount in ("opt/venv", "/proc", "/a/../etc"):
        with pytest.raises(SandboxError, match=rf"mounts: .* such as /opt/venv; not {mount!r}"):
            SandboxSpec(mounts=(mount,))


async def test_missing_engine_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentscope.sandbox import _docker

    await anyio.to_thread.run_sync(_docker.close_docker_client)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="dockerd"):
        async with open_sandbox("docker"):
            pass
    monkeypatch.undo()
    await anyio.to_thread.run_sync(_docker.close_docker_client)


async def test_limits_that_cannot_be_enforced_are_refused_or_weakened_loudly(
    bwrap_works: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGENTSCOPE_SANDBOX_CGROUPS", "0")  # as on a machine where no cgroup can be made
    limits = SandboxLimits(memory_mb=64, cpus=0.5, pids=64, timeout_s=20)
    with pytest.raises(SandboxError) as refused:
        async with open_sandbox(SandboxSpec(backend="bwrap", limits=limits)):
            pytest.fail("a sandbox whose memory and CPU limits are not enforced was handed out")
    message = str(refused.value)
    for part in (
        "memory_mb=64 would cap each process",
        "cpus=0.5 would not be enforced",
        "AGENTSCOPE_SANDBOX_CGROUPS",
    ):
        assert part in message
    assert "strict=False" in message  # and the ways out
    assert "backend='docker'" in message
    with caplog.at_level(logging.WARNING, logger="agentscope.sandbox"):
        spec = SandboxSpec(backend="bwrap", limits=limits.model_copy(update={"strict": False}))
        async with open_sandbox(spec) as sb:
            assert sb.limit_enforcement["memory"] == "rlimit AS, per process (not a total)"
            assert sb.limit_enforcement["cpus"] == "none (timeout only)"
            # The guest itself is not squeezed into 64 MiB: commands run (they failed with "can't start new thread").
            r = await sb.exec("echo hi; python3 -c 'print(1)'")
            assert (r.exit_code, r.stdout) == (0, "hi\n1\n"), r
            r = await sb.exec(["python3", "-c", "x = b'x' * (100 << 20)"])
            assert "MemoryError" in r.stderr
    assert "cannot enforce its limits as asked" in caplog.text


async def test_missing_seccomp_binding_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from agentscope.sandbox._seccomp import seccomp_program

    seccomp_program.cache_clear()
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as if it were not installed
    try:
        # Docker loads the filter before it talks to an engine; bubblewrap needs to be installed to get there.
        for backend in ("docker", "bwrap") if shutil.which("bwrap") else ("docker",):
            with pytest.raises(SandboxError, match=r"pip install -e '\.\[sandbox\]'"):
                async with open_sandbox(SandboxSpec(backend=backend, limits=LIMITS)):
                    pass
    finally:
        monkeypatch.undo()
        seccomp_program.cache_clear()


async def test_missing_image_names_the_fix(docker_works: None) -> None:
    with pytest.raises(SandboxError, match=r"build-image|missing"):
        async with open_sandbox(SandboxSpec(backend="docker", image="agentscope-no-such-image:1")):
            pass


async def test_auto_picks_a_backend_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    from agentscope.sandbox import _open

    _open._auto_choice = None
    with caplog.at_level(logging.INFO, logger="agentscope.sandbox"):
        async with open_sandbox(SandboxSpec(limits=LIMITS)) as sb:
            assert (await sb.exec("echo ok")).stdout == "ok\n"
    assert any(f"sandbox backend: {sb.backend}" in record.getMessage() for record in caplog.records)


async def test_bwrap_network_true_reaches_the_host_loopback(bwrap_works: None) -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        port = server.getsockname()[1]
        async with open_sandbox(SandboxSpec(backend="bwrap", network=True, limits=LIMITS)) as sb:
            code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); print('ok')"
            r = await sb.exec(["python3", "-c", code])
            assert r.stdout == "ok\n", r
    finally:
        server.close()
