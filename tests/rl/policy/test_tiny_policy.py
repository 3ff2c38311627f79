"""build_tiny_policy: offline, deterministic, loadable with the Auto classes; warm_start learns the demonstrations."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.rl.policy import (
    ChatTokenizer,
    Demonstration,
    TinyPolicyConfig,
    build_tiny_policy,
    warm_start,
)

SMALL = TinyPolicyConfig(
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    max_position_embeddings=512,
    corpus_conversations=200,
    extra_corpus=["Zorblax quantifies the frobnication."],
)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(SMALL, tmp_path_factory.mktemp("tiny"))


def test_it_loads_with_the_auto_classes(built: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(built)
    tokenizer = AutoTokenizer.from_pretrained(built)
    assert model.config.model_type == "qwen2"
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_key_value_heads) == (
        64,
        2,
        2,
    )
    assert model.config.vocab_size >= len(tokenizer)
    assert model.config.vocab_size % 64 == 0
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert len(tokenizer.encode("<tool_call>", add_special_tokens=False)) == 1
    digits = tokenizer.encode("12345", add_special_tokens=False)
    assert [tokenizer.decode([d]) for d in digits] == list("12345")  # one token per digit, like Qwen2
    text = "<|im_start|>user\nZorblax quantifies ünïcode 🙂<|im_end|>\n"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert len(tokenizer.encode(" frobnication", add_special_tokens=False)) <= 2  # learned from extra_corpus
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_the_same_config_builds_the_same_files(built: Path, tmp_path: Path) -> None:
    again = build_tiny_policy(SMALL, tmp_path / "again")
    for name in ("tokenizer.json", "config.json", "model.safetensors"):
        assert (again / name).read_bytes() == (built / name).read_bytes(), name
    other = build_tiny_policy(SMALL.model_copy(update={"seed": 1}), tmp_path / "other")
    assert (other / "model.safetensors").read_bytes() != (built / "model.safetensors").read_bytes()


def test_the_default_config_is_a_few_million_parameters() -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = TinyPolicyConfig()
    with torch.device("meta"):
        model = Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=config.vocab_size,
                hidden_size=config.hidden_size,
                intermediate_size=config.intermediate_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                num_key_value_heads=config.num_kv_heads,
                tie_word_embeddings=config.tie_word_embeddings,
            )
        )
    assert 3_000_000 < sum(p.numel() for p in model.parameters()) < 4_000_000


def demonstration(a: int, b: int) -> list[Msg]:
    return [
        Msg(role="system", content="Use the calculator."),
        Msg(role="user", content=f"What is {a} + {b}?"),
        Msg(
            role="assistant",
            content=[ToolUseBlock(id="1", name="calculator", input={"expression": f"{a} + {b}"})],
        ),
        Msg(role="tool", content=[ToolResultBlock(id="1", name="calculator", output=str(a + b))]),
        Msg(role="assistant", content=f"The answer is {a + b}."),
    ]


def test_the_loss_mask_covers_exactly_what_the_policy_generates(built: Path) -> None:
    from transformers import AutoTokenizer

    chat = ChatTokenizer(AutoTokenizer.from_pretrained(built))
    ids, mask = chat.encode_conversation(demonstration(3, 4))
    assert len(ids) == len(mask)
    runs = [
        [t for t, _ in run]
        for m, run in itertools.groupby(zip(ids, mask, strict=True), key=lambda x: x[1])
        if m
    ]
    bodies = [chat.tokenizer.decode(run) for run in runs]
    assert bodies == [
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3 + 4"}}\n</tool_call><|im_end|>',
        "The answer is 7.<|im_end|>",
    ]


def test_warm_start_learns_the_demonstrations(built: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(built)
    tokenizer = AutoTokenizer.from_pretrained(built)
    demos = [Demonstration(demonstration(a, a + 1)) for a in range(4)]
    losses = warm_start(model, tokenizer, demos, 30, lr=1e-2, batch_size=2)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < losses[0] / 3
    assert not model.training
    with pytest.raises(ValueError, match="assistant"):
        warm_start(model, tokenizer, [demonstration(1, 1)[:2]], 1)
