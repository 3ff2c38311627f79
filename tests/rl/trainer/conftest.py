"""A tiny Qwen2 policy and tokenizer built in code (no downloads), and trajectories sampled from it.

torch, transformers and verl load once per test session (Python caches the modules); the fixtures here are
module-scoped where building them costs anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from agentscope.rl import Trajectory, Turn

VOCAB = 48
PAD = 0


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    """A 2-layer Qwen2 with a 48-token vocabulary and tied embeddings (~30 k parameters)."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=1,
        bos_token_id=1,
    )
    return Qwen2ForCausalLM(config)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the same 48 ids (``<|endoftext|>`` = 0 pads, ``<|im_end|>`` = 1 ends,
    ``w2`` ... ``w47``). Qwen2's special-token names, so Qwen2Tokenizer (what transformers 5 loads next to a
    qwen2 config) adds none."""
    vocab = {"<|endoftext|>": 0, "<|im_end|>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # pyright: ignore[reportAttributeAccessIssue]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )


@torch.no_grad()
def exact_logprobs(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> list[float]:
    """log p(completion | prompt) per token, from one unpadded forward pass (what a rollout engine reports)."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return (
        torch.log_softmax(logits, dim=-1)
        .gather(-1, torch.tensor(completion).unsqueeze(-1))
        .squeeze(-1)
        .tolist()
    )


def sampled_trajectory(
    model: torch.nn.Module,
    *,
    group_id: str,
    reward: float,
    seed: int,
    turns: int = 2,
    completion: int = 4,
    observation: int = 2,
) -> Trajectory:
    """A token-in/token-out episode with random tokens whose rollout log-probs are ``model``'s exact ones."""
    g = torch.Generator().manual_seed(seed)

    def tokens(n: int) -> list[int]:
        return torch.randint(2, VOCAB, (n,), generator=g).tolist()

    context = tokens(5)
    built: list[Turn] = []
    for i in range(turns):
        prompt = context + tokens(observation) if i else context
        completion_ids = tokens(completion)
        built.append(
            Turn(
                prompt_ids=prompt,
                completion_ids=completion_ids,
                logprobs=exact_logprobs(model, prompt, completion_ids),
                version_head=0,
                version_tail=0,
            )
        )
        context = prompt + completion_ids
    return Trajectory(task_id="t", group_id=group_id, turns=built, reward=reward, success=reward > 0)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run several times faster on one thread than on two contended ones (a shared 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture
def make_model() -> Callable[..., Qwen2ForCausalLM]:
    return tiny_qwen2


@pytest.fixture
def sample() -> Callable[..., Trajectory]:
    return sampled_trajectory


@pytest.fixture
def model_dir(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast, make_model: Callable[..., Qwen2ForCausalLM]
) -> Path:
    """The tiny policy (seed 0) and its tokenizer saved as a Hugging Face directory (what verl's worker loads)."""
    path = tmp_path / "policy"
    make_model(seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def policy(model_dir: Path) -> Qwen2ForCausalLM:
    """The policy as loaded from :func:`model_dir`."""
    return Qwen2ForCausalLM.from_pretrained(model_dir)


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compute on the CPU (their tensors are made there): on a GPU machine too, ``trainer.device:
    auto`` means the CPU here."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
