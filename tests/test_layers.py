"""The package's layers: every import between parts points down, and no part imports another's private module.

A *part* is a subpackage or a plain module directly under ``agentscope/``. The layers, lowest first; a part may
import its own modules and any part of a strictly lower layer, never a peer in its own layer nor anything above::

    exceptions                            errors (imports nothing of ours)
    _net                                  loopback hosts
    _errors  _json  _lazy  _loading       private helpers: exception groups; tolerant JSON readers; lazy exports;
    _sqlite  _uvicorn                     ``module:attr`` loading; SQLite files; background uvicorn servers (which
                                          refuse a non-loopback host unless told)
    message                               Msg and content blocks
    types                                 ToolSchema, ChatResponse, ToolResponse... (the shared vocabulary)
    events                                stream events (deltas, ChatResponse, ToolResponse)
    formatters  tracing                   wire codecs; spans and the trace store
    models  tools  memory  studio         chat models; toolkit, built-in tools and MCP; memory; the web studio
    sandbox                               (reads stores); sandboxes and the browser (the tools drive them through
                                          the SandboxLike and BrowserLike protocols, never importing them)
    agents  testing                       agents; test doubles for models and provider servers
    pipelines  rl                         multi-agent pipelines; reinforcement learning
    cli                                   the ``agentscope`` command

docs/architecture.md draws the same picture.

What counts as an import: every ``import`` and ``from ... import`` statement of a module, read with ``ast`` without
importing anything: at module level, inside functions (lazy imports) and inside ``if TYPE_CHECKING:`` blocks,
plus ``importlib.import_module("...")`` with a literal name. TYPE_CHECKING imports count because a type is a
dependency too: a module that needs a type from above it for its annotations holds that type in the wrong layer
(``events`` needed ``ChatResponse`` from ``models`` until ``types`` existed). ``from agentscope.x import _y``
imports the module ``agentscope.x._y`` when such a file exists. Importing the root package itself (``import
agentscope``, which every import does implicitly) is not an arrow; the root's ``__init__`` sits with ``cli`` at
the top.

A private module is one whose dotted name has a component starting with ``_`` (``agentscope.tracing._store``); it
belongs to the package that holds it and may be imported only from inside that package (``agentscope.rl.envs``
may import ``agentscope.rl._types``, ``agentscope.studio`` may not import ``agentscope.tracing._store``). Top-level
private modules (``agentscope._sqlite``) belong to the whole package.

``ALLOWED`` lists the exceptions that stand today, each with its reason; an entry no longer needed fails the test,
so the list only shrinks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import agentscope

PACKAGE_DIR = Path(agentscope.__file__).parent

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"exceptions"}),
    frozenset({"_net"}),
    frozenset({"_errors", "_json", "_lazy", "_loading", "_sqlite", "_uvicorn"}),
    frozenset({"message"}),
    frozenset({"types"}),
    frozenset({"events"}),
    frozenset({"formatters", "tracing"}),
    frozenset({"models", "tools", "memory", "studio", "sandbox"}),
    frozenset({"agents", "testing"}),
    frozenset({"pipelines", "rl"}),
    frozenset({"cli", ""}),  # "": the root package's __init__
)
"""The parts of each layer, lowest first (names under ``agentscope.``)."""

ALLOWED: dict[tuple[str, str], str] = {
    ("agentscope.cli", "agentscope.rl._cli"): (
        "the command line mounts each part's command helpers, which are not library API: `agentscope rl`"
    ),
    ("agentscope.cli", "agentscope.sandbox._image"): "as above: `agentscope sandbox build-image`",
    ("agentscope.cli", "agentscope.sandbox._gvisor"): "as above: `agentscope sandbox register-gvisor`",
    ("agentscope.cli", "agentscope.tools._mcp_server"): "as above: `agentscope mcp serve --host` checks",
}
"""(importing module, imported private module or upper-layer module) -> why it is allowed for now."""


@dataclass(frozen=True, slots=True)
class Arrow:
    """One import of one module of ours by another."""

    source: str
    """The importing module."""
    target: str
    """The imported module (the deepest module of ours that the import names)."""
    line: int
    """Line of the import statement."""


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module under ``package_dir`` by dotted name (a package by its own name, for its ``__init__.py``)."""
    names: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement (or a literal ``import_module`` call) loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}" if base else anchor
        return [base, *(f"{base}.{alias.name}" for alias in node.names)]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def arrows(package_dir: Path, package: str) -> list[Arrow]:
    """Every import of one of the package's modules by another, wherever the statement stands."""
    modules = module_names(package_dir, package)
    found: list[Arrow] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: set[str] = set()
            for name in _imported_names(node, module, is_package):
                # `from a.b import c`: c is a module when a.b.c exists, else a name defined in a.b.
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != package and name != module:
                    targets.add(name)
            # `from a.b import c, d` names a.b as well: keep only the deepest modules the statement loads.
            for target in targets:
                if not any(other.startswith(target + ".") for other in targets):
                    found.append(Arrow(module, target, getattr(node, "lineno", 0)))
    return found


def part_of(module: str, package: str) -> str:
    """The part a module belongs to: the name after ``package.`` (``""`` for the root package)."""
    return module.removeprefix(package).removeprefix(".").partition(".")[0]


def layer_of(part: str, layers: tuple[frozenset[str], ...]) -> int:
    """The index of the layer holding ``part``; a part missing from ``layers`` sits above them all."""
    for index, names in enumerate(layers):
        if part in names:
            return index
    return len(layers)


def private_owner(module: str) -> str | None:
    """The package a private module belongs to (``a.b._c.d`` -> ``a.b``), or None for a public module."""
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def violations(
    package_dir: Path, package: str, layers: tuple[frozenset[str], ...]
) -> dict[tuple[str, str], str]:
    """(importing module, imported module) -> what is wrong, for every arrow that breaks a rule."""
    found: dict[tuple[str, str], str] = {}
    for arrow in arrows(package_dir, package):
        source_part, target_part = part_of(arrow.source, package), part_of(arrow.target, package)
        where = f"{arrow.source} line {arrow.line} imports {arrow.target}"
        owner = private_owner(arrow.target)
        if owner is not None and owner != package and not (arrow.source + ".").startswith(owner + "."):
            found[(arrow.source, arrow.target)] = f"{where}, a private module of {owner}"
        elif source_part != target_part:
            source_layer, target_layer = layer_of(source_part, layers), layer_of(target_part, layers)
            if target_layer == source_layer:
                found[(arrow.source, arrow.target)] = f"{where}: a peer in the same layer"
            elif target_layer > source_layer:
                found[(arrow.source, arrow.target)] = f"{where}: an upward arrow"
    return found


def test_every_part_has_a_layer() -> None:
    parts = {part_of(m, "agentscope") for m in module_names(PACKAGE_DIR, "agentscope")}
    placed = set().union(*LAYERS)
    assert parts - placed == set(), "place each new part in LAYERS (and in docs/architecture.md)"
    assert placed - parts == set(), "LAYERS names a part that no longer exists"


def test_imports_point_down_and_keep_out_of_private_modules() -> None:
    found = violations(PACKAGE_DIR, "agentscope", LAYERS)
    unexpected = [message for key, message in sorted(found.items()) if key not in ALLOWED]
    assert unexpected == [], "\n".join(unexpected)


def test_the_allow_list_only_shrinks() -> None:
    found = violations(PACKAGE_DIR, "agentscope", LAYERS)
    stale = sorted(key for key in ALLOWED if key not in found)
    assert stale == [], f"no longer needed, remove from ALLOWED: {stale}"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"low.py": "def f():\n    from pkg import high\n", "high.py": "import pkg.low\n"},
            ["pkg.low line 2 imports pkg.high: an upward arrow"],
            id="upward-in-a-function",
        ),
        pytest.param(
            {"low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import X\n"},
            ["pkg.low line 3 imports pkg.high: an upward arrow"],
            id="upward-for-typing-only",
        ),
        pytest.param(
            {"high.py": "import pkg.mid\n", "mid.py": "import pkg.high\n"},
            [
                "pkg.high line 1 imports pkg.mid: a peer in the same layer",
                "pkg.mid line 1 imports pkg.high: a peer in the same layer",
            ],
            id="peers",
        ),
        pytest.param(
            {
                "low/__init__.py": "",
                "low/_impl.py": "",
                "low/_other.py": "from pkg.low import _impl\n",
                "high.py": "import importlib\nimportlib.import_module('pkg.low._impl')\nfrom pkg.low import x\n",
            },
            ["pkg.high line 2 imports pkg.low._impl, a private module of pkg.low"],
            id="private-module",
        ),
        pytest.param(
            {"low.py": "import pkg\n", "high.py": "from . import low\nfrom pkg.low import f\n"},
            [],
            id="downward-only",
        ),
    ],
)
def test_the_checker_catches_what_it_should(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    files = {"__init__.py": "", "low.py": "", "mid.py": "", "high.py": "", **files}
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    layers = (frozenset({"low"}), frozenset({"mid", "high"}), frozenset({""}))
    assert sorted(violations(tmp_path / "pkg", "pkg", layers).values()) == expected
