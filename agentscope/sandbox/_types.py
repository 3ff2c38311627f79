"""The sandbox vocabulary: limits, exec results, backend names."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentscope.exceptions import SandboxError

__all__ = ["MAX_FILE_BYTES", "MAX_OUTPUT_BYTES", "BackendName", "ExecResult", "SandboxLimits", "SandboxSpec"]

MAX_OUTPUT_BYTES = 1 << 28
"""The largest ``output_bytes``: an exec's reply carries both streams, base64-encoded, in one line."""
MAX_FILE_BYTES = 1 << 28
"""The largest file ``read_file`` returns and ``write_file`` (or an exec's ``stdin``) takes."""

BackendName: TypeAlias = Literal["auto", "docker", "bwrap"]
"""Which isolation backend runs a sandbox: ``auto`` picks Docker when an engine answers, else bubblewrap."""

_RESERVED_DIRS = ("", "/usr", "/proc", "/dev", "/etc", "/bin", "/lib", "/lib64", "/sbin", "/sys", "/tmp")


def _validation_message(what: str, exc: ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or what
        # A validator's own ValueError reads as its message, without pydantic's "Value error, " in front.
        cause = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
        message = str(cause) if cause is not None else error["msg"]
        problems.append(f"{field}: {message} (got {error.get('input')!r})")
    return f"invalid {what}: " + "; ".join(problems)


class SandboxLimits(BaseModel):
    """Resource limits of one sandbox. Invalid values raise :class:`~agentscope.exceptions.SandboxError`
    naming the field.

    Docker enforces every limit through the container's cgroup and tmpfs sizes; bubblewrap through a cgroup of its
    own, which needs root or a delegated cgroup. Where bubblewrap can make no cgroup, rlimits cannot do the same
    (``memory_mb`` would cap each process, not the sandbox, and ``cpus`` would not be enforced at all), so the
    sandbox is refused unless ``strict=False``; :attr:`Sandbox.limit_enforcement
    <agentscope.sandbox.Sandbox.limit_enforcement>` says how each limit is enforced.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int = Field(default=512, ge=16, le=1 << 20)
    """Memory for everything in the sandbox, in MiB (files in /work and /tmp count too). A process that goes over
    it is killed and its :class:`ExecResult` says ``oom_killed``."""
    cpus: float = Field(default=1.0, gt=0, le=1024)
    """CPU share, in cores (0.5 = half a core)."""
    pids: int = Field(default=128, ge=8, le=1 << 22)
    """Most processes (and threads) alive at once; a fork bomb stops here."""
    timeout_s: float = Field(default=30.0, gt=0, le=86_400)
    """Default wall-clock limit of one :meth:`~agentscope.sandbox.Sandbox.exec`; the command's whole process tree is
    killed when it runs out (and, when it exits in time, whatever it left running in the background)."""
    disk_mb: int = Field(default=256, ge=1, le=1 << 20)
    """Size of the writable work dir, and separately of /tmp, in MiB."""
    output_bytes: int = Field(default=1 << 20, ge=1024, le=MAX_OUTPUT_BYTES)
    """Most bytes of stdout (and, separately, of stderr) kept per exec, at most 256 MiB; the rest is dropped and
    the result says ``truncated``."""
    strict: bool = True
    """Refuse to start a sandbox whose limits cannot all be enforced as asked (a :class:`SandboxError` says which
    and why). False: start it anyway with what can be enforced, log a warning, and say what in
    :attr:`Sandbox.limit_enforcement <agentscope.sandbox.Sandbox.limit_enforcement>`."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SandboxError(_validation_message("sandbox limits", exc)) from None


class SandboxSpec(BaseModel):
    """Everything that makes two sandboxes interchangeable: what :func:`~agentscope.sandbox.open_sandbox` starts,
    and what a :class:`~agentscope.sandbox.SandboxPool` keeps warm sandboxes of. Invalid values raise
    :class:`~agentscope.exceptions.SandboxError` naming the field.

    Example::

        spec = SandboxSpec(backend="bwrap", limits={"memory_mb": 256, "timeout_s": 10}, mounts=["/opt/venv"])
        async with open_sandbox(spec) as sb:
            ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName = "auto"
    """``docker``, ``bwrap`` or ``auto`` (Docker when an engine answers, else bubblewrap)."""
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    """Resource limits."""
    network: bool = False
    """Give the sandbox the host's network (bubblewrap only: ``auto`` then picks bubblewrap, and Docker refuses it).
    Default: no network at all, not even to the host's loopback."""
    image: str | None = None
    """Docker image; default ``agentscope-sandbox:latest`` (built by ``agentscope sandbox
    build-image``). Ignored by bubblewrap, which shows the host's /usr read-only."""
    workdir: str = "/work"
    """Absolute path of the writable work dir inside the sandbox; relative paths given to ``exec``, ``read_file``
    and ``write_file`` start here."""
    runtime: str | None = None
    """Docker runtime, e.g. ``runsc`` for gVisor. Default: the engine's default (runc)."""
    env: dict[str, str] = Field(default_factory=dict[str, str])
    """Extra environment variables of every command."""
    mounts: tuple[str, ...] = ()
    """Extra host paths shown read-only at the same path inside (bubblewrap only), e.g. a virtual environment."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SandboxError(_validation_message("sandbox spec", exc)) from None

    @field_validator("workdir")
    @classmethod
    def _own_absolute_workdir(cls, workdir: str) -> str:
        if not workdir.startswith("/") or workdir.rstrip("/") in _RESERVED_DIRS or ".." in workdir.split("/"):
            raise ValueError("workdir must be an absolute path of its own, such as /work")
        return workdir.rstrip("/")

    @field_validator("mounts")
    @classmethod
    def _absolute_mounts(cls, mounts: tuple[str, ...]) -> tuple[str, ...]:
        for mount in mounts:
            if not mount.startswith("/") or mount.rstrip("/") in _RESERVED_DIRS or ".." in mount.split("/"):
                raise ValueError(
                    f"mounts must be absolute host paths below /, such as /opt/venv; not {mount!r}"
                )
        return mounts


class ExecResult(BaseModel):
    """What one command did inside a sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exit_code: int
    """Exit status; ``128 + N`` when a signal N killed it (137 for a kill at the timeout or by the OOM killer),
    126 when it could not be executed, 127 when it was not found."""
    stdout: str
    """Standard output, decoded as UTF-8 (undecodable bytes replaced); see :attr:`stdout_bytes` for the raw bytes."""
    stderr: str
    """Standard error, decoded like :attr:`stdout`."""
    timed_out: bool = False
    """True when the command ran out of time and was killed with its process tree."""
    duration_s: float = 0.0
    """Wall-clock time the command ran, measured inside the sandbox."""
    oom_killed: bool = False
    """True when the kernel's OOM killer killed it for going over ``memory_mb``."""
    signal: int | None = None
    """The signal that killed it, if one did."""
    truncated: bool = False
    """True when stdout or stderr was longer than ``output_bytes`` and was cut."""
    killed: tuple[str, ...] = ()
    """Command lines of the processes the command left running (background jobs, daemons), which were killed
    when it exited (or with it at its timeout); at most 32 are listed. Empty with ``keep_background=True``."""
    killed_count: int = 0
    """How many such processes were killed (all of them, listed or not)."""
    stdout_bytes: bytes = Field(default=b"", repr=False)
    """Standard output, raw."""
    stderr_bytes: bytes = Field(default=b"", repr=False)
    """Standard error, raw."""

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """Stdout, then stderr: what a terminal would have shown."""
        if not self.stderr:
            return self.stdout
        if not self.stdout:
            return self.stderr
        return self.stdout + ("" if self.stdout.endswith("\n") else "\n") + self.stderr
