"""Lazy exports: names a package loads from its private modules on first use, and the install hint for extras.

A package whose names need a slow or optional dependency (torch, Playwright, the ``mcp`` SDK, the trace store)
lists them in ``__all__``, imports them under ``if TYPE_CHECKING:`` so that type checkers see them, and binds them
on first access through a module ``__getattr__`` made here::

    if TYPE_CHECKING:
        from agentscope.rl.rollout._engine import TorchEngine

    __getattr__ = _lazy_exports(__name__, {"TorchEngine": "_engine"}, extras={"_engine": "rl"})

When a module named in ``extras`` cannot be imported because a third-party module is missing, the ImportError
names the extra to install. Install commands are written for a clone of this repository
(``pip install -e '.[rl]'``): the PyPI project called ``agentscope`` is another one.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["install_hint", "lazy_exports"]


def install_hint(extra: str) -> str:
    """The command that installs the optional dependencies ``extra`` from the root of a clone."""
    return f"pip install -e '.[{extra}]'"


def lazy_exports(
    package: str,
    exports: Mapping[str, str],
    *,
    extras: Mapping[str, str] | None = None,
    note: str = "",
) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports each exported name from its module on first access
    and binds it in the package (later accesses cost nothing).

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the module that defines it, relative to ``package`` (``"_engine"``).
        extras: Module (as written in ``exports``) -> the extra that brings its dependencies. Importing such a
            module when a third-party module is missing raises an ImportError naming the extra (the original
            error chained); other import errors pass through unchanged.
        note: What else to do after installing the extra, appended to the hint (``", then bash ..."``).
    """
    table = dict(exports)
    needs = dict(extras or {})

    def __getattr__(name: str) -> object:
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(f"{package}.{where}")
        except ImportError as exc:
            extra = needs.get(where)
            missing = (exc.name or "").partition(".")[0]
            if extra is None or not missing or missing == "agentscope":
                raise
            raise ImportError(
                f"{package}.{name} needs {missing}, which the {extra!r} extra installs: "
                f"{install_hint(extra)}{note} ({exc})",
                name=exc.name,
            ) from exc
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
