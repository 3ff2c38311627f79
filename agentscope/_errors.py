"""Helpers for exceptions that task groups wrap.

An anyio task group raises a (Base)ExceptionGroup even when a single task failed; code that reports or classifies a
failure wants that one exception. :func:`unwrap_group` gives it.
"""

from __future__ import annotations

from typing import cast

__all__ = ["unwrap_group"]


def unwrap_group(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-member exception groups, else ``exc`` itself (a group of several
    stays a group)."""
    while isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        if len(group.exceptions) != 1:
            return group
        exc = group.exceptions[0]
    return exc
