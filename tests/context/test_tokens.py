"""Token counters: a Hugging Face tokenizer from local files, a model that counts for itself, the estimate."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from agentscope.agents import ReActAgent
from agentscope.context import (
    ContextConfig,
    EstimateTokenCounter,
    HFTokenCounter,
    ModelTokenCounter,
    load_local_tokenizer,
    token_counter_for,
)
from agentscope.formatters import format_openai_messages, format_openai_tools
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.testing import ScriptedModel
from agentscope.types import ToolSchema

pytestmark = pytest.mark.anyio

WORDS = ["hello", "world", "user", "assistant", "system", "role", "content", "read", "page"]

CONVERSATION = [
    Msg(role="system", content="read page"),
    Msg(role="user", content="hello world hello"),
    Msg(role="assistant", content="world"),
]

TOOLS = [ToolSchema(name="read", description="read page")]


def _word_tokenizer() -> Any:
    """A tokenizer built here (no download): one token per word or punctuation mark, unknown ones as [UNK]."""
    pytest.importorskip("tokenizers")  # the rl extra
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # pyright: ignore[reportAttributeAccessIssue]
    return tokenizer


def _request_json(messages: Sequence[Msg], tools: Sequence[ToolSchema] = ()) -> str:
    text = json.dumps(format_openai_messages(messages), ensure_ascii=False)
    if tools:
        text += json.dumps(format_openai_tools(tools), ensure_ascii=False)
    return text


async def test_a_tokenizer_json_by_path_counts_the_formatted_request(tmp_path: Path) -> None:
    tokenizer = _word_tokenizer()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    counter = HFTokenCounter(tmp_path / "tokenizer.json")
    expected = len(tokenizer.encode(_request_json(CONVERSATION, TOOLS)).ids)
    assert await counter.count(CONVERSATION, TOOLS) == expected
    assert await counter.count(CONVERSATION) < expected  # tool schemas count
    each = await counter.count_each(CONVERSATION)
    assert each == [len(tokenizer.encode(_request_json([m])).ids) for m in CONVERSATION]
    assert counter.name == f"hf:{tmp_path / 'tokenizer.json'}"


async def test_a_saved_transformers_tokenizer_counts_through_its_chat_template(tmp_path: Path) -> None:
    pytest.importorskip("transformers")  # the rl extra
    from transformers import PreTrainedTokenizerFast

    template = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
    PreTrainedTokenizerFast(
        tokenizer_object=_word_tokenizer(), unk_token="[UNK]", chat_template=template
    ).save_pretrained(tmp_path / "tok")
    counter = HFTokenCounter(str(tmp_path / "tok"))
    loaded = await anyio.to_thread.run_sync(load_local_tokenizer, str(tmp_path / "tok"))
    assert type(loaded).__name__ != "Tokenizer"  # transformers' AutoTokenizer, with the chat template
    rendered: str = loaded.apply_chat_template(format_openai_messages(CONVERSATION), tokenize=False)
    ids: list[int] = loaded.encode(rendered, add_special_tokens=False)
    assert await counter.count(CONVERSATION) == len(ids)
    # "hello world hello" is 3 tokens of this tokenizer, whatever its character count
    one: list[int] = loaded.encode("<user> hello world hello\n", add_special_tokens=False)
    assert await counter.count([Msg(role="user", content="hello world hello")]) == len(one)


async def test_an_agent_counts_with_the_configured_tokenizer(tmp_path: Path) -> None:
    _word_tokenizer().save(str(tmp_path / "tokenizer.json"))
    agent = ReActAgent(
        "a",
        "read page",
        ScriptedModel(["world"]),
        context=ContextConfig(max_tokens=1000, tokenizer=str(tmp_path / "tokenizer.json")),
    )
    await agent(Msg(role="user", content="hello"))
    assert agent.context is not None
    assert isinstance(agent.context.counter, HFTokenCounter)


async def test_a_tokenizer_that_is_not_here_is_a_clear_error_and_nothing_is_downloaded(
    tmp_path: Path,
) -> None:
    counter = HFTokenCounter(tmp_path / "missing")
    with pytest.raises(ValueError, match="local Hugging Face cache"):
        await counter.count(CONVERSATION)


class CountingModel(ScriptedModel):
    """A model that counts its own tokens (as a rollout client holding the policy's tokenizer can)."""

    def count_tokens(self, messages: Sequence[Msg], tools: Sequence[ToolSchema]) -> int:
        return 100 * len(messages) + 10 * len(tools)


async def test_a_model_that_counts_for_itself_is_used() -> None:
    model = CountingModel(["ok"])
    counter = token_counter_for(model)
    assert isinstance(counter, ModelTokenCounter)
    assert await counter.count(CONVERSATION, TOOLS) == 310
    # Its counts drive compaction: 100 per message, so a budget of 450 keeps 4 of them.
    agent = ReActAgent("a", "sys", model, context=ContextConfig(max_tokens=450, target_ratio=1.0))
    await agent.memory.add([Msg(role="user", content="old"), Msg(role="assistant", content="old answer")] * 3)
    await agent(Msg(role="user", content="new"))
    sent = model.last_request.messages
    assert next(m.role for m in sent) == "system"
    assert sent[-1].text == "new"
    assert len(sent) == 4  # system, the note for the dropped turns, the latest old turn, the question


def test_without_a_tokenizer_the_estimate_is_used() -> None:
    assert isinstance(token_counter_for(ScriptedModel([])), EstimateTokenCounter)


async def test_the_estimate_is_characters_over_four_of_the_formatted_request() -> None:
    counter = EstimateTokenCounter()
    call = Msg(role="assistant", content=[ToolUseBlock(id="c", name="read", input={"page": "x" * 400})])
    assert await counter.count([call]) == pytest.approx(len(_request_json([call])) / 4, abs=6)
    with pytest.raises(ValueError, match="chars_per_token"):
        EstimateTokenCounter(0)


async def test_the_rollout_policy_s_tokenizer_counts_exactly_the_prompt_the_rollout_service_builds(
    tmp_path: Path,
) -> None:
    """The tiny policy (built offline) through its saved chat template: the same ids as ChatTokenizer's."""
    pytest.importorskip("torch")  # the rl extra
    from agentscope.rl.policy import ChatTokenizer, TinyPolicyConfig, build_tiny_policy

    config = TinyPolicyConfig(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        max_position_embeddings=256,
        corpus_conversations=50,
    )
    await anyio.to_thread.run_sync(build_tiny_policy, config, tmp_path)
    tools = [
        ToolSchema(
            name="calculator",
            description="Evaluate an expression.",
            parameters={"type": "object", "properties": {"expression": {"type": "string"}}},
        )
    ]
    conversation = [
        Msg(role="system", content="Use the calculator."),
        Msg(role="user", content="What is 17 + 25?"),
        Msg(
            role="assistant",
            content=[ToolUseBlock(id="c1", name="calculator", input={"expression": "17 + 25"})],
        ),
        Msg(role="tool", content=[ToolResultBlock(id="c1", name="calculator", output="42")]),
        Msg(role="assistant", content="42"),
    ]
    counter = HFTokenCounter(str(tmp_path))
    policy = ChatTokenizer(await counter.tokenizer())
    for end in (2, len(conversation)):
        ids, _ = policy.encode_conversation(conversation[:end], tools)
        assert await counter.count(conversation[:end], tools) == len(ids)
