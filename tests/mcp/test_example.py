"""examples/mcp_agent.py runs as documented: an agent using an MCP server's tools and a local tool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.slow
def test_mcp_agent_example_runs_offline() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "examples/mcp_agent.py",
            "-m",
            "Note that lunch is at noon, then count the words in my notes",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == (
        "tools: word_count, notes_add_note, notes_list_notes "
        "(from MCP server 'notes': notes_add_note, notes_list_notes)"
    )
    assert "  -> notes_add_note(text='lunch is at noon')" in out
    assert "  <- 1. lunch is at noon" in out  # the MCP server's answer
    assert "  <- 4" in out  # the local tool's
    assert out[-1] == "assistant: Saved. Your notes now have 4 words."
