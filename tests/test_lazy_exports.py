"""Lazy exports (``agentscope._lazy``): names load on first use, and a missing extra is named with the command that
installs it from the clone (``pip install -e '.[extra]'``)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = """
from agentscope._lazy import lazy_exports as _lazy_exports

__all__ = ["Heavy", "Light", "Broken"]

__getattr__ = _lazy_exports(
    __name__,
    {"Heavy": "_heavy", "Light": "_light", "Broken": "_broken"},
    extras={"_heavy": "fancy"},
    note=", then run the setup script",
)
"""


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package ``lazy_probe`` whose three lazy names need a missing extra, nothing, and a missing non-extra."""
    root = tmp_path / "lazy_probe"
    root.mkdir()
    (root / "__init__.py").write_text(PACKAGE)
    (root / "_heavy.py").write_text("import no_such_dependency_xyz\nHeavy = 1\n")
    (root / "_light.py").write_text("LOADS = []\nLOADS.append(1)\nLight = object()\n")
    (root / "_broken.py").write_text("import another_missing_module_xyz\nBroken = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lazy_probe"
    for name in [m for m in sys.modules if m == "lazy_probe" or m.startswith("lazy_probe.")]:
        del sys.modules[name]


def test_a_name_loads_once_and_stays_bound(probe: str) -> None:
    package = importlib.import_module(probe)
    assert "Light" not in vars(package)
    first = package.Light
    assert vars(package)["Light"] is first  # bound: the next access skips __getattr__
    assert package.Light is first
    assert importlib.import_module(f"{probe}._light").LOADS == [1]


def test_a_missing_extra_is_named_with_the_command_for_a_clone(probe: str) -> None:
    package = importlib.import_module(probe)
    with pytest.raises(ImportError) as caught:
        _ = package.Heavy
    message = str(caught.value)
    assert "lazy_probe.Heavy needs no_such_dependency_xyz" in message
    assert "pip install -e '.[fancy]', then run the setup script" in message
    assert caught.value.name == "no_such_dependency_xyz"
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_other_import_errors_and_unknown_names_pass_through(probe: str) -> None:
    package = importlib.import_module(probe)
    with pytest.raises(ModuleNotFoundError, match="another_missing_module_xyz") as caught:
        _ = package.Broken
    assert "pip install" not in str(caught.value)  # no extra is declared for it: no made-up hint
    with pytest.raises(AttributeError, match="module 'lazy_probe' has no attribute 'Nope'"):
        _ = package.Nope


BLOCKED = """
import sys
sys.modules[{blocked!r}] = None  # as if it were not installed
import importlib
module = importlib.import_module({module!r})
try:
    getattr(module, {name!r})
except ImportError as exc:
    print(exc)
else:
    print("loaded")
"""


@pytest.mark.parametrize(
    ("module", "name", "blocked", "extra"),
    [
        ("agentscope.rl.rollout", "TorchEngine", "torch", "rl"),
        ("agentscope.rl.trainer", "Trainer", "torch", "rl"),
    ],
)
def test_our_packages_name_their_extra(module: str, name: str, blocked: str, extra: str) -> None:
    code = textwrap.dedent(BLOCKED.format(blocked=blocked, module=module, name=name))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert f"{module}.{name} needs {blocked}" in done.stdout
    assert f"pip install -e '.[{extra}]'" in done.stdout
