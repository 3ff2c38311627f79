"""The data manager and the trainer's config import without torch, transformers, verl or psycopg (the runner's
config and the CLI's --help load them); the trainer's heavy names load on first use (tests/test_exported_members.py
resolves them), and psycopg with the PostgreSQL store."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import agentscope.rl.data
import agentscope.rl.trainer
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore
from agentscope.rl.trainer import TrainerConfig
print(json.dumps(sorted(m for m in ("torch", "transformers", "verl", "ray", "numpy", "tensordict", "psycopg") if m in sys.modules)))
"""


def test_data_and_trainer_config_are_light() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
