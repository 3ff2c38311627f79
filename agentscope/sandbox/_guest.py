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
request is handled on its own thread, so commands run concurrently. The guest makes itself non-dumpable, so
sandboxed code running as the same user can neither ptrace it nor open its file descriptors (and forge replies).
A reply ``{"id": 0, "ready": true}`` is sent once at start-up. End of input (the host went away) ends the guest,
and with it the sandbox.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

_GRACE_AFTER_EXIT_S = 0.2
"""How long to keep reading a command's pipes after it exited, while background children still hold them."""
_MAX_READ_BYTES = 256 << 20

_write_lock = threading.Lock()
_running: dict[int, subprocess.Popen[bytes]] = {}
_cancelled: set[int] = set()
_running_lock = threading.Lock()


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


def _kill_tree(root: int, orphans_since: int | None = None) -> None:
    """Kill ``root``, its process group and session, and every descendant, until none is left alive.

    With ``orphans_since`` (clock ticks since boot), also the processes orphaned to the guest (double forks,
    daemons) that started since then: the command's own escapees when no other command ran meanwhile.
    """
    me = os.getpid()
    for _ in range(200):
        procs = _processes()
        with _running_lock:
            ours = {p.pid for p in _running.values()}
        victims = {
            pid
            for pid, (_state, ppid, pgrp, sid, started) in procs.items()
            if pid == root
            or pgrp == root
            or sid == root
            or (orphans_since is not None and ppid == me and pid not in ours and started >= orphans_since)
        }
        grew = True
        while grew:
            grew = False
            for pid, (_state, ppid, _pgrp, _sid, _started) in procs.items():
                if ppid in victims and pid not in victims:
                    victims.add(pid)
                    grew = True
        alive = [pid for pid in victims if pid not in (me, 1) and procs.get(pid, ("Z",))[0] != "Z"]
        if not alive:
            _reap_after_kill()
            return
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.killpg(root, signal.SIGKILL)
        time.sleep(0.002)


def _reap_adopted() -> int:
    """Reap the zombies we adopted as subreaper (never a command's own process: subprocess waits for those);
    return how many are left (zombies count against the pids limit until reaped)."""
    me = os.getpid()
    left = 0
    procs = _processes()
    with _running_lock:
        ours = {p.pid for p in _running.values()}
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
        self.out: BinaryIO = sys.stdout.buffer

    def serve(self) -> None:
        _send(self.out, {"id": 0, "ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
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
        with open(self._path(request["path"]), "rb") as f:
            data = f.read(_MAX_READ_BYTES + 1)
        if len(data) > _MAX_READ_BYTES:
            raise OSError(27, f"file larger than {_MAX_READ_BYTES} bytes")
        return {"data": _b64(data)}

    def op_write(self, request: dict[str, Any]) -> dict[str, Any]:
        path = self._path(request["path"])
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        data = base64.b64decode(request["data"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, int(request.get("mode", 0o644)))
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
        for path in self.wipe:
            _empty_dir(path)
        return {"ok": True, "killed": killed}

    def op_cancel(self, request: dict[str, Any]) -> dict[str, Any]:
        target = int(request["target"])
        with _running_lock:
            _cancelled.add(target)
            proc = _running.get(target)
        if proc is not None:
            _kill_tree(proc.pid)  # the exec's own thread then finishes the job, escapees included
        return {"ok": True}

    def op_exec(self, request: dict[str, Any]) -> dict[str, Any]:
        rid = int(request["id"])
        argv: list[str] = request["argv"]
        env = dict(self.env)
        env.update(request.get("env") or {})
        cwd = self._path(request.get("cwd") or "")
        timeout = float(request["timeout"])
        limit = int(request["max_output"])
        stdin_data = base64.b64decode(request["stdin"]) if request.get("stdin") is not None else None
        start = time.monotonic()
        start_ticks = _boot_ticks()
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
                _running[rid] = proc
        except FileNotFoundError as exc:
            missing = argv[0] if exc.filename in (None, argv[0]) else exc.filename
            what = "no such directory" if exc.filename == cwd else "command not found"
            return self._failed(127, f"{missing}: {what}\n")
        except (PermissionError, NotADirectoryError, OSError) as exc:
            return self._failed(126, f"{argv[0]}: {exc.strerror or exc}\n")
        try:
            return self._communicate(rid, proc, stdin_data, start, start_ticks, timeout, limit)
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
        }

    def _communicate(
        self,
        rid: int,
        proc: subprocess.Popen[bytes],
        stdin_data: bytes | None,
        start: float,
        start_ticks: int,
        timeout: float,
        limit: int,
    ) -> dict[str, Any]:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        buffers: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
        truncated = False
        poller = select.poll()
        for fd in buffers:
            poller.register(fd, select.POLLIN)
        open_fds = set(buffers)
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
        while open_fds:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _GRACE_AFTER_EXIT_S:
                break  # background children keep the pipes open: stop waiting for them
            if rid in _cancelled:
                break
            if now >= deadline:
                timed_out = exited_at is None
                break
            wait = min(deadline - now, 0.05)
            for fd, _event in poller.poll(max(wait, 0.001) * 1000):
                if fd == in_fd:
                    try:
                        pending = pending[os.write(fd, pending[:65536]) :]
                    except OSError:
                        pending = memoryview(b"")
                    if not pending:
                        poller.unregister(fd)
                        assert proc.stdin is not None
                        proc.stdin.close()
                        in_fd = -1
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                buffer = buffers[fd]
                room = limit - len(buffer)
                if room > 0:
                    buffer += chunk[:room]
                if len(chunk) > room:
                    truncated = True
        if timed_out or rid in _cancelled:
            with _running_lock:
                alone = len(_running) == 1
            _kill_tree(proc.pid, orphans_since=start_ticks if alone else None)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            code = proc.wait()
        duration = time.monotonic() - start
        sig = -code if code < 0 else None
        return {
            "exit_code": 128 + sig if sig is not None else code,
            "signal": sig,
            "stdout": _b64(buffers[out_fd]),
            "stderr": _b64(buffers[err_fd]),
            "timed_out": timed_out,
            "truncated": truncated,
            "duration": duration,
        }


def _apply_rlimits(rlimits: list[list[Any]]) -> None:
    import resource

    for name, soft, hard in rlimits:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))


def main(config: dict[str, Any]) -> None:
    """Run the guest with ``config`` (sent by the host with the source)."""
    global _token
    _token = str(config.get("token", ""))
    threading.stack_size(512 * 1024)
    _prctl_setup()
    threading.Thread(target=_reap_orphans, daemon=True).start()
    _apply_rlimits(config.get("rlimits", []))
    os.umask(0o022)
    Guest(config).serve()
