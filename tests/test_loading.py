"""The shared helpers the command line, the RL runner and the toolkit use: ``module:attr`` loading
(``agentscope._loading``) and exception-group unwrapping (``agentscope._errors``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from agentscope._errors import unwrap_group
from agentscope._loading import LoadError, load_object


@pytest.fixture
def user_file(tmp_path: Path) -> Iterator[Path]:
    """A user's file that imports a neighbour module, with an ``agent`` and a ``make`` attribute."""
    (tmp_path / "neighbour_for_loading.py").write_text("VALUE = 41\n")
    path = tmp_path / "my_agent.py"
    path.write_text(
        "import neighbour_for_loading\nagent = neighbour_for_loading.VALUE + 1\ndef make():\n    pass\n"
    )
    saved = list(sys.path)
    yield path
    sys.path[:] = saved
    for name in [n for n in sys.modules if n == "neighbour_for_loading" or n.startswith("_agentscope_user_")]:
        del sys.modules[name]


def test_a_file_runs_once_and_same_named_files_stay_apart(user_file: Path, tmp_path: Path) -> None:
    first = load_object(f"{user_file}:make")
    path_length = len(sys.path)
    assert load_object(f"{user_file}:make") is first  # one module, one copy of each class and function
    assert len(sys.path) == path_length
    other = tmp_path / "elsewhere" / "my_agent.py"
    other.parent.mkdir()
    other.write_text("agent = 'the other one'\n")
    assert load_object(f"{other}:agent") == "the other one"
    assert load_object(f"{user_file}:agent") == 42


def test_a_file_that_fails_halfway_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "broken_agent.py"
    path.write_text("agent = 1\nraise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError, match="boom"):
        load_object(f"{path}:agent")
    assert not [n for n in sys.modules if n.startswith("_agentscope_user_broken_agent")]
    path.write_text("agent = 2\n")
    assert load_object(f"{path}:agent") == 2  # run again, not the half-run module
    sys.path.remove(str(tmp_path))


def test_a_module_attribute_loads() -> None:
    assert load_object("json:dumps") is json.dumps


def test_a_file_loads_with_its_neighbours_and_a_default_attribute(user_file: Path) -> None:
    assert load_object(f"{user_file}", file_default=lambda module: "agent") == 42
    assert callable(load_object(f"{user_file}:make"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("json", "expected MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE, got 'json'"),
        (":dumps", "expected MODULE:ATTRIBUTE"),
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz': No module named 'no_such_module_xyz'"),
        ("json:nope", "json has no attribute 'nope'"),
        ("missing/file.py:agent", "no such file: missing/file.py"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        load_object(spec)


def test_a_file_without_an_attribute_needs_a_default(user_file: Path) -> None:
    with pytest.raises(LoadError, match="expected MODULE:ATTRIBUTE"):
        load_object(str(user_file))
    assert not [
        n for n in sys.modules if n.startswith("_agentscope_user_my_agent")
    ]  # refused before running it


def test_errors_of_the_loaded_code_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "raises_on_import.py"
    path.write_text("raise ValueError('broken user module')\n")
    with pytest.raises(ValueError, match="broken user module") as caught:
        load_object(f"{path}:x")
    assert not isinstance(caught.value, LoadError)
    sys.modules.pop("_agentscope_user_raises_on_import", None)


async def test_unwrap_group_gives_the_one_failure_of_a_task_group() -> None:
    async def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(BaseExceptionGroup) as caught:
        async with anyio.create_task_group() as outer:
            outer.start_soon(fail)
    assert isinstance(caught.value, BaseExceptionGroup)
    inner = unwrap_group(caught.value)
    assert isinstance(inner, KeyError)
    assert inner.args == ("boom",)


def test_unwrap_group_keeps_groups_of_several_and_plain_exceptions() -> None:
    plain = RuntimeError("x")
    assert unwrap_group(plain) is plain
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [plain])])
    assert unwrap_group(nested) is plain
    several = ExceptionGroup("outer", [ExceptionGroup("two", [plain, KeyError("y")])])
    assert unwrap_group(several) is several.exceptions[0]
