"""A small docstring parser: the description and per-parameter text of Google, NumPy and Sphinx docstrings.

Only what a tool schema needs is extracted: the free text before the first section (the tool's description)
and one description per parameter. Everything else (returns, raises, examples) is dropped.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

__all__ = ["ParsedDocstring", "parse_docstring"]

_PARAM_SECTIONS = frozenset(
    {
        "args",
        "arguments",
        "parameters",
        "params",
        "keyword args",
        "keyword arguments",
        "kwargs",
        "other parameters",
        "other args",
        "other arguments",
    }
)
_OTHER_SECTIONS = frozenset(
    {
        "attributes",
        "example",
        "examples",
        "exceptions",
        "except",
        "methods",
        "note",
        "notes",
        "raise",
        "raises",
        "references",
        "return",
        "returns",
        "see also",
        "todo",
        "warning",
        "warnings",
        "warns",
        "yield",
        "yields",
    }
)
_ALL_SECTIONS = _PARAM_SECTIONS | _OTHER_SECTIONS

_GOOGLE_HEADER = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:(?:\s+(.*))?$")
_NUMPY_ENTRY = re.compile(r"^\*{0,2}([A-Za-z_]\w*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s*(?::.*)?$")
_FIELD_LIST = re.compile(r"^[:@](\w+)(?:\s+([^:]*?))?\s*:(?:\s+(.*))?$")
_SPHINX_PARAM_FIELDS = frozenset({"param", "parameter", "arg", "argument", "key", "keyword"})


@dataclass(slots=True)
class ParsedDocstring:
    """What a docstring says about a callable."""

    description: str = ""
    """The summary line and body, up to the first section (``Args:``, ``Parameters``, ``:param ...:`` ...)."""
    params: dict[str, str] = field(default_factory=dict[str, str])
    """Parameter name -> its description (continuation lines joined with spaces)."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _section_at(lines: list[str], i: int) -> tuple[str, int] | None:
    """If a section starts at line ``i``: its kind and lower-cased name, and the index of its first line."""
    line = lines[i]
    if not line or line[0].isspace():
        return None
    stripped = line.strip()
    # NumPy: a known name underlined with dashes.
    if i + 1 < len(lines) and _NUMPY_UNDERLINE.match(lines[i + 1]) and stripped.lower() in _ALL_SECTIONS:
        return "numpy:" + stripped.lower(), i + 2
    m = _GOOGLE_HEADER.match(stripped)
    if m and m.group(1).strip().lower() in _ALL_SECTIONS:
        return "google:" + m.group(1).strip().lower(), i + 1
    if _FIELD_LIST.match(stripped):
        return "fields", i
    return None


def _join(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _parse_google(lines: list[str], start: int, params: dict[str, str]) -> int:
    """Parse an indented ``name (type): text`` list; return the index where the section ends."""
    i = start
    entry_indent: int | None = None
    current: str | None = None
    parts: list[str] = []
    while i < len(lines):
        line = lines[i]
        if line.strip() and not line[0].isspace():
            break  # back at the left margin: the section is over
        if line.strip():
            ind = _indent(line)
            if entry_indent is None:
                entry_indent = ind
            m = _GOOGLE_ENTRY.match(line.strip()) if ind <= entry_indent else None
            if m:
                if current is not None:
                    params.setdefault(current, _join(parts))
                current, parts = m.group(1), [m.group(2) or ""]
            elif current is not None:
                parts.append(line)
        i += 1
    if current is not None:
        params.setdefault(current, _join(parts))
    return i


def _parse_numpy(lines: list[str], start: int, params: dict[str, str]) -> int:
    """Parse ``name : type`` entries at the margin, descriptions indented; return where the section ends."""
    i = start
    names: list[str] = []
    parts: list[str] = []

    def flush() -> None:
        for n in names:
            params.setdefault(n, _join(parts))

    while i < len(lines):
        line = lines[i]
        if line.strip() and not line[0].isspace():
            if _section_at(lines, i) is not None:
                break
            m = _NUMPY_ENTRY.match(line.strip())
            if m:
                flush()
                names = [n.strip().lstrip("*") for n in m.group(1).split(",")]
                parts = []
            else:
                break
        elif line.strip():
            parts.append(line)
        i += 1
    flush()
    return i


def _parse_fields(lines: list[str], start: int, params: dict[str, str]) -> int:
    """Parse Sphinx/Epydoc field lists (``:param x: text``, ``@param x: text``) until the text ends."""
    i = start
    current: str | None = None
    parts: list[str] = []
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        m = _FIELD_LIST.match(stripped) if stripped and not line[0].isspace() else None
        if m:
            if current is not None:
                params.setdefault(current, _join(parts))
            current, parts = None, []
            kind, arg, text = m.group(1).lower(), (m.group(2) or "").strip(), m.group(3) or ""
            if kind in _SPHINX_PARAM_FIELDS and arg:
                current = arg.split()[-1].lstrip("*")  # ":param int x:" -> "x"
                parts = [text]
        elif stripped and not line[0].isspace():
            if _section_at(lines, i) is not None:
                break
            current = None  # free text after a field list: not part of any parameter
        elif stripped and current is not None:
            parts.append(line)
        i += 1
    if current is not None:
        params.setdefault(current, _join(parts))
    return i


def parse_docstring(doc: str | None) -> ParsedDocstring:
    """Split a docstring into its description and its parameter descriptions.

    Google (``Args:``), NumPy (``Parameters`` underlined with dashes) and Sphinx/Epydoc (``:param x:``,
    ``@param x:``) styles are understood, and may even be mixed.
    """
    if not doc:
        return ParsedDocstring()
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    description_end: int | None = None
    i = 0
    while i < len(lines):
        section = _section_at(lines, i)
        if section is None:
            i += 1
            continue
        if description_end is None:
            description_end = i
        kind, body = section
        if kind == "fields":
            i = _parse_fields(lines, body, params)
        elif kind.startswith("numpy:"):
            i = _parse_numpy(lines, body, params) if kind[6:] in _PARAM_SECTIONS else _skip_numpy(lines, body)
        elif kind[7:] in _PARAM_SECTIONS:
            i = _parse_google(lines, body, params)
        else:
            i = _skip_google(lines, body)
        i = max(i, body)  # always make progress
        if i == body and _section_at(lines, i) is None:
            i += 1
    head = lines if description_end is None else lines[:description_end]
    return ParsedDocstring(description="\n".join(head).strip(), params=params)


def _skip_google(lines: list[str], start: int) -> int:
    i = start
    while i < len(lines) and not (lines[i].strip() and not lines[i][0].isspace()):
        i += 1
    return i


def _skip_numpy(lines: list[str], start: int) -> int:
    i = start
    while i < len(lines) and _section_at(lines, i) is None:
        i += 1
    return i
