"""A Toolkit served over MCP by the server tests (``agentscope mcp serve tests/mcp/servers/toolkit_app.py:toolkit``)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from agentscope.exceptions import ModelRetry
from agentscope.message import Base64Source, ImageBlock
from agentscope.tools import Toolkit

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

print("importing the toolkit app (this goes to stderr when serving over stdio)")


class Point(BaseModel):
    x: int
    y: int


def greet(name: str) -> str:
    """Greet someone.

    Args:
        name: Who to greet.
    """
    return f"Hello, {name}!"


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First number.
        b: Second number.
    """
    return a + b


def point(x: int, y: int) -> Point:
    """A point.

    Args:
        x: Horizontal.
        y: Vertical.
    """
    return Point(x=x, y=y)


def picture() -> ImageBlock:
    """A tiny picture."""
    return ImageBlock(source=Base64Source(media_type="image/png", data=PNG_1X1))


def count(n: int) -> Iterator[str]:
    """Count to n, one piece at a time.

    Args:
        n: Where to stop.
    """
    for i in range(1, n + 1):
        yield f"{i};"


def divide(a: float, b: float) -> float:
    """Divide a by b.

    Args:
        a: Dividend.
        b: Divisor.
    """
    if b == 0:
        raise ModelRetry("b must not be zero")
    return a / b


def build() -> Toolkit:
    """The toolkit (also loadable as ``toolkit_app.py:build``)."""
    kit = Toolkit()
    for tool in (greet, add, point, picture, count, divide):
        kit.register(tool)
    kit.create_group("hidden", "Not served while inactive")
    kit.register(greet, name="secret", group="hidden")
    return kit


toolkit = build()
