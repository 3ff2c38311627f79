"""The arithmetic task with injected tool latency, for ``agentscope rl train`` runs of the schedule benchmark.

``real.py`` passes ``env.factory=benchmarks/rl_schedule/slow_arith.py:SlowArithEnv`` and
``env.kwargs={step_latency: {median_s: ..., sigma: ..., tail_prob: ..., tail_factor: ...}}``: every calculator
call first waits one :class:`~agentscope.testing.LatencyModel` draw (a slow tool or page load), then answers as
:class:`~agentscope.rl.envs.ArithEnv` does. Kept out of the library: latency injection is a benchmark's concern.
"""

from __future__ import annotations

import random

import anyio

from agentscope.rl.tasks import ArithEnv
from agentscope.testing import LatencyModel


class SlowArithEnv(ArithEnv):
    """:class:`ArithEnv` whose calculator waits a latency draw before answering.

    Args:
        step_latency: The delay model, or its fields as a dict (from the YAML config).
        seed: Seed of the latency draws.
        require_tool: As :class:`ArithEnv`.
    """

    def __init__(
        self,
        *,
        step_latency: LatencyModel | dict[str, float],
        seed: int | None = None,
        require_tool: bool = True,
    ) -> None:
        super().__init__(require_tool=require_tool)
        self.step_latency = LatencyModel(**step_latency) if isinstance(step_latency, dict) else step_latency
        self._rng = random.Random(seed)

    async def calculator(self, expression: str) -> int | float:
        await anyio.sleep(self.step_latency.sample(self._rng))
        return await super().calculator(expression)

    # The toolkit describes a tool by its docstring: the model sees the same tool as ArithEnv's.
    calculator.__doc__ = ArithEnv.calculator.__doc__
