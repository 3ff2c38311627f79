"""gVisor with Docker: registering ``runsc`` with dockerd the way sandboxes need it, and explaining start failures.

Sandboxes never have a network, so gVisor is registered with ``--network=none``: it then runs no network stack at
all. That is also what lets it start on current kernels: Debian's ``runsc`` (a 2022 build) refuses to start any
container whose network namespace it would have to set up on kernel 6.18 ("cannot run with network enabled in
root network namespace").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

__all__ = ["DAEMON_JSON", "GVISOR_RUNTIME_ARGS", "gvisor_start_failure", "register_gvisor_runtime"]

DAEMON_JSON = Path("/etc/docker/daemon.json")
"""Where dockerd reads its configuration (runtimes included) by default."""
GVISOR_RUNTIME_ARGS = ("--network=none",)
"""Arguments every sandbox's ``runsc`` runs with."""

_FIX = (
    'register it in /etc/docker/daemon.json with "runtimeArgs": ["--network=none"] '
    "(`agentscope sandbox register-gvisor` does it) and reload dockerd (kill -HUP its pid)"
)


def register_gvisor_runtime(runsc_path: str, *, daemon_json: Path = DAEMON_JSON, name: str = "runsc") -> bool:
    """Register ``runsc_path`` as the Docker runtime ``name`` with :data:`GVISOR_RUNTIME_ARGS` (blocking).

    An existing registration keeps its own arguments and gains the missing ones; the rest of the file is kept.
    The file is replaced atomically. Returns whether it changed (dockerd must then be reloaded: ``SIGHUP``).

    Raises:
        ValueError: the file exists but is not a JSON object (it is left as it is).
    """
    data: dict[str, Any] = {}
    if daemon_json.exists() and daemon_json.stat().st_size:
        try:
            loaded: object = json.loads(daemon_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{daemon_json} is not valid JSON ({exc}); fix it by hand first") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{daemon_json} must hold a JSON object, not {type(loaded).__name__}")
        data = cast("dict[str, Any]", loaded)
    runtimes = data.setdefault("runtimes", {})
    if not isinstance(runtimes, dict):
        raise ValueError(f'{daemon_json}: "runtimes" must be an object')
    runtimes = cast("dict[str, Any]", runtimes)
    entry = runtimes.get(name)
    entry = dict(cast("dict[str, Any]", entry)) if isinstance(entry, dict) else {}
    args = entry.get("runtimeArgs")
    args = [str(a) for a in cast("list[Any]", args)] if isinstance(args, list) else []
    wanted = {"path": runsc_path, "runtimeArgs": args + [a for a in GVISOR_RUNTIME_ARGS if a not in args]}
    if all(entry.get(key) == value for key, value in wanted.items()):
        return False
    runtimes[name] = {**entry, **wanted}
    daemon_json.parent.mkdir(parents=True, exist_ok=True)
    staging = daemon_json.with_name(f".{daemon_json.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    staging.replace(daemon_json)
    return True


def gvisor_start_failure(runtime: str, explanation: str) -> str:
    """The message of a :class:`~agentscope.exceptions.SandboxError` for a gVisor container that would not start."""
    if "network" in explanation:
        return (
            f"the gVisor runtime {runtime!r} cannot start containers on this host with a network stack "
            f"({explanation.strip()}); sandboxes need none: {_FIX}"
        )
    return f"the gVisor runtime {runtime!r} could not start the sandbox container ({explanation.strip()}); {_FIX}"
