"""A trace store filled by real agent runs, for the studio's tests."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import agentscope
from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg, TextBlock
from agentscope.models import ChatResponse, ChatUsage
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def lookup_rate(city: str) -> float:
    """Look up the sales tax rate of a city.

    Args:
        city: The city.
    """
    raise KeyError(f"no tax rate on file for {city}")


def calculator_toolkit() -> Toolkit:
    toolkit = Toolkit()
    toolkit.register(add)
    toolkit.register(lookup_rate)
    return toolkit


def calculator_model(
    final: str = "2 + 3 = 5, and 5 + 10 = 15. I could not find the Paris rate.",
) -> ScriptedModel:
    usage = ChatUsage(input_tokens=120, output_tokens=18)
    return ScriptedModel(
        [
            ChatResponse(
                content=[
                    TextBlock(text="I will add the numbers and look the rate up."),
                    tool_call("add", a=2, b=3),
                    tool_call("lookup_rate", city="Paris"),
                ],
                usage=usage,
                finish_reason="tool_calls",
            ),
            ChatResponse(content=[tool_call("add", a=5, b=10)], usage=usage, finish_reason="tool_calls"),
            ChatResponse(content=[TextBlock(text=final)], usage=usage, finish_reason="stop"),
        ]
    )


QUESTION = "What is 2 + 3, plus 10? And what is the sales tax rate in Paris?"


async def run_calculator(final: str = "2 + 3 = 5, and 5 + 10 = 15. I could not find the Paris rate.") -> Msg:
    """One ReActAgent conversation with parallel tool calls, a failing tool and a final answer."""
    agent = ReActAgent(
        "calculator",
        "You are a careful calculator. Use the tools for every step.",
        calculator_model(final),
        toolkit=calculator_toolkit(),
    )
    return await agent(Msg(role="user", name="user", content=QUESTION))


@dataclass
class Populated:
    path: Path
    calc_run: str
    rl_run: str


def populate(path: Path) -> Populated:
    """Two runs: an agent run (project demo) and an RL-like run with metrics (project rl)."""
    tracer = agentscope.init(path, project="demo", run_name="calculator")
    assert tracer is not None
    asyncio.run(run_calculator())
    tracing.shutdown()
    rl = agentscope.init(path, project="rl", run_name="grpo-tiny", config={"algorithm": "grpo"})
    assert rl is not None
    for step in range(40):
        tracing.log_metrics(
            {"train/policy_loss": 1.0 / (step + 1), "rollout/tokens_per_s": 900.0 + 10 * step}, step=step
        )
        with tracing.span(f"episode {step}", "env", {"agentscope.reward": step % 2}):
            pass
    tracing.shutdown()
    return Populated(path, tracer.run.id, rl.run.id)


RL_STEP_S = 2.5
"""Seconds per trainer step in :func:`log_rl_steps`' wall-clock record."""


def log_rl_steps(first: int, last: int, *, warm_start_s: float = 20.0) -> None:
    """Metric points of an RL run for trainer steps ``first..last``, under the stable names ``agentscope rl train``
    logs (a subset of each service's), in the order a runner logs them (not alphabetical): success rises,
    loss and KL fall. ``eval/success_rate`` every 10 steps."""
    for step in range(first, last + 1):
        progress = step / 30
        values = {
            "data/batch_success_rate": min(1.0, 0.1 + 0.7 * progress + 0.05 * math.sin(1.7 * step)),
            "data/task_success_rate": min(1.0, 0.05 + 0.65 * progress + 0.04 * math.sin(1.3 * step)),
            "data/staleness": 1.0 + 0.6 * math.sin(step / 3) ** 2,
            "data/staleness_max": 2.0,
            "data/trained": 8.0 * step,
            "data/dropped_stale": float(step // 7),
            "train/reward_mean": min(1.0, 0.1 + 0.75 * progress),
            "train/policy_loss": 0.5 / (1 + step),
            "train/approx_kl": 0.02 / (1 + step),
            "train/rollout_kl": 0.03 / (1 + step / 2),
            "train/entropy": 1.2 - 0.02 * step,
            "train/grad_norm": 0.8 + 0.2 * abs(math.sin(step / 5)),
            "train/lr": 5e-4,
            "env/episodes": float(sum(14 + i % 4 for i in range(1, step + 1))),
            "env/wall_s": RL_STEP_S * step,
            "env/utilisation": 0.6 + 0.05 * math.sin(step / 4),
            "env/slot_occupancy": 0.9,
            "rollout/tokens_per_s": 900.0 + 10 * step,
            "rollout/generated_tokens": 800.0 * step,
            "rollout/batch_occupancy": 0.5,
            "sched/step": float(step),
            "sched/trainer_utilisation": 0.75,
            "time/wall_s": warm_start_s + RL_STEP_S * step,
        }
        if step % 5 == 0:
            values.update({"checkpoint/bytes": 1.5e6, "checkpoint/write_s": 0.2})
        if step % 10 == 0:
            values["eval/success_rate"] = min(1.0, 0.6 * progress)
        tracing.log_metrics(values, step=step)


def start_rl_run(path: Path, *, steps: int = 30, prepare_s: float = 95.0) -> tracing.Tracer:
    """An RL-like run that is still going: it began ``prepare_s`` ago (its command warmed up before tracing, as
    ``agentscope rl train`` does) and has logged ``steps`` trainer steps. The caller shuts its tracer down."""
    begun = time.time_ns() - int(prepare_s * 1e9)
    tracer = tracing.init(
        path, project="rl", run_name="grpo-arith", config={"algorithm": "grpo"}, started_ns=begun
    )
    assert tracer is not None
    log_rl_steps(1, steps)
    tracing.flush()
    return tracer


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    return populate(tmp_path_factory.mktemp("studio") / "traces.db")


@dataclass
class Helpers:
    """The helpers above, for test modules (importlib mode: tests cannot import conftest)."""

    populate: Any
    run_calculator: Any
    question: str
    start_rl_run: Any
    log_rl_steps: Any


@pytest.fixture(scope="session")
def helpers() -> Helpers:
    return Helpers(
        populate=populate,
        run_calculator=run_calculator,
        question=QUESTION,
        start_rl_run=start_rl_run,
        log_rl_steps=log_rl_steps,
    )
