"""``agent.factory`` takes the agent spec ``agentscope run`` takes: ``examples/calculator.py``'s agent trains as it
is (the policy as its ``model=``, the environment's tools as its ``toolkit=``), and a factory that cannot be built
from the config fails when the config is loaded, naming the field."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from agentscope.exceptions import ConfigError
from agentscope.message import Msg
from agentscope.models import ScriptItem
from agentscope.rl._components import build_agent_factory
from agentscope.rl._config import load_config
from agentscope.rl.envs import EnvCluster, ScriptedRollout
from agentscope.rl.tasks import ArithEnv, get_task_set, load_tasks

ROOT = Path(__file__).resolve().parents[2]
CALCULATOR = ROOT / "examples" / "calculator.py"


@pytest.fixture
def user_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rl_spec_agents.py"
    saved = list(sys.path)
    yield path
    sys.path[:] = saved
    for name in [n for n in sys.modules if n.startswith("_agentscope_user_rl_spec_agents")]:
        del sys.modules[name]


async def test_the_calculator_example_plays_an_episode_with_the_environment_s_tools() -> None:
    seen: list[list[Msg]] = []
    expert_factory = get_task_set("arith").expert
    assert expert_factory is not None
    expert = expert_factory()

    async def policy(messages: list[Msg]) -> ScriptItem:
        seen.append(messages)
        step = expert(messages)
        return await step if inspect.isawaitable(step) else step

    config = load_config(None, [f"agent.factory={CALCULATOR}:build_agent"])
    agent_factory = await anyio.to_thread.run_sync(build_agent_factory, config)
    rollout = ScriptedRollout(policy)
    [task] = load_tasks("arith:n=1,seed=0,max_operand=9")
    async with EnvCluster(ArithEnv, agent_factory, rollout, slots=1, model_factory=rollout.model) as cluster:
        trajectory = await cluster.run_episode(task, "episode-1")
    # The expert calls the environment's `calculator` tool, which the example's own toolkit (add, multiply,
    # divide) lacks: a success means the agent used the toolkit training gave it, on the policy training gave it.
    assert trajectory.status == "ok", trajectory.error
    assert trajectory.success
    assert len(trajectory.turns) == 2
    system = seen[0][0]
    assert system.role == "system"
    assert "careful calculator" in system.text


@pytest.mark.parametrize(
    ("source", "attribute", "sets", "problem"),
    [
        (
            "agent = 1\n",
            "",
            [],
            r"agent\.factory: agent spec '.*rl_spec_agents\.py': .*no attribute 'build_agent'",
        ),
        (
            "from agentscope.agents import ReActAgent\nfrom agentscope.testing import ScriptedModel\nagent = ReActAgent(name='a', model=ScriptedModel(['x']))\n",
            ":agent",
            [],
            r"agent\.factory: .*names an agent instance \(ReActAgent\), not a factory",
        ),
        (
            "def build_agent(model, toolkit, max_iters=3): ...\n",
            "",
            ["agent.kwargs.max_iter=2"],
            r"agent\.kwargs: max_iter not taken by .*\(it takes: max_iters, model, toolkit\)",
        ),
        (
            "def build_agent(model, **kwargs): ...\n",
            "",
            ["agent.kwargs.model=gpt"],
            r"agent\.kwargs: model is given by training itself",
        ),
        (
            "def build_agent(model, toolkit, db_path): ...\n",
            "",
            [],
            r"agent\.factory: .* requires db_path, which training does not give",
        ),
    ],
    ids=["no-build_agent", "an-instance", "unknown-kwarg", "reserved-kwarg", "required-param"],
)
def test_a_factory_the_config_cannot_build_fails_at_load_time(
    user_file: Path, source: str, attribute: str, sets: list[str], problem: str
) -> None:
    user_file.write_text(source)
    config = load_config(None, [f"agent.factory={user_file}{attribute}", *sets])
    with pytest.raises(ConfigError, match=problem):
        build_agent_factory(config)
