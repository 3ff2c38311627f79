"""The package's layers: every import between parts points down, and no part imports another's private module.

A *part* is a subpackage or a plain module directly under ``agentscope/``. The layers, lowest first; a part may
import its own modules and any part of a strictly lower layer, never a peer in its own layer nor anything above::

    exceptions                            errors (imports nothing of ours)
    _net                                  loopback hosts
    _commands  _errors  _json  _lazy      private helpers: command groups; exception groups; tolerant JSON readers;
    _loading  _sqlite  _uvicorn           lazy exports; ``module:attr`` loading; SQLite files; background uvicorn
    _http_body                            servers (which refuse a non-loopback host unless told); request bodies
                                          read with a size limit
    message                               Msg and content blocks
    types                                 ToolSchema, ChatResponse, ToolResponse... (the shared vocabulary)
    events                                stream events (deltas, ChatResponse, ToolResponse)
    formatters  tracing                   wire codecs; spans and the trace store
    models  tools  memory  studio         chat models; toolkit, built-in tools and MCP; memory; the web studio
    sandbox                               (reads stores); sandboxes and the browser (the tools drive them through
                                          the SandboxLike and BrowserLike protocols, never importing them)
    context                               what a model is sent: token counting, compaction, tool-call repair
    agents  testing  knowledge            agents; test doubles for models and provider servers; knowledge
                                          bases (RAG) and long-term memory
    pipelines  rl  service                multi-agent pipelines; reinforcement learning; agents as services
    evaluation                            ``agentscope eval``: any agent on the RL task sets, measured
    cli                                   the ``agentscope`` command

docs/architecture.md draws the same picture, top layer first; the test reads it and fails naming each part the
two place differently.

What counts as an import: every ``import`` and ``from ... import`` statement of a module, read with ``ast`` without
importing anything: at module level, inside functions (lazy imports) and inside ``if TYPE_CHECKING:`` blocks,
plus ``importlib.import_module("...")`` with a literal name. TYPE_CHECKING imports count because a type is a
dependency too: a module that needs a type from above it for its annotations holds that type in the wrong layer
(``events`` needed ``ChatResponse`` from ``models`` until ``types`` existed). ``from agentscope.x import _y``
imports the module ``agentscope.x._y`` when such a file exists. Importing the root package itself (``import
agentscope``, which every import does implicitly) is not an arrow; the root's ``__init__`` sits with ``cli`` at
the top. A package's lazy exports (``__getattr__ = lazy_exports(__name__, {"Name": "_module"})``, see
``agentscope/_lazy.py``) name the modules they import by string: each is an arrow too, and its exports must be
written so that ``ast`` can read them (a dict literal, ``dict.fromkeys(names, "_module")``, or a module-level
name bound to one) and name modules that exist.

A private module is one whose dotted name has a component starting with ``_`` (``agentscope.tracing._store``); it
belongs to the package that holds it and may be imported only from inside that package (``agentscope.rl.envs``
may import ``agentscope.rl._types``, ``agentscope.studio`` may not import ``agentscope.tracing._store``). Top-level
private modules (``agentscope._sqlite``) belong to the whole package.

``ALLOWED`` lists the exceptions that stand, each with its reason; an entry no longer needed fails the test, so
the list only shrinks. It is empty: each part's command group lives in its public ``cli`` module
(``agentscope.rl.cli``, ``agentscope.sandbox.cli``, ``agentscope.tools.cli``), which ``agentscope.cli`` mounts.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import agentscope

PACKAGE_DIR = Path(agentscope.__file__).parent
ARCHITECTURE_DOC = PACKAGE_DIR.parent / "docs" / "architecture.md"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"exceptions"}),
    frozenset({"_net"}),
    frozenset({"_commands", "_errors", "_http_body", "_json", "_lazy", "_loading", "_sqlite", "_uvicorn"}),
    frozenset({"message"}),
    frozenset({"types"}),
    frozenset({"events"}),
    frozenset({"formatters", "tracing"}),
    frozenset({"models", "tools", "memory", "studio", "sandbox"}),
    frozenset({"context"}),
    frozenset({"agents", "testing", "knowledge"}),
    frozenset({"pipelines", "plan", "rl", "service"}),
    frozenset({"evaluation"}),
    frozenset({"cli", ""}),  # "": the root package's __init__
)
"""The parts of each layer, lowest first (names under ``agentscope.``)."""

ALLOWED: dict[tuple[str, str], str] = {}
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
    lazy: bool = False
    """A lazy export (the module is named by string in a ``lazy_exports`` call), not an import statement."""


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module under ``package_dir`` by dotted name (a package by its own name, for its ``__init__.py``)."""
    names: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


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


def _is_lazy_exports_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name.lstrip("_") == "lazy_exports"


def _string_values(node: ast.expr, bindings: dict[str, ast.expr], where: str) -> list[str]:
    """The module names (the values) of a lazy-exports table, read without running the code."""
    if isinstance(node, ast.Name) and node.id in bindings:
        return _string_values(bindings[node.id], bindings, where)
    if isinstance(node, ast.Dict):
        values: list[str] = []
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # `**other`: another table
                values.extend(_string_values(value, bindings, where))
            elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                values.append(value.value)
            else:
                raise ValueError(
                    f"{where}: a lazy export's module is not a string literal ({ast.unparse(value)})"
                )
        return values
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and (node.func.value.id, node.func.attr) == ("dict", "fromkeys")
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return [node.args[1].value]
    raise ValueError(
        f"{where}: cannot read the lazy exports without running the code; write them as a dict literal, "
        f"dict.fromkeys(names, '_module'), a merge of those (**) or a module-level name bound to one ({ast.unparse(node)})"
    )


def lazy_export_targets(tree: ast.Module, module: str, where: str) -> list[tuple[str, int]]:
    """(dotted module, line) for every module that a ``lazy_exports(package, exports)`` call in ``tree`` loads."""
    bindings: dict[str, ast.expr] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    bindings[target.id] = statement.value
        elif (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.value
        ):
            bindings[statement.target.id] = statement.value
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_lazy_exports_call(node)):
            continue
        here = f"{where} line {node.lineno}"
        exports = (
            node.args[1]
            if len(node.args) > 1
            else next((k.value for k in node.keywords if k.arg == "exports"), None)
        )
        package_arg = (
            node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "package"), None)
        )
        if isinstance(package_arg, ast.Name) and package_arg.id == "__name__":
            package = module
        elif isinstance(package_arg, ast.Constant) and isinstance(package_arg.value, str):
            package = package_arg.value
        else:
            raise ValueError(f"{here}: lazy_exports names its package neither as __name__ nor as a string")
        if exports is None:
            raise ValueError(f"{here}: lazy_exports without an exports table")
        for relative in sorted(set(_string_values(exports, bindings, here))):
            found.append((f"{package}.{relative}", node.lineno))
    return found


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
        for target, line in lazy_export_targets(tree, module, str(path)):
            found.append(Arrow(module, target, line, lazy=True))
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
    modules = module_names(package_dir, package)
    for arrow in arrows(package_dir, package):
        source_part, target_part = part_of(arrow.source, package), part_of(arrow.target, package)
        verb = "lazily exports from" if arrow.lazy else "imports"
        where = f"{arrow.source} line {arrow.line} {verb} {arrow.target}"
        owner = private_owner(arrow.target)
        if arrow.target not in modules:
            found[(arrow.source, arrow.target)] = f"{where}, which does not exist"
        elif owner is not None and owner != package and not (arrow.source + ".").startswith(owner + "."):
            found[(arrow.source, arrow.target)] = f"{where}, a private module of {owner}"
        elif source_part != target_part:
            source_layer, target_layer = layer_of(source_part, layers), layer_of(target_part, layers)
            if target_layer == source_layer:
                found[(arrow.source, arrow.target)] = f"{where}: a peer in the same layer"
            elif target_layer > source_layer:
                found[(arrow.source, arrow.target)] = f"{where}: an upward arrow"
    return found


_PART_NAME = re.compile(r"(?<![\w`])_?[a-z][a-z_]*(?![\w`])")


def documented_layers(text: str) -> tuple[frozenset[str], ...]:
    """The layers drawn in the first picture (fenced block) of ``text``, lowest first.

    The picture lists a layer's parts on a line (or on consecutive lines) and puts a ``▼`` line between layers; a
    description column on the right, starting at the same column on every line, is not read.
    """
    fence = text.split("```")
    if len(fence) < 3:
        raise ValueError("no fenced picture of the layers")
    lines = [line for line in fence[1].splitlines() if line.strip()]
    # The description column: where text starts after a long run of spaces, the same column on most lines.
    starts = Counter(m.end() for line in lines for m in [*re.finditer(r" {6,}(?=\S)", line)][-1:])
    if not starts:
        raise ValueError("the picture has no description column")
    column = starts.most_common(1)[0][0]
    layers: list[frozenset[str]] = []
    current: set[str] = set()
    for line in lines:
        left = re.split("─{3,}", line[:column])[0]  # a horizontal rule leads from a part to its description
        if "▼" in left:
            if current:
                layers.append(frozenset(current))
            current = set()
            continue
        current.update(_PART_NAME.findall(left.replace("─", " ").replace("│", " ")))
    if current:
        layers.append(frozenset(current))
    return tuple(reversed(layers))


def layer_differences(
    documented: tuple[frozenset[str], ...], layers: tuple[frozenset[str], ...]
) -> list[str]:
    """One line per part that ``documented`` and ``layers`` place differently (or only one of them names)."""
    where_doc = {part: index for index, names in enumerate(documented) for part in names}
    where_code = {part: index for index, names in enumerate(layers) for part in names}
    drawn = Counter(part for names in documented for part in names)
    problems = [
        f"{part}: drawn in {count} layers of the picture"
        for part, count in sorted(drawn.items())
        if count > 1
    ]
    for part in sorted(where_doc.keys() | where_code.keys()):
        doc, code = where_doc.get(part), where_code.get(part)
        if doc is None:
            problems.append(f"{part}: in LAYERS (layer {code}) but not in the picture")
        elif code is None:
            problems.append(f"{part}: in the picture (layer {doc}) but not in LAYERS")
        elif sorted(documented[doc]) != sorted(layers[code]) or doc != code:
            problems.append(
                f"{part}: the picture puts it in layer {doc} with {sorted(documented[doc])}, "
                f"LAYERS in layer {code} with {sorted(layers[code])}"
            )
    return problems


def test_docs_architecture_draws_the_same_layers() -> None:
    # The root package's __init__ ("") is mentioned in the picture's text, not drawn as a part.
    layers = tuple(names - {""} for names in LAYERS)
    documented = documented_layers(ARCHITECTURE_DOC.read_text(encoding="utf-8"))
    problems = layer_differences(documented, layers)
    assert problems == [], "docs/architecture.md and LAYERS differ:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("picture", "expected"),
    [
        pytest.param(
            " top        the top\n  ▼\n mid  peer   two peers\n  │          described\n  ▼\n low        bottom\n",
            [],
            id="same",
        ),
        pytest.param(
            " top        the top\n  ▼\n mid        one\n  ▼\n peer       moved down\n  ▼\n low        bottom\n",
            [
                "mid: the picture puts it in layer 2 with ['mid'], LAYERS in layer 1 with ['mid', 'peer']",
                "peer: the picture puts it in layer 1 with ['peer'], LAYERS in layer 1 with ['mid', 'peer']",
                "top: the picture puts it in layer 3 with ['top'], LAYERS in layer 2 with ['top']",
            ],
            id="split-layer",
        ),
        pytest.param(
            " top        the top\n  ▼\n mid  peer   two\n  ▼\n low  new    bottom\n",
            [
                "low: the picture puts it in layer 0 with ['low', 'new'], LAYERS in layer 0 with ['low']",
                "new: in the picture (layer 0) but not in LAYERS",
            ],
            id="extra-part",
        ),
        pytest.param(
            " top        the top\n  ▼\n mid        one peer missing\n  ▼\n low        bottom\n",
            [
                "mid: the picture puts it in layer 1 with ['mid'], LAYERS in layer 1 with ['mid', 'peer']",
                "peer: in LAYERS (layer 1) but not in the picture",
            ],
            id="missing-part",
        ),
    ],
)
def test_the_picture_reader_names_what_differs(picture: str, expected: list[str]) -> None:
    layers = (frozenset({"low"}), frozenset({"mid", "peer"}), frozenset({"top"}))
    assert layer_differences(documented_layers(f"text\n```\n{picture}```\n"), layers) == expected


def test_every_part_has_a_layer() -> None:
    parts = {part_of(m, "agentscope") for m in module_names(PACKAGE_DIR, "agentscope")}
    placed = set[str]().union(*LAYERS)
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
        pytest.param(
            {
                "low/__init__.py": "__getattr__ = lazy_exports(__name__, {'X': '_impl'})\n",
                "low/_impl.py": "",
            },
            [],
            id="lazy-export-of-its-own-module",
        ),
        pytest.param(
            {
                "low/__init__.py": "_LAZY = {'X': '_gone'}\n__getattr__ = _lazy_exports(__name__, _LAZY)\n",
            },
            ["pkg.low line 2 lazily exports from pkg.low._gone, which does not exist"],
            id="lazy-export-of-a-missing-module",
        ),
        pytest.param(
            {
                "low/__init__.py": "__getattr__ = lazy_exports('pkg.high', dict.fromkeys(('X', 'Y'), 'impl'))\n",
                "high/__init__.py": "",
                "high/impl.py": "",
            },
            ["pkg.low line 1 lazily exports from pkg.high.impl: an upward arrow"],
            id="lazy-export-upward",
        ),
        pytest.param(
            {
                "high/__init__.py": "__getattr__ = lazy_exports('pkg.low', {'X': '_impl'})\n",
                "low/__init__.py": "",
                "low/_impl.py": "",
            },
            ["pkg.high line 1 lazily exports from pkg.low._impl, a private module of pkg.low"],
            id="lazy-export-of-another-package-s-private-module",
        ),
    ],
)
def test_the_checker_catches_what_it_should(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    defaults = {f"{name}.py": "" for name in ("low", "mid", "high") if f"{name}/__init__.py" not in files}
    files = {"__init__.py": "", **defaults, **files}
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    layers = (frozenset({"low"}), frozenset({"mid", "high"}), frozenset({""}))
    assert sorted(violations(tmp_path / "pkg", "pkg", layers).values()) == expected


def test_lazy_exports_that_ast_cannot_read_fail_clearly(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("__getattr__ = lazy_exports(__name__, make_table())\n")
    with pytest.raises(
        ValueError, match=r"__init__.py line 1: cannot read the lazy exports .*make_table\(\)"
    ):
        arrows(package, "pkg")


def test_the_package_s_lazy_exports_are_seen() -> None:
    lazy = {(a.source, a.target) for a in arrows(PACKAGE_DIR, "agentscope") if a.lazy}
    # One of each form: a dict literal, a module-level table, dict.fromkeys.
    assert {
        ("agentscope.rl.rollout", "agentscope.rl.rollout._engine"),
        ("agentscope.tracing", "agentscope.tracing._store"),
        ("agentscope.sandbox", "agentscope.sandbox._browser"),
    } <= lazy
