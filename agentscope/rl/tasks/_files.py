"""File tasks: create or edit files with the built-in file and code tools so that a check run in a sandbox passes.

========  ===================================================================  =====================================
level     task                                                                 what the expert calls
========  ===================================================================  =====================================
1         ``Create notes.txt containing exactly: amber river seven``           ``write_file`` (1 call)
2         ``In settings.ini set port to 8080.`` (the file exists, the old      ``view_file`` → ``edit_file``
          value is nowhere but in the file)                                    (2 calls)
3         ``Run python3 app.py, then fix config.ini so that it prints ok.``    ``execute_shell_command`` →
          (only running app.py, or reading it, tells what to fix)              ``view_file`` → ``edit_file`` (3)
========  ===================================================================  =====================================

File names, keys and values vary per task, so every step copies a span of the prompt or of a tool result: the
path, the line to replace (``edit_file`` needs it exactly as the file has it), the value the program asks for.

The agent's tools are the built-in ones: ``view_file``, ``write_file`` and ``edit_file``
(:func:`~agentscope.tools.builtin.make_file_tools`, confined to the episode's work directory) and
``execute_shell_command`` (:func:`~agentscope.tools.builtin.make_code_tools`), which runs in the episode's
sandbox. The file tools work on a directory of the host and the sandbox has its own work dir, so the environment
keeps the two equal: before each command (and before the check) it copies what changed into the sandbox, and after
each command it copies the sandbox's files back. The check runs in the sandbox when the episode ends (``python3
-I``, out of the agent's reach): the exact content (level 1), the ini file's keys and values, in order (level 2),
the program unchanged and printing ``ok`` (level 3). Reward 1 when it passes, else 0; the reply's text does not
matter. The check reads regular files only: a FIFO, a symbolic link or a directory where it reads fails the task
(a blocking read of a FIFO the agent made would otherwise hang the check until its timeout, which is an
infrastructure failure, not a score).

Sandboxes come from a :class:`~agentscope.sandbox.SandboxPool`, one per episode, reset and reused by the pool
afterwards: the environments of one event loop share one pool per backend (``auto``: Docker when an engine
answers, else bubblewrap), closed with the last of them, or use the pool they are given. A sandbox that fails
during an episode fails the episode as infrastructure (``failed_infra``), and the cluster replaces the environment.

Spec: ``files:n=200,seed=0,level=1``; ``level=1-3`` (or 0) mixes the levels as for ``lookup``. The content key
(``split=``) is the prompt with the initial files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import tempfile
import weakref
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
from pydantic import JsonValue

from agentscope.exceptions import SandboxError
from agentscope.message import Msg
from agentscope.rl._types import Task
from agentscope.rl.envs import Environment, EnvResult, Observation
from agentscope.rl.tasks._common import parse_levels
from agentscope.sandbox import BackendName, Sandbox, SandboxLimits, SandboxPool, SandboxSpec
from agentscope.tools import Toolkit, ToolResponse
from agentscope.tools.builtin import make_code_tools, make_file_tools

__all__ = ["FilesEnv", "files_tasks"]

_WORDS: Final = (
    "amber", "apple", "cedar", "cloud", "delta", "frost", "green", "honey", "ivory", "lemon", "lunar",
    "mango", "maple", "noble", "north", "olive", "orbit", "pearl", "quiet", "raven", "river", "seven",
    "solar", "stone", "tiger", "tulip", "vivid", "wheat",
)  # fmt: skip
_TEXT_FILES: Final = ("notes.txt", "todo.txt", "memo.txt", "hello.txt", "plan.txt", "list.txt")
_INI_FILES: Final = ("settings.ini", "config.ini", "app.ini", "server.ini", "setup.ini")
_PROGRAMS: Final = (
    ("app.py", "config.ini"),
    ("main.py", "settings.ini"),
    ("run.py", "app.ini"),
    ("start.py", "server.ini"),
)
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "host": ("alpha", "beta", "gamma", "local", "main", "edge"),
    "mode": ("fast", "slow", "safe", "debug", "quiet", "eco"),
    "user": ("ada", "ben", "cleo", "dan", "eva", "finn"),
    "color": ("red", "blue", "green", "black", "white", "gold"),
}
_RANGES: Final[dict[str, tuple[int, int]]] = {
    "port": (1000, 9999),
    "level": (1, 9),
    "timeout": (10, 99),
    "size": (1, 64),
}
_KEYS: Final = ("host", "port", "mode", "level", "user", "timeout", "color", "size")
_LIMITS: Final = SandboxLimits(memory_mb=256, pids=64, timeout_s=10, disk_mb=16)
_MIRROR_FILE_BYTES: Final = 256 * 1024
"""Files bigger than this (or past twice this in all) are not copied back from the sandbox: the host keeps its own
version, if it has one (the tasks' files are a few hundred bytes)."""
_CHECK_TIMEOUT_S: Final = 5.0

_PROGRAM: Final = """\
cfg = {{}}
for line in open("{config}"):
    key, sep, value = line.partition("=")
    if sep:
        cfg[key.strip()] = value.strip()
for key in {others!r}:
    if key not in cfg:
        raise SystemExit("error: " + key + " is missing")
if cfg.get("{key}") != "{value}":
    raise SystemExit("error: {key} must be {value}")
print("ok")
"""

_CHECK: Final = """\
import errno, json, os, stat, subprocess, sys

spec = json.loads(sys.stdin.read())


def read(path):
    # The file's text, or why there is none. Only a regular file is read: a FIFO would block the open (and the
    # check until its timeout), a link to a device could never end; neither is opened blocking nor followed.
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None, path + " is not a regular file"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None, path + " is missing"
    except OSError as exc:  # ELOOP: swapped for a link since the lstat
        return None, path + (" is not a regular file" if exc.errno == errno.ELOOP else " cannot be read")
    with os.fdopen(fd, encoding="utf-8") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the lstat
            return None, path + " is not a regular file"
        try:
            return f.read(), None
        except UnicodeDecodeError:
            return None, path + " is not UTF-8 text"


def ini(text):
    return [[part.strip() for part in line.partition("=")[::2]] for line in text.splitlines() if line.strip()]


def problem():
    path = spec["path"]
    text, unread = read(path)
    if text is None:
        return unread
    if spec["kind"] == "exact":
        return None if text.rstrip("\\n") == spec["text"] else path + " holds " + repr(text[:60])
    if spec["kind"] == "ini":
        return None if ini(text) == spec["expected"] else path + " holds " + repr(text[:80])
    if text != spec["source"]:
        return path + " was changed"
    config = spec.get("config")
    if config is not None and os.path.lexists(config):
        unread = read(config)[1]
        if unread is not None:
            return unread  # the program would block on it (a FIFO) or fail to read it
    try:
        done = subprocess.run(
            [sys.executable, "-I", path], capture_output=True, text=True, timeout=spec["timeout"]
        )
    except subprocess.TimeoutExpired:
        return path + " did not finish"
    said = (done.stdout.strip() or done.stderr.strip())[-80:]
    return None if done.returncode == 0 and done.stdout.strip() == "ok" else path + " said " + repr(said)


found = problem()
print("ok" if found is None else "fail: " + found)
"""

_LISTING: Final = ("find", ".", "-type", "f", "-printf", "%s\\t%P\\0")
"""Every regular file under the work dir, as ``size<TAB>path<NUL>`` (symlinks are not followed or listed)."""


# ---------------------------------------------------------------------- the tasks


def _value(key: str, rng: random.Random, other_than: str | None = None) -> str:
    while True:
        if key in _CHOICES:
            value = rng.choice(_CHOICES[key])
        else:
            low, high = _RANGES[key]
            value = str(rng.randint(low, high))
        if value != other_than:
            return value


def _ini(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{key} = {value}\n" for key, value in pairs)


def _task(level: int, rng: random.Random) -> tuple[str, dict[str, str], dict[str, JsonValue]]:
    """The prompt, the initial files and the check of one task."""
    if level == 1:
        path = rng.choice(_TEXT_FILES)
        text = " ".join(rng.sample(_WORDS, rng.randint(2, 4)))
        return f"Create {path} containing exactly: {text}", {}, {"kind": "exact", "path": path, "text": text}
    keys = rng.sample(_KEYS, rng.randint(3, 5) if level == 2 else 3)
    pairs = [(key, _value(key, rng)) for key in keys]
    target = rng.randrange(len(pairs))
    key, old = pairs[target]
    new = _value(key, rng, other_than=old)
    if level == 2:
        path = rng.choice(_INI_FILES)
        expected: list[JsonValue] = [[k, new if i == target else v] for i, (k, v) in enumerate(pairs)]
        check: dict[str, JsonValue] = {"kind": "ini", "path": path, "expected": expected}
        return f"In {path} set {key} to {new}.", {path: _ini(pairs)}, check
    program, config = rng.choice(_PROGRAMS)
    others = tuple(k for k in keys if k != key)
    source = _PROGRAM.format(config=config, others=others, key=key, value=new)
    check = {"kind": "run", "path": program, "config": config, "source": source, "timeout": _CHECK_TIMEOUT_S}
    prompt = f"Run python3 {program}, then fix {config} so that it prints ok."
    return prompt, {program: source, config: _ini(pairs)}, check


def files_tasks(n: int = 200, seed: int = 0, level: int | str = 1) -> list[Task]:
    """``n`` file tasks (deterministic given the arguments; see the module docstring for the levels).

    Args:
        n: How many tasks.
        seed: Seed of the files, names and values.
        level: 1, 2 or 3; a range such as ``"1-3"`` (or 0, the same as ``"1-3"``) mixes the levels, task ``i``
            taking the ``i % k``-th level of the range.

    Raises:
        ValueError: ``n`` below 1 or an unknown level.
    """
    if n < 1:
        raise ValueError(f"files needs n >= 1, got {n}")
    levels = parse_levels("files", level)
    tasks: list[Task] = []
    for i in range(n):
        task_level = levels[i % len(levels)]
        prompt, files, check = _task(task_level, random.Random(f"files:{seed}:{i}:{task_level}"))
        content = json.dumps([prompt, files], sort_keys=True)
        files_json: dict[str, JsonValue] = dict(files)
        tasks.append(
            Task(
                id=f"files-L{task_level}-{seed}-{i}",
                prompt=prompt,
                metadata={
                    "level": task_level,
                    "files": files_json,
                    "check": check,
                    "content_key": f"files:{hashlib.sha256(content.encode()).hexdigest()[:24]}",
                },
            )
        )
    return tasks


@dataclass(frozen=True, slots=True)
class _Spec:
    level: int
    files: dict[str, str]
    check: dict[str, JsonValue]


def _spec_of(task: Task) -> _Spec:
    level, files, check = (task.metadata.get(k) for k in ("level", "files", "check"))
    if not isinstance(level, int) or not isinstance(files, dict) or not isinstance(check, dict):
        raise ValueError(f"task {task.id!r} is not a files task: its metadata lacks level, files and check")
    texts = {path: text for path, text in files.items() if isinstance(text, str) and _safe(path)}
    if len(texts) != len(files):
        raise ValueError(f"task {task.id!r}: files must map relative paths to text")
    return _Spec(level, texts, check)


def _safe(path: str) -> bool:
    """A relative path that stays inside the work directory."""
    parts = Path(path).parts
    return (
        bool(parts) and not Path(path).is_absolute() and ".." not in parts and os.path.normpath(path) == path
    )


# ---------------------------------------------------------------------- host side of the work directory


def _read_tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
        for name in files:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def _write_tree(root: Path, files: dict[str, bytes], *, clear: bool) -> None:
    """Make ``root`` hold ``files`` (and, with ``clear``, nothing else)."""
    current = _read_tree(root)
    if clear:
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        current = {}
    for path in set(current) - set(files):
        (root / path).unlink()
    for path, data in files.items():
        if current.get(path) != data:
            target = root / path
            if target.is_dir():  # a command replaced a directory by a file of the same name
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _take_back(root: Path, copied: dict[str, bytes], too_big: set[str]) -> dict[str, bytes]:
    """Make ``root`` hold the sandbox's files (``copied``, and the host's own version of those ``too_big`` to
    copy); returns what the two now share."""
    current = _read_tree(root)
    files = {**{path: current[path] for path in too_big if path in current}, **copied}
    _write_tree(root, files, clear=False)
    return files


# ---------------------------------------------------------------------- shared pools


@dataclass(eq=False)
class _Shared:
    pool: SandboxPool
    users: int = 0
    started: bool = False
    lock: anyio.Lock = field(default_factory=anyio.Lock)


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]] = weakref.WeakKeyDictionary()
"""The shared pools of each event loop, per backend."""


async def _lease_pool(backend: BackendName) -> _Shared:
    pools = _POOLS.setdefault(asyncio.get_running_loop(), {})
    shared = pools.get(backend)
    if shared is None:
        shared = pools[backend] = _Shared(SandboxPool(SandboxSpec(backend=backend, limits=_LIMITS), size=2))
    shared.users += 1
    try:
        async with shared.lock:
            if not shared.started:
                await shared.pool.start()
                shared.started = True
    except BaseException:
        shared.users -= 1
        if pools.get(backend) is shared:
            del pools[backend]  # start() closed it; the next lease makes a new one
        raise
    return shared


async def _release_pool(backend: BackendName, shared: _Shared) -> None:
    shared.users -= 1
    if shared.users > 0:
        return
    pools = _POOLS.get(asyncio.get_running_loop(), {})
    if pools.get(backend) is shared:
        del pools[backend]
    await shared.pool.aclose()


# ---------------------------------------------------------------------- the environment


class FilesEnv(Environment):
    """Plays file tasks: the built-in file tools on a work directory of the host, the shell tool in the episode's
    sandbox (the two kept equal), and the task's check run in the sandbox at the end.

    Args:
        backend: Sandbox backend of the shared pool: ``auto`` (Docker when an engine answers, else bubblewrap),
            ``bwrap`` or ``docker``.
        pool: A pool to take the episodes' sandboxes from instead (the caller opens and closes it). Give it no
            ``max_concurrency``: an episode's sandbox may go back to the pool from another task than the one
            that took it (the next reset, the cluster's close), which a concurrency cap does not allow; the
            cluster's slots bound the sandboxes in use anyway.
        command_timeout_s: Longest a shell command of the agent may run.
    """

    def __init__(
        self,
        *,
        backend: BackendName = "auto",
        pool: SandboxPool | None = None,
        command_timeout_s: float = 10.0,
    ) -> None:
        super().__init__()
        self.backend: BackendName = backend
        self.command_timeout_s = command_timeout_s
        self._pool = pool
        self._shared: _Shared | None = None
        self._root: Path | None = None
        self._spec: _Spec | None = None
        self._lease: AbstractAsyncContextManager[Sandbox] | None = None
        self._sandbox: Sandbox | None = None
        self._synced: dict[str, bytes] = {}
        self._closed = False

    @property
    def sandbox(self) -> Sandbox | None:
        """The sandbox of the episode in progress (None between episodes)."""
        return self._sandbox

    async def reset(self, task: Task) -> Observation:
        if self._closed:
            raise RuntimeError("this FilesEnv is closed")
        spec = _spec_of(task)
        await self._give_back()
        if self._root is None:
            self._root = Path(
                await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="agentscope-files-"))
            )
        files = {path: text.encode() for path, text in spec.files.items()}
        await anyio.to_thread.run_sync(lambda: _write_tree(self._root_dir(), files, clear=True))
        pool = self._pool
        if pool is None:
            if self._shared is None:
                self._shared = await _lease_pool(self.backend)
            pool = self._shared.pool
        lease = pool.acquire()
        self._sandbox = await lease.__aenter__()
        self._lease = lease
        self._synced = {}  # a sandbox from the pool starts with an empty work dir
        self._spec = spec

        return Observation(msg=Msg(role="user", name="user", content=task.prompt), toolkit=self._toolkit())

    async def evaluate(self, reply: Msg) -> EnvResult:
        spec, sandbox = self._spec, self._sandbox
        if spec is None or sandbox is None:
            raise RuntimeError("evaluate() outside an episode (call reset() first)")
        await self._push(sandbox)
        result = await sandbox.exec(
            ["python3", "-I", "-c", _CHECK], stdin=json.dumps(spec.check), timeout=_CHECK_TIMEOUT_S * 2
        )
        verdict = result.stdout.strip()
        if result.exit_code != 0 or not verdict:
            raise SandboxError(
                f"the check did not run (exit code {result.exit_code}): {result.stderr[-500:]}"
            )
        await self._give_back()
        passed = verdict == "ok"
        return EnvResult(
            reward=1.0 if passed else 0.0, success=passed, info={"level": spec.level, "check": verdict}
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._give_back()
        shared, self._shared = self._shared, None
        if shared is not None:
            with anyio.CancelScope(shield=True):
                await _release_pool(self.backend, shared)
        root, self._root = self._root, None
        if root is not None:
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))

    def _toolkit(self) -> Toolkit:
        """The built-in tools, narrowed to the arguments the tasks need, each described in one line: the policy
        reads every schema in every prompt, and the built-ins' optional arguments and long descriptions would
        double the prompt of a tiny policy."""
        view, write, edit = make_file_tools(self._root_dir())
        shell = make_code_tools(self._mirrored, timeout_s=self.command_timeout_s)[1]

        async def view_file(path: str) -> str:
            """Show a file with line numbers."""
            return await view(path)

        async def write_file(path: str, content: str) -> str:
            """Create or overwrite a file."""
            return await write(path, content)

        async def edit_file(path: str, old_text: str, new_text: str) -> str:
            """Replace old_text, copied exactly from the file, with new_text."""
            return await edit(path, old_text, new_text)

        async def execute_shell_command(command: str) -> ToolResponse:
            """Run a shell command; shows its exit code and output."""
            return await shell(command)

        toolkit = Toolkit()
        for tool in (view_file, write_file, edit_file, execute_shell_command):
            toolkit.register(tool)
        return toolkit

    # ------------------------------------------------------------------ the sandbox of an episode

    def _root_dir(self) -> Path:
        assert self._root is not None
        return self._root

    async def _give_back(self) -> None:
        lease, self._lease, self._sandbox = self._lease, None, None
        if lease is not None:
            with anyio.CancelScope(shield=True):
                await lease.__aexit__(None, None, None)

    @asynccontextmanager
    async def _mirrored(self) -> AsyncGenerator[Sandbox]:
        """The episode's sandbox for one command, holding the host work directory's files; what the command
        changes comes back to the host. A sandbox failure fails the environment."""
        sandbox = self._sandbox
        if sandbox is None:
            self.fail("a shell command outside an episode")
        try:
            await self._push(sandbox)
            yield sandbox
            await self._pull(sandbox)
        except SandboxError as exc:
            self.fail(f"the sandbox failed: {exc}")

    async def _push(self, sandbox: Sandbox) -> None:
        """Copy what changed on the host into the sandbox."""
        files = await anyio.to_thread.run_sync(_read_tree, self._root_dir())
        for path, data in files.items():
            if self._synced.get(path) != data:
                await sandbox.write_file(path, data)
        gone = sorted(set(self._synced) - set(files))
        if gone:
            await sandbox.exec(["rm", "-f", "--", *gone])
        self._synced = files

    async def _pull(self, sandbox: Sandbox) -> None:
        """Copy the sandbox's files back to the host (what a command wrote, changed or deleted)."""
        listing = await sandbox.exec(list(_LISTING), timeout=30)
        if listing.exit_code != 0:
            raise SandboxError(
                f"listing the work dir failed (exit code {listing.exit_code}): {listing.stderr[-300:]}"
            )
        copied: dict[str, bytes] = {}
        too_big: set[str] = set()
        total = 0
        for entry in filter(None, listing.stdout_bytes.split(b"\0")):
            size, _, raw = entry.partition(b"\t")
            path = raw.decode("utf-8", errors="surrogateescape")
            if not _safe(path):
                continue
            if int(size) > _MIRROR_FILE_BYTES or total + int(size) > 2 * _MIRROR_FILE_BYTES:
                too_big.add(path)
                continue
            total += int(size)
            try:
                copied[path] = await sandbox.read_file(path)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                continue  # removed or replaced since the listing (a background process of the agent's)
        self._synced = await anyio.to_thread.run_sync(_take_back, self._root_dir(), copied, too_big)
