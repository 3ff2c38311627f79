"""A multi-agent debate: two debaters argue in a MsgHub, then a judge gives a structured verdict.

Runs offline on scripted models (no API key, no network):

    python examples/debate.py

With a real model behind an OpenAI-compatible endpoint:

    python examples/debate.py --model MODEL --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import asyncio

from pydantic import BaseModel, Field
from rich.console import Console
from rich.panel import Panel

from agentscope.agents import ReActAgent
from agentscope.message import Msg
from agentscope.models import ChatModel
from agentscope.pipelines import MsgHub
from agentscope.testing import ScriptedModel, tool_call
from agentscope.tools import Toolkit

TOPIC = "Should a city replace its downtown car lanes with bike lanes?"
ROUNDS = 2


class Verdict(BaseModel):
    """The judge's decision."""

    winner: str = Field(description="Name of the debater who argued better.")
    score_pro: int = Field(ge=0, le=10, description="Score for the side in favour, 0-10.")
    score_con: int = Field(ge=0, le=10, description="Score for the side against, 0-10.")
    reason: str = Field(description="One sentence explaining the decision.")


def count_words(text: str) -> int:
    """Count the words in a piece of text.

    Args:
        text: The text to measure.
    """
    return len(text.split())


def scripted_models() -> tuple[ChatModel, ChatModel, ChatModel]:
    """Offline stand-ins for the three models, so the example runs anywhere."""
    pro = ScriptedModel(
        [
            "Bike lanes move more people per metre of street than car lanes, and cut downtown emissions.",
            "Deliveries can use off-peak loading zones; cities like Utrecht kept shops thriving after the switch.",
        ],
        model_name="pro-script",
    )
    con = ScriptedModel(
        [
            "Removing car lanes strands deliveries and people who cannot cycle, and hurts downtown shops.",
            "Utrecht had decades of transit investment first; without it the switch just moves traffic elsewhere.",
        ],
        model_name="con-script",
    )
    judge = ScriptedModel(
        [
            tool_call("count_words", text="Bike lanes move more people per metre of street than car lanes."),
            tool_call(
                "generate_response",
                winner="pro",
                score_pro=8,
                score_con=7,
                reason="Pro answered the delivery objection with a concrete precedent; con's rebuttal was weaker.",
            ),
        ],
        model_name="judge-script",
    )
    return pro, con, judge


async def debate(
    pro_model: ChatModel, con_model: ChatModel, judge_model: ChatModel, console: Console
) -> Verdict:
    """Run the debate and return the verdict."""
    pro = ReActAgent(name="pro", sys_prompt=f"You argue FOR: {TOPIC} Be brief and concrete.", model=pro_model)
    con = ReActAgent(
        name="con", sys_prompt=f"You argue AGAINST: {TOPIC} Be brief and concrete.", model=con_model
    )
    judge_tools = Toolkit()
    judge_tools.register(count_words)
    judge = ReActAgent(
        name="judge",
        sys_prompt="You judge debates fairly. Read both sides, then give your verdict.",
        model=judge_model,
        toolkit=judge_tools,
    )
    announcement = Msg(role="user", name="moderator", content=f"Debate topic: {TOPIC} Pro opens.")
    console.print(Panel(TOPIC, title="Debate"))
    async with MsgHub([pro, con, judge], announcement=announcement):
        for round_number in range(1, ROUNDS + 1):
            for speaker in (pro, con):
                reply = await speaker()
                console.print(f"[bold]{speaker.name}[/] (round {round_number}): {reply.text}")
    verdict_msg = await judge(
        Msg(role="user", name="moderator", content="Give your verdict."), structured_model=Verdict
    )
    verdict = Verdict.model_validate(verdict_msg.metadata["structured_output"])
    console.print(
        Panel(
            f"winner: {verdict.winner}  (pro {verdict.score_pro} / con {verdict.score_con})\n{verdict.reason}",
            title="Verdict",
        )
    )
    for model in (pro_model, con_model, judge_model):
        if isinstance(model, ScriptedModel):
            model.assert_complete()
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="model name on an OpenAI-compatible endpoint (default: offline scripts)"
    )
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint for --model")
    args = parser.parse_args()
    if args.model:
        from agentscope.models import OpenAIChatModel

        models = tuple(OpenAIChatModel(args.model, base_url=args.base_url) for _ in range(3))
        pro_model, con_model, judge_model = models
    else:
        pro_model, con_model, judge_model = scripted_models()
    asyncio.run(debate(pro_model, con_model, judge_model, Console()))


if __name__ == "__main__":
    main()
