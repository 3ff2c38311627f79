"""Per-sandbox cgroups for the bubblewrap backend, where the machine lets us make them.

We never touch cgroups we did not create: each sandbox gets ``<our own cgroup>/agentscope/<name>`` in each
controller (cgroup v1: memory, pids, cpu; cgroup v2: one directory), so its limits nest inside whatever limits
already apply to this process. Where that is not possible (no permission, cgroup v2 with processes in our own
cgroup), :func:`create_cgroup` raises :class:`CgroupUnavailable` saying why, and the caller decides whether
rlimits will do. Everything here is blocking file I/O: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cgroup", "CgroupUnavailable", "create_cgroup", "list_sandbox_cgroups", "sweep_stale_cgroups"]

_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_PARENT = "agentscope"


@dataclass
class Cgroup:
    """The cgroup directories of one sandbox."""

    version: str
    """``"v1"`` or ``"v2"``."""
    dirs: list[Path] = field(default_factory=list[Path])
    """One directory per hierarchy; a process joins by writing its pid to each ``cgroup.procs``."""
    oom_file: Path | None = None
    """The file with the ``oom_kill`` counter."""
    controllers: set[str] = field(default_factory=set[str])
    """Which limits are in force: ``memory``, ``pids``, ``cpu``."""

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files to join."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_kills(self) -> int | None:
        """The cumulative OOM-kill count of this cgroup."""
        if self.oom_file is None:
            return None
        try:
            for line in self.oom_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return None
        return None

    def remove(self, timeout_s: float = 5.0) -> None:
        """Kill what is left inside and remove the directories (waits for the processes to go), then the shared
        ``agentscope`` parent when no other sandbox uses it, so nothing of ours outlives the last sandbox."""
        deadline = time.monotonic() + timeout_s
        for directory in self.dirs:
            while directory.exists():
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    _kill_members(directory)
                    time.sleep(0.01)
            with contextlib.suppress(OSError):  # EBUSY while another sandbox lives there: fine
                directory.parent.rmdir()


def _kill_members(directory: Path) -> None:
    try:
        pids = (directory / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), 9)


def _own_cgroups() -> dict[str, str]:
    """controller -> our cgroup path (``""`` key for the v2 unified hierarchy)."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    return own


def _v1_mounts() -> dict[str, tuple[Path, str]]:
    """controller -> (mount point, root of the hierarchy shown there), for cgroup v1 mounts."""
    mounts: dict[str, tuple[Path, str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        rfields = right.split()
        if len(rfields) < 3 or rfields[0] != "cgroup":
            continue
        for option in rfields[2].split(","):
            if option in _V1_CONTROLLERS:
                mounts.setdefault(option, (Path(fields[4]), fields[3]))
    return mounts


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _v1_dir(controller: str, own: dict[str, str], mounts: dict[str, tuple[Path, str]]) -> Path | None:
    if controller not in mounts or controller not in own:
        return None
    mount_point, mount_root = mounts[controller]
    path = own[controller]
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root) :]
    return mount_point / path.lstrip("/") / _PARENT


class CgroupUnavailable(Exception):
    """No cgroup can be made for a sandbox here; the message says why."""


def create_cgroup(name: str, *, memory_mb: int, pids: int, cpus: float) -> Cgroup:
    """Make the cgroup(s) of sandbox ``name`` with these limits; raise :class:`CgroupUnavailable` where we may not."""
    problem = "the shared parent cgroup kept vanishing"
    for _attempt in range(5):
        try:
            if (_ROOT / "cgroup.controllers").exists():
                return _create_v2(name, memory_mb=memory_mb, pids=pids, cpus=cpus)
            return _create_v1(name, memory_mb=memory_mb, pids=pids, cpus=cpus)
        except (_ParentVanished, FileNotFoundError):
            continue  # the last sandbox's removal took the shared parent away under us: make it again
        except OSError as exc:
            raise CgroupUnavailable(_os_problem(exc)) from None
        except ValueError as exc:
            problem = f"cannot read this process's cgroups ({exc})"
            break
    raise CgroupUnavailable(problem)


def _os_problem(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot create a cgroup:{where}: {exc.strerror or exc}"


class _ParentVanished(Exception):
    pass


def _mkdir_child(parent: Path, name: str) -> Path:
    parent.mkdir(exist_ok=True)
    directory = parent / name
    try:
        directory.mkdir()
    except FileNotFoundError:
        raise _ParentVanished from None
    return directory


def _create_v1(name: str, *, memory_mb: int, pids: int, cpus: float) -> Cgroup:
    own = _own_cgroups()
    mounts = _v1_mounts()
    group = Cgroup(version="v1")
    memory_bytes = str(memory_mb << 20)
    try:
        for controller in _V1_CONTROLLERS:
            parent = _v1_dir(controller, own, mounts)
            if parent is None:
                continue
            try:
                directory = _mkdir_child(parent, name)
            except _ParentVanished:
                group.remove(timeout_s=0.5)
                raise
            group.dirs.append(directory)
            if controller == "memory":
                _write(directory / "memory.limit_in_bytes", memory_bytes)
                swap = directory / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    with contextlib.suppress(OSError):
                        _write(swap, memory_bytes)
                group.oom_file = directory / "memory.oom_control"
            elif controller == "pids":
                _write(directory / "pids.max", str(pids))
            else:
                _write(directory / "cpu.cfs_period_us", "100000")
                _write(directory / "cpu.cfs_quota_us", str(max(1000, int(cpus * 100000))))
            group.controllers.add(controller)
    except OSError:
        group.remove(timeout_s=0.5)
        raise
    if not {"memory", "pids"} <= group.controllers:
        group.remove(timeout_s=0.5)
        raise CgroupUnavailable(
            "cgroup v1 without both a memory and a pids hierarchy mounted under /sys/fs/cgroup"
        )
    return group


def _create_v2(name: str, *, memory_mb: int, pids: int, cpus: float) -> Cgroup:
    own = _own_cgroups().get("", "/")
    base = _ROOT / own.lstrip("/")
    wanted = {"memory", "pids", "cpu"}
    available = set((base / "cgroup.controllers").read_text().split())
    if not {"memory", "pids"} <= available:
        raise CgroupUnavailable(
            f"the memory and pids controllers are not delegated to this process's cgroup {base} (it has: "
            f"{' '.join(sorted(available)) or 'none'})"
        )
    parent = base / _PARENT
    parent.mkdir(exist_ok=True)
    enabled = set((base / "cgroup.subtree_control").read_text().split())
    missing = (wanted & available) - enabled
    if missing:
        # Fails (EBUSY) when our own cgroup holds processes and is not the root: then we cannot nest here.
        try:
            _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(missing)))
        except OSError as exc:
            raise CgroupUnavailable(
                f"cannot enable {', '.join(sorted(missing))} for cgroups below {base} ({exc.strerror}: a cgroup "
                "that holds processes cannot delegate controllers; start this process in a cgroup of its own)"
            ) from None
    parent_enabled = set((parent / "cgroup.subtree_control").read_text().split())
    parent_missing = (wanted & available) - parent_enabled
    if parent_missing:
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(parent_missing)))
    directory = _mkdir_child(parent, name)
    group = Cgroup(version="v2", dirs=[directory], oom_file=directory / "memory.events")
    try:
        _write(directory / "memory.max", str(memory_mb << 20))
        with contextlib.suppress(OSError):
            _write(directory / "memory.swap.max", "0")
        _write(directory / "pids.max", str(pids))
        group.controllers.update({"memory", "pids"})
        if (directory / "cpu.max").exists():
            _write(directory / "cpu.max", f"{max(1000, int(cpus * 100000))} 100000")
            group.controllers.add("cpu")
    except OSError:
        group.remove(timeout_s=0.5)
        raise
    return group


def _parents() -> list[Path]:
    """The ``agentscope`` parent directories our sandbox cgroups live in (they may not exist)."""
    parents: list[Path] = []
    try:
        if (_ROOT / "cgroup.controllers").exists():
            own = _own_cgroups().get("", "/")
            parents.append(_ROOT / own.lstrip("/") / _PARENT)
        else:
            own_map, mounts = _own_cgroups(), _v1_mounts()
            for controller in _V1_CONTROLLERS:
                parent = _v1_dir(controller, own_map, mounts)
                if parent is not None:
                    parents.append(parent)
    except (OSError, ValueError):
        return []
    return parents


def list_sandbox_cgroups(prefix: str = "sb-") -> list[Path]:
    """Every sandbox cgroup directory below this process's own cgroups (blocking)."""
    found: list[Path] = []
    for parent in _parents():
        try:
            found += [child for child in parent.iterdir() if child.is_dir() and child.name.startswith(prefix)]
        except OSError:
            continue
    return found


def sweep_stale_cgroups(prefix: str = "sb-") -> int:
    """Remove sandbox cgroups left behind by processes of ours that died; return how many went."""
    removed = 0
    for child in list_sandbox_cgroups(prefix):
        try:
            owner = int(child.name[len(prefix) :].split("-")[0])
        except ValueError:
            continue
        if owner == os.getpid() or _pid_alive(owner):
            continue
        _kill_members(child)
        with contextlib.suppress(OSError):
            child.rmdir()
            removed += 1
        with contextlib.suppress(OSError):
            child.parent.rmdir()
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
