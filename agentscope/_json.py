"""Tolerant readers of decoded JSON, for answers and requests whose shape we do not control.

Shared by the wire codecs (:mod:`agentscope.formatters`), the model clients' error messages and the rollout
service's HTTP app: a field of the wrong type reads as empty instead of raising.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["as_list", "as_object", "error_code"]


def as_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty dict (for tolerant parsing of provider answers)."""
    if isinstance(value, dict):
        return value  # pyright: ignore[reportUnknownVariableType]
    return {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty list."""
    if isinstance(value, list):
        return value  # pyright: ignore[reportUnknownVariableType]
    return []


def error_code(body: str) -> str | None:
    """The ``error.code`` of an OpenAI-style error body (``{"error": {"code": ...}}``), as a string; None when the
    body is not JSON or has none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    code = as_object(as_object(data).get("error")).get("code")
    return None if code is None else str(code)
