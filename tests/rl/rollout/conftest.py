"""Tiny policies for the rollout tests, built once per session (offline, a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import ToolSchema
from agentscope.rl.policy import Demonstration, TinyPolicyConfig, build_tiny_policy, warm_start
from agentscope.rl.rollout import Generation, SamplingParams
from agentscope.tools import Toolkit

SMALL = TinyPolicyConfig(
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    max_position_embeddings=1024,
    corpus_conversations=300,
)
"""A 0.14 M-parameter Qwen2 (head_dim 16, grouped-query attention): same code paths as the 3.7 M default."""

SYSTEM = "Use the calculator."
QUESTION = "What is 17 + 25?"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: The expression.
    """
    a, op, b = expression.split()
    return str(int(a) + int(b) if op == "+" else int(a) - int(b))


def toolkit() -> Toolkit:
    kit = Toolkit()
    kit.register(calculator)
    return kit


CALCULATOR: ToolSchema = toolkit().schemas()[0]
"""The calculator as a ReActAgent offers it (so demonstrations render the prompt the agent's calls render)."""


def demonstration() -> Demonstration:
    """The episode the memorised policy reproduces: a tool call, then the answer."""
    return Demonstration(
        [
            Msg(role="system", content=SYSTEM),
            Msg(role="user", content=QUESTION),
            Msg(
                role="assistant",
                content=[ToolUseBlock(id="1", name="calculator", input={"expression": "17 + 25"})],
            ),
            Msg(role="tool", content=[ToolResultBlock(id="1", name="calculator", output="42")]),
            Msg(role="assistant", content="The answer is 42."),
        ],
        [CALCULATOR],
    )


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread in the test thread: on a busy 2-core machine two OpenMP threads spin against other
    processes and run these tiny models 10-30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny policy."""
    return build_tiny_policy(SMALL, tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="session")
def tokenizer(policy_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(policy_dir)


@pytest.fixture(scope="session")
def hf_model(policy_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(policy_dir).eval()


@pytest.fixture(scope="session")
def memorized_dir(tmp_path_factory: pytest.TempPathFactory, policy_dir: Path, tokenizer: Any) -> Path:
    """The tiny policy fine-tuned until it reproduces :func:`demonstration` greedily (tool call, then answer)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_torch_thread (this session fixture is set up before that package one)
    try:
        warm_start(model, tokenizer, [demonstration()], 100, lr=1e-2, batch_size=1)
    finally:
        torch.set_num_threads(before)
    out = tmp_path_factory.mktemp("memorized")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class ScriptedEngine:
    """A RolloutEngine double: answers each prompt with the next scripted text (encoded, then ``<|im_end|>``)."""

    def __init__(self, tokenizer: Any, script: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.script = list(script)
        self.version = 0
        self.prompts: list[list[int]] = []
        self.params: list[SamplingParams] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        self.prompts.append(list(prompt_ids))
        self.params.append(params)
        ids = [*self.tokenizer.encode(self.script.pop(0), add_special_tokens=False), params.stop_token_ids[0]]
        return Generation(
            completion_ids=ids,
            logprobs=[-0.5] * len(ids),
            finish_reason="stop",
            version_head=self.version,
            version_tail=self.version,
            prompt_len=len(prompt_ids),
        )

    async def update_weights(self, state_dict: Any, version: int) -> None:
        self.version = version

    def stats(self) -> dict[str, float]:
        return {}


@pytest.fixture(scope="session")
def helpers() -> Any:
    """The helpers above, for tests (conftest modules cannot be imported under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(
        ScriptedEngine=ScriptedEngine,
        toolkit=toolkit,
        demonstration=demonstration,
        calculator=calculator,
        CALCULATOR=CALCULATOR,
        SYSTEM=SYSTEM,
        QUESTION=QUESTION,
        SMALL=SMALL,
    )
