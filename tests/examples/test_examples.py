"""The examples run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_debate_example_runs_offline() -> None:
    result = subprocess.run(
        [sys.executable, "examples/debate.py"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "pro (round 2)" in result.stdout
    assert "con (round 2)" in result.stdout
    assert "winner: pro" in result.stdout
