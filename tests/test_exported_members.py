"""The public surface is curated: each package's ``__init__`` lists exactly its public names in ``__all__``.

For each package under ``agentscope/`` (found on disk; private ``_name`` packages skipped):

- ``__all__`` is sorted as ruff's RUF022 sorts it (SCREAMING_CASE, then CamelCase, then the rest; natural
  order within each) and has no duplicates;
- the public names bound in the package (not starting with ``_``; submodules and ``__future__`` features
  aside) are exactly the public names of ``__all__``; a package with a lazy module-level ``__getattr__`` may
  list names it does not bind yet;
- every name in ``__all__`` resolves. A name whose optional extra is not installed must raise an
  ``ImportError`` naming the extra to install from the clone (``pip install -e '.[...]'``: the PyPI project
  ``agentscope`` is another one).

Public modules that are not packages (``agentscope/message.py``, ``agentscope/cli.py``...) may bind other
public names (imports such as ``BaseModel``, CLI commands); their ``__all__``, when they have one, is checked
for order, duplicates and resolution only.
"""

from __future__ import annotations
import __future__

import importlib
import importlib.util
import pkgutil
import re
import types
from pathlib import Path

import pytest

import agentscope

PACKAGE_DIR = Path(agentscope.__file__).parent

# Top-level modules of the optional extras (pyproject's [project.optional-dependencies]): a package or a
# name that needs one of them is skipped when it is not installed.
OPTIONAL_MODULES = frozenset(
    {
        "docker",
        "playwright",
        "fastapi",
        "uvicorn",
        "torch",
        "transformers",
        "tokenizers",
        "ray",
        "verl",
        "vllm",
    }
)


def _discover(path: Path, prefix: str) -> list[tuple[str, bool]]:
    """(module name, is package) for every public module under ``path``, without importing any of them."""
    found: list[tuple[str, bool]] = []
    for info in pkgutil.iter_modules([str(path)]):
        if info.name.startswith("_"):
            continue
        name = f"{prefix}.{info.name}"
        found.append((name, info.ispkg))
        if info.ispkg:
            found.extend(_discover(path / info.name, name))
    return found


MODULES = _discover(PACKAGE_DIR, "agentscope")
PACKAGES = ["agentscope", *(name for name, is_pkg in MODULES if is_pkg)]
PLAIN_MODULES = [name for name, is_pkg in MODULES if not is_pkg]


def _ruff_sort_key(name: str) -> tuple[int, tuple[str | int, ...]]:
    """The order of ruff's RUF022 ("isort-style"): constants, classes, the rest; natural order in each."""
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    chunks = re.split(r"(\d+)", name)
    return kind, tuple(int(chunk) if i % 2 else chunk for i, chunk in enumerate(chunks))


def _missing_optional_module(exc: ImportError) -> str | None:
    """The optional extra's module whose absence caused ``exc``, if that is what happened."""
    missing = (exc.name or "").split(".")[0]
    if missing in OPTIONAL_MODULES and importlib.util.find_spec(missing) is None:
        return missing
    return None


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = _missing_optional_module(exc)
        if missing is None:
            raise
        pytest.skip(f"{name} needs {missing!r} (an optional extra), which is not installed")


def _declared_all(module: types.ModuleType) -> list[str]:
    declared = getattr(module, "__all__", None)
    assert isinstance(declared, (list, tuple)), f"{module.__name__} has no __all__ list"
    names = list(declared)
    assert all(isinstance(n, str) for n in names), f"{module.__name__}.__all__ holds a non-string"
    assert len(set(names)) == len(names), f"duplicates in {module.__name__}.__all__"
    assert names == sorted(names, key=_ruff_sort_key), (
        f"{module.__name__}.__all__ is not sorted; expected {sorted(names, key=_ruff_sort_key)}"
    )
    return names


def _check_resolves(module: types.ModuleType, names: list[str]) -> None:
    for name in names:
        error: ImportError | None = None
        try:
            getattr(module, name)
        except ImportError as exc:
            error = exc
        except AttributeError:
            pytest.fail(f"{module.__name__}.__all__ names {name!r}, which does not resolve")
        if error is None:
            continue
        assert _missing_optional_module(error) is not None, f"{module.__name__}.{name}: {error!r}"
        assert "pip install -e '.[" in str(error), (
            f"{module.__name__}.{name}: the ImportError for a missing extra must name it "
            f"(pip install -e '.[extra]'); got {error}"
        )


def _bound_public_names(module: types.ModuleType) -> set[str]:
    names: set[str] = set()
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType) and value.__name__ == f"{module.__name__}.{name}":
            continue  # a submodule, bound by the import system
        if isinstance(value, __future__._Feature):  # pyright: ignore[reportPrivateUsage]
            continue  # `from __future__ import annotations`
        names.add(name)
    return names


def test_discovery_finds_the_core_packages() -> None:
    assert {"agentscope.models", "agentscope.tools"} <= set(PACKAGES)
    assert "agentscope.message" in PLAIN_MODULES


@pytest.mark.parametrize("name", PACKAGES)
def test_package_all_is_exactly_its_public_names(name: str) -> None:
    module = _import(name)
    declared = _declared_all(module)
    bound = _bound_public_names(module)
    declared_public = {n for n in declared if not n.startswith("_")}
    lazy = getattr(module, "__getattr__", None) is not None
    missing_from_all = bound - declared_public
    assert not missing_from_all, f"{name} binds public names missing from __all__: {sorted(missing_from_all)}"
    if not lazy:
        not_bound = declared_public - bound
        assert not not_bound, f"{name}.__all__ lists names the package does not bind: {sorted(not_bound)}"
    _check_resolves(module, declared)


@pytest.mark.parametrize("name", PLAIN_MODULES)
def test_public_module_all_is_sorted_and_resolves(name: str) -> None:
    module = _import(name)
    if not hasattr(module, "__all__"):
        pytest.skip(f"{name} has no __all__")
    _check_resolves(module, _declared_all(module))
