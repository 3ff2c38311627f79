"""``import agentscope`` and its core packages stay light: no heavy or optional dependency loads at import.

Each check runs in a new interpreter, so modules imported by other tests cannot hide an eager import. A module
that needs one of these imports it inside the function that uses it, or behind a module-level ``__getattr__``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

HEAVY_MODULES = (
    "docker",
    "fastapi",
    "playwright",
    "ray",
    "sglang",
    "starlette",
    "tokenizers",
    "torch",
    "transformers",
    "uvicorn",
    "verl",
    "vllm",
)
"""Top-level modules that must not load. (``import mcp`` loads starlette and uvicorn: import it lazily.)"""

CORE_MODULES = (
    "agentscope",
    "agentscope.agents",
    "agentscope.events",
    "agentscope.exceptions",
    "agentscope.formatters",
    "agentscope.memory",
    "agentscope.message",
    "agentscope.models",
    "agentscope.pipelines",
    "agentscope.rl",
    "agentscope.testing",
    "agentscope.tools",
    "agentscope.tracing",
    "agentscope.types",
)
"""The modules checked, each one alone, where they exist yet."""

PROBE = """
import importlib, importlib.util, json, sys
name = sys.argv[1]
if importlib.util.find_spec(name) is None:
    print(json.dumps(None))
else:
    importlib.import_module(name)
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _top_level_modules_after_import(name: str) -> set[str] | None:
    """Top-level modules loaded after importing ``name`` in a new interpreter (``None``: no such module)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, name], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"import {name} failed:\n{done.stderr}"
    loaded: list[str] | None = json.loads(done.stdout)
    return None if loaded is None else set(loaded)


@pytest.mark.parametrize("name", CORE_MODULES)
def test_import_loads_no_heavy_module(name: str) -> None:
    loaded = _top_level_modules_after_import(name)
    if loaded is None:
        pytest.skip(f"{name} does not exist yet")
    heavy = sorted(loaded.intersection(HEAVY_MODULES))
    assert not heavy, f"import {name} loads {heavy}; import them lazily (see tests/test_import_light.py)"


def test_the_probe_sees_heavy_imports() -> None:
    """The check is not vacuous: importing a heavy module shows up in the probe's answer."""
    assert "starlette" in (_top_level_modules_after_import("starlette.requests") or set())


def test_the_core_install_declares_no_heavy_package() -> None:
    """``pip install -e .`` (no extras) gives the agent core only: the heavy packages come with extras."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    core = {
        re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()
        for requirement in pyproject["project"]["dependencies"]
    }
    assert "pydantic" in core  # the parse found the list
    heavy = sorted(core.intersection(HEAVY_MODULES))
    assert not heavy, f"core dependencies {heavy} belong in an extra ([project.optional-dependencies])"
