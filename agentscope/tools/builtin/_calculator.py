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
_MAX_EXPONENT: Final = 10_000
_MAX_DIGITS: Final = 4300  # Python's own int <-> str conversion limit

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
    hypot. Angles are in radians. Nothing else (no names, no attributes, no code) is evaluated.

    Args:
        expression: The expression, e.g. "2 * (3 + 4) ** 2" or "sqrt(2) / 2".
    """
    text = expression.strip().replace("^", "**")
    if not text:
        raise ModelRetry("the expression is empty; send something like '2 * (3 + 4)'")
    if len(text) > _MAX_LENGTH:
        raise ModelRetry(f"the expression is too long ({len(text)} characters; at most {_MAX_LENGTH})")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ModelRetry(f"not a valid expression: {exc.msg} (at column {exc.offset or 0})") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ModelRetry("division by zero") from None
    except OverflowError:
        raise ModelRetry("the result is too large to compute") from None
    except (ValueError, TypeError) as exc:
        raise ModelRetry(f"cannot evaluate {expression!r}: {exc}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"only numbers are allowed, not {value!r}")
        return value
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ValueError(f"the operator {type(node.op).__name__} is not supported")
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        result = op(left, right)
        if isinstance(result, int) and result.bit_length() > _MAX_DIGITS * 3.33:
            raise OverflowError
        return result
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
        args = [_eval(arg) for arg in node.args]
        if node.func.id == "factorial" and args and abs(args[0]) > 1000:
            raise OverflowError
        result: Number = _FUNCTIONS[node.func.id](*args)
        return result
    raise ValueError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _check_power(base: Number, exponent: Number) -> None:
    if abs(exponent) > _MAX_EXPONENT and abs(base) not in (0, 1):
        raise OverflowError
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and base.bit_length() * exponent > _MAX_DIGITS * 3.33
    ):
        raise OverflowError
