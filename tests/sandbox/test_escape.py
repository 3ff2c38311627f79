"""The escape and limits battery, run on every backend available here (Docker and bubblewrap in CI).

What sandboxed code must not be able to do: reach the network (not even a port listening on the host's
127.0.0.1), write outside its work dir and /tmp, read host files that were not shown to it, gain privileges
(setuid, mount, ptrace of the guest, new user namespaces, setuid binaries), or outlive its limits: a fork bomb
stops at ``pids``, a memory bomb is killed and reported, a CPU spin is stopped at the timeout, and what a command
leaves running in the background (``&``, ``setsid``, double forks) is killed when it returns. Afterwards the
host is as it was: no process, cgroup, container or file of the sandbox is left.

Bombs only run after a harmless probe has shown that the limit which contains them is in force, and each runs
under a short timeout with ``cpus=1`` (the machine keeps a free core).
"""

from __future__ import annotations

import os
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from agentscope.exceptions import SandboxError
from agentscope.sandbox import ExecResult, Sandbox, SandboxLimits

if TYPE_CHECKING:
    from conftest import Opener  # type: ignore[import-not-found]

PIDS = 32
LIMITS = SandboxLimits(memory_mb=128, cpus=1.0, pids=PIDS, timeout_s=20, disk_mb=32)


def py(code: str) -> list[str]:
    return ["python3", "-c", textwrap.dedent(code)]


FORK_BOMB = py("""
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """)
MEMORY_BOMB = py("""
    chunks = []
    while True:
        chunks.append(b"x" * (16 << 20))
    """)
PROCESSES = py("""
    import os
    print(sum(1 for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid()))
    """)
"""How many processes the sandbox has besides this one (run as an argv: no shell whose children race the count)."""


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on the host's 127.0.0.1; yields its port and the peers that connected."""
    peers: list[str] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except OSError:
                continue
            peers.append(str(addr))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], peers
    stop.set()
    thread.join()
    server.close()


async def test_no_network(backend: Opener, listener: tuple[int, list[str]]) -> None:
    port, peers = listener
    async with backend(limits=LIMITS) as sb:
        r = await sb.exec(
            py(f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3)
                print("connected")
            except OSError as exc:
                print("refused", type(exc).__name__)
            """)
        )
        assert r.stdout.startswith("refused"), r
        interfaces = await sb.exec("tail -n +3 /proc/net/dev | cut -d: -f1")
        assert interfaces.stdout.split() == ["lo"]
        r = await sb.exec(py("import socket; socket.getaddrinfo('example.com', 80)"))
        assert r.exit_code != 0
    assert peers == []


async def test_no_write_outside_the_work_dir(backend: Opener, tmp_path: Path) -> None:
    async with backend(limits=LIMITS) as sb:
        for path in (
            "/usr/evil",
            "/etc/evil",
            "/evil",
            "/bin/evil",
            "/var/evil",
            "/root/evil",
            "/proc/sys/kernel/x",
        ):
            r = await sb.exec(["sh", "-c", f"echo x > {path}"])
            assert r.exit_code != 0, path
        r = await sb.exec("echo x >> /etc/passwd")
        assert r.exit_code != 0
        with pytest.raises(PermissionError):
            await sb.write_file("../etc/evil", "x")
        assert (
            await sb.exec("echo ok > /work/f && echo ok > /tmp/f && cat /work/f /tmp/f")
        ).stdout == "ok\nok\n"
    for path in ("/usr/evil", "/etc/evil", "/evil", "/bin/evil", "/var/evil"):
        assert not await anyio.Path(path).exists()


async def test_host_files_not_readable(
    backend: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSCOPE_TEST_SECRET", "s3cr3t")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    async with backend(limits=LIMITS) as sb:
        for path in (str(secret), "/etc/shadow", "/root/.bashrc", "/var/run/docker.sock"):
            r = await sb.exec(["cat", path])
            assert r.exit_code != 0, (path, r.stdout)
        # Nothing the sandbox can see (its pid 1 included) holds the host's environment.
        r = await sb.exec("cat /proc/*/environ | tr '\\0' '\\n'; env")
        assert "s3cr3t" not in r.stdout
        assert "AGENTSCOPE_TEST_SECRET" not in r.stdout
        r = await sb.exec(["ls", "/home", "/root", "/var", str(tmp_path)])
        assert "secret" not in r.stdout
        r = await sb.exec("cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs)'")
        caps = dict(line.split(":\t") for line in r.stdout.splitlines())
        assert int(caps["CapEff"], 16) == 0
        if backend.name != "gvisor":  # gVisor's kernel does not report it (nor honour setuid bits at all)
            assert caps["NoNewPrivs"] == "1"


async def test_no_privilege_gain(backend: Opener) -> None:
    async with backend(limits=LIMITS) as sb:
        r = await sb.exec(["id", "-u"])
        assert r.stdout.strip() != "0"
        r = await sb.exec(py("import os; os.setuid(0)"))
        assert r.exit_code == 1
        assert "Error" in r.stderr  # EPERM, or EINVAL where uid 0 is not even mapped
        # mount, a new user namespace (where we would be root), and ptrace of the guest: all refused.
        r = await sb.exec(
            py("""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            os.makedirs("/work/m", exist_ok=True)
            print("mount", libc.mount(b"none", b"/work/m", b"tmpfs", 0, None), ctypes.get_errno())
            print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
            guest = next(int(p) for p in sorted(os.listdir("/proc"), key=lambda p: int(p) if p.isdigit() else 0)
                         if p.isdigit() and int(p) != os.getpid() and
                         b"agentscope-guest" in open(f"/proc/{p}/cmdline", "rb").read())
            print("ptrace", libc.ptrace(16, guest, 0, 0), ctypes.get_errno())
            try:
                os.listdir(f"/proc/{guest}/fd")
                print("fds readable")
            except OSError as exc:
                print("fds", exc.errno)
            """)
        )
        lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
        assert lines["mount"].startswith("-1"), r
        assert lines["ptrace"].startswith("-1"), r
        if backend.name == "gvisor":
            # A user namespace of gVisor's own kernel exposes nothing of the host's; /proc/1/fd is not
            # protected there, which test_forged_replies_are_ignored covers.
            assert lines["unshare"].startswith(("-1", "0")), r
        else:
            assert lines["unshare"].startswith("-1"), r
            assert lines["fds"] == "13", r
        # setuid binaries do not raise privileges (no-new-privs; the Docker image has none).
        r = await sb.exec(
            "for f in /usr/bin/su /usr/bin/passwd /usr/bin/mount; do [ -u $f ] && $f --help; done; id -u"
        )
        assert r.stdout.strip().splitlines()[-1] != "0"


SYSCALL_PROBES: dict[str, list[int]] = {
    # Arguments chosen so that a call that got through would fail harmlessly, mostly with another errno
    # (ESRCH, EBADF, EFAULT, EINVAL, ENOSPC) or succeed at doing nothing: only the filter gives EPERM for all.
    "ptrace": [16, 999_999, 0, 0],  # PTRACE_ATTACH to no one
    "process_vm_readv": [999_999, 0, 1, 0, 1, 0],
    "process_vm_writev": [999_999, 0, 1, 0, 1, 0],
    "pidfd_getfd": [-1, 0, 0],
    "kcmp": [999_999, 999_999, 0, 0, 0],
    "mount": [0, 0, 0, 0, 0],
    "umount2": [0, 0],
    "pivot_root": [0, 0],
    "chroot": [0],
    "fsopen": [0, 0],
    "fsmount": [-1, 0, 0],
    "fspick": [-1, 0, 0],
    "open_tree": [-1, 0, 0],
    "move_mount": [-1, 0, -1, 0, 0],
    "mount_setattr": [-1, 0, 0, 0, 0],
    "unshare": [0x10000000],  # CLONE_NEWUSER
    "setns": [-1, 0],
    "clone": [0x10000000 | 17, 0, 0, 0, 0],  # CLONE_NEWUSER | SIGCHLD
    "keyctl": [0, -3, 0],  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": [0, 0, 0, 0, 0],
    "request_key": [0, 0, 0, 0],
    "bpf": [-1, 0, 0],
    "perf_event_open": [0, 0, -1, -1, 0],
    "userfaultfd": [1],  # UFFD_USER_MODE_ONLY: allowed to anyone where the call is
    "io_uring_setup": [0, 0],
    "io_uring_enter": [-1, 0, 0, 0, 0, 0],
    "io_uring_register": [-1, 0, 0, 0],
    "fanotify_init": [0, 0],
    "open_by_handle_at": [-1, 0, 0],
    "kexec_load": [0, 0, 0, 0],
    "kexec_file_load": [-1, -1, 0, 0, 0],
    "init_module": [0, 0, 0],
    "finit_module": [-1, 0, 0],
    "delete_module": [0, 0],
    "reboot": [0, 0, 0, 0],  # no magic numbers: EINVAL even with the capability
    "swapon": [0, 0],
    "swapoff": [0],
    "acct": [0],
    "quotactl": [0, 0, 0, 0],
    "settimeofday": [0, 0],
    "clock_settime": [0, 0],
    "clock_adjtime": [0, 0],
    "adjtimex": [0],
    "syslog": [10, 0, 0],  # SYSLOG_ACTION_SIZE_BUFFER
    "vhangup": [],
    "iopl": [0],  # level 0: a no-op where allowed
    "ioperm": [0, 0, 0],
    "lookup_dcookie": [0, 0, 0],
    "clone3": [0, 0],  # ENOSYS, not EPERM: C libraries then fall back to clone
}

SYSCALL_PROBE = py("""
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    results = {}
    for name, (number, *args) in json.loads(sys.argv[1]).items():
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(arg) for arg in args))
        if name == "clone" and result == 0:
            os._exit(0)  # the child of a clone that got through
        results[name] = [result, ctypes.get_errno()]
        if result > 0 and name in ("clone", "userfaultfd", "perf_event_open", "io_uring_setup"):
            os.waitpid(result, 0) if name == "clone" else os.close(result)
    print(json.dumps(results))
    """)


def _syscall_numbers() -> dict[str, list[int]]:
    import pyseccomp

    calls: dict[str, list[int]] = {}
    for name, args in SYSCALL_PROBES.items():
        number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
        if number >= 0:  # a call this architecture has
            calls[name] = [number, *args]
    return calls


async def test_dangerous_syscalls_are_refused(backend: Opener) -> None:
    import errno
    import json

    calls = _syscall_numbers()
    assert len(calls) >= 45
    async with backend(limits=LIMITS) as sb:
        assert "seccomp" in sb.limit_enforcement["syscalls"]
        r = await sb.exec([*SYSCALL_PROBE, json.dumps(calls)])
        assert r.exit_code == 0, r
        results = {name: tuple(value) for name, value in json.loads(r.stdout).items()}
        expected = {name: (-1, errno.ENOSYS if name == "clone3" else errno.EPERM) for name in calls}
        assert results == expected
        # What the filter lets through still works: threads, forks, a subprocess, a fresh interpreter.
        r = await sb.exec(
            py("""
            import subprocess, threading
            threading.Thread(target=print, args=("thread",)).start()
            print(subprocess.run(["echo", "forked"], capture_output=True, text=True).stdout.strip())
            """)
        )
        assert r.stdout.split() == ["thread", "forked"], r


async def test_forged_replies_are_ignored(backend: Opener) -> None:
    async with backend(limits=LIMITS) as sb:
        forged = '{"id": %d, "exit_code": 0, "stdout": "Zm9yZ2Vk", "stderr": "", "timed_out": false, "k": ""}'
        script = "; ".join(f"echo '{forged % i}' > /proc/1/fd/1 2>/dev/null" for i in range(1, 20))
        await sb.exec(script + "; sleep 0.2; echo real")
        r = await sb.exec("echo real")
        assert r.stdout == "real\n"
        assert await sb.ping()


async def _prove_pids_limit(sb: Sandbox) -> None:
    """Harmless probe: ask for PIDS + 16 sleeping processes; the limit must stop us before that."""
    r = await sb.exec(
        py(f"""
        import subprocess
        procs = []
        for _ in range({PIDS + 16}):
            try:
                procs.append(subprocess.Popen(["sleep", "30"]))
            except OSError:
                break
        print(len(procs))
        for p in procs:
            p.kill()
            p.wait()
        """),
        timeout=20,
    )
    started = int(r.stdout.strip() or 0)
    assert 0 < started < PIDS, f"the pids limit is not in force ({started} processes started): {r}"


async def test_fork_bomb_is_contained(backend: Opener) -> None:
    if backend.name == "gvisor":
        await _bomb_kills_only_its_gvisor_sandbox(backend, FORK_BOMB)
        return
    async with backend(limits=LIMITS) as sb:
        assert sb.limit_enforcement["pids"] != "none"
        await _prove_pids_limit(sb)
        bomb = FORK_BOMB
        baseline = int((await sb.exec(PROCESSES)).stdout)
        r = await sb.exec(bomb, timeout=3)
        assert r.timed_out
        assert await sb.ping()
        r = await sb.exec(PROCESSES)  # the bomb is gone with the timeout
        assert int(r.stdout) == baseline, r
        await sb.exec(
            ["bash", "-c", ":(){ :|:& };:"], timeout=2
        )  # the shell classic, which outlives its exec
        assert await sb.ping()
        await sb.reset()
        assert (await sb.exec("echo alive")).stdout == "alive\n"


async def test_memory_bomb_is_killed_and_reported(backend: Opener) -> None:
    if backend.name == "gvisor":
        await _bomb_kills_only_its_gvisor_sandbox(backend, MEMORY_BOMB)
        return
    async with backend(limits=LIMITS) as sb:
        small = await sb.exec(py("x = b'x' * (32 << 20); print(len(x))"))
        assert small.exit_code == 0, small  # harmless probe: well under the limit works
        r = await sb.exec(MEMORY_BOMB, timeout=10)
        assert not r.timed_out
        assert r.exit_code != 0
        if sb.limit_enforcement["memory"].startswith("rlimit"):
            assert "MemoryError" in r.stderr
        else:
            assert r.oom_killed, r
            assert r.exit_code == 137
        assert (await sb.exec("echo alive")).stdout == "alive\n"


async def _bomb_kills_only_its_gvisor_sandbox(backend: Opener, bomb: list[str]) -> None:
    """gVisor (runsc 2022) runs its kernel inside the container's memory limit: a bomb that fills it takes
    the whole sandbox down, which is reported as a SandboxError. The host and other sandboxes are untouched."""
    async with backend(limits=LIMITS) as bystander, backend(limits=LIMITS) as sb:
        error: SandboxError | None = None
        try:
            r = await sb.exec(bomb, timeout=5)
            assert r.timed_out or r.exit_code != 0
        except SandboxError as exc:
            error = exc
        if error is not None:
            assert "died" in str(error)
            assert not sb.alive
        assert (await bystander.exec("echo alive")).stdout == "alive\n"


async def test_cpu_spin_stopped_at_the_timeout(backend: Opener) -> None:
    async with backend(limits=LIMITS) as sb:
        baseline = int((await sb.exec(PROCESSES)).stdout)
        r = await sb.exec(py("while True: pass"), timeout=1)
        assert r.timed_out
        assert 1 <= r.duration_s < 3
        r = await sb.exec(PROCESSES)
        assert int(r.stdout) == baseline


BACKGROUND = "setsid sleep 986.5 & python3 -c 'while True: pass' & (sleep 986.25 &) ; echo started"
"""A command that leaves three processes behind: a new session, a CPU burner, and a double-forked daemon."""


CPU_TICKS = py("""
    import os
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    print(total)
    """)
"""The CPU time (user + system, in clock ticks) of every other process in the sandbox."""


async def _sleepers(sb: Sandbox) -> list[str]:
    ps = await sb.exec(["ps", "-eo", "args"])
    return sorted(
        line for line in ps.stdout.splitlines() if line.startswith(("sleep 98", "python3 -c while"))
    )


async def test_background_processes_do_not_outlive_their_command(backend: Opener) -> None:
    async with backend(limits=LIMITS) as sb:
        r = await sb.exec(BACKGROUND)
        assert (r.stdout, r.timed_out, r.exit_code) == ("started\n", False, 0)
        assert r.killed_count == 3, r
        assert sorted(line.split()[-1] for line in r.killed) == ["986.25", "986.5", "pass"], r
        assert await _sleepers(sb) == []
        # Nothing burns CPU after the command returned: the sandbox's CPU time stands still.
        before = int((await sb.exec(CPU_TICKS)).stdout)
        await anyio.sleep(0.5)
        after = int((await sb.exec(CPU_TICKS)).stdout)
        assert after - before < 20, (before, after)  # clock ticks of 10 ms: a spinning loop would add 50
        # Leftovers would hold the pids limit: a dozen such commands in a row all still fork.
        for _ in range(12):
            r = await sb.exec("for i in 1 2 3 4 5; do setsid sleep 986.75 & done; echo ok")
            assert (r.stdout, r.killed_count) == ("ok\n", 5), r
        # At a timeout, the background processes are killed and listed with the command.
        r = await sb.exec("setsid sleep 986.5 & sleep 600", timeout=0.5)
        assert r.timed_out
        assert "sleep 986.5" in r.killed, r
        assert await _sleepers(sb) == []


async def test_kept_background_processes_run_until_reset(backend: Opener) -> None:
    async with backend(limits=LIMITS) as sb:
        r = await sb.exec("setsid sleep 985.5 & (sleep 985.25 &); echo started", keep_background=True)
        assert (r.stdout, r.killed) == ("started\n", ())
        assert await _sleepers(sb) == ["sleep 985.25", "sleep 985.5"]
        r = await sb.exec(BACKGROUND)  # a later command's end kills its own leftovers, not the kept ones
        assert r.killed_count == 3, r
        assert await _sleepers(sb) == ["sleep 985.25", "sleep 985.5"]
        await sb.reset()
        assert await _sleepers(sb) == []


async def test_a_command_ending_kills_none_of_a_concurrent_commands_processes(backend: Opener) -> None:
    async with backend(limits=LIMITS) as sb:
        results: dict[str, ExecResult] = {}

        async def run(name: str, command: str) -> None:
            results[name] = await sb.exec(command)

        long = "sleep 984.5 & setsid sleep 984.25 & sleep 1.5; ps -eo args | grep -c '^sleep 984'"
        short = "setsid sleep 983.5 & (setsid sleep 983.25 &); echo short"
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "long", long)
            await anyio.sleep(0.3)
            tg.start_soon(run, "short", short)
        # Both of the long command's processes were still alive when it looked, after the short one ended.
        assert results["long"].stdout == "2\n", results
        assert results["short"].stdout == "short\n"
        killed = results["long"].killed + results["short"].killed
        assert sorted(line.split()[-1] for line in killed) == ["983.25", "983.5", "984.25", "984.5"], results
        assert await _sleepers(sb) == []


async def test_host_unchanged_afterwards(backend: Opener) -> None:
    # Sleep lengths no other process on the machine uses, and only processes that were not there before count.
    needles = [b"sleep\x00987.25", b"sleep\x00987.75"]
    before = set(await anyio.to_thread.run_sync(_processes_matching, needles))
    tmp_before = {p for p in os.listdir("/tmp") if "agentscope" in p}
    async with backend(limits=LIMITS) as sb:
        await sb.write_file("f", "x")
        await sb.exec("sleep 987.25 & setsid sleep 987.75 & echo started", keep_background=True)
    tmp_after = {p for p in os.listdir("/tmp") if "agentscope" in p}
    assert tmp_after == tmp_before
    # No process of the sandbox survives it (the conftest also checks for cgroups and containers). The kernel tears
    # a pid namespace down asynchronously, so allow it a few seconds; an escaped sleep would still be there.
    survivors = set(await anyio.to_thread.run_sync(_processes_matching, needles)) - before
    for _ in range(50):
        if not survivors:
            break
        await anyio.sleep(0.1)
        survivors = set(await anyio.to_thread.run_sync(_processes_matching, needles)) - before
    assert not survivors


def _processes_matching(needles: list[bytes]) -> list[int]:
    found: list[int] = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if any(needle in cmdline for needle in needles):
                found.append(int(pid))
    return found
