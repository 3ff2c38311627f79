"""``view_file``, ``write_file`` and ``edit_file``, confined to one working directory.

Every path the model gives is resolved against the working directory, symlinks included, and refused when it
ends up outside it (``../`` traversal, an absolute path elsewhere, a symlink pointing out). The final component
is opened with ``O_NOFOLLOW``, so a symlink swapped in after the check is not followed either, and with
``O_NONBLOCK``: only regular files are read or written, and a FIFO or device is refused at once instead of blocking
a worker thread forever. ``view_file`` reads only as far as what it shows. File I/O runs in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio.to_thread

from agentscope.exceptions import ModelRetry

__all__ = ["make_file_tools"]

_MAX_VIEW_CHARS: Final = 100_000
_MAX_LISTING: Final = 500
_MAX_EDIT_BYTES: Final = 16 << 20
_CHUNK: Final = 1 << 16
_COUNT_LINES_UP_TO: Final = 8 << 20
"""Files up to this size get their lines counted for the header even when only some are shown."""
_KINDS: Final = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


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


def _open_regular(path: Path, flags: int) -> int:
    """``path`` opened without following a final symlink and without blocking (a FIFO or device would block a
    worker thread forever); anything but a regular file is refused with a ModelRetry saying what it is."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise ModelRetry(f"'{path.name}' is a FIFO (named pipe), not a regular file") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ModelRetry(f"'{path.name}' is {kind}; only regular files can be read or written")
    return fd


def _check_text(path: Path, fd: int, head: bytes) -> None:
    if b"\x00" in head[:8192]:
        size = os.fstat(fd).st_size
        raise ModelRetry(f"'{path.name}' is a binary file ({size} bytes); it cannot be shown as text")


def _read_text(path: Path) -> str:
    """The whole of a regular text file (for editing; at most ``_MAX_EDIT_BYTES``)."""
    fd = _open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_EDIT_BYTES + 1)
        _check_text(path, fd, data)
    if len(data) > _MAX_EDIT_BYTES:
        raise ModelRetry(
            f"'{path.name}' is larger than {_MAX_EDIT_BYTES >> 20} MiB, too large to edit as text with edit_file"
        )
    return data.decode("utf-8", errors="replace")


def _lines(fd: int, offset: int, longest: int) -> Iterator[bytes | None]:
    """The lines of ``fd`` from ``offset`` on (without their line ends), read a chunk at a time. A line longer
    than ``longest`` bytes is cut there and followed by None: the file goes on, unread."""
    pending = b""
    while True:
        chunk = os.pread(fd, _CHUNK, offset)
        if not chunk:
            if pending:
                yield pending
            return
        offset += len(chunk)
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r")
        if len(pending) > longest:
            yield pending[:longest]
            yield None
            return


def _skip_lines(fd: int, count: int) -> tuple[int, int]:
    """The offset just after the ``count``-th line end, reading only that far; with fewer lines, ``(-1, how many
    lines there are)``."""
    offset, seen, last = 0, 0, b"\n"
    while seen < count:
        chunk = os.pread(fd, _CHUNK, offset)
        if not chunk:
            return -1, seen + (last != b"\n")  # an unterminated last line counts
        found = chunk.count(b"\n")
        if seen + found < count:
            seen += found
            offset += len(chunk)
            last = chunk[-1:]
            continue
        position = -1
        for _ in range(count - seen):
            position = chunk.index(b"\n", position + 1)
        return offset + position + 1, count
    return offset, count


def _view_lines(path: Path, start_line: int, end_line: int | None) -> tuple[list[str], int | str, bool]:
    """Lines ``start_line``..``end_line`` of a text file, reading only as far as they go and no further than
    about ``_MAX_VIEW_CHARS`` of them. Returns them; the file's number of lines when it was read to the end or
    is small enough to count (else its size, as text); and whether the shown range was cut short."""
    fd = _open_regular(path, os.O_RDONLY)
    try:
        _check_text(path, fd, os.pread(fd, 8192, 0))
        offset, total = _skip_lines(fd, start_line - 1)
        if offset < 0:
            return [], total, False
        kept: list[str] = []
        chars = 0
        number = start_line - 1
        cut = False
        for raw in _lines(fd, offset, _MAX_VIEW_CHARS):
            if end_line is not None and number >= end_line:
                break
            if raw is None or chars > _MAX_VIEW_CHARS:
                cut = True
                break
            number += 1
            line = raw.decode("utf-8", errors="replace")
            kept.append(line)
            chars += len(line) + len(str(number)) + 3  # never more than its share of the text shown
        else:
            return kept, number, chars > _MAX_VIEW_CHARS
        size = os.fstat(fd).st_size
        if size <= _COUNT_LINES_UP_TO:  # cheap enough to count the lines not shown
            return kept, _skip_lines(fd, size + 1)[1], cut
        return kept, f"{size} bytes", cut
    finally:
        os.close(fd)


def _write_text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
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
    if exc.errno == errno.ELOOP:
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
        if start_line < 1:
            raise ModelRetry("start_line must be 1 or more")
        try:
            lines, total, cut = await anyio.to_thread.run_sync(_view_lines, real, start_line, end_line)
        except FileNotFoundError:
            raise ModelRetry(f"'{path}' does not exist; view '.' to list the working directory") from None
        except OSError as exc:
            raise _os_error("read", path, exc) from None
        if isinstance(total, int) and total and start_line > total:
            raise ModelRetry(f"'{path}' has only {total} lines")
        last = start_line + len(lines) - 1
        widest = min(end_line or total, total) if isinstance(total, int) else last  # the range's last line
        width = len(str(max(widest, last)))
        shown = "\n".join(f"{n:>{width}}  {line}" for n, line in enumerate(lines, start_line))
        if cut or len(shown) > _MAX_VIEW_CHARS:
            shown = shown[:_MAX_VIEW_CHARS] + "\n... (cut; view a smaller line range)"
        if isinstance(total, int):
            header = f"{base.show(real)} ({total} lines)"
        else:
            header = f"{base.show(real)} (lines {start_line}-{last} of {total})"
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
