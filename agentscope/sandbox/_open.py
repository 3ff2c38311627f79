"""``open_sandbox``: pick a backend, start a sandbox, tear it down on exit."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio

from agentscope.exceptions import SandboxError
from agentscope.sandbox._base import Sandbox
from agentscope.sandbox._types import BackendName, SandboxLimits, SandboxSpec

__all__ = ["make_spec", "open_sandbox", "resolve_backend", "start_sandbox"]

logger = logging.getLogger("agentscope.sandbox")

_AUTO_CACHE_S = 30.0
_RESERVED_DIRS = ("", "/usr", "/proc", "/dev", "/etc", "/bin", "/lib", "/lib64", "/sbin", "/sys", "/tmp")
_auto_choice: tuple[float, str, str] | None = None


def make_spec(
    *,
    backend: BackendName = "auto",
    limits: SandboxLimits | Mapping[str, Any] | None = None,
    network: bool = False,
    image: str | None = None,
    workdir: str = "/work",
    runtime: str | None = None,
    env: Mapping[str, str] | None = None,
    mounts: tuple[str, ...] | list[str] = (),
) -> SandboxSpec:
    """Validate the arguments of :func:`open_sandbox` into a :class:`SandboxSpec` (raises SandboxError)."""
    if limits is None:
        limits = SandboxLimits()
    elif not isinstance(limits, SandboxLimits):
        limits = SandboxLimits(**dict(limits))
    if not workdir.startswith("/") or workdir.rstrip("/") in _RESERVED_DIRS or ".." in workdir.split("/"):
        raise SandboxError(f"workdir must be an absolute path of its own, such as /work; got {workdir!r}")
    for mount in mounts:
        if not mount.startswith("/") or mount.rstrip("/") in _RESERVED_DIRS or ".." in mount.split("/"):
            raise SandboxError(
                f"mounts must be absolute host paths below /, such as /opt/venv; got {mount!r}"
            )
    return SandboxSpec(
        backend=backend,
        limits=limits,
        network=network,
        image=image,
        workdir=workdir.rstrip("/"),
        runtime=runtime,
        env=dict(env or {}),
        mounts=tuple(mounts),
    )


async def resolve_backend(spec: SandboxSpec) -> str:
    """The concrete backend for ``spec``: ``auto`` becomes ``docker`` when an engine answers and has the image,
    else ``bwrap`` (the choice is logged, and cached for 30 s)."""
    global _auto_choice
    if spec.backend != "auto":
        return spec.backend
    if spec.network:
        logger.info("sandbox backend: bwrap (network=True; Docker sandboxes never get a network)")
        return "bwrap"
    now = time.monotonic()
    if (
        _auto_choice is not None
        and now - _auto_choice[0] < _AUTO_CACHE_S
        and _auto_choice[1] == (spec.image or "")
    ):
        return _auto_choice[2]
    from agentscope.sandbox._docker import docker_status

    status = await docker_status(spec.image)
    if status.usable:
        choice = "docker"
        logger.info("sandbox backend: docker (engine %s, image %s)", status.version, status.image)
    else:
        from agentscope.sandbox._bwrap import bwrap_available

        if not await anyio.to_thread.run_sync(bwrap_available):
            raise SandboxError(
                f"no sandbox backend is usable here: Docker: {status.reason}; bubblewrap: not installed "
                "(apt-get install bubblewrap)"
            )
        choice = "bwrap"
        logger.info("sandbox backend: bwrap (Docker not usable: %s)", status.reason)
    _auto_choice = (now, spec.image or "", choice)
    return choice


async def start_sandbox(spec: SandboxSpec) -> Sandbox:
    """Start a sandbox for ``spec`` and return it running; the caller closes it (``await sb.aclose()``)."""
    backend = await resolve_backend(spec)
    sandbox: Sandbox
    if backend == "bwrap":
        from agentscope.sandbox._bwrap import BwrapSandbox

        sandbox = BwrapSandbox(spec)
    elif backend == "docker":
        from agentscope.sandbox._docker import DockerSandbox

        sandbox = DockerSandbox(spec)
    else:
        raise SandboxError(f"unknown sandbox backend {backend!r}; use 'auto', 'docker' or 'bwrap'")
    await sandbox.start()
    return sandbox


@asynccontextmanager
async def open_sandbox(
    backend: BackendName = "auto",
    *,
    limits: SandboxLimits | Mapping[str, Any] | None = None,
    network: bool = False,
    image: str | None = None,
    workdir: str = "/work",
    runtime: str | None = None,
    env: Mapping[str, str] | None = None,
    mounts: tuple[str, ...] | list[str] = (),
) -> AsyncGenerator[Sandbox]:
    """Start a sandbox, yield it, and remove it (with everything running inside) on exit, error or cancellation.

    Example::

        async with open_sandbox(limits=SandboxLimits(memory_mb=256, timeout_s=10)) as sb:
            r = await sb.exec(["python3", "-c", "print(1)"])
            assert r.stdout == "1\\n"

    Args:
        backend: ``docker``, ``bwrap``, or ``auto`` (Docker when an engine answers and has the image, else
            bubblewrap; the choice is logged on the ``agentscope.sandbox`` logger).
        limits: memory, CPU, processes, default timeout, disk (a :class:`SandboxLimits` or a dict of its fields).
        network: False (default): no network at all. True gives a bubblewrap sandbox the host's network
            (``auto`` then picks bubblewrap); Docker sandboxes always run with ``--network none`` and refuse it.
        image: Docker image (default: the one ``agentscope sandbox build-image`` builds).
        workdir: the writable work dir inside (a size-limited tmpfs); relative paths start here.
        runtime: Docker runtime, e.g. ``runsc`` (gVisor).
        env: extra environment variables for every command.
        mounts: host paths to show read-only inside (bubblewrap only).

    Raises:
        SandboxError: the backend is missing or broken, the image is missing, or an argument is invalid; the
            message says how to fix it.
    """
    spec = make_spec(
        backend=backend,
        limits=limits,
        network=network,
        image=image,
        workdir=workdir,
        runtime=runtime,
        env=env,
        mounts=mounts,
    )
    sandbox = await start_sandbox(spec)
    try:
        yield sandbox
    finally:
        await sandbox.aclose()
