"""``agentscope.rl.rollout`` and ``agentscope.rl.policy`` import without torch, transformers or fastapi."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"torch", "transformers", "tokenizers", "fastapi", "starlette", "uvicorn", "verl", "ray"}


@pytest.mark.parametrize("name", ["agentscope.rl.rollout", "agentscope.rl.policy"])
def test_import_is_light(name: str) -> None:
    probe = f"import json, sys, {name}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert not HEAVY & set(json.loads(done.stdout))
