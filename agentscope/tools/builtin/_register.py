"""``register_builtin_tools``: the built-in tools a configuration enables, in one call."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING

from agentscope.tools._toolkit import BASIC_GROUP
from agentscope.tools.builtin._calculator import calculator
from agentscope.tools.builtin._fetch import make_fetch_url
from agentscope.tools.builtin._files import make_file_tools
from agentscope.tools.builtin._sandboxed import SandboxSource, make_code_tools

if TYPE_CHECKING:
    from agentscope.tools._toolkit import Toolkit

__all__ = ["register_builtin_tools"]


def register_builtin_tools(
    toolkit: Toolkit,
    *,
    workdir: str | os.PathLike[str] | None = None,
    sandbox: SandboxSource | None = None,
    allowed_hosts: Collection[str] | None = None,
    group: str = BASIC_GROUP,
) -> list[str]:
    """Register the built-in tools in ``toolkit``; return their names.

    Always ``calculator``; ``view_file``/``write_file``/``edit_file`` with a ``workdir``;
    ``execute_python_code``/``execute_shell_command`` with a ``sandbox``; ``fetch_url`` with ``allowed_hosts``.

    Args:
        toolkit: Where to register them.
        workdir: The directory the file tools are confined to.
        sandbox: Where code runs (see :func:`make_code_tools`).
        allowed_hosts: Hosts ``fetch_url`` may fetch from.
        group: The tool group they join.
    """
    tools = [calculator]
    if workdir is not None:
        tools.extend(make_file_tools(workdir))
    if sandbox is not None:
        tools.extend(make_code_tools(sandbox))
    if allowed_hosts:
        tools.append(make_fetch_url(allowed_hosts))
    names: list[str] = []
    for tool in tools:
        toolkit.register(tool, group=group)
        names.append(tool.__name__)
    return names
