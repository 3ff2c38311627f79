"""Loading user code by name: ``module:attribute`` or ``path/to/file.py:attribute``.

The command line (``agentscope run``, ``agentscope mcp serve``) and the RL config (``agent.factory``,
``env.factory``) name agents, toolkits and factories this way. :func:`load_object` raises :class:`LoadError` with
the problem; each caller turns it into its own error (``typer.BadParameter``, ``ConfigError``) with its context.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

__all__ = ["LoadError", "load_object"]


class LoadError(ValueError):
    """The spec is malformed, or its file, module or attribute is not there (the message says which)."""


def load_object(spec: str, *, file_default: Callable[[ModuleType], str] | None = None) -> object:
    """The object ``spec`` names: ``module:attribute``, or ``path/to/file.py[:attribute]``.

    A file is executed once per process as a module of its own (``_agentscope_user_<stem>_<hash of its path>``),
    with its folder put first on ``sys.path`` (once) so that it can import its neighbours. A module is imported by its dotted name.

    Args:
        spec: What to load. A spec ending in ``.py`` or holding a path separator names a file.
        file_default: For a file named without ``:attribute``: picks the attribute from the loaded module. Without
            it the attribute is required.

    Raises:
        LoadError: no attribute given (where one is needed), no such file, a module that cannot be imported, or
            no such attribute. Errors raised by the loaded code itself (other than ImportError) pass through.
    """
    target, _, attribute = spec.partition(":")
    is_file = target.endswith(".py") or os.sep in target or "/" in target
    if not target or not (attribute or (is_file and file_default is not None)):
        raise LoadError(f"expected MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE, got {spec!r}")
    if is_file:
        module = _run_file(Path(target))
        if not attribute and file_default is not None:
            attribute = file_default(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise LoadError(f"cannot import {target!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise LoadError(f"{target} has no attribute {attribute!r}") from None


def _run_file(path: Path) -> ModuleType:
    """The module of ``path``, executed once per process (a second spec naming the same file, such as
    ``agent.factory`` and ``env.factory`` in one file, gets the same module: one copy of each class)."""
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    module_name = f"_agentscope_user_{resolved.stem}_{digest}"  # two agent.py in two folders stay apart
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise LoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # a half-run module is not reused by the next load
        raise
    return module
