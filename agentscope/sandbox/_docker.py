"""The Docker backend: one container per sandbox, driven through the Docker SDK (``pip install -e '.[sandbox]'``).

Each sandbox is a container of the image that ``agentscope sandbox build-image`` builds (or any image with a
``python3``), created with: no network at all (``network_mode="none"``), a read-only root, a size-limited tmpfs as
the work dir and another as /tmp, a non-root user, every capability dropped, ``no-new-privileges``, and memory
(swap included), CPU and pids limits; optionally the gVisor runtime (``runtime="runsc"``). The guest loads the
system-call filter of ``_seccomp.py`` on itself before anything else, on top of Docker's default profile (which
allows ``ptrace``, and which gVisor does not apply at all). Its main process is the
guest (``_guest.py``), attached over the engine's socket: stdin carries requests, stdout replies. The container is
removed when the sandbox closes, when the guest's stdin closes (our process died: the guest exits and the engine
auto-removes the container), and at the first sandbox of a later process, which sweeps containers labelled as ours
whose owner process is gone.

Every blocking SDK call runs in a worker thread; the attach stream itself is read asynchronously.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc

from agentscope.exceptions import SandboxError
from agentscope.sandbox._base import Sandbox, guest_boot_line, guest_command, guest_source
from agentscope.sandbox._gvisor import gvisor_start_failure
from agentscope.sandbox._seccomp import seccomp_program
from agentscope.sandbox._types import MAX_FILE_BYTES, SandboxSpec

if TYPE_CHECKING:
    import docker

__all__ = [
    "DEFAULT_IMAGE",
    "LABEL",
    "DockerSandbox",
    "DockerStatus",
    "close_docker_client",
    "docker_client",
    "docker_status",
    "is_gvisor",
    "sweep_stale_containers",
]

logger = logging.getLogger("agentscope.sandbox")

DEFAULT_IMAGE = "agentscope-sandbox:latest"
"""The image Docker sandboxes run unless told otherwise; ``agentscope sandbox build-image`` builds it offline."""
LABEL = "agentscope.sandbox"
"""Label on every container we start (value ``"1"``); ``agentscope.sandbox.owner`` says which process owns it."""
_OWNER_LABEL = "agentscope.sandbox.owner"
SANDBOX_USER = "1000:1000"
"""The user commands run as inside a Docker sandbox."""
_STREAM_HEADER = struct.Struct(">BxxxL")
_OOM_FILES = ["/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]
_counter = itertools.count(1)


def _import_docker() -> Any:
    try:
        import docker
    except ImportError:
        raise SandboxError(
            "the Docker backend needs the docker SDK: pip install -e '.[sandbox]' (or use backend='bwrap')"
        ) from None
    return docker


def _engine_problem() -> str | None:
    """A missing or dead unix socket, found without the SDK (whose unix connection leaks its socket when
    connecting fails, and ``DockerClient.close`` cannot reach it). Blocking (a local connect)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        if not os.path.exists(path):
            return f"no socket at {path}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            try:
                probe.connect(path)
            except OSError as exc:
                return f"nothing answers at {path}: {exc.strerror or exc}"
    return None


@cache
def _client_cached() -> docker.DockerClient:
    docker = _import_docker()
    problem = _engine_problem()
    if problem is not None:
        raise SandboxError(
            f"no Docker engine answers ({problem}); start it (dockerd, or `bash scripts/setup.sh` here), "
            "set DOCKER_HOST, or use backend='bwrap'"
        )
    client: docker.DockerClient | None = None
    try:
        client = cast("docker.DockerClient", docker.from_env(timeout=60, max_pool_size=64))
        client.ping()
    except Exception as exc:
        # Close what was opened: its socket would otherwise be left for the garbage collector (ResourceWarning).
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        raise SandboxError(
            f"no Docker engine answers ({type(exc).__name__}: {exc}); start it (dockerd, or "
            "`bash scripts/setup.sh` here), set DOCKER_HOST, or use backend='bwrap'"
        ) from None
    return client


def docker_client() -> docker.DockerClient:
    """The process's Docker client (blocking: call from a worker thread). Raises SandboxError naming the fix
    when the SDK is missing or no engine answers."""
    try:
        return _client_cached()
    except SandboxError:
        _client_cached.cache_clear()  # try again next time: the engine may come up
        raise


def close_docker_client() -> None:
    """Close the process's Docker client (its pooled connections); the next call makes a new one (blocking)."""
    if _client_cached.cache_info().currsize:
        with contextlib.suppress(Exception):
            _client_cached().close()
    _client_cached.cache_clear()


@dataclass(frozen=True)
class DockerStatus:
    """Whether Docker sandboxes can start here, and why not."""

    usable: bool
    """True when an engine answers and has the image."""
    reason: str
    """Why not, naming the fix (empty when usable)."""
    version: str = ""
    """The engine's version."""
    image: str = DEFAULT_IMAGE
    """The image that was checked."""


def _status(image: str) -> DockerStatus:
    try:
        client = docker_client()
        version = str(client.version().get("Version", "?"))
    except SandboxError as exc:
        return DockerStatus(False, str(exc), image=image)
    except Exception as exc:
        return DockerStatus(False, f"the Docker engine failed: {exc}", image=image)
    docker = _import_docker()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return DockerStatus(False, _missing_image_message(image), version, image)
    except Exception as exc:
        return DockerStatus(False, f"the Docker engine failed: {exc}", version, image)
    return DockerStatus(True, "", version, image)


async def docker_status(image: str | None = None) -> DockerStatus:
    """Check, off the event loop, that an engine answers and has ``image`` (default :data:`DEFAULT_IMAGE`)."""
    return await anyio.to_thread.run_sync(_status, image or DEFAULT_IMAGE)


def _missing_image_message(image: str) -> str:
    if image == DEFAULT_IMAGE:
        return f"the Docker image {image} is missing: build it with `agentscope sandbox build-image` (offline, ~10 s)"
    return (
        f"the Docker image {image} is missing: build or load it (docker build / docker load / docker import)"
    )


@cache
def _owner() -> str:
    """``host:pid:start-ticks``: who owns the containers this process starts (pids are reused; start times not)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[data.rfind(b")") + 2 :].split()[19].decode()


def _owner_gone(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's (or a malformed) label: not ours to judge
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return _start_ticks(pid) != ticks


def sweep_stale_containers() -> int:
    """Remove sandbox containers whose owner process (on this host) is gone; return how many (blocking)."""
    client = docker_client()
    removed = 0
    found = cast("list[dict[str, Any]]", client.api.containers(all=True, filters={"label": f"{LABEL}=1"}))
    for info in found:
        labels = cast("dict[str, str]", info.get("Labels") or {})
        if not _owner_gone(labels.get(_OWNER_LABEL, "")):
            continue
        with contextlib.suppress(Exception):
            client.api.remove_container(info["Id"], force=True)
            removed += 1
    return removed


_swept = False


def is_gvisor(runtime: str | None) -> bool:
    """Whether ``runtime`` names gVisor (``runsc``, or a variant such as ``runsc-kvm``)."""
    return bool(runtime) and str(runtime).startswith("runsc")


def _create(spec: SandboxSpec, name: str, command: list[str]) -> tuple[str, socket.socket]:
    """Create the container, attach to its stdin/stdout, start it (blocking)."""
    global _swept
    docker = _import_docker()
    client = docker_client()
    if not _swept:
        _swept = True
        removed = sweep_stale_containers()
        if removed:
            logger.info("removed %d stale sandbox container(s) left by dead processes", removed)
    limits = spec.limits
    image = spec.image or DEFAULT_IMAGE
    disk = f"{limits.disk_mb}m"
    memory = f"{limits.memory_mb}m"
    api: Any = client.api
    gvisor = is_gvisor(spec.runtime)
    try:
        host_config = api.create_host_config(
            network_mode="none",
            read_only=True,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=int(limits.cpus * 1e9),
            # runsc (2022, cgroup v1) fails to start with a pids cgroup limit; gVisor's own kernel enforces
            # RLIMIT_NPROC per sandbox instead (under runc that rlimit would count the uid across containers).
            pids_limit=None if gvisor else limits.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            tmpfs={
                spec.workdir: f"rw,exec,nosuid,nodev,size={disk},mode=0755,uid=1000,gid=1000",
                "/tmp": f"rw,exec,nosuid,nodev,size={disk},mode=1777",
            },
            shm_size=min(64, limits.disk_mb) << 20,
            ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)]
            + ([docker.types.Ulimit(name="nproc", soft=limits.pids, hard=limits.pids)] if gvisor else []),
            ipc_mode="private",
            auto_remove=True,
            runtime=spec.runtime,
        )
        created: dict[str, Any] = api.create_container(
            image,
            command=command,
            name=name,
            hostname="sandbox",
            user=SANDBOX_USER,
            working_dir=spec.workdir,
            stdin_open=True,
            tty=False,
            network_disabled=True,
            environment={"HOME": spec.workdir, "LANG": "C.UTF-8", "TMPDIR": "/tmp"},
            labels={LABEL: "1", _OWNER_LABEL: _owner()},
            host_config=host_config,
        )
    except docker.errors.ImageNotFound:
        raise SandboxError(_missing_image_message(image)) from None
    except docker.errors.APIError as exc:
        text = str(exc)
        if spec.runtime and "runtime" in text:
            raise SandboxError(
                f"the Docker engine has no runtime {spec.runtime!r} ({exc.explanation}): install it "
                f"(apt-get install runsc for gVisor), register it in /etc/docker/daemon.json and reload dockerd"
            ) from None
        raise SandboxError(
            f"the Docker engine refused the sandbox container: {exc.explanation or text}"
        ) from None
    container_id = cast("str", created["Id"])
    try:
        raw: Any = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock: object = getattr(raw, "_sock", raw)
        if not isinstance(sock, socket.socket) or hasattr(sock, "cipher"):
            raise SandboxError(
                "the Docker backend talks to local engines (a unix socket or plain tcp DOCKER_HOST); this one "
                "needs TLS or ssh"
            )
        owned = sock.dup()  # ours; the SDK's own socket, stream and response are closed right away
        for closable in (raw, sock, getattr(raw, "_response", None)):
            with contextlib.suppress(Exception):
                closable.close()  # type: ignore[union-attr]
        sock = owned
        try:
            api.start(container_id)
        except docker.errors.APIError as exc:
            sock.close()
            explanation = str(exc.explanation or exc)
            if gvisor:
                raise SandboxError(gvisor_start_failure(str(spec.runtime), explanation)) from None
            raise SandboxError(
                f"the Docker engine could not start the sandbox container: {explanation}"
            ) from None
    except BaseException:
        with contextlib.suppress(Exception):
            api.remove_container(container_id, force=True)
        raise
    return container_id, sock


def _remove(container_id: str, wait_s: float = 10.0) -> None:
    """Force-remove the container and wait until it is gone (blocking)."""
    docker = _import_docker()
    api: Any = docker_client().api
    try:
        api.remove_container(container_id, force=True)
        return
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress (auto-remove got there first)
            logger.warning("could not remove sandbox container %s: %s", container_id[:12], exc)
            return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            api.inspect_container(container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.02)
    logger.warning("sandbox container %s is still being removed after %.0f s", container_id[:12], wait_s)


class _AttachTransport:
    """The attach stream: raw bytes to the guest's stdin; stdout/stderr come multiplexed in frames."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self._stream = stream
        self._pending = bytearray()
        self.stderr = bytearray()

    async def send(self, data: bytes) -> None:
        await self._stream.send(data)

    async def receive(self) -> bytes:
        while True:
            if len(self._pending) >= _STREAM_HEADER.size:
                kind, size = _STREAM_HEADER.unpack_from(self._pending)
                end = _STREAM_HEADER.size + size
                if len(self._pending) >= end:
                    payload = bytes(self._pending[_STREAM_HEADER.size : end])
                    del self._pending[:end]
                    if kind == 2:
                        self.stderr += payload
                        del self.stderr[: max(0, len(self.stderr) - 65536)]
                        continue
                    if payload:
                        return payload
                    continue
            try:
                chunk = await self._stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return b""
            self._pending += chunk

    async def aclose(self) -> None:
        with contextlib.suppress(OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._stream.send_eof()
        await self._stream.aclose()


class DockerSandbox(Sandbox):
    """A sandbox in a Docker container. Open it with ``open_sandbox("docker")`` or ``open_sandbox(SandboxSpec(backend="docker", ...))``."""

    backend = "docker"

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        self._container: str | None = None
        self._attach: _AttachTransport | None = None
        self._name = f"agentscope-sb-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"

    async def _start(self) -> None:
        if self.spec.network:
            raise SandboxError(
                "Docker sandboxes always run with network_mode='none': drop network=True, or use backend='bwrap' "
                "for a sandbox on the host's network"
            )
        source = await guest_source()
        program = await anyio.to_thread.run_sync(seccomp_program)
        limits = self.spec.limits
        runtime = self.spec.runtime or "runc"
        self.limit_enforcement = {
            "memory": f"cgroup ({runtime})",
            "pids": "rlimit NPROC (gVisor kernel)" if is_gvisor(runtime) else f"cgroup ({runtime})",
            "cpus": f"cgroup ({runtime})",
            "disk": "tmpfs",
            "syscalls": "seccomp filter (loaded by the guest)"
            + (" in gVisor's kernel" if is_gvisor(runtime) else " on top of Docker's default profile"),
        }
        logger.debug("starting docker sandbox %s (limits %s)", self._name, limits)
        created: tuple[str, socket.socket] | None = None
        # Shielded: a cancelled start must still learn of (and then remove) its container.
        with anyio.CancelScope(shield=True):
            created = await anyio.to_thread.run_sync(_create, self.spec, self._name, guest_command("python3"))
            self._container = created[0]
            self.id = created[0][:12]
        if created is None:  # pragma: no cover - a shielded scope always runs to the end
            raise SandboxError("the docker sandbox start was interrupted")
        sock = created[1]
        try:
            stream = await anyio.abc.SocketStream.from_socket(sock)
        except BaseException:
            sock.close()
            raise
        self._attach = _AttachTransport(stream)
        self._transport = self._attach
        config = {
            "workdir": self.spec.workdir,
            "env": {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": self.spec.workdir,
                "LANG": "C.UTF-8",
                "TMPDIR": "/tmp",
                "USER": "sandbox",
            },
            "wipe": [self.spec.workdir, "/tmp", "/dev/shm"],
            "rlimits": [["RLIMIT_FSIZE", limits.disk_mb << 20, limits.disk_mb << 20]],
            "oom_files": _OOM_FILES,
            "max_file_bytes": MAX_FILE_BYTES,
            "seccomp": base64.b64encode(program).decode("ascii"),
        }
        await self._transport.send(guest_boot_line(source, config, self._token))

    async def _diagnostics(self) -> str:
        if self._attach is None:
            return ""
        return self._attach.stderr.decode(errors="replace")

    async def _stop(self) -> None:
        attach, self._attach = self._attach, None
        if attach is not None:
            with contextlib.suppress(Exception):
                await attach.aclose()
        container, self._container = self._container, None
        if container is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_remove, container)
