"""The built-in tool task: arithmetic with a calculator (the smoke test of the RL system)."""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable, Sequence

from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ScriptItem, tool_call
from agentscope.rl._types import Task
from agentscope.rl.envs import Environment, EnvResult, Observation
from agentscope.tools import Toolkit
from agentscope.tools.builtin import calculator as evaluate_expression

__all__ = ["ArithEnv", "arith_demonstrations", "arith_expert", "arith_random_policy", "arith_tasks"]

_OPS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def arith_tasks(
    n: int = 64, seed: int = 0, max_operand: int = 20, terms: int = 2, ops: str = "+-*"
) -> list[Task]:
    """``n`` arithmetic tasks such as ``What is 7 * 12?`` (deterministic given ``seed``).

    Args:
        n: How many tasks.
        seed: Seed of the generator; the same seed gives the same tasks and ids.
        max_operand: Operands are drawn from 1..max_operand.
        terms: Operands per expression (evaluated left to right with Python precedence).
        ops: Operators to draw from, any of ``+-*``.
    """
    if n < 1 or terms < 2 or max_operand < 1:
        raise ValueError(
            f"arith needs n >= 1, terms >= 2, max_operand >= 1 (got {n}, {terms}, {max_operand})"
        )
    unknown = set(ops) - set(_OPS)
    if not ops or unknown:
        raise ValueError(f"arith ops must be drawn from '+-*', got {ops!r}")
    rng = random.Random(seed)
    tasks: list[Task] = []
    for i in range(n):
        operands = [rng.randint(1, max_operand) for _ in range(terms)]
        chosen = [rng.choice(ops) for _ in range(terms - 1)]
        expression = str(operands[0])
        for op, value in zip(chosen, operands[1:], strict=True):
            expression += f" {op} {value}"
        answer = evaluate_expression(expression)
        tasks.append(
            Task(
                id=f"arith-{seed}-{i}",
                prompt=f"What is {expression}? Use the calculator tool, then answer with the number.",
                answer=int(answer),
                metadata={"expression": expression},
            )
        )
    return tasks


def arith_demonstrations(tasks: Sequence[Task]) -> list[list[Msg]]:
    """How an expert solves each task (for a warm start): call the calculator on the expression, then answer."""
    demos: list[list[Msg]] = []
    for i, task in enumerate(tasks):
        expression = str(task.metadata.get("expression", ""))
        call_id = f"call_{i}"
        demos.append(
            [
                Msg(role="user", name="user", content=task.prompt),
                Msg(
                    role="assistant",
                    content=[ToolUseBlock(id=call_id, name="calculator", input={"expression": expression})],
                ),
                Msg(
                    role="tool",
                    content=[ToolResultBlock(id=call_id, name="calculator", output=str(task.answer))],
                ),
                Msg(role="assistant", content=f"The answer is {task.answer}."),
            ]
        )
    return demos


_QUESTION = re.compile(r"What is (.+?)\? Use the calculator")


def _last_tool_output(messages: Sequence[Msg]) -> str | None:
    last = messages[-1] if messages else None
    results = last.blocks_of(ToolResultBlock) if last is not None and last.role == "tool" else []
    if not results:
        return None
    output = results[-1].output
    return output if isinstance(output, str) else " ".join(b.text for b in output if isinstance(b, TextBlock))


def arith_expert() -> Callable[[list[Msg]], ScriptItem]:
    """The scripted expert: call the calculator on the question's expression, then answer with its result."""

    def play(messages: list[Msg]) -> ScriptItem:
        output = _last_tool_output(messages)
        if output is not None:
            return f"The answer is {output}."
        question = next((m.text for m in messages if m.role == "user"), "")
        found = _QUESTION.search(question)
        return tool_call("calculator", expression=found.group(1) if found else question)

    return play


def arith_random_policy(seed: int) -> Callable[[list[Msg]], ScriptItem]:
    """The random baseline: a calculator call on two numbers of the question with a random operator, then one
    of the numbers seen as the answer."""
    rng = random.Random(seed)

    def play(messages: list[Msg]) -> ScriptItem:
        seen = [n for m in messages for n in _NUMBER.findall(m.text)]
        if _last_tool_output(messages) is None:
            a, b = (rng.choice(seen) if seen else "1" for _ in range(2))
            return tool_call("calculator", expression=f"{a} {rng.choice('+-*')} {b}")
        output = _last_tool_output(messages) or ""
        return f"The answer is {rng.choice([*seen, *_NUMBER.findall(output)] or ['0'])}."

    return play


class ArithEnv(Environment):
    """Arithmetic with a calculator tool: reward 1 for the right number (after using the calculator).

    The calculator is the built-in :func:`~agentscope.tools.builtin.calculator` (errors go back to the model as
    tool errors), offered under a short description that the tiny policy's tokenizer was trained on.

    Args:
        require_tool: Success requires at least one calculator call (the task is a tool task).
    """

    def __init__(self, *, require_tool: bool = True) -> None:
        super().__init__()
        self.require_tool = require_tool
        self._task: Task | None = None
        self._calls = 0

    async def reset(self, task: Task) -> Observation:
        self._task = task
        self._calls = 0
        toolkit = Toolkit()
        toolkit.register(self.calculator)
        return Observation(msg=Msg(role="user", name="user", content=task.prompt), toolkit=toolkit)

    async def calculator(self, expression: str) -> int | float:
        """Evaluate an arithmetic expression and return the result.

        Args:
            expression: The expression, e.g. "12 * (3 + 4)". Numbers, + - * / // % and parentheses.
        """
        self._calls += 1
        return evaluate_expression(expression)

    async def evaluate(self, reply: Msg) -> EnvResult:
        if self._task is None:
            raise RuntimeError("evaluate() before reset()")
        numbers = _NUMBER.findall(reply.text)
        given = float(numbers[-1]) if numbers else None
        expected = self._task.answer
        correct = given is not None and isinstance(expected, int | float) and given == float(expected)
        success = correct and (self._calls > 0 or not self.require_tool)
        return EnvResult(
            reward=1.0 if success else 0.0,
            success=success,
            info={"tool_calls": self._calls, "correct": correct},
        )
