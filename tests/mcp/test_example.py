"""examples/mcp_agent.py runs as documented: an agent using an MCP server's tools and a local tool.

Its ``main()`` runs in this process (one interpreter start less); the MCP server it uses is a real subprocess
(``agentscope mcp serve examples/mcp_agent.py:build_notes_toolkit``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mcp_agent.py"


@pytest.mark.integration
@pytest.mark.slow
def test_mcp_agent_example_runs_offline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("mcp_agent_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(
        sys, "argv", ["mcp_agent.py", "-m", "Note that lunch is at noon, then count the words in my notes"]
    )
    example.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "tools: word_count, notes_add_note, notes_list_notes "
        "(from MCP server 'notes': notes_add_note, notes_list_notes)"
    )
    assert "  -> notes_add_note(text='lunch is at noon')" in out
    assert "  <- 1. lunch is at noon" in out  # the MCP server's answer
    assert "  <- 4" in out  # the local tool's
    assert out[-1] == "assistant: Saved. Your notes now have 4 words."
