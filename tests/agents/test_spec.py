"""The agent spec every command uses: ``path/to/file.py[:name]`` or ``module:name`` naming an agent factory, called
with the keyword arguments it declares (``load_agent_factory``, ``build_agent``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from agentscope.agents import AgentFactory, ReActAgent, build_agent, load_agent_factory
from agentscope.exceptions import UsageError
from agentscope.memory import InMemoryMemory
from agentscope.testing import ScriptedModel
from agentscope.tools import Toolkit

AGENTS = """
from agentscope.agents import ReActAgent
from agentscope.testing import ScriptedModel

def build_agent(model=None):
    return ReActAgent(name="default", model=model or ScriptedModel(["hi"]))

def named(model=None):
    return ReActAgent(name="named", model=model or ScriptedModel(["hi"]))

async def slow(model=None):
    return ReActAgent(name="async", model=model or ScriptedModel(["hi"]))

agent = ReActAgent(name="instance", model=ScriptedModel(["hi"]))
answer = 42

def not_an_agent_factory():
    return "a string"
"""


async def load(spec: str) -> AgentFactory:
    """Load in a worker thread, as async callers must (it runs the user's file)."""
    return await anyio.to_thread.run_sync(load_agent_factory, spec)


@pytest.fixture
def agents_file(tmp_path: Path) -> Iterator[Path]:
    """A user's file of factories (and mistakes), importable both as a file and as the module ``spec_agents``."""
    path = tmp_path / "spec_agents.py"
    path.write_text(AGENTS)
    saved = list(sys.path)
    yield path
    sys.path[:] = saved
    user_modules = ("spec_agents", "_agentscope_user_spec_agents", "_agentscope_user_only_instance_agent")
    for name in [n for n in sys.modules if n.startswith(user_modules)]:
        del sys.modules[name]


async def test_a_file_means_its_build_agent_and_a_name_picks_another(agents_file: Path) -> None:
    assert (await build_agent(await load(str(agents_file)))).name == "default"
    assert (await build_agent(await load(f"{agents_file}:named"))).name == "named"


async def test_a_module_spec_names_a_factory_in_an_importable_module(agents_file: Path) -> None:
    sys.path.insert(0, str(agents_file.parent))
    assert (await build_agent(await load("spec_agents:named"))).name == "named"


async def test_an_async_factory_is_awaited(agents_file: Path) -> None:
    model = ScriptedModel(["x"])
    agent = await build_agent(await load(f"{agents_file}:slow"), model=model)
    assert agent.name == "async"
    assert isinstance(agent, ReActAgent)
    assert agent.model is model


async def test_the_factory_gets_exactly_the_arguments_it_declares() -> None:
    model, toolkit, memory = ScriptedModel(["x"]), Toolkit(), InMemoryMemory()
    seen: dict[str, object] = {}

    def model_only(model: ScriptedModel, *, max_iters: int = 3) -> ReActAgent:
        seen.update(model=model, max_iters=max_iters)
        return ReActAgent(name="a", model=model, max_iters=max_iters)

    agent = await build_agent(model_only, model=model, toolkit=toolkit, memory=memory)
    assert seen == {"model": model, "max_iters": 3}  # toolkit and memory not declared: not passed
    assert isinstance(agent, ReActAgent)
    assert agent.model is model

    def everything(**kwargs: object) -> ReActAgent:
        seen.clear()
        seen.update(kwargs)
        return ReActAgent(name="b", model=model)

    await build_agent(everything, model=model, toolkit=toolkit, memory=memory)
    assert seen == {"model": model, "toolkit": toolkit, "memory": memory}

    def positional_only(model: ScriptedModel, /, toolkit: Toolkit | None = None) -> ReActAgent:
        return ReActAgent(name="c", model=model, toolkit=toolkit)

    built = await build_agent(positional_only, model=model, toolkit=toolkit)
    assert isinstance(built, ReActAgent)
    assert built.model is model
    assert built.toolkit is toolkit


async def test_a_required_parameter_nobody_gives_is_named_with_what_is_available() -> None:
    def needs_db(model: ScriptedModel, db_path: str) -> ReActAgent:
        raise AssertionError("not called")

    with pytest.raises(UsageError, match=r"needs_db\(.*\) requires 'db_path'.*\(available: model, toolkit\)"):
        await build_agent(needs_db, model=ScriptedModel(["x"]), toolkit=Toolkit())
    with pytest.raises(UsageError, match=r"requires 'model', 'db_path'.*\(available: nothing\)"):
        await build_agent(needs_db)


async def test_a_factory_returning_something_else_is_named_with_the_type(agents_file: Path) -> None:
    factory = await load(f"{agents_file}:not_an_agent_factory")
    with pytest.raises(UsageError, match=r"not_an_agent_factory\(\) returned str, not an agent"):
        await build_agent(factory)


def test_an_agent_instance_is_refused_with_how_to_fix_it(agents_file: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_agent_factory(f"{agents_file}:agent")
    message = str(caught.value)
    assert f"agent spec '{agents_file}:agent'" in message
    assert "agent instance (ReActAgent), not a factory" in message
    assert "def build_agent(model=None): return ReActAgent(...)" in message


@pytest.mark.parametrize(
    ("suffix", "problem"),
    [
        (":answer", r"names an object of type int, not an agent factory"),
        (":missing", r"has no attribute 'missing'"),
    ],
)
def test_a_spec_naming_no_factory_says_what_it_names(agents_file: Path, suffix: str, problem: str) -> None:
    with pytest.raises(UsageError, match=rf"agent spec '{agents_file}{suffix}'.*{problem}"):
        load_agent_factory(f"{agents_file}{suffix}")


def test_missing_files_modules_and_default_factories_are_named(agents_file: Path) -> None:
    with pytest.raises(UsageError, match=r"agent spec 'nowhere/agent\.py': no such file: nowhere/agent\.py"):
        load_agent_factory("nowhere/agent.py")
    with pytest.raises(
        UsageError, match=r"agent spec 'no_such_module_xyz:f': cannot import 'no_such_module_xyz'"
    ):
        load_agent_factory("no_such_module_xyz:f")
    with pytest.raises(UsageError, match=r"agent spec 'json': expected MODULE:ATTRIBUTE"):
        load_agent_factory("json")
    only_instance = agents_file.parent / "only_instance_agent.py"
    only_instance.write_text("agent = None\n")
    with pytest.raises(
        UsageError, match=r"no attribute 'build_agent' \(a file named without :NAME means its"
    ):
        load_agent_factory(str(only_instance))
