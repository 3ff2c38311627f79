"""TorchEngine against Hugging Face: same greedy tokens, same log-probs; continuous batching; weight updates."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from agentscope.exceptions import ContextLengthExceeded, ModelError
from agentscope.rl.rollout import Generation, RolloutEngine, SamplingParams, TorchEngine

STOP_IDS = [2, 0]  # <|im_end|>, <|endoftext|>


@pytest.fixture
async def engine(policy_dir: Path) -> AsyncIterator[TorchEngine]:
    async with TorchEngine(policy_dir, max_batch=8, max_seq_len=512, seed=0) as engine:
        yield engine


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``condition`` (the engine thread changes what it reads) until it holds."""
    for _ in range(int(timeout_s / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def prompt(tokenizer: Any, i: int) -> list[int]:
    text = (
        f"<|im_start|>user\nWhat is {i} + {3 * i}?"
        + " Please." * (i % 4)
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    return tokenizer.encode(text, add_special_tokens=False)


def hf_greedy(model: Any, ids: list[int], max_new: int, stop_ids: list[int] | None) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            do_sample=False,
            max_new_tokens=max_new,
            eos_token_id=stop_ids or None,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()


def hf_logprobs(model: Any, ids: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    with torch.inference_mode():
        logits = model(torch.tensor([ids + completion])).logits[0, len(ids) - 1 : -1]
    scaled = torch.log_softmax(logits.float() / temperature, dim=-1)
    return scaled.gather(1, torch.tensor(completion)[:, None])[:, 0]


async def test_engine_satisfies_the_protocol(engine: TorchEngine) -> None:
    assert isinstance(engine, RolloutEngine)


async def test_greedy_equals_hf_generate_for_concurrent_requests(
    engine: TorchEngine, tokenizer: Any, hf_model: Any
) -> None:
    prompts = [prompt(tokenizer, i) for i in range(6)]
    stops = [STOP_IDS if i % 2 else [] for i in range(6)]
    gens = await asyncio.gather(
        *(
            engine.generate(p, SamplingParams(max_tokens=10 + 3 * i, temperature=0.0, stop_token_ids=s))
            for i, (p, s) in enumerate(zip(prompts, stops, strict=True))
        )
    )
    for i, (p, s, gen) in enumerate(zip(prompts, stops, gens, strict=True)):
        assert gen.completion_ids == hf_greedy(hf_model, p, 10 + 3 * i, s)
        assert gen.prompt_len == len(p)
        expected = hf_logprobs(hf_model, p, gen.completion_ids, 1.0)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=1e-4)
    # one forward pass per decode step for all of them, not one per request
    assert engine.stats()["rollout/decode_steps"] < sum(len(g.completion_ids) for g in gens) / 3


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.9), (1.3, 1.0), (1.0, 0.5)])
async def test_sampled_logprobs_are_log_softmax_of_logits_over_temperature(
    engine: TorchEngine, tokenizer: Any, hf_model: Any, temperature: float, top_p: float
) -> None:
    prompts = [prompt(tokenizer, i) for i in range(4)]
    params = SamplingParams(max_tokens=24, temperature=temperature, top_p=top_p)
    gens = await asyncio.gather(*(engine.generate(p, params) for p in prompts))
    for p, gen in zip(prompts, gens, strict=True):
        assert len(gen.logprobs) == len(gen.completion_ids) == 24
        expected = hf_logprobs(hf_model, p, gen.completion_ids, temperature)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=1e-4)


async def test_top_p_samples_only_from_the_nucleus(
    engine: TorchEngine, tokenizer: Any, hf_model: Any
) -> None:
    p = prompt(tokenizer, 5)
    gens = await asyncio.gather(
        *(engine.generate(p, SamplingParams(max_tokens=1, temperature=1.0, top_p=0.3)) for _ in range(24))
    )
    with torch.inference_mode():
        probs = torch.softmax(hf_model(torch.tensor([p])).logits[0, -1], dim=-1)
    ordered, order = probs.sort(descending=True)
    keep = int(((ordered.cumsum(0) - ordered) <= 0.3).sum())
    nucleus = set(order[:keep].tolist())
    assert {g.completion_ids[0] for g in gens} <= nucleus


async def test_a_seed_reproduces_the_sample_whatever_else_is_in_the_batch(
    engine: TorchEngine, tokenizer: Any
) -> None:
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=1234)
    alone = await engine.generate(prompt(tokenizer, 1), params)
    crowd = await asyncio.gather(
        engine.generate(prompt(tokenizer, 2), SamplingParams(max_tokens=30)),
        engine.generate(prompt(tokenizer, 1), params),
        engine.generate(prompt(tokenizer, 3), SamplingParams(max_tokens=5)),
    )
    assert crowd[1].completion_ids == alone.completion_ids
    unseeded = await asyncio.gather(
        *(engine.generate(prompt(tokenizer, 1), SamplingParams(max_tokens=16)) for _ in range(3))
    )
    assert len({tuple(g.completion_ids) for g in unseeded}) > 1


async def test_requests_are_admitted_between_decode_steps(
    engine: TorchEngine, tokenizer: Any, hf_model: Any
) -> None:
    long = asyncio.create_task(
        engine.generate(prompt(tokenizer, 1), SamplingParams(max_tokens=150, temperature=0))
    )
    await until(lambda: engine.stats()["rollout/decode_steps"] >= 5)
    short = await engine.generate(prompt(tokenizer, 2), SamplingParams(max_tokens=10, temperature=0))
    assert not long.done()  # joined the running batch instead of waiting for it to finish
    assert short.completion_ids == hf_greedy(hf_model, prompt(tokenizer, 2), 10, None)
    first = await long
    assert first.completion_ids == hf_greedy(hf_model, prompt(tokenizer, 1), 150, None)
    assert engine.stats()["rollout/decode_steps"] < 150 + 10


async def test_stop_tokens_stop_strings_and_lengths(engine: TorchEngine, tokenizer: Any) -> None:
    p = prompt(tokenizer, 4)
    free = await engine.generate(p, SamplingParams(max_tokens=40, temperature=0))
    assert free.finish_reason == "length"
    assert len(free.completion_ids) == 40
    # stop on the 10th generated token's id
    stop_id = free.completion_ids[9]
    first = free.completion_ids.index(stop_id)
    by_token = await engine.generate(
        p, SamplingParams(max_tokens=40, temperature=0, stop_token_ids=[stop_id])
    )
    assert by_token.completion_ids == free.completion_ids[: first + 1]
    assert by_token.finish_reason == "stop"
    # stop on a string that a later token completes
    k = next(k for k in range(8, 40) if len(tokenizer.decode(free.completion_ids[:k])) >= 3)
    target = tokenizer.decode(free.completion_ids[:k])[-3:]
    by_string = await engine.generate(p, SamplingParams(max_tokens=40, temperature=0, stop=[target]))
    assert by_string.finish_reason == "stop"
    assert len(by_string.completion_ids) <= k
    assert target in tokenizer.decode(by_string.completion_ids)
    assert target not in tokenizer.decode(by_string.completion_ids[:-1])
    # the context runs out before max_tokens
    long_prompt = (p * 40)[: 512 - 3]
    squeezed = await engine.generate(long_prompt, SamplingParams(max_tokens=40, temperature=0))
    assert (len(squeezed.completion_ids), squeezed.finish_reason) == (3, "length")
    with pytest.raises(ContextLengthExceeded, match="no room"):  # the episode is truncated, not failed
        await engine.generate(p * 100, SamplingParams())


async def test_weights_update_between_decode_steps_without_stopping(
    engine: TorchEngine, tokenizer: Any, hf_model: Any
) -> None:
    model = copy.deepcopy(hf_model)
    running = asyncio.create_task(
        engine.generate(prompt(tokenizer, 1), SamplingParams(max_tokens=400, temperature=0))
    )
    await until(lambda: engine.stats()["rollout/decode_steps"] >= 5)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    await engine.update_weights(model.state_dict(), version=1)
    assert engine.version == 1
    assert not running.done()
    gen: Generation = await running
    assert (gen.version_head, gen.version_tail) == (0, 1)
    # new requests see the new weights exactly
    p = prompt(tokenizer, 3)
    after = await engine.generate(p, SamplingParams(max_tokens=20, temperature=0))
    assert (after.version_head, after.version_tail) == (1, 1)
    assert after.completion_ids == hf_greedy(model, p, 20, None)
    assert engine.stats()["rollout/policy_version"] == 1.0
    # partial updates by name; unknown names are refused
    norm = {"model.norm.weight": model.state_dict()["model.norm.weight"] * 2}
    await engine.update_weights(norm, version=2)
    with pytest.raises(KeyError, match="unknown parameter"):
        await engine.update_weights({"nope.weight": torch.zeros(1)}, version=3)
    assert engine.version == 2


async def test_a_cancelled_request_frees_its_slot(policy_dir: Path, tokenizer: Any) -> None:
    async with TorchEngine(policy_dir, max_batch=2, max_seq_len=1024) as engine:
        a = asyncio.create_task(
            engine.generate(prompt(tokenizer, 1), SamplingParams(max_tokens=900, temperature=0))
        )
        b = asyncio.create_task(
            engine.generate(prompt(tokenizer, 2), SamplingParams(max_tokens=900, temperature=0))
        )
        await until(lambda: engine.stats()["rollout/requests_running"] >= 2)
        a.cancel()
        third = await engine.generate(prompt(tokenizer, 3), SamplingParams(max_tokens=5, temperature=0))
        assert len(third.completion_ids) == 5
        assert not b.done()
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await a


async def test_stopping_fails_what_is_still_running(policy_dir: Path, tokenizer: Any) -> None:
    engine = TorchEngine(policy_dir, max_batch=2, max_seq_len=1024)
    with pytest.raises(RuntimeError, match="start"):
        await engine.generate([1, 2], SamplingParams())
    await engine.start()
    pending = asyncio.create_task(engine.generate(prompt(tokenizer, 1), SamplingParams(max_tokens=900)))
    await until(lambda: engine.stats()["rollout/decode_steps"] >= 2)
    await engine.stop()
    with pytest.raises(ModelError, match="stopped"):
        await pending
    await engine.stop()  # idempotent


async def test_an_in_memory_model_serves_too(hf_model: Any, tokenizer: Any) -> None:
    async with TorchEngine(hf_model, max_batch=4, max_seq_len=256) as engine:
        p = prompt(tokenizer, 6)
        gen = await engine.generate(p, SamplingParams(max_tokens=8, temperature=0))
        assert gen.completion_ids == hf_greedy(hf_model, p, 8, None)
        stats = engine.stats()
        assert stats["rollout/generated_tokens"] == 8
        assert stats["rollout/prefill_tokens"] == len(p)


async def test_the_next_turn_reuses_the_cached_prefix(
    engine: TorchEngine, tokenizer: Any, hf_model: Any
) -> None:
    first_prompt = prompt(tokenizer, 7)
    first = await engine.generate(first_prompt, SamplingParams(max_tokens=20, temperature=0))
    # other traffic in between moves slots around
    await asyncio.gather(
        *(engine.generate(prompt(tokenizer, i), SamplingParams(max_tokens=15)) for i in range(5))
    )
    hits = engine.stats()["rollout/prefix_cache_hit_tokens"]
    observation = tokenizer.encode(
        "\n<|im_start|>user\nok<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    second_prompt = first_prompt + first.completion_ids + observation
    second = await engine.generate(second_prompt, SamplingParams(max_tokens=20, temperature=0))
    reused = engine.stats()["rollout/prefix_cache_hit_tokens"] - hits
    assert reused == len(first_prompt) + len(first.completion_ids) - 1  # all but the last sampled token
    assert second.completion_ids == hf_greedy(hf_model, second_prompt, 20, None)
    expected = hf_logprobs(hf_model, second_prompt, second.completion_ids, 1.0)
    assert torch.allclose(torch.tensor(second.logprobs), expected, atol=1e-4)
    # new weights invalidate the cache
    await engine.update_weights({}, version=1)
    hits = engine.stats()["rollout/prefix_cache_hit_tokens"]
    await engine.generate(second_prompt + second.completion_ids, SamplingParams(max_tokens=2))
    assert engine.stats()["rollout/prefix_cache_hit_tokens"] == hits


async def test_interleaved_multi_turn_sessions_stay_exact(
    policy_dir: Path, tokenizer: Any, hf_model: Any
) -> None:
    """More conversations than slots: parked prefixes are moved, reused and evicted; every answer stays exact."""
    observation = tokenizer.encode(
        "\n<|im_start|>user\nnext<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    transcripts: list[tuple[list[int], list[int]]] = []

    async def agent(i: int) -> None:
        ids = prompt(tokenizer, i)
        for turn in range(3):
            params = SamplingParams(max_tokens=4 + (i + turn) % 5, temperature=0)
            gen = await engine.generate(ids, params)
            transcripts.append((list(ids), gen.completion_ids))
            ids = ids + gen.completion_ids + observation

    async with TorchEngine(policy_dir, max_batch=3, prefix_cache_slots=4, max_seq_len=512) as engine:
        await asyncio.gather(*(agent(i) for i in range(7)))
        assert engine.stats()["rollout/prefix_cache_hit_tokens"] > 0
    for ids, completion in transcripts:
        assert completion == hf_greedy(hf_model, ids, len(completion), None)


async def test_a_failure_fails_the_requests_in_flight_and_the_engine_keeps_serving(
    policy_dir: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentscope.rl.rollout import _qwen2, _slots

    def broken_once(original: Any) -> Any:
        calls = {"n": 0}

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom")
            return original(*args, **kwargs)

        return wrapper

    async with TorchEngine(policy_dir, max_batch=2, max_seq_len=256) as engine:
        p = prompt(tokenizer, 1)
        for cls, name, message in [
            (_qwen2.Qwen2Runner, "prefill_many", "prefill failed"),
            (_qwen2.Qwen2Runner, "decode", "decode failed"),
            (_slots.SlotTable, "release", "engine failed"),
        ]:
            monkeypatch.setattr(cls, name, broken_once(getattr(cls, name)))
            with pytest.raises(ModelError, match=message):
                await engine.generate(p, SamplingParams(max_tokens=3))
            assert len((await engine.generate(p, SamplingParams(max_tokens=3))).completion_ids) == 3
