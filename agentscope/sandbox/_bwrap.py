"""The bubblewrap backend: a sandbox in fresh namespaces on the host's own read-only /usr, no daemon needed.

Each sandbox is one ``bwrap`` process: new user, pid, net, ipc, uts and cgroup namespaces; the host's /usr (and its
/bin, /lib symlinks) and a few files of /etc read-only, nothing else of the host (no /home, /root, /tmp, /var,
/sys); a size-limited tmpfs as the work dir and another as /tmp; a root that is read-only; no capabilities, no
further user namespaces. Limits go through a per-sandbox cgroup where one can be made (see ``_cgroups.py``),
else through rlimits, and only when asked with ``strict=False`` (``AGENTSCOPE_SANDBOX_CGROUPS=0`` forces that
path): RLIMIT_NPROC counts per user namespace (Linux 5.14+), so it caps the sandbox's own processes, but RLIMIT_AS
caps each command's memory, not the sandbox's, and nothing caps CPU. When this process runs as root,
the sandbox runs as ``nobody`` on the host, so host files are not its own. bwrap loads the system-call filter of
``_seccomp.py`` (``--seccomp``) before it starts the guest. The guest inside (``_guest.py``) runs every command in its own session and kills its whole tree on
timeout; killing ``bwrap`` kills the pid namespace and everything in it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from agentscope.exceptions import SandboxError
from agentscope.sandbox._base import Sandbox, guest_boot_line, guest_command, guest_source
from agentscope.sandbox._cgroups import Cgroup, CgroupUnavailable, create_cgroup, sweep_stale_cgroups
from agentscope.sandbox._seccomp import seccomp_program
from agentscope.sandbox._types import MAX_FILE_BYTES, SandboxSpec

__all__ = ["BwrapSandbox", "bwrap_available"]

logger = logging.getLogger("agentscope.sandbox")

SANDBOX_UID = 1000
"""The user id commands run as inside the sandbox (named ``sandbox``)."""
_HOST_NOBODY = 65534
_counter = itertools.count(1)
_ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "mime.types",
    "nsswitch.conf",
    "protocols",
    "services",
    "host.conf",
    "gai.conf",
    "os-release",
    "debian_version",
    "bash.bashrc",
    "profile",
    "inputrc",
    "magic",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
)
_BWRAP_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
"""The environment of the bwrap process itself (sandboxed code can read it in /proc/1/environ)."""
_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@cache
def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_available() -> bool:
    """True when a ``bwrap`` binary is on PATH (whether it can make namespaces is only known when one starts)."""
    return _bwrap_path() is not None


@cache
def _bwrap_flags() -> frozenset[str]:
    """The options this bwrap knows (old versions lack ``--disable-userns``, ``--size``...)."""
    path = _bwrap_path()
    if path is None:
        return frozenset()
    try:
        text = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(word for word in text.split() if word.startswith("--"))


@cache
def _guest_python() -> str | None:
    """A python3 under /usr, which the sandbox sees at the same path."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("python3")
    if found and os.path.realpath(found).startswith("/usr/"):
        return os.path.realpath(found)
    return None


def _etc_files() -> dict[str, bytes]:
    """passwd, group, hosts and hostname as the sandbox sees them."""
    return {
        "passwd": (
            "root:x:0:0:root:/root:/bin/sh\n"
            f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/work:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "group": f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n".encode(),
        "hosts": b"127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n",
        "hostname": b"sandbox\n",
    }


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data`` (bwrap copies it in; nothing is left on the host's disk)."""
    fd = os.memfd_create(f"agentscope-{name}")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


_swept = False


def _prepare(name: str, spec: SandboxSpec) -> tuple[Cgroup | None, str]:
    """Blocking set-up: a sweep of stale cgroups (once per process), then this sandbox's cgroup (or None, and
    why none could be made)."""
    global _swept
    if _bwrap_path() is None:
        raise SandboxError(
            "bubblewrap is not installed: apt-get install bubblewrap (or start Docker and use backend='docker')"
        )
    if not _swept:
        _swept = True
        removed = sweep_stale_cgroups()
        if removed:
            logger.info("removed %d stale sandbox cgroup(s) left by dead processes", removed)
    if os.environ.get("AGENTSCOPE_SANDBOX_CGROUPS", "1") == "0":
        return (
            None,
            "AGENTSCOPE_SANDBOX_CGROUPS=0 turns cgroups off",
        )  # as on a machine that lets us make none
    limits = spec.limits
    try:
        return create_cgroup(name, memory_mb=limits.memory_mb, pids=limits.pids, cpus=limits.cpus), ""
    except CgroupUnavailable as exc:
        return None, str(exc)


_warned: set[str] = set()


def _weaker_limits(spec: SandboxSpec, cgroup: Cgroup | None, sized: bool, why: str) -> str | None:
    """What this sandbox would not enforce as asked, and how to fix it; None when it enforces everything."""
    limits = spec.limits
    problems: list[str] = []
    if cgroup is None:
        problems.append(f"memory_mb={limits.memory_mb} would cap each process, not the sandbox as a whole")
    if cgroup is None or "cpu" not in cgroup.controllers:
        problems.append(f"cpus={limits.cpus:g} would not be enforced at all (only the timeout stops a spin)")
        why = why or "this machine's cgroups have no cpu controller for sandboxes"
    if not sized:
        problems.append(
            f"disk_mb={limits.disk_mb} would cap each file, not the work dir (this bwrap has no --size)"
        )
    if not problems:
        return None
    return (
        "the bubblewrap sandbox cannot enforce its limits as asked: "
        + "; ".join(problems)
        + (f" ({why})" if why else "")
        + ". Run as root or in a cgroup delegated to this process (systemd-run --user --scope -p Delegate=yes "
        "...), use backend='docker', or accept the weaker limits with SandboxLimits(strict=False)"
    )


class _ProcessTransport:
    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout

    async def send(self, data: bytes) -> None:
        await self._stdin.send(data)

    async def receive(self) -> bytes:
        try:
            return await self._stdout.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return b""

    async def aclose(self) -> None:
        await self._stdin.aclose()


class BwrapSandbox(Sandbox):
    """A sandbox run by bubblewrap. Open it with ``open_sandbox("bwrap")`` or ``open_sandbox(SandboxSpec(backend="bwrap", ...))``."""

    backend = "bwrap"

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        self.id = f"sb-{os.getpid()}-{next(_counter)}"
        self._process: anyio.abc.Process | None = None
        self._cgroup: Cgroup | None = None
        self._stderr = b""

    def _argv(self, etc: dict[str, int]) -> tuple[list[str], dict[str, Any]]:
        """The command line and the guest's config (blocking: reads the host, fills ``etc`` with memfds of
        the sandbox's own /etc files, which the caller passes to bwrap and closes)."""
        bwrap = _bwrap_path()
        assert bwrap is not None
        python = _guest_python()
        if python is None:
            raise SandboxError(
                "the bubblewrap sandbox runs the host's /usr, which has no python3: install it "
                "(apt-get install python3) or use backend='docker'"
            )
        spec, limits = self.spec, self.spec.limits
        flags = _bwrap_flags()
        disk = str(limits.disk_mb << 20)
        argv = [
            bwrap,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
        ]
        if not spec.network:
            argv.append("--unshare-net")
        if "--disable-userns" in flags:
            argv.append("--disable-userns")
        argv += ["--perms", "0755", "--dir", "/etc", "--ro-bind", "/usr", "/usr"]
        for top in _TOP_LEVEL:
            host = Path("/") / top
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), f"/{top}"]
        for name in _ETC_FILES:
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        if spec.network:
            argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
        for name, data in _etc_files().items():
            etc[name] = fd = _memfd(name, data)
            argv += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
        if "--seccomp" not in flags:
            raise SandboxError(
                "this bubblewrap cannot load a system-call filter (no --seccomp option): upgrade it "
                "(apt-get install bubblewrap) or use backend='docker'"
            )
        etc["seccomp"] = fd = _memfd("seccomp", seccomp_program())
        argv += ["--seccomp", str(fd)]
        for mount in spec.mounts:
            argv += ["--ro-bind", mount, mount]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        sized = "--size" in flags
        for path in ("/tmp", "/dev/shm", spec.workdir):
            if sized:
                argv += ["--size", disk]
            argv += ["--perms", "1777" if path != spec.workdir else "0755", "--tmpfs", path]
        argv += ["--remount-ro", "/", "--chdir", spec.workdir, "--clearenv"]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": spec.workdir,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "USER": "sandbox",
        }
        rlimits: list[list[Any]] = [["RLIMIT_CORE", 0, 0]]
        if self._cgroup is None:
            rlimits.append(["RLIMIT_NPROC", limits.pids, limits.pids])
        rlimits.append(["RLIMIT_FSIZE", limits.disk_mb << 20, limits.disk_mb << 20])
        config = {
            "workdir": spec.workdir,
            "env": env,
            "wipe": [spec.workdir, "/tmp", "/dev/shm"],
            "rlimits": rlimits,
            "max_file_bytes": MAX_FILE_BYTES,
            "oom_files": [],
            # Without a cgroup, each command (not the guest, which must keep its threads) gets RLIMIT_AS.
            "command_memory_kb": None if self._cgroup is not None else limits.memory_mb << 10,
        }
        argv += ["--", *guest_command(python)]
        prefix: list[str] = []
        if self._cgroup is not None:
            script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
            prefix = ["/bin/sh", "-c", script, "sh", *self._cgroup.procs_files, "--"]
        if os.geteuid() == 0:
            # As root, the sandbox would own every root-owned host file it can see: run it as nobody instead.
            prefix += [
                "setpriv",
                f"--reuid={_HOST_NOBODY}",
                f"--regid={_HOST_NOBODY}",
                "--clear-groups",
                "--no-new-privs",
                "--",
            ]
        return prefix + argv, config

    async def _start(self) -> None:
        source = await guest_source()
        no_cgroup = ""
        with anyio.CancelScope(shield=True):  # a cancelled start must still learn of (and remove) its cgroup
            self._cgroup, no_cgroup = await anyio.to_thread.run_sync(_prepare, self.id, self.spec)
        limits = self.spec.limits
        if self._cgroup is not None:
            how = f"cgroup {self._cgroup.version}"
            self.limit_enforcement = {
                "memory": how,
                "pids": how,
                "cpus": how if "cpu" in self._cgroup.controllers else "none (timeout only)",
            }
        else:
            self.limit_enforcement = {
                "memory": "rlimit AS, per process (not a total)",
                "pids": "rlimit NPROC",
                "cpus": "none (timeout only)",
            }
        sized = await anyio.to_thread.run_sync(lambda: "--size" in _bwrap_flags())
        self.limit_enforcement["disk"] = "tmpfs" if sized else "rlimit FSIZE, per file (not a total)"
        self.limit_enforcement["syscalls"] = "seccomp filter (bwrap --seccomp)"
        weaker = _weaker_limits(self.spec, self._cgroup, sized, no_cgroup)
        if weaker is not None:
            if limits.strict:
                raise SandboxError(weaker)
            if weaker not in _warned:
                _warned.add(weaker)
                logger.warning("%s; starting anyway (strict=False)", weaker)
        etc: dict[str, int] = {}
        try:
            argv, config = await anyio.to_thread.run_sync(self._argv, etc)
            logger.debug("starting bwrap sandbox %s (limits %s)", self.id, limits)
            self._process = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(etc.values()),
                env=_BWRAP_ENV,  # bwrap stays pid 1 inside: its environ must hold none of our secrets
            )
        finally:
            for fd in etc.values():
                os.close(fd)
        self._transport = _ProcessTransport(self._process)
        await self._transport.send(guest_boot_line(source, config, self._token))

    async def _diagnostics(self) -> str:
        process = self._process
        if process is None or process.stderr is None:
            return ""
        chunks: list[bytes] = [self._stderr]
        with anyio.move_on_after(1):
            while sum(len(c) for c in chunks) < 65536:
                try:
                    chunks.append(await process.stderr.receive())
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
        self._stderr = b"".join(chunks)
        return self._stderr.decode(errors="replace")

    async def _read_oom_kills(self) -> int | None:
        cgroup = self._cgroup
        if cgroup is None:
            return None
        return await anyio.to_thread.run_sync(cgroup.oom_kills)

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None:
            await anyio.to_thread.run_sync(cgroup.remove)
