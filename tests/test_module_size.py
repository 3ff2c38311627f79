"""No module of the package grows past ~600 lines unless its docstring says why it must stay one file.

A long module is usually several concerns in one file; cut it by concern into private modules next to it. When a
file must stay whole (the sandbox guest is sent as source text into every sandbox), its module docstring says so
in a sentence starting with "One file because".
"""

from __future__ import annotations

import ast
from pathlib import Path

import agentscope

PACKAGE_DIR = Path(agentscope.__file__).parent
MAX_LINES = 600
REASON = "One file because"


def oversized_without_reason(package_dir: Path) -> list[str]:
    """``"<path>: <lines> lines"`` for each module under ``package_dir`` over :data:`MAX_LINES` lines whose
    docstring does not contain :data:`REASON`, sorted by path."""
    found: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text, filename=str(path))) or ""
        if REASON not in docstring:
            found.append(f"{path.relative_to(package_dir.parent).as_posix()}: {lines} lines")
    return found


def test_every_long_module_says_why_it_is_one_file() -> None:
    found = oversized_without_reason(PACKAGE_DIR)
    assert not found, (
        f"modules over {MAX_LINES} lines without {REASON!r} in their docstring (cut them by concern into private "
        "modules, or say why they must stay whole):\n" + "\n".join(found)
    )


def test_the_check_finds_a_long_module_and_accepts_a_stated_reason(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    body = "x = 1\n" * MAX_LINES
    (package / "short.py").write_text('"""Short."""\n' + "x = 1\n" * (MAX_LINES - 1))
    (package / "sub" / "_long.py").write_text('"""Long."""\n' + body)
    (package / "_whole.py").write_text(f'"""Whole.\n\n{REASON} it is sent as source text."""\n' + body)
    (package / "_comment.py").write_text(f"# {REASON} a comment is not the docstring\n" + body)

    assert oversized_without_reason(package) == [
        f"pkg/_comment.py: {MAX_LINES + 1} lines",
        f"pkg/sub/_long.py: {MAX_LINES + 1} lines",
    ]
