"""``calculator``: arithmetic from a model, evaluated on the syntax tree (never ``eval``)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any, Final

from agentscope.exceptions import ModelRetry

__all__ = ["calculator"]

_MAX_LENGTH: Final = 1000
_MAX_DEPTH: Final = 400  # levels of the syntax tree (a sum of n numbers has n); well within the stack
_MAX_DIGITS: Final = 4300  # Python's own int <-> str conversion limit
_MAX_BITS: Final = int(_MAX_DIGITS * math.log2(10))  # an int this size prints in at most _MAX_DIGITS digits
_MAX_FACTORIAL: Final = 1000

Number = int | float

_BINARY: Final[dict[type[ast.operator], Callable[[Number, Number], Number]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: Final[dict[type[ast.unaryop], Callable[[Number], Number]]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": math.factorial,
    "gcd": math.gcd,
    "hypot": math.hypot,
}
_CONSTANTS: Final[dict[str, Number]] = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def calculator(expression: str) -> Number:
    """Evaluate an arithmetic expression and return its value.

    Supports numbers, + - * / // % ** (also ^ for powers), parentheses, the constants pi, e and tau, and the
    functions abs, round, min, max, sqrt, exp, log (natural; log(x, base) for another base), log2, log10, sin,
    cos, tan, asin, acos, atan, atan2, sinh, cosh, tanh, degrees, radians, floor, ceil, factorial, gcd and
    hypot. Angles are in radians. Integers may have up to 4300 digits. Nothing else (no names, no attributes,
    no code) is evaluated.

    Args:
        expression: The expression, e.g. "2 * (3 + 4) ** 2" or "sqrt(2) / 2".
    """
    # Every value is kept below _MAX_BITS, and every operation is checked before it runs, so that no step
    # costs more than microseconds: the tool runs in a worker thread that a timeout cannot stop, and one huge
    # big-integer operation would hold the GIL and freeze the event loop.
    text = expression.strip().replace("^", "**")
    if not text:
        raise ModelRetry("the expression is empty; send something like '2 * (3 + 4)'")
    if len(text) > _MAX_LENGTH:
        raise ModelRetry(f"the expression is too long ({len(text)} characters; at most {_MAX_LENGTH})")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ModelRetry(f"not a valid expression: {exc.msg} (at column {exc.offset or 0})") from None
    if _depth(tree.body) > _MAX_DEPTH:
        raise ModelRetry(
            f"the expression is nested too deeply (more than {_MAX_DEPTH} levels of operations); split it up"
        )
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ModelRetry("division by zero") from None
    except OverflowError:
        raise ModelRetry(
            f"the result is too large to compute (integers are limited to {_MAX_DIGITS} digits)"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ModelRetry(f"cannot evaluate {expression!r}: {exc}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _depth(root: ast.expr) -> int:
    """How deeply the syntax tree nests (without recursion: the tree may be deeper than Python's stack)."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"only numbers are allowed, not {value!r}")
        return _bounded(value)
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ValueError(f"the operator {type(node.op).__name__} is not supported")
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(op(left, right))
    if isinstance(node, ast.UnaryOp):
        unary = _UNARY.get(type(node.op))
        if unary is None:
            raise ValueError(f"the operator {type(node.op).__name__} is not supported")
        return unary(_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ValueError(f"unknown name {node.id!r}; constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ValueError(f"unknown function; available: {', '.join(_FUNCTIONS)}")
        if node.keywords:
            raise ValueError("keyword arguments are not supported")
        name = node.func.id
        args = [_eval(arg) for arg in node.args]
        _check_arguments(name, args)
        result: Number = _FUNCTIONS[name](*args)
        return _bounded(result)
    raise ValueError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _bounded(value: Number) -> Number:
    """``value``, or OverflowError for an integer beyond the size limit."""
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise OverflowError
    return value


def _check_arguments(name: str, args: list[Number]) -> None:
    """Refuse arguments that would make a function's cost unbounded (before calling it)."""
    if name == "factorial" and args and abs(args[0]) > _MAX_FACTORIAL:
        raise ValueError(f"factorial of numbers above {_MAX_FACTORIAL} is too large to compute")
    if name == "round" and len(args) == 2:
        ndigits = args[1]
        if isinstance(ndigits, int) and abs(ndigits) > _MAX_DIGITS:
            # round(1, -10**7) would build 10**(10**7) first
            raise ValueError(f"round's ndigits must be between -{_MAX_DIGITS} and {_MAX_DIGITS}")


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power whose result (or whose cost) is beyond the limits, before computing it."""
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and exponent * math.log2(abs(base)) > _MAX_BITS
    ):
        raise OverflowError
