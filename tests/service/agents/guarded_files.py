"""An agent that removes files only with a human's approval, for the tests that serve it in real processes.

``remove P`` from the user makes one ``remove`` call; after its result the model answers with it. The files live
in the folder named by ``GUARDED_FILES_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentscope.agents import ReActAgent
from agentscope.message import Msg, ToolResultBlock
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import Toolkit, require_approval


def remove(path: str) -> str:
    """Remove a file.

    Args:
        path: The file, relative to the agent's folder.
    """
    require_approval(f"removing {path}")
    (Path(os.environ["GUARDED_FILES_DIR"]) / path).unlink()
    return f"removed {path}"


def model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    last = messages[-1]
    if last.role == "user" and last.text.startswith("remove "):
        return tool_call("remove", _id="call-remove", path=last.text.split()[1])
    results = [r for m in messages for r in m.blocks_of(ToolResultBlock)]
    return f"Done: {results[-1].output}" if results else "Nothing to do."


def build_agent() -> ReActAgent:
    toolkit = Toolkit()
    toolkit.register(remove)
    return ReActAgent("files", model=FunctionModel(model), toolkit=toolkit)
