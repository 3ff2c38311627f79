"""``view_file``, ``write_file`` and ``edit_file``, confined to one working directory.

Every path the model gives is resolved against the working directory, symlinks included, and refused when it
ends up outside it (``../`` traversal, an absolute path elsewhere, a symlink pointing out). The final component
is opened with ``O_NOFOLLOW``, so a symlink swapped in after the check is not followed either. File I/O runs in
a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import anyio.to_thread

from agentscope.exceptions import ModelRetry

__all__ = ["make_file_tools"]

_MAX_VIEW_CHARS: Final = 100_000
_MAX_LISTING: Final = 500


class _Root:
    """The working directory and the path checks (all blocking: call them in a worker thread)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.given = os.fspath(root)
        self._real: Path | None = None

    @property
    def path(self) -> Path:
        """The real path of the working directory (resolved on first use, so that creating tools never blocks)."""
        if self._real is None:
            real = Path(os.path.realpath(self.given))
            if not real.is_dir():
                raise ModelRetry(f"the working directory {self.given} does not exist or is not a directory")
            self._real = real
        return self._real

    def resolve(self, path: str) -> Path:
        """The real path of ``path`` inside the working directory, or ModelRetry explaining the refusal."""
        root = self.path
        if not path.strip():
            raise ModelRetry("the path is empty; give a path relative to the working directory")
        if "\x00" in path:
            raise ModelRetry("the path contains a NUL character")
        candidate = Path(path)
        joined = candidate if candidate.is_absolute() else root / candidate
        real = Path(os.path.realpath(joined))
        if real != root and not real.is_relative_to(root):
            why = "a symlink that points" if Path(os.path.normpath(joined)).is_relative_to(root) else "a path"
            raise ModelRetry(
                f"access denied: '{path}' is {why} outside the working directory {root}; "
                "only paths inside it can be used"
            )
        return real

    def show(self, real: Path) -> str:
        """``real`` as the model should see it: relative to the working directory."""
        relative = real.relative_to(self.path)
        return str(relative) if str(relative) != "." else "."


def _read_text(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    if b"\x00" in data[:8192]:
        raise ModelRetry(f"'{path.name}' is a binary file ({len(data)} bytes); it cannot be shown as text")
    return data.decode("utf-8", errors="replace")


def _write_text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(content)


def _listing(root: _Root, directory: Path) -> str:
    entries = sorted(directory.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    lines = [f"{root.show(directory)}/ ({len(entries)} entries)"]
    for entry in entries[:_MAX_LISTING]:
        if entry.is_symlink():
            lines.append(f"  {entry.name} -> {os.readlink(entry)}")
        elif entry.is_dir():
            lines.append(f"  {entry.name}/")
        else:
            lines.append(f"  {entry.name} ({entry.stat().st_size} bytes)")
    if len(entries) > _MAX_LISTING:
        lines.append(f"  ... {len(entries) - _MAX_LISTING} more")
    return "\n".join(lines)


def _os_error(action: str, path: str, exc: OSError) -> ModelRetry:
    reason = exc.strerror or type(exc).__name__
    if exc.errno == getattr(os, "ELOOP", None):
        reason = "it is a symlink, which is not followed"
    return ModelRetry(f"cannot {action} '{path}': {reason}")


def make_file_tools(root: str | os.PathLike[str]) -> list[Callable[..., Any]]:
    """``view_file``, ``write_file`` and ``edit_file`` working inside ``root``.

    Register them with ``for f in make_file_tools(workdir): toolkit.register(f)``. A path outside ``root``
    (``..``, an absolute path elsewhere, a symlink pointing out) is refused with an error the model sees.

    Args:
        root: The working directory; the tools can read and write everything under it, nothing else. It is
            resolved (symlinks included) on first use; if it does not exist then, every call says so.
    """
    base = _Root(root)

    async def view_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Show a text file with line numbers, or list a directory.

        Args:
            path: Path relative to the working directory ("." for the directory itself).
            start_line: First line to show (1-based).
            end_line: Last line to show (inclusive); default: the end of the file.
        """
        real = await anyio.to_thread.run_sync(base.resolve, path)
        if await anyio.to_thread.run_sync(real.is_dir):
            return await anyio.to_thread.run_sync(_listing, base, real)
        try:
            text = await anyio.to_thread.run_sync(_read_text, real)
        except FileNotFoundError:
            raise ModelRetry(f"'{path}' does not exist; view '.' to list the working directory") from None
        except OSError as exc:
            raise _os_error("read", path, exc) from None
        lines = text.splitlines()
        if start_line < 1:
            raise ModelRetry("start_line must be 1 or more")
        last = len(lines) if end_line is None else min(end_line, len(lines))
        if lines and start_line > len(lines):
            raise ModelRetry(f"'{path}' has only {len(lines)} lines")
        width = len(str(last))
        shown = "\n".join(f"{n:>{width}}  {lines[n - 1]}" for n in range(start_line, last + 1))
        if len(shown) > _MAX_VIEW_CHARS:
            shown = shown[:_MAX_VIEW_CHARS] + "\n... (cut; view a smaller line range)"
        header = f"{base.show(real)} ({len(lines)} lines)"
        return f"{header}\n{shown}" if shown else f"{header}\n(empty)"

    async def write_file(path: str, content: str) -> str:
        """Create or overwrite a text file (parent directories are created).

        Args:
            path: Path relative to the working directory.
            content: The whole new content of the file.
        """
        real = await anyio.to_thread.run_sync(base.resolve, path)
        if await anyio.to_thread.run_sync(real.is_dir):
            raise ModelRetry(f"'{path}' is a directory")
        try:
            await anyio.to_thread.run_sync(_write_text, real, content)
        except OSError as exc:
            raise _os_error("write", path, exc) from None
        return f"wrote {len(content.encode())} bytes to {base.show(real)}"

    async def edit_file(path: str, old_text: str, new_text: str, replace_all: bool = False) -> str:
        """Replace exact text in a file. old_text must match the file exactly (whitespace included) and, unless
        replace_all is true, occur exactly once.

        Args:
            path: Path relative to the working directory.
            old_text: The text to replace, copied exactly from the file (include surrounding lines to make it
                unique).
            new_text: The replacement text.
            replace_all: Replace every occurrence instead of requiring exactly one.
        """
        real = await anyio.to_thread.run_sync(base.resolve, path)
        if not old_text:
            raise ModelRetry("old_text is empty; to write a whole file use write_file")
        try:
            text = await anyio.to_thread.run_sync(_read_text, real)
        except FileNotFoundError:
            raise ModelRetry(f"'{path}' does not exist; create it with write_file") from None
        except OSError as exc:
            raise _os_error("read", path, exc) from None
        count = text.count(old_text)
        if count == 0:
            raise ModelRetry(f"old_text was not found in '{path}'; view the file and copy the text exactly")
        if count > 1 and not replace_all:
            raise ModelRetry(
                f"old_text occurs {count} times in '{path}'; include more surrounding text to make it unique, "
                "or set replace_all"
            )
        updated = text.replace(old_text, new_text)
        try:
            await anyio.to_thread.run_sync(_write_text, real, updated)
        except OSError as exc:
            raise _os_error("write", path, exc) from None
        return f"replaced {count} occurrence{'s' if count > 1 else ''} in {base.show(real)}"

    return [view_file, write_file, edit_file]
