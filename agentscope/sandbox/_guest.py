"""The guest: the one process of ours that runs inside every sandbox.

Every backend starts ``python3 -I -S -c <BOOTSTRAP>`` inside and sends, as the first line of its stdin, this file's
source and the config as JSON; so the guest needs nothing but the standard library of any Python 3.8+ inside the
sandbox (it never imports agentscope, and no file of ours has to be in the image). It then reads requests from
stdin and writes replies to stdout, one JSON object per line::

    -> {"id": 7, "op": "exec", "argv": [...], "cwd": "/work", "env": {...}, "timeout": 30, "stdin": null}
    <- {"id": 7, "exit_code": 0, "signal": null, "stdout": "<base64>", "stderr": "<base64>", "timed_out": false,
        "truncated": false, "duration": 0.003}

Operations: ``exec``, ``read``, ``write``, ``cancel`` (kill a running exec's process tree), ``reset`` (kill every
process but the guest, empty the work dir and /tmp), ``stat`` (OOM-kill count, processes), ``ping``. Every
request is handled on its own thread, so commands run concurrently.

When a command exits, the processes it left running (background jobs, ``setsid`` and double-forked daemons, which
the guest adopts as child subreaper) get a short grace and are then killed, and the reply lists them
(``killed``), unless the exec asked to ``keep_background``. Which command a process belongs to is learnt from
its session, process group and parentage while they still show it; an orphan never seen with its parent belongs
to the one command that was running when it started (with several, the last of them to end takes it). The guest makes itself non-dumpable, so
sandboxed code running as the same user can neither ptrace it nor open its file descriptors (and forge replies).
A reply ``{"id": 0, "ready": true}`` is sent once at start-up. End of input (the host went away) ends the guest,
and with it the sandbox.

One file because the host sends this file's source text into every sandbox and runs it there under ``python3 -I
-S``: it must stay a single, standard-library-only file (a split would need files of ours inside the image).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

_GRACE_AFTER_EXIT_S = 0.2
"""How long to keep reading a command's pipes after it exited, while background children still hold them."""
_MAX_READ_BYTES = 256 << 20

_MAX_KILLED_LISTED = 32
"""Most command lines of killed background processes listed in a reply (the count is always exact)."""
_TRACK_EVERY_S = 0.05
"""How often a running command's process tree is looked at, to learn which processes are its own."""
_KEPT = 0
"""The owner of processes left running on purpose by a command run with ``keep_background``."""


class _Job:
    """One running ``exec``: its command's process, when it started (clock ticks since boot), and whether the
    processes it leaves running are kept."""

    __slots__ = ("keep", "proc", "rid", "started")

    def __init__(self, rid: int, proc: subprocess.Popen[bytes], started: int, keep: bool) -> None:
        self.rid = rid
        self.proc = proc
        self.started = started
        self.keep = keep


_write_lock = threading.Lock()
_running: dict[int, _Job] = {}
_cancelled: set[int] = set()
_running_lock = threading.Lock()
_owners: dict[tuple[int, int], int] = {}
"""(pid, start ticks) -> id of the exec whose command started that process (``_KEPT``: kept on purpose), learnt
while its session or parentage still showed it: a daemon orphaned to the guest is still known to be its own."""
_last_track = [0.0]


_token = ""
"""Sent by the host at boot and put in every reply: sandboxed code that manages to write to our stdout (gVisor
lets it open /proc/1/fd/1) cannot forge a reply, since it never sees the token."""


def _send(out: BinaryIO, message: dict[str, Any]) -> None:
    message["k"] = _token
    data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    with _write_lock:
        out.write(data)
        out.flush()


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def _prctl_setup() -> None:
    """PR_SET_DUMPABLE 0: same-user processes can no longer ptrace us or open /proc/<guest>/fd/*.
    PR_SET_CHILD_SUBREAPER 1: processes that a command orphans (double fork, setsid) become our children, so a
    timeout can still find and kill them, and we reap them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)
        libc.prctl(36, 1, 0, 0, 0)
    except Exception:  # no ctypes in this Python: the guest still works, a little less protected
        pass


def _processes() -> dict[int, tuple[str, int, int, int, int]]:
    """pid -> (state, ppid, process group, session, start time in clock ticks) for every process we can see."""
    found: dict[int, tuple[str, int, int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        found[int(name)] = (
            fields[0].decode(),
            int(fields[1]),
            int(fields[2]),
            int(fields[3]),
            int(fields[19]),
        )
    return found


def _boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/<pid>/stat's start time uses."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _track(procs: dict[int, tuple[str, int, int, int, int]]) -> None:
    """Learn the owner of every process that shows it: a running command's own process, its session or process
    group, or a parent whose owner is known. Owners of processes that are gone are forgotten."""
    with _running_lock:
        roots = {job.proc.pid: rid for rid, job in _running.items()}
        for key in [key for key in _owners if procs.get(key[0], ("", 0, 0, 0, -1))[4] != key[1]]:
            del _owners[key]
        grew = True
        while grew:
            grew = False
            for pid, (_state, ppid, pgrp, sid, started) in procs.items():
                key = (pid, started)
                if key in _owners:
                    continue
                owner = roots.get(pid, roots.get(sid, roots.get(pgrp)))
                if owner is None and ppid in procs:
                    owner = _owners.get((ppid, procs[ppid][4]))
                if owner is not None:
                    _owners[key] = owner
                    grew = True


def _maybe_track() -> None:
    """:func:`_track`, at most every ``_TRACK_EVERY_S`` however many commands run."""
    now = time.monotonic()
    if now - _last_track[0] < _TRACK_EVERY_S:
        return
    _last_track[0] = now
    with contextlib.suppress(Exception):
        _track(_processes())


def _leftovers(job: _Job, procs: dict[int, tuple[str, int, int, int, int]], found: dict[int, int]) -> None:
    """Add to ``found`` (pid -> start ticks) the processes of ``job``: its command, its session and process
    group, the processes known to be its own (see :func:`_track`), their descendants, and the orphans of
    unknown owner that no other running command can have started (they started after this command did, and
    before every other one). An orphan that another running command may have started is left to that one."""
    me = os.getpid()
    root = job.proc.pid
    with _running_lock:
        others = [other for other in _running.values() if other is not job]
        owners = dict(_owners)
    other_roots = {other.proc.pid for other in others}
    grew = True
    while grew:
        grew = False
        for pid, (_state, ppid, pgrp, sid, started) in procs.items():
            if found.get(pid) == started or pid in (me, 1) or pid in other_roots:
                continue
            owner = owners.get((pid, started))
            if owner is None:
                mine = (
                    root in (pid, sid, pgrp)
                    or ppid in found
                    or (
                        ppid == me
                        and started >= job.started
                        and not any(other.started <= started for other in others)
                    )
                )
            else:
                mine = owner == job.rid
            if mine:
                found[pid] = started
                grew = True


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(512)
    except OSError:
        return f"pid {pid}"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200] or f"pid {pid}"


def _kill_job(job: _Job) -> list[str]:
    """Kill ``job``'s command and every process it left (see :func:`_leftovers`) until none is left alive;
    return the command lines of those killed, the command's own process excepted."""
    found: dict[int, int] = {}
    killed: dict[int, str] = {}
    root = job.proc.pid
    for _ in range(500):
        procs = _processes()
        _leftovers(job, procs, found)
        alive = [
            pid
            for pid, started in found.items()
            if pid in procs and procs[pid][4] == started and procs[pid][0] != "Z"
        ]
        if not alive:
            break
        for pid in alive:
            if pid != root and pid not in killed:
                killed[pid] = _command_line(pid)
        # Whole process groups first (the command's own, and those of escapees that lead one): one call kills
        # every member at once, even the children a fork bomb makes while we look.
        for pgrp in {root} | {pid for pid in alive if procs[pid][2] == pid}:
            with contextlib.suppress(OSError):
                os.killpg(pgrp, signal.SIGKILL)
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
    with _running_lock:
        for pid, started in found.items():
            _owners.pop((pid, started), None)
    _reap_after_kill()
    return list(killed.values())


def _keep_job(job: _Job) -> None:
    """Mark what ``job`` left running as kept: no later command's end kills it (``reset`` and close do)."""
    found: dict[int, int] = {}
    _leftovers(job, _processes(), found)
    with _running_lock:
        for pid, started in found.items():
            _owners[(pid, started)] = _KEPT
        for key, owner in list(_owners.items()):
            if owner == job.rid:
                _owners[key] = _KEPT


def _reap_adopted() -> int:
    """Reap the zombies we adopted as subreaper (never a command's own process: subprocess waits for those);
    return how many are left (zombies count against the pids limit until reaped)."""
    me = os.getpid()
    left = 0
    procs = _processes()
    with _running_lock:
        ours = {job.proc.pid for job in _running.values()}
        for pid, (state, ppid, _pgrp, _sid, _started) in procs.items():
            if state == "Z" and ppid == me and pid not in ours:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                except OSError:
                    left += 1
    return left


def _reap_orphans() -> None:
    """Reap adopted zombies, five times a second, for the guest's whole life."""
    while True:
        time.sleep(0.2)
        with contextlib.suppress(Exception):
            _reap_adopted()


def _reap_after_kill() -> None:
    """Right after a kill: reap the victims now, so that the next command is not refused for want of pids."""
    for _ in range(50):
        if not _reap_adopted():
            return
        time.sleep(0.002)


_OWN_PID_NAMESPACE_MAX_PID = 16
"""The guest is one of the first processes of a fresh pid namespace (pid 1 under Docker, 2 or 3 under bwrap).
With a larger pid it may be on the host's pid namespace, where ``kill(-1)`` would hit the host's processes of the
same user: then :func:`_kill_all` kills only the processes it found, one by one."""


def _descendants(procs: dict[int, tuple[str, int, int, int, int]], root: int) -> set[int]:
    found: set[int] = set()
    grew = True
    while grew:
        grew = False
        for pid, info in procs.items():
            if (info[1] == root or info[1] in found) and pid not in found:
                found.add(pid)
                grew = True
    return found


def _kill_all() -> int:
    """Kill every process of the sandbox except the guest and pid 1; return how many were alive.

    In its own pid namespace that is everyone else (``kill(-1)``); elsewhere (never expected) only the guest's
    descendants, so that the host's processes are never hit."""
    me = os.getpid()
    own_namespace = me <= _OWN_PID_NAMESPACE_MAX_PID
    killed = 0
    for _ in range(500):
        procs = _processes()
        candidates = procs.keys() if own_namespace else _descendants(procs, me)
        alive = [pid for pid in candidates if pid not in (me, 1) and procs[pid][0] != "Z"]
        if not alive:
            _reap_after_kill()
            break
        killed = max(killed, len(alive))
        if own_namespace:
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)
        else:
            for pid in alive:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
    return killed


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def _open_regular(path: str, flags: int, mode: int = 0o644) -> int:
    """``path`` opened without blocking (a FIFO would block its thread forever, and the host would give up on the
    sandbox); anything but a regular file is refused with an OSError saying what it is."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing while nobody reads it
            raise OSError(errno.ENXIO, "it is a FIFO, not a regular file") from None
        raise
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        if kind == stat.S_IFDIR:
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        raise OSError(errno.EINVAL, f"it is {_KINDS.get(kind, 'not a regular file')}, not a regular file")
    return fd


def _empty_dir(path: str) -> None:
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            for root, dirs, _files in os.walk(full):
                for d in dirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, d), 0o700)
            with contextlib.suppress(OSError):
                os.chmod(full, 0o700)
            _rmtree(full)
        else:
            with contextlib.suppress(OSError):
                os.unlink(full)


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _oom_kills(files: list[str]) -> int | None:
    """The cgroup's OOM-kill counter, from the first readable file of ``files`` (v2 memory.events, v1 oom_control)."""
    for path in files:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return None


class Guest:
    """The request loop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.workdir: str = config["workdir"]
        self.env: dict[str, str] = config["env"]
        self.wipe: list[str] = config.get("wipe", [self.workdir, "/tmp"])
        self.oom_files: list[str] = config.get("oom_files", [])
        self.command_memory_kb: int | None = config.get("command_memory_kb")
        self.max_file_bytes: int = config.get("max_file_bytes", _MAX_READ_BYTES)
        self.out: BinaryIO = sys.stdout.buffer

    def serve(self, seccomp_error: str | None = None) -> None:
        hello: dict[str, Any] = {"id": 0, "ready": True, "pid": os.getpid(), "python": sys.version.split()[0]}
        hello.update(seccomp=_seccomp_mode(), seccomp_error=seccomp_error)
        _send(self.out, hello)
        for line in sys.stdin.buffer:
            if not line.strip():
                continue
            try:
                request: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            op = request.get("op")
            if op == "shutdown":
                break
            if op in ("ping", "cancel"):
                self.handle(request)
                continue
            try:
                threading.Thread(target=self.handle, args=(request,), daemon=True).start()
            except RuntimeError as exc:  # no thread to be had: the sandbox is at its pids limit
                reply = {"id": request.get("id", -1), "error": f"the sandbox is at its process limit ({exc})"}
                _send(self.out, reply)
        _kill_all()

    def handle(self, request: dict[str, Any]) -> None:
        rid = request.get("id", -1)
        try:
            reply = getattr(self, "op_" + str(request.get("op")))(request)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "errno": getattr(exc, "errno", None)}
        reply["id"] = rid
        _send(self.out, reply)

    def _path(self, path: str) -> str:
        return os.path.join(self.workdir, path)

    # ------------------------------------------------------------------ operations

    def op_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def op_stat(self, request: dict[str, Any]) -> dict[str, Any]:
        me = os.getpid()
        procs = [pid for pid, info in _processes().items() if pid not in (me, 1) and info[0] != "Z"]
        return {"oom_kills": _oom_kills(self.oom_files), "processes": len(procs)}

    def op_read(self, request: dict[str, Any]) -> dict[str, Any]:
        with os.fdopen(_open_regular(self._path(request["path"]), os.O_RDONLY), "rb") as f:
            data = f.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise OSError(27, f"file larger than {self.max_file_bytes} bytes")
        return {"data": _b64(data)}

    def op_write(self, request: dict[str, Any]) -> dict[str, Any]:
        path = self._path(request["path"])
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        data = base64.b64decode(request["data"])
        fd = _open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, int(request.get("mode", 0o644)))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return {"ok": True, "size": len(data)}

    def op_reset(self, request: dict[str, Any]) -> dict[str, Any]:
        with _running_lock:
            running = list(_running)
            _cancelled.update(running)
        killed = _kill_all()
        with _running_lock:
            _owners.clear()
        for path in self.wipe:
            _empty_dir(path)
        return {"ok": True, "killed": killed}

    def op_cancel(self, request: dict[str, Any]) -> dict[str, Any]:
        target = int(request["target"])
        with _running_lock:
            _cancelled.add(target)
            job = _running.get(target)
        if job is not None:
            _kill_job(job)  # the exec's own thread then finishes the job
        return {"ok": True}

    def op_exec(self, request: dict[str, Any]) -> dict[str, Any]:
        rid = int(request["id"])
        argv: list[str] = request["argv"]
        env = dict(self.env)
        env.update(request.get("env") or {})
        cwd = self._path(request.get("cwd") or "")
        timeout = float(request["timeout"])
        limit = int(request["max_output"])
        keep = bool(request.get("keep_background"))
        stdin_data = base64.b64decode(request["stdin"]) if request.get("stdin") is not None else None
        start = time.monotonic()
        start_ticks = _boot_ticks()
        if self.command_memory_kb is not None:  # no cgroup: the memory limit is each command's address space
            argv = ["/bin/sh", "-c", 'ulimit -v "$0" && exec "$@"', str(self.command_memory_kb), *argv]
        try:
            # Under the lock: the orphan reaper must never see (and reap) this child before it is registered.
            with _running_lock:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
                job = _running[rid] = _Job(rid, proc, start_ticks, keep)
        except FileNotFoundError as exc:
            missing = argv[0] if exc.filename in (None, argv[0]) else exc.filename
            what = "no such directory" if exc.filename == cwd else "command not found"
            return self._failed(127, f"{missing}: {what}\n")
        except (PermissionError, NotADirectoryError, OSError) as exc:
            return self._failed(126, f"{argv[0]}: {exc.strerror or exc}\n")
        try:
            return self._communicate(job, stdin_data, start, timeout, limit)
        finally:
            with _running_lock:
                _running.pop(rid, None)
                _cancelled.discard(rid)

    def _failed(self, code: int, message: str) -> dict[str, Any]:
        return {
            "exit_code": code,
            "signal": None,
            "stdout": "",
            "stderr": _b64(message.encode()),
            "timed_out": False,
            "truncated": False,
            "duration": 0.0,
            "killed": [],
            "killed_count": 0,
        }

    def _communicate(
        self, job: _Job, stdin_data: bytes | None, start: float, timeout: float, limit: int
    ) -> dict[str, Any]:
        rid, proc = job.rid, job.proc
        assert proc.stdout is not None
        assert proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        buffers: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
        truncated = [False]
        poller = select.poll()
        for fd in buffers:
            poller.register(fd, select.POLLIN)
        open_fds = set(buffers)

        def read(fd: int) -> bool:
            """Read a chunk of ``fd`` into its buffer (up to the limit); False at end of stream."""
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                return False
            buffer = buffers[fd]
            room = limit - len(buffer)
            if room > 0:
                buffer += chunk[:room]
            if len(chunk) > room:
                truncated[0] = True
            return True

        in_fd = -1
        pending = memoryview(b"")
        if stdin_data is not None and proc.stdin is not None:
            in_fd = proc.stdin.fileno()
            os.set_blocking(in_fd, False)
            pending = memoryview(stdin_data)
            if pending:
                poller.register(in_fd, select.POLLOUT)
            else:
                proc.stdin.close()
                in_fd = -1
        deadline = start + timeout
        exited_at: float | None = None
        timed_out = False
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and (not open_fds or now - exited_at > _GRACE_AFTER_EXIT_S):
                break  # background children may hold the pipes: they get the grace, then what is left is killed
            if rid in _cancelled:
                break
            if now >= deadline:
                timed_out = exited_at is None
                break
            if now - start > 0.01:
                _maybe_track()
            wait = min(deadline - now, 0.05)
            if not open_fds and in_fd < 0:
                # Its output is closed but it has not exited (or not yet been seen to): wait for the exit itself.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait)
                continue
            for fd, _event in poller.poll(max(wait, 0.001) * 1000):
                if fd != in_fd:
                    read(fd)
                    continue
                try:
                    pending = pending[os.write(fd, pending[:65536]) :]
                except OSError:
                    pending = memoryview(b"")
                if not pending:
                    poller.unregister(fd)
                    assert proc.stdin is not None
                    proc.stdin.close()
                    in_fd = -1
        killed: list[str] = []
        if timed_out or rid in _cancelled:
            killed = _kill_job(job)
        elif job.keep:
            _keep_job(job)
        else:
            killed = self._end_background(job, exited_at)
        if killed or timed_out:
            # What the killed processes wrote before they died is still in the pipes: take it.
            give_up = time.monotonic() + 0.1
            for fd in list(open_fds):
                os.set_blocking(fd, False)
            while open_fds and time.monotonic() < give_up:
                for fd, _event in poller.poll(10):
                    read(fd)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            killed += _kill_job(job)
            code = proc.wait()
        duration = time.monotonic() - start
        sig = -code if code < 0 else None
        return {
            "exit_code": 128 + sig if sig is not None else code,
            "signal": sig,
            "stdout": _b64(buffers[out_fd]),
            "stderr": _b64(buffers[err_fd]),
            "timed_out": timed_out,
            "truncated": truncated[0],
            "duration": duration,
            "killed": killed[:_MAX_KILLED_LISTED],
            "killed_count": len(killed),
        }

    def _end_background(self, job: _Job, exited_at: float | None) -> list[str]:
        """The command exited: what it left running gets what remains of the grace, then is killed."""
        ends = (exited_at if exited_at is not None else time.monotonic()) + _GRACE_AFTER_EXIT_S
        while True:
            found: dict[int, int] = {}
            procs = _processes()
            _leftovers(job, procs, found)
            if not any(pid in procs and procs[pid][0] != "Z" for pid in found if pid != job.proc.pid):
                return []
            if time.monotonic() >= ends:
                return _kill_job(job)
            time.sleep(0.01)


def _apply_rlimits(rlimits: list[list[Any]]) -> None:
    import resource

    for name, soft, hard in rlimits:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))


def _load_seccomp(program: bytes) -> str | None:
    """Load the host's system-call filter (classic BPF) on this process, and so on every command it starts;
    return why it could not be loaded, or None. Must run before the guest starts any thread."""
    try:
        import ctypes
    except ImportError as exc:
        return f"the sandbox's python3 has no ctypes ({exc})"

    class _Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    code = ctypes.create_string_buffer(program, len(program))
    prog = _Program(len(program) // 8, ctypes.cast(code, ctypes.c_void_p))
    ulong = ctypes.c_ulong
    if libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        return f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    if libc.prctl(22, ulong(2), ulong(ctypes.addressof(prog)), ulong(0), ulong(0)) != 0:
        return f"prctl(PR_SET_SECCOMP) failed: {os.strerror(ctypes.get_errno())}"
    return None


def _seccomp_mode() -> int | None:
    """This process's seccomp mode as the kernel reports it (2: a filter), or None where it does not say."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(config: dict[str, Any]) -> None:
    """Run the guest with ``config`` (sent by the host with the source)."""
    global _token
    _token = str(config.get("token", ""))
    seccomp_error = None
    if config.get("seccomp"):
        seccomp_error = _load_seccomp(base64.b64decode(config["seccomp"]))
    threading.stack_size(512 * 1024)
    _prctl_setup()
    threading.Thread(target=_reap_orphans, daemon=True).start()
    _apply_rlimits(config.get("rlimits", []))
    os.umask(0o022)
    Guest(config).serve(seccomp_error)
