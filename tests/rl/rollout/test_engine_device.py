"""``rollout.device`` and ``rollout.dtype`` reach the embedded engine: bfloat16 on the CPU (the compute a GPU run
takes by default) generates what float32 generates from a confident policy, with log-probs close to float32's; a
GPU torch does not see, and a device for a vLLM/SGLang engine, are errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from agentscope.exceptions import ConfigError
from agentscope.message import Msg
from agentscope.models import ChatResponse
from agentscope.rl import load_config
from agentscope.rl._components import build_rollout_engine, build_rollout_service

OVERRIDES = ["seed=3", "rollout.max_batch=2", "rollout.max_seq_len=512", "rollout.max_tokens=24"]


async def test_a_bfloat16_engine_generates_what_the_float32_one_does(
    memorized_dir: Path, tokenizer: Any, helpers: Any
) -> None:
    messages = [Msg(role="system", content=helpers.SYSTEM), Msg(role="user", content=helpers.QUESTION)]
    answers: dict[str, ChatResponse] = {}
    for dtype in ("float32", "bfloat16"):
        config = load_config(None, [*OVERRIDES, f"rollout.dtype={dtype}", "rollout.device=cpu"])
        async with build_rollout_service(config, memorized_dir, tokenizer, 0) as service:
            assert service.engine.dtype == getattr(torch, dtype)  # pyright: ignore[reportAttributeAccessIssue]
            answers[dtype] = await service.chat(None, messages, tools=[helpers.CALCULATOR])
    full, mixed = answers["float32"], answers["bfloat16"]
    assert mixed.completion_token_ids == full.completion_token_ids
    assert mixed.logprobs is not None
    assert full.logprobs is not None
    assert mixed.logprobs == pytest.approx(full.logprobs, rel=0.15, abs=0.05)  # bfloat16: ~3 digits
    assert mixed.logprobs != full.logprobs  # computed in bfloat16 indeed


def test_a_gpu_torch_does_not_see_is_an_error_naming_the_field(
    memorized_dir: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = load_config(None, [*OVERRIDES, "rollout.device=cuda"])
    with pytest.raises(ConfigError, match=r"rollout\.device: 'cuda', but this torch .* sees no CUDA GPU"):
        build_rollout_engine(config, memorized_dir, tokenizer, 0)


def test_a_device_for_an_engine_that_places_itself_fails_at_load() -> None:
    with pytest.raises(ConfigError, match=r"rollout\.device: only for rollout\.engine torch"):
        load_config(None, ["rollout.engine=vllm", "rollout.device=cpu"])
    with pytest.raises(ConfigError, match=r"rollout\.dtype"):
        load_config(None, ["rollout.dtype=int8"])
