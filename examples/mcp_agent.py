"""An agent that uses an MCP server's tools together with a local Python tool.

Both sides of MCP in one file:

- the server: ``build_notes_toolkit`` is a Toolkit of note-taking tools, served over stdio by
  ``agentscope mcp serve examples/mcp_agent.py:build_notes_toolkit`` (any MCP client could use it: Claude
  Desktop, the ``mcp`` SDK, another framework);
- the client: ``main`` starts that server as a subprocess through :class:`MCPClient`, registers its tools with
  the prefix ``notes_`` next to a local ``word_count`` tool, and lets a ReActAgent use both.

Run it offline (a rule-based stand-in plays the model)::

    python examples/mcp_agent.py
    python examples/mcp_agent.py -m "Note that the demo is on Friday, then count the words in my notes"

or against any OpenAI-compatible server::

    python examples/mcp_agent.py --model openai:MODEL --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from agentscope.agents import ReActAgent
from agentscope.events import ToolCallEvent, ToolResultEvent
from agentscope.message import Msg, ToolResultBlock
from agentscope.models import ChatModel
from agentscope.testing import FunctionModel, ModelRequest, ScriptItem, tool_call
from agentscope.tools import MCPClient, StdioServer, Toolkit

HERE = Path(__file__).resolve()

# ---------------------------------------------------------------------- the MCP server's side


def build_notes_toolkit() -> Toolkit:
    """The tools the MCP server offers: a tiny note store (in the server process's memory)."""
    notes: list[str] = []

    def add_note(text: str) -> str:
        """Save a note.

        Args:
            text: The note.
        """
        notes.append(text.strip())
        return f"Saved note #{len(notes)}."

    def list_notes() -> str:
        """All saved notes, one per line."""
        return "\n".join(f"{i}. {note}" for i, note in enumerate(notes, 1)) or "(no notes)"

    toolkit = Toolkit()
    toolkit.register(add_note)
    toolkit.register(list_notes)
    return toolkit


# ---------------------------------------------------------------------- the agent's side


def word_count(text: str) -> int:
    """Count the words in a text (list numbers such as "1." are not words).

    Args:
        text: The text.
    """
    return len([w for w in text.split() if not re.fullmatch(r"\d+\.", w)])


def rule_based_model(messages: list[Msg], request: ModelRequest) -> ScriptItem:
    """An offline stand-in for an LLM: save the note, list the notes, count their words, answer."""
    results = {b.name: b for m in messages for b in m.blocks_of(ToolResultBlock)}
    if "word_count" in results:
        return f"Saved. Your notes now have {results['word_count'].output} words."
    if "notes_list_notes" in results:
        return tool_call("word_count", text=str(results["notes_list_notes"].output))
    if "notes_add_note" in results:
        return tool_call("notes_list_notes")
    request_text = messages[-1].text
    match = re.search(r"[Nn]ote that (.+?)(?:,| then|$)", request_text)
    return tool_call("notes_add_note", text=match.group(1) if match else request_text)


def notes_server() -> StdioServer:
    """The MCP server: this file's toolkit, served over stdio by the ``agentscope`` command."""
    return StdioServer(
        sys.executable,
        ["-m", "agentscope.cli", "mcp", "serve", f"{HERE}:build_notes_toolkit", "--name", "notes"],
    )


async def run(messages: list[str], model: ChatModel | None = None) -> None:
    async with MCPClient(notes_server(), timeout_s=30) as notes:
        toolkit = Toolkit()
        toolkit.register(word_count)
        remote = await toolkit.register_mcp(notes, prefix="notes_")
        print(f"tools: {', '.join(toolkit.names)} (from MCP server {notes.name!r}: {', '.join(remote)})")
        agent = ReActAgent(
            name="assistant",
            sys_prompt="You keep the user's notes with the notes_ tools and count words with word_count.",
            model=model or FunctionModel(rule_based_model, model_name="rule-based"),
            toolkit=toolkit,
            max_iters=6,
        )
        for text in messages:
            print(f"user: {text}")
            async for event in agent.stream(Msg(role="user", name="user", content=text)):
                if isinstance(event, ToolCallEvent):
                    args = ", ".join(f"{k}={v!r}" for k, v in event.call.input.items())
                    print(f"  -> {event.call.name}({args})")
                elif isinstance(event, ToolResultEvent):
                    print(f"  <- {str(event.result.output).replace(chr(10), ' | ')}")
            reply = (await agent.memory.get())[-1]
            print(f"assistant: {reply.text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--message", action="append", help="a message to send (repeatable)")
    parser.add_argument(
        "--model", help="PROVIDER:MODEL, e.g. openai:gpt-4o-mini (default: offline rule-based)"
    )
    parser.add_argument("--base-url", help="the provider's endpoint")
    args = parser.parse_args()
    model = None
    if args.model:
        from agentscope.cli import make_model

        model = make_model(args.model, base_url=args.base_url)
    messages = args.message or [
        "Note that the team demo is on Friday at 10, then count the words in my notes."
    ]
    asyncio.run(run(messages, model))


if __name__ == "__main__":
    main()
