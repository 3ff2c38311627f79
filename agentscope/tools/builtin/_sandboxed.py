"""``execute_python_code`` and ``execute_shell_command``: model-written code, run inside a sandbox.

Written against the sandbox interface (:mod:`agentscope.sandbox`: ``open_sandbox``, ``SandboxPool``), not a
backend: anything with an async ``exec(command, *, timeout=...)`` returning an object with ``exit_code``,
``stdout``, ``stderr``, ``timed_out`` and ``duration_s`` works, which is what tests use as a double.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

from agentscope.exceptions import SandboxError, UsageError
from agentscope.types import ToolResponse

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

__all__ = ["ExecResultLike", "SandboxLike", "SandboxSource", "make_code_tools"]

_HEAD: Final = 0.3


class ExecResultLike(Protocol):
    """What a sandbox's ``exec`` returns (:class:`agentscope.sandbox.ExecResult` is one)."""

    @property
    def exit_code(self) -> int:
        """Exit status of the command."""
        ...

    @property
    def stdout(self) -> str:
        """Its standard output."""
        ...

    @property
    def stderr(self) -> str:
        """Its standard error."""
        ...

    @property
    def timed_out(self) -> bool:
        """Whether it was killed for running out of time."""
        ...

    @property
    def duration_s(self) -> float:
        """How long it ran, in seconds."""
        ...


class SandboxLike(Protocol):
    """The part of :class:`agentscope.sandbox.Sandbox` the code tools use."""

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the sandbox's own signature; enforced inside it)
    ) -> ExecResultLike:
        """Run an argv list directly, or a string with ``/bin/sh -c``, inside the sandbox."""
        ...


SandboxSource: TypeAlias = "SandboxLike | Callable[[], AbstractAsyncContextManager[SandboxLike]]"
"""A sandbox the tools share (its owner opens and closes it), or a zero-argument callable returning an async
context manager that yields one per call (``lambda: pool.acquire()``, ``lambda: open_sandbox("bwrap")``)."""


def make_code_tools(
    sandbox: SandboxSource,
    *,
    timeout_s: float = 30.0,
    max_output_chars: int = 20_000,
    python: str = "python3",
) -> list[Callable[..., Any]]:
    """``execute_python_code`` and ``execute_shell_command``, running every call inside ``sandbox``.

    Register them with ``for f in make_code_tools(sb): toolkit.register(f)``. The model sees the exit code,
    stdout and stderr; a non-zero exit or a timeout is marked as an error result.

    Args:
        sandbox: A running sandbox (shared by all calls; you open and close it), or a callable returning an async
            context manager that yields one for each call (a pool's ``acquire``, ``open_sandbox``).
        timeout_s: Wall-clock limit of each command, in seconds.
        max_output_chars: Most characters of output shown; the middle of longer output is cut.
        python: The Python interpreter inside the sandbox.
    """
    if not timeout_s > 0:
        raise UsageError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    acquire = _acquirer(sandbox)

    async def run(command: str | Sequence[str]) -> ToolResponse:
        try:
            async with acquire() as sb:
                result = await sb.exec(command, timeout=timeout_s)
        except SandboxError as exc:
            return ToolResponse.text(f"the sandbox failed: {exc}", is_error=True)
        return _render(result, timeout_s, max_output_chars)

    async def execute_python_code(code: str) -> ToolResponse:
        """Run Python code in an isolated sandbox and return what it printed.

        The code runs as a script in a fresh interpreter (no state is kept between calls; write files in the
        current directory to keep data). Use print() to see values. The sandbox has no network access.

        Args:
            code: The Python source to run.
        """
        return await run([python, "-c", code])

    async def execute_shell_command(command: str) -> ToolResponse:
        """Run a shell command (/bin/sh) in an isolated sandbox and return its output and exit code.

        The sandbox has no network access; files written in the current directory stay for later calls while
        the sandbox lives.

        Args:
            command: The command line, e.g. "ls -la && wc -l data.csv".
        """
        return await run(command)

    return [execute_python_code, execute_shell_command]


def _acquirer(sandbox: SandboxSource) -> Callable[[], AbstractAsyncContextManager[SandboxLike]]:
    if callable(getattr(sandbox, "exec", None)):
        shared: SandboxLike = sandbox  # pyright: ignore[reportAssignmentType]

        @asynccontextmanager
        async def borrow() -> AsyncGenerator[SandboxLike]:
            yield shared

        return borrow
    if callable(sandbox):
        return sandbox  # pyright: ignore[reportReturnType]
    raise UsageError(
        f"sandbox must be a sandbox (with an async exec method) or a callable returning an async context "
        f"manager of one, got {type(sandbox).__name__}"
    )


def _render(result: ExecResultLike, timeout_s: float, limit: int) -> ToolResponse:
    parts: list[str] = []
    if result.timed_out:
        parts.append(f"timed out after {timeout_s:g}s (killed)")
    else:
        parts.append(f"exit code {result.exit_code}")
    if result.stdout:
        parts.append("stdout:\n" + _cut(result.stdout, limit))
    if result.stderr:
        parts.append("stderr:\n" + _cut(result.stderr, limit))
    if not result.stdout and not result.stderr:
        parts.append("(no output)")
    killed = _killed(result)
    if killed:
        parts.append(
            f"killed {len(killed)} process{'es' if len(killed) > 1 else ''} it left running in the background: "
            + "; ".join(_cut(line, 200) for line in killed[:10])
        )
    return ToolResponse.text("\n".join(parts), is_error=result.timed_out or result.exit_code != 0).model_copy(
        update={
            "metadata": {
                "exit_code": result.exit_code,
                "timed_out": result.timed_out,
                "duration_s": result.duration_s,
            }
        }
    )


def _killed(result: ExecResultLike) -> list[str]:
    """The background processes the sandbox killed when the command returned (:attr:`ExecResult.killed
    <agentscope.sandbox.ExecResult.killed>`); results without that field list none."""
    killed: object = getattr(result, "killed", ())
    if not isinstance(killed, tuple | list):
        return []
    return [str(line) for line in killed]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text.rstrip("\n")
    head = int(limit * _HEAD)
    tail = limit - head
    return f"{text[:head]}\n... ({len(text) - limit} characters cut) ...\n{text[-tail:]}".rstrip("\n")
