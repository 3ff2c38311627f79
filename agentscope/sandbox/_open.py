"""``open_sandbox``: pick a backend, start a sandbox, tear it down on exit."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager

import anyio

from agentscope.exceptions import SandboxError
from agentscope.sandbox._base import Sandbox
from agentscope.sandbox._types import BackendName, SandboxSpec

__all__ = ["as_spec", "open_sandbox", "resolve_backend", "start_sandbox"]

logger = logging.getLogger("agentscope.sandbox")

_AUTO_CACHE_S = 30.0
_auto_choice: tuple[float, str, str] | None = None


def as_spec(spec: SandboxSpec | BackendName, fields: Mapping[str, object] | None = None) -> SandboxSpec:
    """``spec`` itself, or the spec on the backend it names with ``fields`` (SandboxSpec's fields given as keyword
    arguments, as ``open_sandbox(backend="bwrap", limits=...)`` was called before it took a spec).

    Raises:
        SandboxError: an unknown backend or field, or a bad value (naming the field).
        TypeError: both a SandboxSpec and fields.
    """
    if isinstance(spec, SandboxSpec):
        if fields:
            raise TypeError(
                f"give a SandboxSpec or its fields as keyword arguments, not both (got {', '.join(fields)})"
            )
        return spec
    return SandboxSpec(**{"backend": spec, **(fields or {})})


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
async def open_sandbox(spec: SandboxSpec | BackendName = "auto", **fields: object) -> AsyncGenerator[Sandbox]:
    """Start a sandbox, yield it, and remove it (with everything running inside) on exit, error or cancellation.

    Example::

        async with open_sandbox("bwrap") as sb:
            r = await sb.exec(["python3", "-c", "print(1)"])
            assert r.stdout == "1\\n"

        spec = SandboxSpec(limits=SandboxLimits(memory_mb=256, timeout_s=10), mounts=["/opt/venv"])
        async with open_sandbox(spec) as sb:
            ...

    Args:
        spec: What to start (:class:`SandboxSpec`: backend, limits, network, image, workdir, runtime, env,
            mounts), or just the backend with the default spec: ``docker``, ``bwrap``, or ``auto`` (Docker when
            an engine answers and has the image, else bubblewrap; the choice is logged on the
            ``agentscope.sandbox`` logger).
        **fields: Instead of a spec, its fields (``open_sandbox(backend="bwrap", limits=...)``).

    Raises:
        SandboxError: the backend is missing or broken, the image is missing, or the spec asks for what the
            backend refuses (Docker sandboxes never get a network); the message says how to fix it.
    """
    sandbox = await start_sandbox(as_spec(spec, fields))
    try:
        yield sandbox
    finally:
        await sandbox.aclose()
