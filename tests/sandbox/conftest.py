"""Backends for the sandbox tests: every test that takes ``backend`` runs once per backend.

A backend whose engine is missing here is skipped with the reason (Docker: no engine answers; bubblewrap: not
installed or no user namespaces). When Docker answers but the sandbox image is missing, it is built once per
session (offline, ~10 s), so CI exercises Docker for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cache
from typing import Any

import pytest

from agentscope.exceptions import SandboxError
from agentscope.sandbox import Sandbox, SandboxSpec, open_sandbox

BACKENDS = ("bwrap", "bwrap-rlimit", "docker", "gvisor")
"""``gvisor`` is the Docker backend with ``runtime="runsc"`` (set up by scripts/setup.d/20-sandbox.sh);
``bwrap-rlimit`` is bubblewrap without cgroups (``AGENTSCOPE_SANDBOX_CGROUPS=0``), limited by rlimits alone, as
on a machine where no cgroup can be made (which takes ``strict=False`` limits)."""


@cache
def bwrap_problem() -> str | None:
    """Why bubblewrap sandboxes cannot run here, or None."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    probe = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--ro-bind", "/usr", "/usr"]
    probe += [
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
    ]
    if os.geteuid() == 0:
        probe = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *probe]
    result = subprocess.run([*probe, "--", "/usr/bin/true"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {result.stderr.strip()}"
    return None


@cache
def docker_problem() -> str | None:
    """Why Docker sandboxes cannot run here, or None (builds the image when only it is missing)."""
    try:
        from agentscope.sandbox._docker import DEFAULT_IMAGE, docker_client
        from agentscope.sandbox._image import build_image
    except ImportError as exc:
        return f"docker SDK missing: {exc}"
    try:
        client = docker_client()
    except SandboxError as exc:
        return str(exc)
    import docker

    try:
        client.images.get(DEFAULT_IMAGE)
    except docker.errors.ImageNotFound:
        build_image()
    return None


@cache
def gvisor_problem() -> str | None:
    """Why gVisor sandboxes cannot run here, or None."""
    problem = docker_problem()
    if problem is not None:
        return problem
    from agentscope.sandbox._docker import docker_client

    runtimes = docker_client().info().get("Runtimes") or {}
    if "runsc" not in runtimes:
        return "the Docker engine has no runsc runtime (bash scripts/setup.d/20-sandbox.sh registers it)"
    return None


def backend_problem(name: str) -> str | None:
    problems = {"bwrap": bwrap_problem, "bwrap-rlimit": bwrap_problem, "docker": docker_problem}
    return problems.get(name, gvisor_problem)()


class Opener:
    """``open_sandbox`` bound to one backend (``gvisor`` = Docker with the runsc runtime)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def spec(self, **fields: Any) -> SandboxSpec:
        """The :class:`SandboxSpec` with ``fields`` on this backend."""
        if self.name == "gvisor":
            return SandboxSpec(backend="docker", runtime="runsc", **fields)
        if self.name == "bwrap-rlimit":
            spec = SandboxSpec(backend="bwrap", **fields)
            return spec.model_copy(update={"limits": spec.limits.model_copy(update={"strict": False})})
        return SandboxSpec(backend=self.name, **fields)

    def __call__(self, **fields: Any) -> AbstractAsyncContextManager[Sandbox]:
        """``open_sandbox`` on this backend, with ``fields`` of its spec."""
        opening = open_sandbox(self.spec(**fields))
        return _without_cgroups(opening) if self.name == "bwrap-rlimit" else opening

    def __repr__(self) -> str:
        return self.name


@asynccontextmanager
async def _without_cgroups(opening: AbstractAsyncContextManager[Sandbox]) -> AsyncIterator[Sandbox]:
    previous = os.environ.get("AGENTSCOPE_SANDBOX_CGROUPS")
    os.environ["AGENTSCOPE_SANDBOX_CGROUPS"] = "0"
    try:
        sandbox = await opening.__aenter__()
    finally:
        if previous is None:
            del os.environ["AGENTSCOPE_SANDBOX_CGROUPS"]
        else:
            os.environ["AGENTSCOPE_SANDBOX_CGROUPS"] = previous
    assert sandbox.limit_enforcement["pids"] == "rlimit NPROC"
    try:
        yield sandbox
    finally:
        await opening.__aexit__(None, None, None)


def _opener(request: pytest.FixtureRequest) -> Opener:
    name: str = request.param
    problem = backend_problem(name)
    if problem is not None:
        pytest.skip(f"{name}: {problem}")
    return Opener(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Opener:
    """Opens sandboxes on one backend that works here (tests are skipped for one that does not): the escape
    battery runs on all of them."""
    return _opener(request)


@pytest.fixture(params=("bwrap", "docker"))
def api_backend(request: pytest.FixtureRequest) -> Opener:
    """Like ``backend``, without gVisor (the interface tests: the runtime does not change the protocol)."""
    return _opener(request)


@pytest.fixture
def bwrap_works() -> None:
    """Skip the test when bubblewrap sandboxes cannot run here."""
    problem = bwrap_problem()
    if problem is not None:
        pytest.skip(f"bwrap: {problem}")


@pytest.fixture
def docker_works() -> None:
    """Skip the test when Docker sandboxes cannot run here."""
    problem = docker_problem()
    if problem is not None:
        pytest.skip(f"docker: {problem}")


def _our_cgroups() -> set[str]:
    """The cgroups of this process's sandboxes (other processes on the machine may run sandboxes meanwhile)."""
    from agentscope.sandbox._cgroups import list_sandbox_cgroups

    return {str(path) for path in list_sandbox_cgroups(prefix=f"sb-{os.getpid()}-")}


def _our_containers() -> set[str]:
    if docker_problem() is not None:
        return set()
    from agentscope.sandbox._docker import LABEL, docker_client

    containers = docker_client().api.containers(all=True, filters={"label": f"{LABEL}=1"})
    return {
        c["Id"] for c in containers if f":{os.getpid()}:" in c["Labels"].get("agentscope.sandbox.owner", "")
    }


@pytest.fixture(autouse=True)
def _nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every sandbox test leaves no container, cgroup or process of its sandboxes behind."""
    before_cgroups = _our_cgroups()
    yield
    if "backend" not in request.fixturenames and "api_backend" not in request.fixturenames:
        return
    assert _our_cgroups() <= before_cgroups, "a sandbox cgroup was left behind"
    assert not _our_containers(), "a sandbox container was left behind"
    children = subprocess.run(
        ["ps", "--ppid", str(os.getpid()), "-o", "pid=,comm="], capture_output=True, text=True
    ).stdout.split("\n")
    assert not [line for line in children if "bwrap" in line], f"bwrap processes left: {children}"
